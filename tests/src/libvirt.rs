//! A real `libvirtd` per test host, with real QEMU, on this one machine.
//!
//! Each host's libvirtd runs inside its host's network namespace and in a
//! mount and UTS namespace of its own (`unshare -m -u`), with private copies
//! bind-mounted over `/etc/libvirt`, `/run/libvirt`, `/var/lib/libvirt`,
//! `/var/cache/libvirt` and `/var/log/libvirt`, its own hostname and
//! `host_uuid`, so two of them can live-migrate a domain between each other
//! (../shared/REAL-PARTS.md). Two more private mounts make the host look like a
//! production one to the processes libvirt starts (the hooks, QEMU):
//!
//! - `/run/dbus`: the host's own system bus ([`crate::bus::SystemBus`]), so the
//!   libvirt hook reaches *its* tandemd at the default address, as in
//!   production (libvirt clears the environment of hooks);
//! - `/dev/drbd`: a tmpfs holding `by-res/R/0` symlinks to a device both hosts
//!   open (a loop device), standing in for DRBD's udev links.
//!
//! The test process talks to it through `qemu:///system?socket=DIR/run/libvirt-sock`.
//! Dropping a [`LibvirtHost`] kills the QEMU processes it started (by the pid
//! files libvirt keeps) and then libvirtd (by its pid); the namespaces and
//! mounts vanish with their last process.

use crate::cmd;
use crate::netns::NetNs;
use crate::status::wait_for;
use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The directories bind-mounted over the host's, by their name in the host dir.
const PRIVATE: [(&str, &str); 5] = [
    ("etc", "/etc/libvirt"),
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("cache", "/var/cache/libvirt"),
    ("log", "/var/log/libvirt"),
];

/// libvirt's QEMU capabilities cache, copied into each new host so only the
/// first libvirtd of a machine pays the ~4-12 s of probing QEMU.
const CACHE_TEMPLATE: &str = "/var/tmp/tandem-tests-libvirt-cache";

/// What goes into a host.
#[derive(Debug, Clone)]
pub struct HostSpec<'a> {
    /// Hostname inside the UTS namespace (libvirt refuses to migrate to a host
    /// with its own name).
    pub hostname: &'a str,
    /// A libvirt hook installed as `/etc/libvirt/hooks/qemu.d/tandem`.
    pub hook: Option<&'a Path>,
    /// Mounted as the host's `/run/dbus`.
    pub dbus_dir: &'a Path,
    /// `(resource, device)`: `/dev/drbd/by-res/RESOURCE/0` → `device`.
    pub drbd_links: Vec<(String, PathBuf)>,
}

/// A running libvirtd (see the module documentation).
#[derive(Debug)]
pub struct LibvirtHost {
    hostname: String,
    dir: PathBuf,
    child: Option<Child>,
    /// What runs inside the host's namespaces: mounts, then `exec libvirtd`.
    boot_script: String,
}

