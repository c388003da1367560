//! The D-Bus service on a real `dbus-daemon`: each test starts a private
//! system-style bus (tests/fixtures/dbus-system-bus.conf.in, which includes
//! packaging/dbus/org.tandem.Tandem1.conf) and a `tandemd` whose peer never
//! comes, then talks to it through the tandem-api proxies, or as another user
//! through `setpriv` + `dbus-send` for the policy.
//!
//! Needs `dbus-daemon` and `dbus-send` (Debian: dbus-daemon, dbus-bin) and
//! `setpriv` (util-linux); the policy test also needs root (groupadd, setpriv).

// The helpers below are test code too (clippy.toml only covers #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};
use tandem_api::{error_name, peer_state, resource_path, ClusterProxy, Error, HooksProxy, BUS_NAME, ROOT_PATH};
use tempfile::TempDir;
use zbus::Connection;

/// Any single test, bus and daemon included, must finish well within this.
const TEST_DEADLINE: Duration = Duration::from_secs(45);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn policy_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/dbus/org.tandem.Tandem1.conf")
}

/// A private directory that other users can traverse, so a caller run as
/// `nobody` reaches the bus socket in it.
fn shared_dir() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Waits until `f` holds, polling.
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private `dbus-daemon`; dropping it kills it, by the pid it started.
struct Bus {
    child: Child,
    address: String,
}

impl Bus {
    /// A system-style bus listening on `socket`, with tandem's policy.
    fn start(dir: &Path, socket: &Path) -> Bus {
        let conf = std::fs::read_to_string(fixture("dbus-system-bus.conf.in"))
            .unwrap()
            .replace("@LISTEN@", &format!("unix:path={}", socket.display()))
            .replace("@POLICY@", policy_file().canonicalize().unwrap().to_str().unwrap());
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
        assert!(
            bus.address.starts_with("unix:"),
            "dbus-daemon printed no address: {}",
            std::fs::read_to_string(dir.join("bus.stderr")).unwrap_or_default()
        );
        bus
    }

    async fn connect(&self) -> Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .method_timeout(Duration::from_secs(10))
            .build()
            .await
            .unwrap()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// A configuration whose peer never comes: nodes alpha (here, preferred) and
/// beta, one link on loopback, no fence devices, resources r0 and r-1. The
/// shortest fence timeout makes a fence-peer handler's wait end after 4 s.
fn write_config(dir: &Path) -> PathBuf {
    let (local, peer) = next_subnet();
    let port = free_port(&local);
    let key = dir.join("authkey");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.join("tandem.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nname = \"dbus-test\"\nauthkey = {key:?}\npreferred = \"alpha\"\n\
             heartbeat_port = {port}\ncontrol_port = {}\n\n\
             [timing]\nfence_timeout_ms = 1000\n\n\
             [node.alpha]\naddresses = [\"{local}\"]\nfence = []\n\n\
             [node.beta]\naddresses = [\"{peer}\"]\nfence = []\n\n\
             [drbd]\nresources = [\"r0\", \"r-1\"]\n\n[hypervisor]\nkind = \"none\"\n",
            port + 1
        ),
    )
    .unwrap();
    config
}

/// A `tandemd`; dropping it stops it by its pid: SIGTERM, then SIGKILL after 3 s.
struct Tandemd {
    child: Child,
    stderr: PathBuf,
}

