//! A test host's BMC: `ipmi_sim` (OpenIPMI) whose chassis_control program
//! (`tests/fixtures/bmc-power.sh`) powers the host off by killing the host's
//! `tandemd`, by the pid the test started it with.
//!
//! A real BMC sits on a management network that the heartbeat links do not
//! cross, so a fence still works when every link is cut. In the lab the BMC
//! of one node runs inside the *other* node's namespace, on that namespace's
//! loopback: the fencing node reaches it at `127.0.0.1:PORT` whatever happens
//! to the links. (Killing a process by pid works across network namespaces.)
//!
//! The BMC has one user, [`USER`] with password [`PASSWORD`] and administrator
//! privilege; it speaks IPMI v2.0 with cipher suites 0-3 and 6 (use 3).

use crate::cmd;
use crate::netns::NetNs;
use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The BMC's administrator.
pub const USER: &str = "admin";
/// Its password.
pub const PASSWORD: &str = "secret";
/// Where the BMC listens, inside the namespace it runs in.
pub const ADDRESS: &str = "127.0.0.1";

/// How long a starting `ipmi_sim` gets to answer a presence ping.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// The chassis_control program of every test BMC.
pub fn power_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bmc-power.sh")
}

/// One `ipmi_sim`, started by this process inside a namespace; dropping it
/// kills it (by the pid it was started with). The process it powers off is
/// not its own: the [`crate::Daemon`] guard of that process ends it.
#[derive(Debug)]
pub struct Bmc {
    name: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Bmc {
    /// Writes the BMC's files into `dir` (created), with power on and no
    /// process to kill yet ([`Bmc::set_target`]), and starts `ipmi_sim` inside
    /// `ns` listening on 127.0.0.1:`port`; returns once it answers.
    pub fn start(ns: &NetNs, name: &str, port: u16, dir: &Path) -> Result<Bmc> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            bail!("BMC name {name:?}: use letters, digits and '-'");
        }
        let node = dir.join("node");
        let state = dir.join("state");
        for d in [&node, &state] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let script = power_script();
        for p in [&script, &node] {
            let usable = p.to_str().is_some_and(|s| !s.contains(char::is_whitespace));
            if !usable {
                bail!("{}: ipmi_sim splits its chassis_control line at spaces", p.display());
            }
        }
        write_file(&node.join("power"), "1\n")?;
        write_file(&node.join("pid"), "")?;
        let lan = format!(
            "name \"{name}\"\n\
             set_working_mc 0x20\n  \
               startlan 1\n    \
                 addr {ADDRESS} {port}\n    \
                 priv_limit admin\n    \
                 allowed_auths_admin none md2 md5 straight\n    \
                 allowed_auths_operator none md2 md5 straight\n    \
                 guid a123456789abcdefa123456789abcdef\n  \
               endlan\n  \
               chassis_control \"{} {}\"\n  \
               user 2 true \"{USER}\" \"{PASSWORD}\" admin 10 none md2 md5 straight\n",
            script.display(),
            node.display(),
        );
        write_file(&dir.join("lan.conf"), &lan)?;
        write_file(
            &dir.join("node.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n",
        )?;
        let mut bmc = Bmc {
            name: name.to_owned(),
            port,
            dir: dir.to_path_buf(),
            child: None,
        };
        bmc.restart(ns)?;
        Ok(bmc)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The chassis script's directory: `pid`, `power`, `log`.
    pub fn node_dir(&self) -> PathBuf {
        self.dir.join("node")
    }

    /// The pid of the running `ipmi_sim`, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts `ipmi_sim` again (stopping it first if it runs), with the same
    /// files and port, inside `ns`; returns once it answers.
    pub fn restart(&mut self, ns: &NetNs) -> Result<()> {
        self.stop()?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("ipmi_sim.out"))
            .with_context(|| format!("cannot open {}", self.dir.join("ipmi_sim.out").display()))?;
        let err = out.try_clone().context("cannot duplicate a file handle")?;
        let mut command = ns.command("ipmi_sim");
        command
            .arg("-c")
            .arg(self.dir.join("lan.conf"))
            .arg("-f")
            .arg(self.dir.join("node.emu"))
            .arg("-s")
            .arg(self.dir.join("state"))
            .args(["-n", "-p"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start `{}`", cmd::describe(&command)))?;
        self.child = Some(child);
        if let Err(e) = self.wait_ready(ns) {
            let _ = self.stop();
            return Err(e.context(format!(
                "BMC {} did not come up (ipmi_sim is in Debian's openipmi: scripts/deps.sh); it said:\n{}",
                self.name,
                self.sim_output()
            )));
        }
        Ok(())
    }

    /// Sends RMCP presence pings from inside `ns` until `ipmi_sim` answers.
    fn wait_ready(&mut self, ns: &NetNs) -> Result<()> {
        let sock = Pinger::new(ns, self.port)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().context("cannot check ipmi_sim")? {
                    self.child = None;
                    bail!("ipmi_sim exited at once ({status})");
                }
            }
            if sock.ping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("no answer on {ADDRESS}:{} within {READY_TIMEOUT:?}", self.port)
    }

    /// Kills `ipmi_sim` (SIGKILL to the pid it was started with) and reaps it:
    /// the BMC is unreachable until [`Bmc::restart`].
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // Not reaped yet, so the pid is still ours.
            if child.try_wait().context("cannot check ipmi_sim")?.is_none() {
                child
                    .kill()
                    .with_context(|| format!("cannot kill ipmi_sim of BMC {}", self.name))?;
            }
            child
                .wait()
                .with_context(|| format!("cannot wait for ipmi_sim of BMC {}", self.name))?;
        }
        Ok(())
    }

    /// Makes `pid` the process a power off kills (None: nothing), and powers on.
    /// Makes power off end a whole host: every process in network namespace
    /// `ns` except BMCs, then `on_power_off` (a shell script body) if given.
    pub fn set_target_host(&self, ns: &str, on_power_off: Option<&str>) -> Result<()> {
        let node = self.node_dir();
        write_file(&node.join("netns"), &format!("{ns}\n"))?;
        if let Some(body) = on_power_off {
            let path = node.join("on-power-off");
            write_file(&path, &format!("#!/bin/sh\n{body}\n"))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        write_file(&node.join("power"), "1\n")
    }

    pub fn set_target(&self, pid: Option<u32>) -> Result<()> {
        let node = self.node_dir();
        write_file(&node.join("pid"), &pid.map(|p| format!("{p}\n")).unwrap_or_default())?;
        write_file(&node.join("power"), "1\n")
    }

    /// The power state the chassis script recorded: `Some(true)` for on.
    pub fn power_on(&self) -> Option<bool> {
        match std::fs::read_to_string(self.node_dir().join("power")).ok()?.trim() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        }
    }

    /// Every chassis command so far, one per line, each starting with its unix_ms.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.node_dir().join("log")).unwrap_or_default()
    }

    /// When (unix_ms) the chassis script was told to power off, in order.
    pub fn power_offs(&self) -> Vec<u64> {
        self.log_times(|rest| rest == "set power 0")
    }

    /// When (unix_ms) the chassis script saw its target die, in order.
    pub fn kills(&self) -> Vec<u64> {
        self.log_times(|rest| rest.starts_with("killed "))
    }

    fn log_times(&self, what: impl Fn(&str) -> bool) -> Vec<u64> {
        self.log()
            .lines()
            .filter_map(|l| {
                let (t, rest) = l.split_once(' ')?;
                if what(rest.trim()) {
                    t.parse().ok()
                } else {
                    None
                }
            })
            .collect()
    }

    /// What `ipmi_sim` printed (all its runs).
    pub fn sim_output(&self) -> String {
        std::fs::read(self.dir.join("ipmi_sim.out"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("tandem-tests: BMC {}: {e:#}", self.name);
        }
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so the
/// chassis script never reads half a file.
fn write_file(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// Writes a password file: the password and a line end, mode 0600 (tandem
/// refuses a password file others can read).
pub fn write_password_file(path: &Path, password: &str) -> Result<()> {
    crate::daemon::write_authkey(path, format!("{password}\n").as_bytes(), 0o600)
        .with_context(|| format!("password file {}", path.display()))
}

/// Whether process `pid` is gone: no such process, or a zombie (killed, not
/// yet reaped by its parent).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Whether a BMC answers a presence ping on 127.0.0.1:`port` inside `ns`
/// within `timeout`.
pub fn answers(ns: &NetNs, port: u16, timeout: Duration) -> Result<bool> {
    let sock = Pinger::new(ns, port)?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if sock.ping() {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(false)
}

/// A UDP socket made inside a namespace, sending RMCP presence pings to a BMC
/// on that namespace's loopback.
#[derive(Debug)]
struct Pinger(UdpSocket);

impl Pinger {
    fn new(ns: &NetNs, port: u16) -> Result<Pinger> {
        let sock = ns.udp_bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .context("cannot set a socket timeout")?;
        sock.connect((ADDRESS, port))
            .with_context(|| format!("cannot connect a UDP socket to {ADDRESS}:{port}"))?;
        Ok(Pinger(sock))
    }

    /// One ASF presence ping (RMCP class 6); whether a pong came within 50 ms.
    fn ping(&self) -> bool {
        const PING: [u8; 12] = [0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x80, 0x01, 0x00, 0x00];
        let mut buf = [0u8; 64];
        self.0.send(&PING).is_ok() && self.0.recv(&mut buf).is_ok()
    }
}