impl LibvirtHost {
    /// Prepares `dir` and starts libvirtd in `ns`; returns once its socket answers.
    pub fn start(ns: &NetNs, dir: &Path, spec: &HostSpec) -> Result<LibvirtHost> {
        for (name, _) in PRIVATE {
            std::fs::create_dir_all(dir.join(name)).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        copy_tree(Path::new("/etc/libvirt"), &dir.join("etc")).context("copying /etc/libvirt")?;
        if Path::new(CACHE_TEMPLATE).is_dir() {
            copy_tree(Path::new(CACHE_TEMPLATE), &dir.join("cache")).context("copying libvirt's cache")?;
        }
        append(
            &dir.join("etc/qemu.conf"),
            // Root and no confinement: /dev/kvm is 0600 here, and a second
            // libvirtd on one machine can use neither cgroups nor virtlogd.
            "\nuser = \"root\"\ngroup = \"root\"\nstdio_handler = \"file\"\ncgroup_controllers = [ ]\n\
             namespaces = [ ]\nremember_owner = 0\nsecurity_driver = \"none\"\n",
        )?;
        append(
            &dir.join("etc/libvirtd.conf"),
            &format!("\nhost_uuid = \"{}\"\n", uuid_v4()),
        )?;
        let hooks = dir.join("etc/hooks/qemu.d");
        std::fs::create_dir_all(&hooks)?;
        if let Some(hook) = spec.hook {
            std::os::unix::fs::symlink(hook, hooks.join("tandem")).context("installing the hook")?;
        }
        for target in [
            "/run/libvirt",
            "/var/lib/libvirt",
            "/var/cache/libvirt",
            "/var/log/libvirt",
            "/dev/drbd",
        ] {
            std::fs::create_dir_all(target).with_context(|| format!("cannot create {target}"))?;
        }

        let mut script = String::from("set -e\n");
        script.push_str(&format!("hostname {}\n", sh_quote(spec.hostname)?));
        for (name, target) in PRIVATE {
            script.push_str(&format!("mount --bind {} {target}\n", sh_quote_path(&dir.join(name))?));
        }
        script.push_str(&format!("mount --bind {} /run/dbus\n", sh_quote_path(spec.dbus_dir)?));
        script.push_str("mount -t tmpfs tandem-drbd /dev/drbd\n");
        for (res, dev) in &spec.drbd_links {
            let q = sh_quote(res)?;
            script.push_str(&format!(
                "mkdir -p /dev/drbd/by-res/{q}\nln -s {} /dev/drbd/by-res/{q}/0\n",
                sh_quote_path(dev)?
            ));
        }
        script.push_str(&format!(
            "exec libvirtd --pid-file {}\n",
            sh_quote_path(&dir.join("libvirtd.pid"))?
        ));

        let mut host = LibvirtHost {
            hostname: spec.hostname.to_owned(),
            dir: dir.to_owned(),
            child: None,
            boot_script: script,
        };
        host.boot(ns)?;
        Ok(host)
    }

    /// Starts libvirtd again on the same files after the host lost power
    /// ([`LibvirtHost::kill_all`] or a BMC power off), the way a reboot would:
    /// `/run/libvirt` starts empty, the domain definitions are still there.
    pub fn reboot(&mut self, ns: &NetNs) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let run = self.dir.join("run");
        std::fs::remove_dir_all(&run).with_context(|| format!("cannot empty {}", run.display()))?;
        std::fs::create_dir_all(&run).with_context(|| format!("cannot create {}", run.display()))?;
        self.boot(ns)
    }