impl Tandemd {
    fn start(dir: &Path, bus_address: &str, extra: &[&str]) -> Tandemd {
        let config = write_config(dir);
        let stderr = dir.join("tandemd.stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_tandemd"))
            .arg("--config")
            .arg(&config)
            .args(["--node", "alpha", "--state-dir"])
            .arg(dir.join("state"))
            .arg("--status-file")
            .arg(dir.join("status.json"))
            .args(extra)
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus_address)
            .env("TANDEM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Tandemd { child, stderr }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn stderr(&self) -> String {
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

async fn name_has_owner(conn: &Connection) -> bool {
    let dbus = zbus::fdo::DBusProxy::new(conn).await.unwrap();
    dbus.name_has_owner(BUS_NAME.try_into().unwrap()).await.unwrap()
}

async fn wait_for_name(conn: &Connection, daemon: &mut Tandemd, timeout: Duration) {
    let end = Instant::now() + timeout;
    while !name_has_owner(conn).await {
        assert!(daemon.running(), "tandemd exited:\n{}", daemon.stderr());
        assert!(
            Instant::now() < end,
            "tandemd never took {BUS_NAME}:\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A bus and a daemon serving on it.
async fn start_pair(dir: &Path) -> (Bus, Tandemd, Connection) {
    let bus = Bus::start(dir, &dir.join("bus"));
    let mut daemon = Tandemd::start(dir, &bus.address, &[]);
    let conn = bus.connect().await;
    wait_for_name(&conn, &mut daemon, Duration::from_secs(10)).await;
    (bus, daemon, conn)
}

fn assert_named(e: &Error, name: &str) {
    use zbus::DBusError;
    assert_eq!(e.name().as_str(), name, "{e:?}");
}

#[tokio::test]
async fn properties_hooks_and_errors() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let dir = shared_dir();
        let (bus, mut daemon, conn) = start_pair(dir.path()).await;
        let cluster = ClusterProxy::new(&conn).await.unwrap();
        assert_eq!(cluster.node().await.unwrap(), "alpha");
        assert_eq!(cluster.peer().await.unwrap(), "beta");
        assert_eq!(cluster.peer_state().await.unwrap(), peer_state::UNKNOWN);
        assert_eq!(cluster.arbiter().await.unwrap(), "idle");
        assert!(!cluster.control_connected().await.unwrap());
        let links = cluster.links().await.unwrap();
        assert_eq!(links.len(), 1);
        assert!(!links[0].up);
        assert_eq!(
            cluster.resources().await.unwrap(),
            vec![resource_path("r-1"), resource_path("r0")]
        );
        assert!(cluster.domains().await.unwrap().is_empty());
        assert!(cluster.windows().await.unwrap().is_empty());
        let status: Value = serde_json::from_str(&cluster.status_json().await.unwrap()).unwrap();
        assert_eq!(status["version"], 1);
        assert_eq!(status["peer"]["state"], "unknown");
        assert_eq!(status["boot"].as_str().unwrap(), cluster.boot().await.unwrap());

        // The resources are objects the ObjectManager lists.
        let om = zbus::fdo::ObjectManagerProxy::builder(&conn)
            .destination(BUS_NAME)
            .path(ROOT_PATH)
            .build()
            .await
            .unwrap();
        let objects = om.get_managed_objects().await.unwrap();
        let r1 = &objects[&resource_path("r-1")];
        let props = &r1[&zbus::names::OwnedInterfaceName::try_from(tandem_api::interface::RESOURCE).unwrap()];
        assert_eq!(
            props["Name"],
            zbus::OwnedVariant::try_from(zbus::Variant::from("r-1")).unwrap()
        );

        let hooks = HooksProxy::new(&conn).await.unwrap();
        // Wait-for-all: the peer was never seen, so it may run the domain.
        let e = hooks.prepare_start("vm-1", &["r0"]).await.unwrap_err();
        assert_named(&e, error_name::REFUSED);
        assert!(e.reason().contains("wait-for-all"), "{e:?}");
        let e = hooks.prepare_incoming("vm-1", &["r0"]).await.unwrap_err();
        assert_named(&e, error_name::REFUSED);
        assert!(e.reason().contains("a migration needs it online"), "{e:?}");

        // Names that are well formed but unknown.
        let e = hooks.release("vm-1", &["r0", "nosuch"]).await.unwrap_err();
        assert_eq!(
            e,
            Error::NotFound("resource nosuch is not managed by tandem (it is not in [drbd] resources)".into())
        );
        assert_named(&hooks.fence_peer("nosuch").await.unwrap_err(), error_name::NOT_FOUND);
        // Release is idempotent: `release end` means "not running here", so a
        // domain tandem never saw is released too (its resources demoted; here,
        // without DRBD, demoting fails and says so).
        hooks.release("never-seen", &[]).await.unwrap();
        let e = hooks.release("never-seen", &["r0"]).await.unwrap_err();
        assert_named(&e, error_name::REFUSED);
        assert!(e.reason().contains("could not demote"), "{e:?}");
        let e = cluster.migrate("no-such-vm").await.unwrap_err();
        assert_eq!(e, Error::NotFound("tandem knows no domain no-such-vm".into()));

        // Malformed input from the bus: a named error, never a crash.
        let long = "v".repeat(100_000);
        let many: Vec<String> = (0..1000).map(|i| format!("r{i}-{}", "x".repeat(1000))).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let bad: [(&str, Vec<&str>); 7] = [
            ("", vec![]),
            ("vm\n1", vec!["r0"]),
            (&long, vec!["r0"]),
            ("vm", vec![""]),
            ("vm", vec!["r0", "r0"]),
            ("vm", vec!["../r0"]),
            ("vm", many),
        ];
        for (domain, resources) in &bad {
            let e = hooks.prepare_start(domain, resources).await.unwrap_err();
            assert_named(&e, error_name::INVALID_ARGS);
            assert!(e.reason().len() < 300, "a short message: {e:?}");
        }
        assert_named(&hooks.fence_peer("r 0").await.unwrap_err(), error_name::INVALID_ARGS);
        assert_named(&cluster.migrate("").await.unwrap_err(), error_name::INVALID_ARGS);
        // The wrong signature is the bus's own InvalidArgs.
        let e = hooks.inner().call_method("PrepareStart", &("vm",)).await.unwrap_err();
        assert!(
            matches!(zbus::fdo::Error::from(e), zbus::fdo::Error::InvalidArgs(_)),
            "wrong signature"
        );

        // A string with a NUL is not valid D-Bus: the bus drops the sender, the
        // message never reaches tandemd.
        let rogue = bus.connect().await;
        let rogue_hooks = HooksProxy::new(&rogue).await.unwrap();
        let e = rogue_hooks.prepare_start("vm", &["r\u{0}0"]).await.unwrap_err();
        assert!(matches!(e, Error::ZBus(_)), "{e:?}");

        assert!(daemon.running(), "tandemd survives bad input:\n{}", daemon.stderr());
        assert_eq!(cluster.node().await.unwrap(), "alpha");
    })
    .await
    .expect("test deadline");
}

#[tokio::test]
async fn events_and_property_changes_are_signalled() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let dir = shared_dir();
        let (_bus, _daemon, conn) = start_pair(dir.path()).await;
        let cluster = ClusterProxy::new(&conn).await.unwrap();
        let mut events = cluster.receive_event().await.unwrap();
        let mut arbiter = cluster.receive_arbiter_changed().await;
        // The stream first yields the current value.
        assert_eq!(arbiter.next().await.unwrap().get().await.unwrap(), "idle");

        cluster.standby(true).await.unwrap();
        cluster.standby(false).await.unwrap();
        // An operator fence with no fence device configured: the round fails
        // (and is retried with backoff, never giving up).
        cluster.fence().await.unwrap();
        let mut kinds = Vec::new();
        while !kinds.iter().any(|k| k == "FenceRoundFailed") {
            let signal = events.next().await.unwrap();
            let json: Value = serde_json::from_str(&signal.args().unwrap().json).unwrap();
            assert!(json["unix_ms"].as_u64().unwrap() > 0);
            assert!(json["event"]
                .as_str()
                .unwrap()
                .starts_with(json["kind"].as_str().unwrap()));
            kinds.push(json["kind"].as_str().unwrap().to_owned());
        }
        // PropertiesChanged: the arbiter left idle.
        let next = arbiter.next().await.unwrap().get().await.unwrap();
        assert_ne!(next, "idle", "events seen: {kinds:?}");
    })
    .await
    .expect("test deadline");
}

