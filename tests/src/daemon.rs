//! `tandemd` processes inside the lab's namespaces, and the files they need.

use crate::cmd;
use crate::lab::{Lab2, Node, LINKS};
use crate::netns::NetNs;
use crate::status::{self, read_status};
use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::RngCore;
use serde_json::Value;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const HEARTBEAT_PORT: u16 = 5405;
pub const CONTROL_PORT: u16 = 5406;

/// Writes `bytes` to a new key file with `mode` (the mode is set explicitly,
/// whatever the umask).
pub fn write_authkey(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create key file {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write key file {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod key file {}", path.display()))?;
    Ok(())
}

/// `len` random bytes.
pub fn random_key(len: usize) -> Vec<u8> {
    let mut k = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut k);
    k
}

/// Heartbeat timing of the test cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat_interval_ms: u64,
    pub dead_after_ms: u64,
}

impl Default for Timing {
    /// The design's defaults: every 200 ms, lost after 1000 ms of silence.
    fn default() -> Self {
        Timing {
            heartbeat_interval_ms: 200,
            dead_after_ms: 1000,
        }
    }
}

/// What a test adds to the configuration of [`config_toml`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigExtra {
    /// More `[timing]` keys, each a `key = value` line.
    pub timing: Vec<String>,
    /// Each node's fence levels, by [`Node::index`]: the TOML of its
    /// `[[node.NAME.fence]]` tables. Empty means `fence = []`.
    pub fence: [String; 2],
    /// The `[drbd]` and `[hypervisor]` sections; `None`: resource `r0`, no
    /// hypervisor.
    pub tail: Option<String>,
    /// More `key = value` lines of each node's `[node.NAME]`, by [`Node::index`].
    pub node_keys: [String; 2],
}

/// The cluster configuration for a [`Lab2`]: nodes `alpha` (preferred) and
/// `beta`, one address per lab link, no fence devices, one DRBD resource, no
/// hypervisor.
pub fn config_toml(authkey: &Path, timing: Timing) -> Result<String> {
    config_toml_with(authkey, timing, &ConfigExtra::default())
}

/// [`config_toml`] with `extra`'s timing keys and fence levels.
pub fn config_toml_with(authkey: &Path, timing: Timing, extra: &ConfigExtra) -> Result<String> {
    let key = authkey
        .to_str()
        .ok_or_else(|| anyhow!("key path {} is not UTF-8", authkey.display()))?;
    let mut s = format!(
        "[cluster]\n\
         name = \"lab\"\n\
         authkey = {key:?}\n\
         preferred = \"alpha\"\n\
         heartbeat_port = {HEARTBEAT_PORT}\n\
         control_port = {CONTROL_PORT}\n\
         \n\
         [timing]\n\
         heartbeat_interval_ms = {}\n\
         dead_after_ms = {}\n",
        timing.heartbeat_interval_ms, timing.dead_after_ms
    );
    for line in &extra.timing {
        s.push_str(line);
        s.push('\n');
    }
    for node in Node::BOTH {
        let addrs: Vec<String> = (0..LINKS)
            .map(|l| Lab2::addr(node, l).map(|a| format!("{a:?}")))
            .collect::<Result<_>>()?;
        s.push_str(&format!(
            "\n[node.{}]\naddresses = [{}]\n",
            node.name(),
            addrs.join(", ")
        ));
        s.push_str(&extra.node_keys[node.index()]);
        match extra.fence[node.index()].as_str() {
            "" => s.push_str("fence = []\n"),
            levels => {
                s.push('\n');
                s.push_str(levels);
                if !levels.ends_with('\n') {
                    s.push('\n');
                }
            }
        }
    }
    match &extra.tail {
        Some(tail) => {
            s.push('\n');
            s.push_str(tail);
        }
        None => s.push_str("\n[drbd]\nresources = [\"r0\"]\n\n[hypervisor]\nkind = \"none\"\n"),
    }
    Ok(s)
}

/// How [`Daemon::start_with`] starts a daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonOptions {
    /// `--dbus system` on this bus address; `None`: `--dbus none`.
    pub system_bus: Option<String>,
    /// More environment variables.
    pub env: Vec<(String, String)>,
}

/// A running `tandemd`, started by this process inside a namespace. Dropping it
/// stops it: SIGTERM to the pid it started, up to 3 s, then SIGKILL.
#[derive(Debug)]
pub struct Daemon {
    node: Node,
    child: Child,
    exited: Option<ExitStatus>,
    status_file: PathBuf,
    stderr_file: PathBuf,
}