    fn boot(&mut self, ns: &NetNs) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("libvirtd.log"))?;
        let mut command = ns.command("unshare");
        command
            .args(["-m", "-u", "--propagation", "private", "sh", "-c", &self.boot_script])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start `{}` (Debian: libvirt-daemon)", cmd::describe(&command)))?;
        self.child = Some(child);
        let socket = self.socket();
        let ready = wait_for(Duration::from_secs(30), Duration::from_millis(20), || {
            socket.exists() && self.virsh(&["version"]).map(|o| o.status.success()).unwrap_or(false)
        });
        if ready.is_err() {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            bail!(
                "libvirtd of {} did not answer within 30 s (exited: {exited:?}); its log:\n{}",
                self.hostname,
                self.log()
            );
        }
        Ok(())
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/libvirt-sock")
    }

    /// The URI that reaches this libvirtd from anywhere on the machine.
    pub fn uri(&self) -> String {
        format!("qemu:///system?socket={}", self.socket().display())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("libvirtd.log")).unwrap_or_default()
    }

    /// `virsh -c URI ARGS...`, whatever its exit status.
    pub fn virsh(&self, args: &[&str]) -> Result<Output> {
        Command::new("virsh")
            .arg("-c")
            .arg(self.uri())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run virsh (Debian: libvirt-clients)")
    }

    /// `virsh ARGS...`, which must succeed; its stdout.
    pub fn virsh_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.virsh(args)?;
        if !out.status.success() {
            bail!(
                "`virsh {}` on {} failed: {}",
                args.join(" "),
                self.hostname,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `virsh define` of `xml`.
    pub fn define(&self, xml: &str) -> Result<()> {
        let file = self.dir.join(format!("define-{}.xml", std::process::id()));
        std::fs::write(&file, xml)?;
        let path = file.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
        self.virsh_ok(&["define", path]).map(|_| ())
    }

    /// `virsh domstate`: "running", "shut off", ...; `None` when not defined.
    pub fn domstate(&self, domain: &str) -> Result<Option<String>> {
        let out = self.virsh(&["domstate", domain])?;
        if !out.status.success() {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    }

    /// The pid of the QEMU running `domain`, from libvirt's pid file.
    pub fn qemu_pid(&self, domain: &str) -> Option<i32> {
        let text = std::fs::read_to_string(self.dir.join(format!("run/qemu/{domain}.pid"))).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// Every QEMU this libvirtd started that still runs.
    fn qemu_pids(&self) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("run/qemu")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                self.qemu_pid(name.strip_suffix(".pid")?)
            })
            .collect()
    }

    /// Kills libvirtd and every QEMU it started, at once (a host losing power).
    pub fn kill_all(&mut self) {
        for pid in self.qemu_pids() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Saves the warm capabilities cache for the next hosts (best effort).
    pub fn save_cache(&self) {
        if !Path::new(CACHE_TEMPLATE).is_dir() {
            let tmp = format!("{CACHE_TEMPLATE}.{}", std::process::id());
            if copy_tree(&self.dir.join("cache"), Path::new(&tmp)).is_ok() {
                let _ = std::fs::rename(&tmp, CACHE_TEMPLATE);
            }
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
}

impl Drop for LibvirtHost {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    let mut source = from.as_os_str().to_owned();
    source.push("/.");
    cmd::output(Command::new("cp").arg("-a").arg(source).arg(to))?;
    Ok(())
}

/// A random UUID (version 4).
pub fn uuid_v4() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `s` single-quoted for sh; only names and paths the harness made go here.
fn sh_quote(s: &str) -> Result<String> {
    if s.contains('\'') || s.contains('\n') {
        bail!("{s:?} cannot be used in the host's setup script");
    }
    Ok(format!("'{s}'"))
}

fn sh_quote_path(p: &Path) -> Result<String> {
    sh_quote(p.to_str().ok_or_else(|| anyhow!("path {} is not UTF-8", p.display()))?)
}

/// A small diskful domain: 64 MiB, no NIC, no video, `disks` as virtio block
/// devices (`cache='none'`), KVM where `/dev/kvm` opens, TCG otherwise. It sits
/// in the firmware, which is all a live migration needs.
/// `uuid` must be the same wherever the domain is defined: libvirt refuses to
/// migrate onto a same-named domain with another UUID.
pub fn domain_xml(name: &str, uuid: &str, disks: &[&str]) -> String {
    let kind = if kvm_usable() { "kvm" } else { "qemu" };
    let mut devices = String::new();
    for (i, source) in disks.iter().enumerate() {
        let target = format!("vd{}", (b'a' + i as u8) as char);
        devices.push_str(&format!(
            "    <disk type='block' device='disk'>\n      <driver name='qemu' type='raw' cache='none' io='native'/>\n      \
             <source dev='{source}'/>\n      <target dev='{target}' bus='virtio'/>\n    </disk>\n"
        ));
    }
    format!(
        "<domain type='{kind}'>\n  <name>{name}</name>\n  <uuid>{uuid}</uuid>\n  <memory unit='MiB'>64</memory>\n  <vcpu>1</vcpu>\n  \
         <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>\n  <devices>\n{devices}    \
         <serial type='pty'/>\n    <video><model type='none'/></video>\n    <memballoon model='none'/>\n  \
         </devices>\n</domain>\n"
    )
}

/// Whether QEMU can use KVM here (`/dev/kvm` opens read-write).
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}
