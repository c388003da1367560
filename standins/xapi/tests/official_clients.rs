//! Keeps the stand-in honest: the official clients must work against it.
//!
//! - The Python `XenAPI` package from PyPI (`pip install XenAPI`), run by
//!   `python3` (or `$XAPI_PYTHON`).
//! - `fence_xenapi` from Debian's fence-agents (/usr/sbin/fence_xenapi, which
//!   brings its own copy of XenAPI.py in /usr/share/fence).
//!
//! Both are required: a missing one fails the test with the command that
//! installs it (scripts/deps.sh installs both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::Duration;
use tandem_xapi_standin::{PoolConfig, Standin};

const PASSWORD: &str = "official-pw";
const FENCE_XENAPI: &str = "/usr/sbin/fence_xenapi";

fn python() -> String {
    let py = std::env::var("XAPI_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import XenAPI"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{py} cannot import the XenAPI package; install it with `{py} -m pip install XenAPI` \
         (Debian 12: add --break-system-packages), or run scripts/deps.sh"
    );
    py
}

fn fence_xenapi() -> &'static str {
    assert!(
        std::path::Path::new(FENCE_XENAPI).exists(),
        "{FENCE_XENAPI} is missing; install Debian's fence-agents (apt-get install fence-agents), or run scripts/deps.sh"
    );
    FENCE_XENAPI
}

fn pool(hosts: usize) -> PoolConfig {
    PoolConfig::default()
        .user("root", PASSWORD)
        .vm("node-a", "Running")
        .vm("node-b", "Halted")
        .hosts(hosts)
}