/// How long a stopped daemon gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

impl Daemon {
    /// Starts `tandemd --config CONFIG --node NODE --status-file DIR/NODE.status.json
    /// --state-dir DIR/NODE.state --dbus none` inside `ns`; stderr goes to `DIR/NODE.stderr`.
    pub fn start(bin: &Path, ns: &NetNs, config: &Path, node: Node, dir: &Path) -> Result<Daemon> {
        Daemon::start_with(bin, ns, config, node, dir, &DaemonOptions::default())
    }

    /// [`Daemon::start`] with `options`: a system bus and more environment.
    pub fn start_with(
        bin: &Path,
        ns: &NetNs,
        config: &Path,
        node: Node,
        dir: &Path,
        options: &DaemonOptions,
    ) -> Result<Daemon> {
        let status_file = dir.join(format!("{node}.status.json"));
        let stderr_file = dir.join(format!("{node}.stderr"));
        let state_dir = dir.join(format!("{node}.state"));
        std::fs::create_dir_all(&state_dir).with_context(|| format!("cannot create {}", state_dir.display()))?;
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_file)
            .with_context(|| format!("cannot open {}", stderr_file.display()))?;
        let mut command = ns.command(bin);
        command
            .arg("--config")
            .arg(config)
            .args(["--node", node.name()])
            .arg("--status-file")
            .arg(&status_file)
            .arg("--state-dir")
            .arg(&state_dir)
            .stdin(Stdio::null());
        match &options.system_bus {
            Some(address) => {
                command
                    .args(["--dbus", "system"])
                    .env("DBUS_SYSTEM_BUS_ADDRESS", address);
            }
            // Two test daemons must never offer tandem's name on the host's real
            // system bus; D-Bus tests give each daemon a private bus instead.
            None => {
                command.args(["--dbus", "none"]);
            }
        }
        command.envs(options.env.iter().map(|(k, v)| (k, v)));
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        if std::env::var_os("TANDEM_LOG").is_none() {
            command.env("TANDEM_LOG", "info");
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start `{}`", cmd::describe(&command)))?;
        Ok(Daemon {
            node,
            child,
            exited: None,
            status_file,
            stderr_file,
        })
    }

    pub fn node(&self) -> Node {
        self.node
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn status_file(&self) -> &Path {
        &self.status_file
    }

    pub fn stderr_file(&self) -> &Path {
        &self.stderr_file
    }

    /// The current status file.
    pub fn status(&self) -> Result<Value> {
        read_status(&self.status_file)
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read(&self.stderr_file)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of stderr.
    pub fn stderr_tail(&self, n: usize) -> String {
        let all = self.stderr();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The exit status, if the daemon has exited.
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self
                .child
                .try_wait()
                .with_context(|| format!("cannot check tandemd {} (pid {})", self.node, self.pid()))?;
        }
        Ok(self.exited)
    }

    /// Waits up to `timeout` for the daemon to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_exit()? {
                return Ok(Some(s));
            }
            if start.elapsed() >= timeout {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails, with the end of its stderr, if the daemon is no longer running.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.try_exit()? {
            None => Ok(()),
            Some(s) => bail!(
                "tandemd {} exited ({s}); stderr ends with:\n{}",
                self.node,
                self.stderr_tail(20)
            ),
        }
    }

    /// Sends `signal` to the daemon's pid (only while it has not been reaped).
    pub fn signal(&mut self, signal: Signal) -> Result<()> {
        if self.try_exit()?.is_some() {
            bail!("tandemd {} already exited", self.node);
        }
        let pid = i32::try_from(self.pid()).context("pid out of range")?;
        kill(Pid::from_raw(pid), signal).with_context(|| format!("cannot send {signal} to tandemd {}", self.node))?;
        Ok(())
    }

    /// SIGTERM, then up to `grace` for a clean exit, then SIGKILL. Returns the
    /// exit status and whether it exited by itself within the grace time.
    pub fn stop(&mut self, grace: Duration) -> Result<(ExitStatus, bool)> {
        self.stop_with(Signal::SIGTERM, grace)
    }

