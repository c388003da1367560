//! The hotplug tests' lab: a xenstore tree (the stand-in, first on PATH as
//! `xenstore-*`), the DRBD stand-in with resources r0 (minor 0), r1 (minor 1),
//! r2 (two volumes, minors 2 and 3) and r9 (minor 9, not managed by tandem),
//! what libxl writes to xenstore around the hotplug calls, and a `tandemd`
//! configured with those stand-ins. The private bus and the stand-in Hooks
//! service are the hook's (hooks/tests/bus).

// Test helpers: a failed unwrap is a failed test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../hooks/tests/bus/mod.rs"]
pub mod bus;

use bus::{tandemd_bin, Bus};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tandem_xenstore_standin::{Node, Store};

pub const BLOCK_DRBD: &str = env!("CARGO_BIN_EXE_block-drbd");
const XENSTORE_MODES: [&str; 5] = ["read", "write", "exists", "rm", "list"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The executables of `package` (built, or found up to date, by cargo), by name.
pub fn built(package: &str) -> HashMap<String, PathBuf> {
    static BUILT: Mutex<Option<HashMap<String, HashMap<String, PathBuf>>>> = Mutex::new(None);
    let mut cache = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(found) = cache.as_ref().and_then(|c| c.get(package)) {
        return found.clone();
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "-q", "-p", package, "--bins", "--message-format=json"])
        .current_dir(workspace())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo build -p {package} failed");
    let found: HashMap<String, PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let name = v["target"]["name"].as_str()?.to_owned();
            Some((name, PathBuf::from(v["executable"].as_str()?)))
        })
        .collect();
    cache
        .get_or_insert_with(HashMap::new)
        .insert(package.to_owned(), found.clone());
    found
}

/// A finished run of block-drbd.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// One test's xenstore, DRBD stand-in and hotplug lock.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub tree: PathBuf,
    pub drbd_state: PathBuf,
    pub drbd: HashMap<String, PathBuf>,
    pub bus_address: String,
}