/// The uid and gid of `nobody` / `nogroup` on Debian.
const NOBODY: u32 = 65534;

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Group `tandem`, created for the test if it does not exist (and then deleted).
struct TandemGroup {
    gid: u32,
    created: bool,
}

impl TandemGroup {
    fn get() -> TandemGroup {
        let lookup = || {
            let out = Command::new("getent").args(["group", "tandem"]).output().unwrap();
            let line = String::from_utf8_lossy(&out.stdout).into_owned();
            line.split(':').nth(2).and_then(|g| g.trim().parse::<u32>().ok())
        };
        if let Some(gid) = lookup() {
            return TandemGroup { gid, created: false };
        }
        let status = Command::new("groupadd").args(["--system", "tandem"]).status().unwrap();
        assert!(status.success(), "groupadd tandem failed");
        TandemGroup {
            gid: lookup().expect("group tandem after groupadd"),
            created: true,
        }
    }
}

impl Drop for TandemGroup {
    fn drop(&mut self) {
        if self.created {
            let _ = Command::new("groupdel").arg("tandem").status();
        }
    }
}

/// `dbus-send` to tandemd as uid/gid `nobody`, with `groups` as its
/// supplementary groups (none when empty).
fn send_as_nobody(bus: &Bus, groups: &[u32], args: &[&str]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={NOBODY}")).arg(format!("--regid={NOBODY}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    cmd.args(["dbus-send", "--system", "--print-reply", "--reply-timeout=5000"])
        .arg(format!("--dest={BUS_NAME}"))
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .stdin(Stdio::null());
    cmd.output().unwrap()
}