/// Runs a Python script with the XenAPI package; its stdout lines are the result.
fn run_python(script: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

const SESSION_FLOW: &str = r#"
import sys, time, XenAPI
url, slave, password = sys.argv[1], sys.argv[2], sys.argv[3]
s = XenAPI.Session(url, ignore_ssl=url.startswith("https"))
s.xenapi.login_with_password("root", password, "1.0", "python-test")
print("api", s.API_version)
records = s.xenapi.VM.get_all_records()
print("vms", sorted((r["name_label"], r["power_state"], r["is_control_domain"]) for r in records.values()))
vm = s.xenapi.VM.get_by_name_label("node-a")[0]
print("uuid-ok", s.xenapi.VM.get_by_uuid(s.xenapi.VM.get_uuid(vm)) == vm)
s.xenapi.VM.hard_shutdown(vm)
print("state", s.xenapi.VM.get_power_state(vm))
for call in (lambda: s.xenapi.VM.hard_shutdown(vm),
             lambda: s.xenapi.VM.get_record("OpaqueRef:nope"),
             lambda: s.xenapi.VM.get_by_uuid("00000000-0000-4000-8000-000000000000"),
             lambda: s.xenapi.VM.start(vm),
             lambda: s.xenapi.VM.dance(vm)):
    try:
        call()
        print("no failure")
    except XenAPI.Failure as f:
        print("failure", f.details[0], len(f.details))
s.xenapi.VM.start(vm, False, False)
print("state", s.xenapi.VM.get_power_state(vm))
time.sleep(0.3)  # past the session TTL: the client logs in again by itself
print("after-expiry", s.xenapi.VM.get_power_state(vm))
s.xenapi.session.logout()
t = XenAPI.Session(slave, ignore_ssl=slave.startswith("https"))
try:
    t.xenapi.login_with_password("root", password, "1.0", "python-test")
except XenAPI.Failure as f:
    print("slave", f.details[0], f.details[1])
try:
    XenAPI.Session(url, ignore_ssl=url.startswith("https")).xenapi.login_with_password("root", "wrong", "1.0", "t")
except XenAPI.Failure as f:
    print("auth", f.details)
"#;

fn session_flow(tls: bool) {
    let mut config = pool(2).tls(tls);
    config.session_ttl_ms = 200;
    let s = Standin::start(config).unwrap();
    let lines = run_python(SESSION_FLOW, &[&s.url(), &s.host_url(1), PASSWORD]);
    let want = [
        "api 2.21".to_string(),
        "vms [('Control domain on host: host0', 'Running', True), ('Control domain on host: host1', 'Running', True), \
         ('node-a', 'Running', False), ('node-b', 'Halted', False)]"
            .to_string(),
        "uuid-ok True".to_string(),
        "state Halted".to_string(),
        "failure VM_BAD_POWER_STATE 4".to_string(),
        "failure HANDLE_INVALID 3".to_string(),
        "failure UUID_INVALID 3".to_string(),
        // Python's client adds the session itself, so it reports one parameter less.
        "failure MESSAGE_PARAMETER_COUNT_MISMATCH 4".to_string(),
        "failure MESSAGE_METHOD_UNKNOWN 2".to_string(),
        "state Running".to_string(),
        "after-expiry Running".to_string(),
        format!("slave HOST_IS_SLAVE 127.0.0.1:{}", s.host_port(0)),
        "auth ['SESSION_AUTHENTICATION_FAILED', 'root', 'Authentication failure']".to_string(),
    ];
    assert_eq!(lines, want);
    let stats = s.stats();
    assert_eq!(stats.logouts, 1);
    assert!(stats.expired >= 1, "{stats:?}");
    assert_eq!(stats.logins, 2, "the first login and the one after expiry: {stats:?}");
    assert_eq!(stats.host_is_slave, 1);
}

#[test]
fn the_python_xenapi_package_works_against_the_standin() {
    session_flow(false);
}

#[test]
fn the_python_xenapi_package_works_over_tls() {
    session_flow(true);
}

fn fence(url: &str, args: &[&str]) -> Output {
    Command::new(fence_xenapi())
        .args(["-s", url, "-l", "root", "-p", PASSWORD])
        .args(args)
        // fence-agents 4.12 on Python 3.11 warns about the pipes module.
        .env("PYTHONWARNINGS", "ignore::DeprecationWarning")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn debian_fence_xenapi_works_against_the_standin() {
    let s = Standin::start(pool(2)).unwrap();
    let url = s.url();
    let o = fence(&url, &["-n", "node-a", "-o", "status"]);
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), "Status: ON\n"));
    let o = fence(&url, &["-n", "node-a", "-o", "off"]);
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(0), "Success: Powered OFF\n")
    );
    assert_eq!(s.power_state("node-a").unwrap(), "Halted");
    let o = fence(&url, &["-n", "node-a", "-o", "status"]);
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(2), "Status: OFF\n"));
    let o = fence(&url, &["-n", "node-a", "-o", "on"]);
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(0), "Success: Powered ON\n")
    );
    let o = fence(&url, &["-n", "node-a", "-o", "reboot"]);
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), "Success: Rebooted\n"));
    assert_eq!(s.power_state("node-a").unwrap(), "Running");
    let uuid = s.uuid("node-b").unwrap();
    let o = fence(&url, &["-o", "list"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains(&format!("{uuid},node-b\n")), "{}", stdout(&o));
    // fence_xenapi never logs out: every run above left its session behind.
    let stats = s.stats();
    assert_eq!((stats.logouts, stats.open as u64), (0, stats.logins), "{stats:?}");
    // And it cannot follow HOST_IS_SLAVE: pointed at a pool member, it fails.
    let o = fence(&s.host_url(1), &["-n", "node-a", "-o", "off"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("HOST_IS_SLAVE"), "{}", stdout(&o));
    assert_eq!(s.power_state("node-a").unwrap(), "Running");
}

#[test]
fn slow_answers_reach_the_python_client_late_but_intact() {
    let s = Standin::start(pool(1).delay("VM.hard_shutdown", 400)).unwrap();
    let started = std::time::Instant::now();
    let o = fence(&s.url(), &["-n", "node-a", "-o", "off"]);
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(0), "Success: Powered OFF\n")
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
}