impl Lab {
    pub fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let standin = &built("tandem-xenstore-standin")["tandem-xenstore-standin"];
        for m in XENSTORE_MODES {
            std::os::unix::fs::symlink(standin, bin.join(format!("xenstore-{m}"))).unwrap();
        }
        let drbd = built("tandem-drbd-standin");
        let drbd_state = dir.path().join("drbd");
        for (r, minor, volumes) in [("r0", "0", "1"), ("r1", "1", "1"), ("r2", "2", "2"), ("r9", "9", "1")] {
            let status = Command::new(&drbd["tandem-drbd-standin"])
                .args(["init", "--resource", r, "--minor", minor, "--volumes", volumes])
                .env("TANDEM_DRBD_STATE", &drbd_state)
                .status()
                .unwrap();
            assert!(status.success());
        }
        let tree = dir.path().join("xenstore.json");
        let bus_address = format!("unix:path={}", dir.path().join("no-bus").display());
        Lab {
            dir,
            bin,
            tree,
            drbd_state,
            drbd,
            bus_address,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The whole tree, for before/after comparisons.
    pub fn snapshot(&self) -> Node {
        Store::open(&self.tree, false).unwrap().root
    }

    pub fn read(&self, path: &str) -> Option<String> {
        let p = tandem_xenstore_standin::canonical(path).unwrap();
        let root = self.snapshot();
        root.read(&p).ok().map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    pub fn write(&self, pairs: &[(&str, &str)]) {
        let mut store = Store::open(&self.tree, true).unwrap();
        for (k, v) in pairs {
            let p = tandem_xenstore_standin::canonical(k).unwrap();
            store.root.write(&p, v.as_bytes()).unwrap();
        }
        store.save().unwrap();
    }

    pub fn rm(&self, path: &str) {
        let mut store = Store::open(&self.tree, true).unwrap();
        let p = tandem_xenstore_standin::canonical(path).unwrap();
        store.root.rm(&p).unwrap();
        store.save().unwrap();
    }

    /// The stand-in's role of `resource` on node 0 (this host).
    pub fn role(&self, resource: &str) -> String {
        let out = Command::new(&self.drbd["drbdsetup"])
            .args(["status", resource])
            .env("TANDEM_DRBD_STATE", &self.drbd_state)
            .env("TANDEM_DRBD_NODE", "0")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.lines().next().unwrap_or_default();
        first
            .split_whitespace()
            .find_map(|w| w.strip_prefix("role:"))
            .unwrap_or_else(|| panic!("drbdsetup status {resource}: {text}"))
            .to_owned()
    }

    /// block-drbd as libxl runs it: `block-drbd ACTION`, libxl's environment
    /// (`script`, `XENBUS_TYPE`, `XENBUS_PATH`, `XENBUS_BASE_PATH`), the stand-ins.
    pub fn block(&self, action: &str, xenbus_path: Option<&str>) -> Out {
        let started = Instant::now();
        let mut cmd = self.block_command(action, xenbus_path);
        let out = cmd.output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
            took: started.elapsed(),
        }
    }

    pub fn block_command(&self, action: &str, xenbus_path: Option<&str>) -> Command {
        let mut cmd = Command::new(BLOCK_DRBD);
        cmd.arg(action)
            .env_clear()
            .env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", self.bin.display()))
            .env("script", "/etc/xen/scripts/block-drbd")
            .env("XENBUS_TYPE", "vbd")
            .env("XENBUS_BASE_PATH", "backend")
            .env("TANDEM_XENSTORE_FILE", &self.tree)
            .env("TANDEM_DRBDADM", &self.drbd["drbdadm"])
            .env("TANDEM_DRBD_STATE", &self.drbd_state)
            .env("TANDEM_DRBD_NODE", "0")
            .env("TANDEM_BLOCK_DRBD_LOCK", self.path().join("hotplug.lock"))
            .env("TANDEM_BLOCK_DRBD_TIMEOUT_SECS", "20")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(p) = xenbus_path {
            cmd.env("XENBUS_PATH", p);
        }
        cmd
    }
}

/// `backend/vbd/DOMID/DEVID`.
pub fn backend(domid: u32, devid: u32) -> String {
    format!("backend/vbd/{domid}/{devid}")
}

/// What libxl writes for a new domain and its disks (`target=params`,
/// `script=block-drbd`) before it runs the hotplug scripts.
pub fn define_domain(lab: &Lab, domid: u32, name: &str, disks: &[(u32, &str)]) {
    let dom = format!("/local/domain/{domid}");
    let mut pairs: Vec<(String, String)> = vec![
        (format!("{dom}/name"), name.to_owned()),
        (format!("{dom}/domid"), domid.to_string()),
        (format!("{dom}/vm"), format!("/vm/00000000-0000-0000-0000-{domid:012}")),
    ];
    for (devid, params) in disks {
        let be = format!("/local/domain/0/{}", backend(domid, *devid));
        let fe = format!("{dom}/device/vbd/{devid}");
        for (k, v) in [
            ("frontend", fe.as_str()),
            ("params", params),
            ("script", "/etc/xen/scripts/block-drbd"),
            ("frontend-id", &domid.to_string()),
            ("online", "1"),
            ("removable", "0"),
            ("bootable", "1"),
            ("state", "1"),
            ("dev", "xvda"),
            ("type", "phy"),
            ("mode", "w"),
            ("device-type", "disk"),
            ("discard-enable", "0"),
        ] {
            pairs.push((format!("{be}/{k}"), v.to_owned()));
        }
        for (k, v) in [
            ("backend", be.as_str()),
            ("backend-id", "0"),
            ("state", "1"),
            ("virtual-device", &devid.to_string()),
            ("device-type", "disk"),
        ] {
            pairs.push((format!("{fe}/{k}"), v.to_owned()));
        }
    }
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    lab.write(&refs);
}

/// `xl create`: the domain's entries, then `add` for every disk at once (libxl
/// runs a domain's disk scripts in parallel).
pub fn xl_create(lab: &Lab, domid: u32, name: &str, disks: &[(u32, &str)]) -> Vec<Out> {
    define_domain(lab, domid, name, disks);
    let children: Vec<(Instant, Child)> = disks
        .iter()
        .map(|(devid, _)| {
            let be = backend(domid, *devid);
            (Instant::now(), lab.block_command("add", Some(&be)).spawn().unwrap())
        })
        .collect();
    children
        .into_iter()
        .map(|(started, c)| {
            let out = c.wait_with_output().unwrap();
            Out {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8(out.stdout).unwrap(),
                stderr: String::from_utf8(out.stderr).unwrap(),
                took: started.elapsed(),
            }
        })
        .collect()
}

/// How a domain goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Teardown {
    /// `xl shutdown`: the guest closes its frontends (state 5, 6), the backends
    /// follow, then libxl destroys the domain.
    Shutdown,
    /// `xl destroy`: libxl forces the backends offline without the guest.
    Destroy,
}

/// The end of a domain: backend states, `remove` for every disk (one after the
/// other), then libxl deletes the backends and the domain's directory.
pub fn xl_teardown(lab: &Lab, domid: u32, devids: &[u32], how: Teardown) -> Vec<Out> {
    for devid in devids {
        let be = format!("/local/domain/0/{}", backend(domid, *devid));
        let fe = format!("/local/domain/{domid}/device/vbd/{devid}");
        match how {
            Teardown::Shutdown => lab.write(&[
                (&format!("{fe}/state"), "6"),
                (&format!("{be}/state"), "6"),
                (&format!("{be}/online"), "0"),
            ]),
            Teardown::Destroy => lab.write(&[(&format!("{be}/online"), "0"), (&format!("{be}/state"), "5")]),
        }
    }
    let outs = devids
        .iter()
        .map(|devid| lab.block("remove", Some(&backend(domid, *devid))))
        .collect();
    for devid in devids {
        lab.rm(&backend(domid, *devid));
    }
    lab.rm(&format!("/local/domain/{domid}"));
    outs
}