fn denied(out: &Output) -> bool {
    !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("org.freedesktop.DBus.Error.AccessDenied")
}

fn show(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn the_policy_lets_group_tandem_read_and_only_root_act() {
    if !running_as_root() {
        eprintln!("skipped: the policy test needs root (groupadd, setpriv)");
        return;
    }
    tokio::time::timeout(TEST_DEADLINE, async {
        // dbus-daemon resolves group names when it reads its configuration, so
        // the group must exist before the bus starts.
        let group = TandemGroup::get();
        let dir = shared_dir();
        let (bus, mut daemon, _conn) = start_pair(dir.path()).await;
        let get_peer_state = [
            ROOT_PATH,
            "org.freedesktop.DBus.Properties.Get",
            "string:org.tandem.Tandem1.Cluster",
            "string:PeerState",
        ];
        let standby = [ROOT_PATH, "org.tandem.Tandem1.Cluster.Standby", "boolean:true"];
        let fence = [ROOT_PATH, "org.tandem.Tandem1.Cluster.Fence"];
        let prepare = [
            ROOT_PATH,
            "org.tandem.Tandem1.Hooks.PrepareStart",
            "string:vm",
            "array:string:r0",
        ];
        let set = [
            ROOT_PATH,
            "org.freedesktop.DBus.Properties.Set",
            "string:org.tandem.Tandem1.Cluster",
            "string:PeerState",
            "variant:string:online",
        ];
        let introspect = [ROOT_PATH, "org.freedesktop.DBus.Introspectable.Introspect"];
        let get_all = [
            ROOT_PATH,
            "org.freedesktop.DBus.Properties.GetAll",
            "string:org.tandem.Tandem1.Cluster",
        ];
        let objects = [ROOT_PATH, "org.freedesktop.DBus.ObjectManager.GetManagedObjects"];

        // Group tandem reads...
        let g = [group.gid];
        let out = send_as_nobody(&bus, &g, &get_peer_state);
        assert!(out.status.success(), "{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("\"unknown\""),
            "{}",
            show(&out)
        );
        for call in [&get_all[..], &objects, &introspect] {
            let out = send_as_nobody(&bus, &g, call);
            assert!(out.status.success(), "{call:?}: {}", show(&out));
        }
        // ...and changes nothing.
        for call in [&standby[..], &fence, &prepare, &set] {
            let out = send_as_nobody(&bus, &g, call);
            assert!(denied(&out), "{call:?}: {}", show(&out));
        }
        // Anyone else may only introspect.
        for call in [&get_peer_state[..], &standby, &prepare, &objects] {
            let out = send_as_nobody(&bus, &[], call);
            assert!(denied(&out), "{call:?}: {}", show(&out));
        }
        let out = send_as_nobody(&bus, &[], &introspect);
        assert!(out.status.success(), "{}", show(&out));
        // Nobody but root may own the name.
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .args(["--clear-groups", "dbus-send", "--system", "--print-reply"])
            .args(["--dest=org.freedesktop.DBus", "/org/freedesktop/DBus"])
            .args([
                "org.freedesktop.DBus.RequestName",
                "string:org.tandem.Tandem1",
                "uint32:4",
            ])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address);
        let out = cmd.output().unwrap();
        assert!(denied(&out), "{}", show(&out));

        assert!(daemon.running());
        // Nothing a denied caller sent reached the core.
        assert!(!daemon.stderr().contains("FenceStarted"), "{}", daemon.stderr());
    })
    .await
    .expect("test deadline");
}

