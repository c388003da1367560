//! The fence module against real BMCs: each test starts its own `ipmi_sim`
//! (OpenIPMI) on a free 127.0.0.1 UDP port, with a chassis_control script
//! (tests/fixtures/chassis-control.sh) that makes power real: the "node" is a
//! process group, power off kills it, power on starts a new one.
//!
//! Needs `ipmi_sim` (Debian: openipmi) and `fence_ipmilan` (fence-agents);
//! scripts/deps.sh installs both.

// The helpers below are test code too (clippy.toml only covers #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tandem::config::{AgentDevice, FenceDevice, FenceLevel, IpmiDevice, IpmiPrivilege, Secret};
use tandem::fence::{
    fence_direct, DeviceErrorKind, FenceAction, FenceError, FenceLevels, Fencer, IpmiFencer, PowerState,
};
use tempfile::TempDir;

const ADMIN_PASSWORD: &str = "Secr3t-admin";
const VIEWER_PASSWORD: &str = "view-pw";
const OPERATOR_PASSWORD: &str = "oper-pw";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("tandem=debug")
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// Dead, or a zombie nobody reaps (PID 1 here is not an init).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn secret_file(dir: &Path, name: &str, password: &str) -> Secret {
    let path = dir.join(name);
    std::fs::write(&path, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    Secret::file(path)
}