/// A fence-agents style agent that powers nothing but says the node is off.
fn write_fence_agent(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let agent = dir.join("fence_always_off");
    std::fs::write(
        &agent,
        "#!/bin/sh\n# Test fence agent: every action succeeds, status says off.\n\
         action=$(sed -n 's/^action=//p')\ncase $action in status|monitor) exit 2;; *) exit 0;; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    agent
}

/// Nodes alpha (here) and beta (never comes, fenced by an agent that always
/// confirms), resources r0, r1, r2 on the DRBD stand-in, no hypervisor.
fn write_config(lab: &Lab) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = lab.path();
    let net = 100 + std::process::id() % 100;
    let n = 50 + std::process::id() % 150;
    let (local, peer) = (format!("127.{net}.{n}.1"), format!("127.{net}.{n}.2"));
    let udp = std::net::UdpSocket::bind((local.as_str(), 0)).unwrap();
    let port = udp.local_addr().unwrap().port();
    drop(udp);
    let key = dir.join("authkey");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let agent = write_fence_agent(dir);
    let config = dir.join("tandem.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nname = \"block-drbd-test\"\nauthkey = {key:?}\npreferred = \"alpha\"\n\
             heartbeat_port = {port}\ncontrol_port = {}\n\n\
             [timing]\nfence_timeout_ms = 5000\n\n\
             [node.alpha]\naddresses = [\"{local}\"]\nfence = []\n\n\
             [node.beta]\naddresses = [\"{peer}\"]\n\n\
             [[node.beta.fence]]\n[[node.beta.fence.device]]\nkind = \"agent\"\nagent = {agent:?}\ntimeout_ms = 2000\n\n\
             [drbd]\ndrbdadm = {:?}\ndrbdsetup = {:?}\nresources = [\"r0\", \"r1\", \"r2\"]\n\n\
             [hypervisor]\nkind = \"none\"\n",
            port + 1,
            lab.drbd["drbdadm"],
            lab.drbd["drbdsetup"],
        ),
    )
    .unwrap();
    config
}

/// A `tandemd` on `bus` with the lab's stand-ins; dropping it stops it by its
/// pid: SIGTERM, then SIGKILL after 3 s.
pub struct Tandemd {
    child: Child,
    stderr: PathBuf,
    bus_address: String,
}

impl Tandemd {
    pub fn start(lab: &Lab, bus: &Bus) -> Tandemd {
        let config = write_config(lab);
        let stderr = lab.path().join("tandemd.stderr");
        let child = Command::new(tandemd_bin())
            .arg("--config")
            .arg(&config)
            .args(["--node", "alpha", "--state-dir"])
            .arg(lab.path().join("state"))
            .arg("--status-file")
            .arg(lab.path().join("status.json"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .env("TANDEM_DRBD_STATE", &lab.drbd_state)
            .env("TANDEM_DRBD_NODE", "0")
            .env("TANDEM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut daemon = Tandemd {
            child,
            stderr,
            bus_address: bus.address.clone(),
        };
        bus.wait_for_tandem(Duration::from_secs(15), || match daemon.child.try_wait().unwrap() {
            None => Ok(()),
            Some(status) => Err(format!("tandemd {status}: {}", daemon.stderr())),
        });
        daemon
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn dbus_send(&self, args: &[&str]) -> String {
        let out = Command::new("dbus-send")
            .args([
                "--system",
                "--print-reply",
                "--dest=org.tandem.Tandem1",
                "/org/tandem/Tandem1",
            ])
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address)
            .output()
            .expect("dbus-send (Debian: dbus-bin)");
        assert!(
            out.status.success(),
            "dbus-send {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The operator's fence of the peer (`Cluster.Fence`), which lifts
    /// wait-for-all once the agent confirms it off.
    pub fn fence_peer(&self) {
        self.dbus_send(&["org.tandem.Tandem1.Cluster.Fence"]);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let state = self.dbus_send(&[
                "org.freedesktop.DBus.Properties.Get",
                "string:org.tandem.Tandem1.Cluster",
                "string:PeerState",
            ]);
            if state.contains("\"fenced\"") {
                return;
            }
            assert!(
                Instant::now() < end,
                "the peer was not fenced: {state}\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tandemd {
    fn drop(&mut self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = kill(pid, Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