    /// [`Daemon::stop`] with another first signal (e.g. SIGINT).
    pub fn stop_with(&mut self, first: Signal, grace: Duration) -> Result<(ExitStatus, bool)> {
        if let Some(s) = self.try_exit()? {
            return Ok((s, true));
        }
        self.signal(first)?;
        if let Some(s) = self.wait_exit(grace)? {
            return Ok((s, true));
        }
        // Not reaped yet, so the pid is still ours.
        self.child
            .kill()
            .with_context(|| format!("cannot kill tandemd {}", self.node))?;
        let s = self
            .child
            .wait()
            .with_context(|| format!("cannot wait for tandemd {}", self.node))?;
        self.exited = Some(s);
        Ok((s, false))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let stopped = self.stop(STOP_GRACE);
        if std::thread::panicking() || stopped.is_err() {
            eprintln!(
                "--- tandemd {} (pid {}): {:?}; stderr ({}) ends with:\n{}\n---",
                self.node,
                self.pid(),
                stopped,
                self.stderr_file.display(),
                self.stderr_tail(40)
            );
        }
    }
}

/// A lab with `tandemd` running on both nodes: the usual fixture. When a test
/// panics, its files (daemon logs, status files, configuration) are kept and
/// their directory printed.
#[derive(Debug)]
pub struct Pair {
    // Dropped in this order: daemons, then the network, then the files.
    daemons: [Daemon; 2],
    lab: Lab2,
    dir: tempfile::TempDir,
    authkey: PathBuf,
    bin: PathBuf,
    configs: [PathBuf; 2],
    options: [DaemonOptions; 2],
}

impl Drop for Pair {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let dir = self.keep_files();
            eprintln!("--- the failed test's files are kept in {}", dir.display());
        }
    }
}

/// What [`Pair::prepare`] made.
#[derive(Debug)]
pub struct PreparedPair {
    bin: PathBuf,
    lab: Lab2,
    dir: tempfile::TempDir,
    authkey: PathBuf,
    timing: Timing,
}

impl PreparedPair {
    pub fn lab(&self) -> &Lab2 {
        &self.lab
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn authkey(&self) -> &Path {
        &self.authkey
    }

    /// Writes each node's configuration (`tandem.toml` when both are the
    /// same, else `tandem-NODE.toml`) and starts both daemons.
    pub fn start(self, extra: &[ConfigExtra; 2], options: &[DaemonOptions; 2]) -> Result<Pair> {
        let mut configs = Vec::new();
        for node in Node::BOTH {
            let name = if extra[0] == extra[1] {
                "tandem.toml".to_owned()
            } else {
                format!("tandem-{node}.toml")
            };
            let config = self.dir.path().join(name);
            std::fs::write(
                &config,
                config_toml_with(&self.authkey, self.timing, &extra[node.index()])?,
            )
            .with_context(|| format!("cannot write {}", config.display()))?;
            configs.push(config);
        }
        let start = |node: Node| {
            Daemon::start_with(
                &self.bin,
                self.lab.ns(node),
                &configs[node.index()],
                node,
                self.dir.path(),
                &options[node.index()],
            )
        };
        let alpha = start(Node::Alpha)?;
        let beta = start(Node::Beta)?;
        Ok(Pair {
            daemons: [alpha, beta],
            lab: self.lab,
            dir: self.dir,
            authkey: self.authkey,
            bin: self.bin,
            configs: [configs[0].clone(), configs[1].clone()],
            options: options.clone(),
        })
    }
}

impl Pair {
    /// Builds a [`Lab2`], writes a fresh 64-byte key (0600) and the
    /// configuration, and starts both daemons.
    pub fn start(timing: Timing) -> Result<Pair> {
        Pair::start_with(timing, |_| Ok(ConfigExtra::default()))
    }

    /// [`Pair::start`] with more configuration: `extra` is called with the
    /// pair's directory (where it may write the secrets its fence devices
    /// name) before the configuration is written.
    pub fn start_with<F>(timing: Timing, extra: F) -> Result<Pair>
    where
        F: FnOnce(&Path) -> Result<ConfigExtra>,
    {
        let prepared = Pair::prepare(timing)?;
        let extra = extra(prepared.dir())?;
        prepared.start(
            &[extra.clone(), extra],
            &[DaemonOptions::default(), DaemonOptions::default()],
        )
    }

