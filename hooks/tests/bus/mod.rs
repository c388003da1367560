//! A private system-style `dbus-daemon` with tandem's policy, a real `tandemd`
//! whose peer never comes, and a stand-in Hooks service, for the binaries'
//! tests. The bus and daemon guards are a trimmed copy of daemon/tests/dbus.rs
//! (another package); each guard stops its process by its pid.
//!
//! Needs `dbus-daemon` (Debian: dbus-daemon) and root: the policy lets only
//! root own org.tandem.Tandem1 and call Hooks.

// Test helpers: a failed unwrap is a failed test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_api::{BUS_NAME, ROOT_PATH};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn running_as_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A private `dbus-daemon`; dropping it kills it by its pid.
pub struct Bus {
    child: Child,
    pub address: String,
}

impl Bus {
    /// A system-style bus on `dir/bus` with tandem's policy (the fixture of daemon/tests).
    pub fn start(dir: &Path) -> Bus {
        let policy = workspace().join("packaging/dbus/org.tandem.Tandem1.conf");
        let conf = std::fs::read_to_string(workspace().join("daemon/tests/fixtures/dbus-system-bus.conf.in"))
            .unwrap()
            .replace("@LISTEN@", &format!("unix:path={}", dir.join("bus").display()))
            .replace("@POLICY@", policy.canonicalize().unwrap().to_str().unwrap());
        let conf_path = dir.join("bus.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf_path.display()))
            .args(["--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(dir.join("bus.stderr")).unwrap())
            .spawn()
            .expect("cannot start dbus-daemon (Debian: apt-get install dbus-daemon)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let bus = Bus {
            child,
            address: line.trim().to_owned(),
        };
        assert!(bus.address.starts_with("unix:"), "dbus-daemon printed no address");
        bus
    }

    /// Whether someone owns org.tandem.Tandem1.
    pub fn has_tandem(&self) -> bool {
        let out = Command::new("dbus-send")
            .args([
                "--system",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
            ])
            .args(["org.freedesktop.DBus.NameHasOwner", &format!("string:{BUS_NAME}")])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .output()
            .expect("dbus-send (Debian: dbus-bin)");
        String::from_utf8_lossy(&out.stdout).contains("boolean true")
    }

    pub fn wait_for_tandem(&self, timeout: Duration, mut alive: impl FnMut() -> Result<(), String>) {
        let end = Instant::now() + timeout;
        while !self.has_tandem() {
            if let Err(why) = alive() {
                panic!("the service exited: {why}");
            }
            assert!(Instant::now() < end, "nobody took {BUS_NAME} within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$TANDEMD_BIN`, else `tandemd` built (or found up to date) by cargo.
pub fn tandemd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANDEMD_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = built.as_ref() {
        return p.clone();
    }
    // Another package's binary: cargo gives no CARGO_BIN_EXE for it, so ask it
    // to build (a no-op when fresh) and say where the binary is.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "-q",
            "-p",
            "tandemd",
            "--bin",
            "tandemd",
            "--message-format=json",
        ])
        .current_dir(workspace())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo build -p tandemd failed");
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "tandemd")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no tandemd executable");
    *built = Some(exe.clone());
    exe
}

/// Distinct loopback addresses for every daemon of this test binary.
fn next_subnet() -> (String, String) {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let net = 100 + std::process::id() % 100;
    (format!("127.{net}.{n}.1"), format!("127.{net}.{n}.2"))
}

fn free_port(addr: &str) -> u16 {
    let udp = std::net::UdpSocket::bind((addr, 0)).unwrap();
    let port = udp.local_addr().unwrap().port();
    // The control channel uses the next port over TCP; make sure it is free too.
    std::net::TcpListener::bind((addr, port + 1)).map_or_else(|_| free_port(addr), |_| port)
}

/// Nodes alpha (here) and beta (never comes), resources r0 and r1, no fence
/// device, the shortest fence timeout the validation allows (1 s: FencePeer
/// answers after 4 × that).
fn write_config(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let (local, peer) = next_subnet();
    let port = free_port(&local);
    let key = dir.join("authkey");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.join("tandem.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nname = \"hooks-test\"\nauthkey = {key:?}\npreferred = \"alpha\"\n\
             heartbeat_port = {port}\ncontrol_port = {}\n\n\
             [timing]\nfence_timeout_ms = 1000\n\n\
             [node.alpha]\naddresses = [\"{local}\"]\nfence = []\n\n\
             [node.beta]\naddresses = [\"{peer}\"]\nfence = []\n\n\
             [drbd]\nresources = [\"r0\", \"r1\"]\n\n[hypervisor]\nkind = \"none\"\n",
            port + 1
        ),
    )
    .unwrap();
    config
}

/// A `tandemd` serving on `bus`; dropping it stops it by its pid: SIGTERM, then
/// SIGKILL after 3 s.
pub struct Tandemd {
    child: Child,
    stderr: PathBuf,
}

impl Tandemd {
    pub fn start(dir: &Path, bus: &Bus) -> Tandemd {
        let config = write_config(dir);
        let stderr = dir.join("tandemd.stderr");
        let child = Command::new(tandemd_bin())
            .arg("--config")
            .arg(&config)
            .args(["--node", "alpha", "--state-dir"])
            .arg(dir.join("state"))
            .arg("--status-file")
            .arg(dir.join("status.json"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .env("TANDEM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut daemon = Tandemd { child, stderr };
        bus.wait_for_tandem(Duration::from_secs(15), || match daemon.child.try_wait().unwrap() {
            None => Ok(()),
            Some(status) => Err(format!("tandemd {status}: {}", daemon.stderr())),
        });
        daemon
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
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

/// A stand-in `org.tandem.Tandem1.Hooks` that agrees to everything, records
/// each call, and answers FencePeer for resource `rN` with N (so tests get
/// the 4 and 7 a peerless tandemd never gives). A domain named `slow` makes
/// PrepareStart wait 30 s.
struct FakeHooks {
    calls: Arc<Mutex<Vec<String>>>,
}

#[zbus::interface(name = "org.tandem.Tandem1.Hooks")]
impl FakeHooks {
    async fn prepare_incoming(&self, domain: String, resources: Vec<String>) {
        self.record(format!("PrepareIncoming {domain} {resources:?}"));
    }

    async fn prepare_start(&self, domain: String, resources: Vec<String>) {
        self.record(format!("PrepareStart {domain} {resources:?}"));
        if domain == "slow" {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    }

    async fn release(&self, domain: String, resources: Vec<String>) {
        self.record(format!("Release {domain} {resources:?}"));
    }

    async fn fence_peer(&self, resource: String) -> i32 {
        self.record(format!("FencePeer {resource}"));
        resource.trim_start_matches('r').parse().unwrap_or(-1)
    }
}

impl FakeHooks {
    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

/// The stand-in service on its own thread; dropping it leaves the bus.
pub struct FakeTandem {
    pub calls: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeTandem {
    pub fn start(bus: &Bus) -> FakeTandem {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
        let address = bus.address.clone();
        let hooks = FakeHooks { calls: calls.clone() };
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let _conn = zbus::connection::Builder::address(address.as_str())
                    .name(BUS_NAME)
                    .serve_at(ROOT_PATH, hooks)
                    .build()
                    .await
                    .unwrap();
                ready_tx.send(()).unwrap();
                let _ = stopped.await;
            });
        });
        ready
            .recv_timeout(Duration::from_secs(10))
            .expect("the stand-in service did not start");
        FakeTandem {
            calls,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Drop for FakeTandem {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A finished run of one of the binaries.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Runs `program` with only `env` (as libvirt and DRBD give a fixed
/// environment) plus PATH, `stdin` on its stdin. The binaries bound their own
/// runs; the tests set those bounds short.
pub fn run(program: &str, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Out {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The program may exit without reading stdin: a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
        took: started.elapsed(),
    }
}