#[tokio::test]
async fn without_a_bus_tandemd_runs_and_serves_once_the_bus_appears() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let dir = shared_dir();
        let socket = dir.path().join("late-bus");
        let mut daemon = Tandemd::start(dir.path(), &format!("unix:path={}", socket.display()), &[]);
        let status = dir.path().join("status.json");
        wait_until("the status file", Duration::from_secs(10), || status.exists());
        wait_until("the warning", Duration::from_secs(10), || {
            daemon.stderr().contains("D-Bus service unavailable")
        });
        assert!(daemon.running(), "{}", daemon.stderr());
        assert!(daemon.stderr().contains("tandemd keeps running"));

        let bus = Bus::start(dir.path(), &socket);
        let conn = bus.connect().await;
        // Retried after 1 s, 2 s, 4 s...: within 10 s of the bus appearing.
        wait_for_name(&conn, &mut daemon, Duration::from_secs(10)).await;
        let cluster = ClusterProxy::new(&conn).await.unwrap();
        assert_eq!(cluster.peer_state().await.unwrap(), peer_state::UNKNOWN);
    })
    .await
    .expect("test deadline");
}

#[tokio::test]
async fn a_second_daemon_cannot_take_the_name_and_dbus_none_never_tries() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let dir = shared_dir();
        let (bus, mut first, conn) = start_pair(dir.path()).await;
        let boot = ClusterProxy::new(&conn).await.unwrap().boot().await.unwrap();

        let dir2 = shared_dir();
        let mut second = Tandemd::start(dir2.path(), &bus.address, &[]);
        wait_until("the second daemon's warning", Duration::from_secs(10), || {
            second.stderr().contains("is owned by another process")
        });
        let dir3 = shared_dir();
        let mut third = Tandemd::start(dir3.path(), &bus.address, &["--dbus", "none"]);
        wait_until("the third daemon's notice", Duration::from_secs(10), || {
            third.stderr().contains("D-Bus service disabled")
        });
        assert!(first.running() && second.running() && third.running());
        // Still the first daemon's name.
        let cluster = ClusterProxy::new(&conn).await.unwrap();
        assert_eq!(cluster.boot().await.unwrap(), boot);
    })
    .await
    .expect("test deadline");
}

#[tokio::test]
async fn fence_peer_waits_for_a_verdict_and_a_stopping_daemon_ends_the_wait() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let dir = shared_dir();
        let (_bus, daemon, conn) = start_pair(dir.path()).await;
        let hooks = HooksProxy::new(&conn).await.unwrap();
        // The peer is neither reachable (to outdate) nor fenced (wait-for-all):
        // no verdict by the deadline, 4 x fence_timeout_ms.
        let started = Instant::now();
        let e = hooks.fence_peer("r0").await.unwrap_err();
        assert_named(&e, error_name::REFUSED);
        assert!(e.reason().contains("I/O stays frozen"), "{e:?}");
        assert!(started.elapsed() >= Duration::from_secs(3), "{:?}", started.elapsed());

        // A call still waiting when tandemd stops gets an error, not silence.
        let waiting = tokio::spawn({
            let conn = conn.clone();
            async move { HooksProxy::new(&conn).await.unwrap().fence_peer("r0").await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stopped = Instant::now();
        drop(daemon);
        let result = waiting.await.unwrap();
        assert!(result.is_err(), "{result:?}");
        assert!(stopped.elapsed() < Duration::from_secs(4), "{:?}", stopped.elapsed());
    })
    .await
    .expect("test deadline");
}