/// One ipmi_sim and its node. Dropping it kills both, by the ids it started.
struct Bmc {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Bmc {
    /// A BMC with user 2 "admin" (administrator), user 3 "viewer" (user
    /// privilege only) and user 4 "oper" (operator), and a node that is on.
    fn start() -> Bmc {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("node");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&node).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(node.join("power"), "0\n").unwrap();
        let port = free_udp_port();
        let lan = format!(
            r#"name "bmc-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_admin none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{script} {node}"
  user 2 true "admin" "{ADMIN_PASSWORD}" admin 10 none md2 md5 straight
  user 3 true "viewer" "{VIEWER_PASSWORD}" user 10 none md2 md5 straight
  user 4 true "oper" "{OPERATOR_PASSWORD}" operator 10 none md2 md5 straight
"#,
            script = fixture("chassis-control.sh").display(),
            node = node.display(),
        );
        std::fs::write(dir.path().join("lan.conf"), lan).unwrap();
        std::fs::write(
            dir.path().join("node.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n",
        )
        .unwrap();
        let child = Command::new("ipmi_sim")
            .arg("-c")
            .arg(dir.path().join("lan.conf"))
            .arg("-f")
            .arg(dir.path().join("node.emu"))
            .arg("-s")
            .arg(&state)
            .args(["-n", "-p"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ipmi_sim (Debian package openipmi) must be installed: run scripts/deps.sh");
        let bmc = Bmc { child, port, dir };
        bmc.wait_ready();
        bmc.chassis(&["set", "power", "1"]);
        bmc
    }

    /// Answers an RMCP (ASF) presence ping once it listens.
    fn wait_ready(&self) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        s.connect(("127.0.0.1", self.port)).unwrap();
        let ping = [0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x80, 0x01, 0x00, 0x00];
        let until = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 64];
        while Instant::now() < until {
            let _ = s.send(&ping);
            if s.recv(&mut buf).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ipmi_sim did not start listening on 127.0.0.1:{}", self.port);
    }

    fn node_dir(&self) -> PathBuf {
        self.dir.path().join("node")
    }

    /// Runs the chassis script as ipmi_sim would, to set up the node.
    fn chassis(&self, args: &[&str]) {
        let ok = Command::new(fixture("chassis-control.sh"))
            .arg(self.node_dir())
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// The node's process (group) id while it is powered on.
    fn node_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.node_dir().join("pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    fn chassis_log(&self) -> String {
        std::fs::read_to_string(self.node_dir().join("log")).unwrap_or_default()
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    fn device(&self, user: &str, password: &str, timeout_ms: u64) -> IpmiDevice {
        IpmiDevice {
            address: "127.0.0.1".into(),
            port: self.port,
            username: user.into(),
            password: secret_file(self.dir.path(), &format!("pw-{user}-{timeout_ms}"), password),
            cipher_suite: 3,
            privilege: IpmiPrivilege::Admin,
            timeout_ms,
        }
    }

    fn admin(&self) -> IpmiFencer {
        IpmiFencer::new(self.device("admin", ADMIN_PASSWORD, 5000))
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // ipmi_sim does not take its node down with it.
        if let Some(pgid) = self.node_pid() {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

#[tokio::test]
async fn off_is_confirmed_and_the_node_is_gone() {
    logs();
    let bmc = Bmc::start();
    let node = bmc.node_pid().unwrap();
    assert!(!gone(node));
    assert_eq!(bmc.admin().off().await.unwrap(), PowerState::Off);
    assert!(gone(node), "the node process must be dead once off is confirmed");
    assert!(bmc.chassis_log().contains("set power 0"));
}

#[tokio::test]
async fn on_starts_the_node() {
    logs();
    let bmc = Bmc::start();
    bmc.chassis(&["set", "power", "0"]);
    assert_eq!(bmc.admin().on().await.unwrap(), PowerState::On);
    let node = bmc.node_pid().expect("powered on");
    assert!(!gone(node));
}

#[tokio::test]
async fn reboot_is_off_confirmed_then_on() {
    logs();
    let bmc = Bmc::start();
    let before = bmc.node_pid().unwrap();
    assert_eq!(bmc.admin().reboot().await.unwrap(), PowerState::On);
    let after = bmc.node_pid().unwrap();
    assert_ne!(before, after);
    assert!(gone(before) && !gone(after));
    let log = bmc.chassis_log();
    let off = log.find("set power 0").expect("powered off");
    let on = log.rfind("set power 1").expect("powered on");
    assert!(off < on, "off before on:\n{log}");
    assert!(!log.contains("reset"), "no power cycle or reset:\n{log}");
    // The off was confirmed by a status between the two commands.
    assert!(log[off..on].contains("get power"), "{log}");
}

#[tokio::test]
async fn status_follows_the_power() {
    logs();
    let bmc = Bmc::start();
    let fencer = bmc.admin();
    assert_eq!(fencer.status().await.unwrap(), PowerState::On);
    bmc.chassis(&["set", "power", "0"]);
    assert_eq!(fencer.status().await.unwrap(), PowerState::Off);
}

#[tokio::test]
async fn wrong_password_is_its_own_error_and_quick() {
    logs();
    let bmc = Bmc::start();
    let fencer = IpmiFencer::new(bmc.device("admin", "not-the-password", 5000));
    let started = Instant::now();
    let err = fencer.off().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(matches!(err.kind, DeviceErrorKind::WrongPassword { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{}", bmc.port)) && text.contains("ipmi"),
        "{text}"
    );
    assert!(!text.contains("not-the-password") && !format!("{err:?}").contains("not-the-password"));
    assert!(!gone(bmc.node_pid().unwrap()), "nothing was powered off");
}

#[tokio::test]
async fn a_user_without_the_privilege_gets_a_privilege_error() {
    logs();
    let bmc = Bmc::start();
    let fencer = IpmiFencer::new(bmc.device("viewer", VIEWER_PASSWORD, 5000));
    let err = fencer.off().await.unwrap_err();
    assert!(matches!(err.kind, DeviceErrorKind::Privilege { .. }), "{err}");
    assert!(err.to_string().contains("administrator"), "{err}");
    assert!(!gone(bmc.node_pid().unwrap()));

    // Operator would do for Chassis Control, but ipmi-rs logs in asking for
    // administrator, and ipmi_sim matches user and privilege together.
    let mut operator = bmc.device("oper", OPERATOR_PASSWORD, 5000);
    operator.privilege = IpmiPrivilege::Operator;
    let err = IpmiFencer::new(operator).off().await.unwrap_err();
    assert!(matches!(err.kind, DeviceErrorKind::Privilege { .. }), "{err}");
    assert!(!gone(bmc.node_pid().unwrap()));

    let nobody = IpmiFencer::new(bmc.device("nobody", "whatever", 5000));
    let err = nobody.status().await.unwrap_err();
    assert!(matches!(err.kind, DeviceErrorKind::UnknownUser { .. }), "{err}");
}

#[tokio::test]
async fn a_bmc_that_is_down_is_unreachable_within_the_timeout() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let fencer = IpmiFencer::new(IpmiDevice {
        address: "127.0.0.1".into(),
        port: free_udp_port(),
        username: "admin".into(),
        password: secret_file(dir.path(), "pw", ADMIN_PASSWORD),
        cipher_suite: 3,
        privilege: IpmiPrivilege::Admin,
        timeout_ms: 2000,
    });
    let started = Instant::now();
    let err = fencer.off().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(2100),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err.kind, DeviceErrorKind::Unreachable { .. }), "{err}");
}

#[tokio::test]
async fn a_frozen_bmc_times_out_and_recovers_when_it_thaws() {
    logs();
    let bmc = Bmc::start();
    let fencer = IpmiFencer::new(bmc.device("admin", ADMIN_PASSWORD, 1500));
    assert_eq!(fencer.status().await.unwrap(), PowerState::On);
    bmc.signal(Signal::SIGSTOP);
    let started = Instant::now();
    let result = fencer.off().await;
    let took = started.elapsed();
    let node_survived = !gone(bmc.node_pid().unwrap());
    bmc.signal(Signal::SIGCONT);
    let err = result.unwrap_err();
    assert!(matches!(err.kind, DeviceErrorKind::Timeout { .. }), "{err}");
    assert!(took < Duration::from_millis(1700), "{took:?}");
    assert!(node_survived);
    // The broken session was dropped and a new one works. (The thawed BMC may
    // still carry out the queued power down: only a status can say.)
    fencer.status().await.unwrap();
}

#[tokio::test]
async fn a_cancelled_operation_does_not_wedge_the_device() {
    logs();
    let bmc = Bmc::start();
    let fencer = IpmiFencer::new(bmc.device("admin", ADMIN_PASSWORD, 1000));
    assert_eq!(fencer.status().await.unwrap(), PowerState::On);
    bmc.signal(Signal::SIGSTOP);
    let gave_up = tokio::time::timeout(Duration::from_millis(100), fencer.off()).await;
    bmc.signal(Signal::SIGCONT);
    assert!(gave_up.is_err(), "the caller gave up first");
    // The abandoned attempt finishes in the background within its bound, and
    // the device is usable afterwards.
    fencer.status().await.unwrap();
}

#[tokio::test]
async fn one_session_serves_a_hundred_calls() {
    logs();
    let bmc = Bmc::start();
    let fencer = bmc.admin();
    // ipmi_sim has 63 session slots, each held 30 s after its last use: a
    // session per call would run out long before 100.
    for i in 0..100 {
        let state = fencer.status().await.unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(state, PowerState::On);
    }
}

#[tokio::test]
async fn an_unsupported_cipher_suite_is_refused_clearly() {
    logs();
    let bmc = Bmc::start();
    let mut device = bmc.device("admin", ADMIN_PASSWORD, 2000);
    device.cipher_suite = 17;
    let err = IpmiFencer::new(device).off().await.unwrap_err();
    assert!(matches!(err.kind, DeviceErrorKind::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("cipher suite 17"), "{err}");
    assert!(!gone(bmc.node_pid().unwrap()));
}

#[tokio::test]
async fn a_failing_level_falls_through_to_fence_ipmilan() {
    logs();
    assert!(
        Path::new("/usr/sbin/fence_ipmilan").exists(),
        "fence_ipmilan (Debian package fence-agents) must be installed: run scripts/deps.sh"
    );
    let first = Bmc::start();
    let second = Bmc::start();
    let agent = AgentDevice {
        agent: "/usr/sbin/fence_ipmilan".into(),
        options: [
            ("ip", "127.0.0.1".to_string()),
            ("ipport", second.port.to_string()),
            ("username", "admin".to_string()),
            ("lanplus", "1".to_string()),
            ("cipher", "3".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        password: Some(secret_file(second.dir.path(), "agent-pw", ADMIN_PASSWORD)),
        timeout_ms: 20_000,
    };
    let config = [
        FenceLevel {
            devices: vec![FenceDevice::Ipmi(first.device("admin", "wrong-password", 3000))],
        },
        FenceLevel {
            devices: vec![FenceDevice::Agent(agent)],
        },
    ];
    let levels = FenceLevels::new("node-b", &config);
    let first_node = first.node_pid().unwrap();
    let second_node = second.node_pid().unwrap();

    let outcome = fence_direct(&levels, FenceAction::Off).await.unwrap();
    assert_eq!((outcome.level, outcome.state), (2, PowerState::Off));
    assert!(gone(second_node), "level 2 powered the node off");
    assert!(!gone(first_node), "level 1 did nothing");

    let history = levels.history().records();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!((history[0].level, history[0].kind), (1, "ipmi"));
    assert!(history[0]
        .result
        .as_ref()
        .is_err_and(|e| e.contains("rejected the password")));
    assert_eq!((history[1].level, history[1].kind), (2, "agent"));
    assert_eq!(history[1].result, Ok(PowerState::Off));

    // Level 1 alone, as the arbiter runs it: a clear error naming the device.
    match levels.run_level(0, FenceAction::Status).await {
        Err(FenceError::Device {
            level: 1,
            position: 1,
            source,
            ..
        }) => assert!(matches!(source.kind, DeviceErrorKind::WrongPassword { .. }), "{source}"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        levels.run_level(2, FenceAction::Status).await,
        Err(FenceError::NoSuchLevel { level: 3, count: 2, .. })
    ));
    let debug = format!("{levels:?}");
    assert!(!debug.contains(ADMIN_PASSWORD) && !debug.contains("wrong-password"));
}