    /// The lab, directory and key of a pair whose daemons are not started
    /// yet, for rigs that start more around them first.
    pub fn prepare(timing: Timing) -> Result<PreparedPair> {
        crate::env::preflight()?;
        let bin = crate::env::tandemd_bin()?;
        let lab = Lab2::new()?;
        let dir = tempfile::Builder::new()
            .prefix("tandem-tests-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let authkey = dir.path().join("authkey");
        write_authkey(&authkey, &random_key(64), 0o600)?;
        Ok(PreparedPair {
            bin,
            lab,
            dir,
            authkey,
            timing,
        })
    }

    pub fn lab(&self) -> &Lab2 {
        &self.lab
    }

    pub fn daemon(&self, node: Node) -> &Daemon {
        &self.daemons[node.index()]
    }

    pub fn daemon_mut(&mut self, node: Node) -> &mut Daemon {
        &mut self.daemons[node.index()]
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn authkey(&self) -> &Path {
        &self.authkey
    }

    /// Alpha's configuration (the only one when both nodes share it).
    pub fn config(&self) -> &Path {
        &self.configs[0]
    }

    /// Starts `node`'s tandemd again with its configuration and options,
    /// after SIGKILL if it still runs (a crash, or a host booting after a
    /// power off); its stderr file goes on after the old one's lines.
    pub fn restart(&mut self, node: Node) -> Result<()> {
        let old = &mut self.daemons[node.index()];
        if old.try_exit()?.is_none() {
            old.stop_with(Signal::SIGKILL, Duration::ZERO)?;
        }
        let fresh = Daemon::start_with(
            &self.bin,
            self.lab.ns(node),
            &self.configs[node.index()],
            node,
            self.dir.path(),
            &self.options[node.index()],
        )?;
        // The old guard has nothing left to stop.
        self.daemons[node.index()] = fresh;
        Ok(())
    }

    /// `node`'s current status.
    pub fn status(&self, node: Node) -> Result<Value> {
        self.daemon(node).status()
    }

    /// Both daemons still run.
    pub fn ensure_running(&mut self) -> Result<()> {
        for d in &mut self.daemons {
            d.ensure_running()?;
        }
        Ok(())
    }

    /// Waits until `pred` holds for `node`'s status, polling every 20 ms;
    /// returns how long it took and the status that satisfied it. On timeout
    /// the error shows `what`, the last status seen, the iptables rules and
    /// the daemon's stderr; it fails at once if a daemon exits.
    pub fn wait_status<F: FnMut(&Value) -> bool>(
        &mut self,
        node: Node,
        timeout: Duration,
        what: &str,
        pred: F,
    ) -> Result<(Duration, Value)> {
        self.wait_status_while(&Node::BOTH, node, timeout, what, pred)
    }

    /// [`Pair::wait_status`] that fails only if `node` itself exits: its peer
    /// may be gone (fenced, say).
    pub fn wait_node<F: FnMut(&Value) -> bool>(
        &mut self,
        node: Node,
        timeout: Duration,
        what: &str,
        pred: F,
    ) -> Result<(Duration, Value)> {
        self.wait_status_while(&[node], node, timeout, what, pred)
    }

    fn wait_status_while<F: FnMut(&Value) -> bool>(
        &mut self,
        running: &[Node],
        node: Node,
        timeout: Duration,
        what: &str,
        mut pred: F,
    ) -> Result<(Duration, Value)> {
        let start = Instant::now();
        loop {
            for n in running {
                self.daemons[n.index()].ensure_running()?;
            }
            let last = match self.status(node) {
                Ok(v) if pred(&v) => return Ok((start.elapsed(), v)),
                other => other,
            };
            if start.elapsed() >= timeout {
                let shown = match &last {
                    Ok(v) => format!("{}\n{v}", status::summary(v)),
                    Err(e) => format!("{e:#}"),
                };
                bail!(
                    "{node}: {what}: not seen within {timeout:?}.\nLast status: {shown}\nRules:\n{}\n\
                     stderr of {node} ends with:\n{}",
                    self.lab.rules(),
                    self.daemon(node).stderr_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Pair::wait_status`] on both nodes; the longer of the two times.
    pub fn wait_both<F: FnMut(Node, &Value) -> bool>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut pred: F,
    ) -> Result<Duration> {
        let start = Instant::now();
        for node in Node::BOTH {
            let left = timeout.saturating_sub(start.elapsed());
            self.wait_status(node, left, what, |v| pred(node, v))?;
        }
        Ok(start.elapsed())
    }

    /// Keeps the directory with the key, configuration, status files and
    /// daemon logs after the pair is dropped; returns its path.
    pub fn keep_files(&mut self) -> PathBuf {
        self.dir.disable_cleanup(true);
        self.dir.path().to_path_buf()
    }

    /// Waits until each side sees the peer online, every link up and the
    /// control channel connected.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<Duration> {
        self.wait_both(timeout, "peer online, all links up, control connected", |_, v| {
            status::peer_state(v) == Some("online")
                && status::all_links_up(v, LINKS)
                && status::control_connected(v) == Some(true)
        })
    }
}
