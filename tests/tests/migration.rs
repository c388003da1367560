//! Live migration between two real libvirtd hosts with real QEMU, through
//! tandem's libvirt hook and two tandemd, with the DRBD stand-in holding the
//! domain's disk (tests/src/virt_pair.rs). Needs root, libvirt-daemon,
//! qemu-system-x86 and the workspace's binaries (`make test` builds them).
//!
//! What a user checks: virsh's answer, where the domain runs, and what DRBD
//! did (the stand-in's history of roles and dual-primary settings).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::time::Duration;
use tandem_tests::virt_pair::RESOURCE;
use tandem_tests::{wait_for, Node, VirtPair, VirtSetup};

const DOMAIN: &str = "vm1";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// `vm1` started on alpha through virsh (and so through alpha's hook).
fn running_on_alpha(setup: VirtSetup) -> VirtPair {
    VirtPair::with_domain_running(setup, DOMAIN, Node::Alpha).expect("rig with vm1 on alpha")
}

/// The stand-in's history of `r0`: (event, node, the event's own fields).
fn events(rig: &VirtPair) -> Vec<Value> {
    rig.drbd()
        .history()
        .unwrap()
        .into_iter()
        .filter(|e| e.get("resource").and_then(Value::as_str) == Some(RESOURCE))
        .collect()
}

fn kind(e: &Value) -> &str {
    e.get("event").and_then(Value::as_str).unwrap_or("")
}

fn node_of(e: &Value) -> Option<u64> {
    e.get("node").and_then(Value::as_u64)
}

fn after<'a>(e: &'a Value, key: &str) -> &'a Value {
    e.get("after").and_then(|a| a.get(key)).unwrap_or(&Value::Null)
}

/// Index of the first event matching `pred`.
fn first(ev: &[Value], pred: impl Fn(&Value) -> bool) -> Option<usize> {
    ev.iter().position(pred)
}

fn role_event(e: &Value, node: Node, to: &str) -> bool {
    kind(e) == "role" && node_of(e) == Some(node.index() as u64) && e.get("to").and_then(Value::as_str) == Some(to)
}

fn wait_no_windows(rig: &VirtPair, timeout: Duration) {
    rig.wait_no_windows(timeout).unwrap();
}

/// vm1 runs on beta only, alpha was demoted, and no window is left open.
fn moved_to_beta(rig: &VirtPair) {
    assert_eq!(
        rig.host(Node::Beta).domstate(DOMAIN).unwrap().as_deref(),
        Some("running")
    );
    assert_eq!(
        rig.host(Node::Alpha).domstate(DOMAIN).unwrap().as_deref(),
        Some("shut off")
    );
    rig.wait_role(Node::Alpha, "Secondary", Duration::from_secs(10))
        .unwrap();
    wait_no_windows(rig, Duration::from_secs(10));
}

fn two_primaries_allowed(rig: &VirtPair) -> Value {
    after(events(rig).last().unwrap(), "allow_two_primaries").clone()
}

#[test]
fn live_migration_is_dual_primary_only_inside_the_window() {
    let rig = running_on_alpha(VirtSetup::default());
    let out = rig.migrate(DOMAIN, Node::Alpha, &[]).unwrap();
    assert!(
        out.status.success(),
        "virsh migrate: {}\n{}",
        stderr(&out),
        rig.report()
    );
    moved_to_beta(&rig);
    assert_eq!(rig.role(Node::Beta).unwrap(), "Primary");

    let ev = events(&rig);
    let allow = first(&ev, |e| {
        kind(e) == "net-options" && e.get("allow_two_primaries") == Some(&Value::Bool(true))
    })
    .expect("dual-primary was allowed");
    let dest_primary = first(&ev, |e| role_event(e, Node::Beta, "Primary")).expect("beta promoted");
    let src_secondary = first(&ev, |e| role_event(e, Node::Alpha, "Secondary")).expect("alpha demoted");
    let disallow = ev
        .iter()
        .rposition(|e| kind(e) == "net-options" && e.get("allow_two_primaries") == Some(&Value::Bool(false)))
        .expect("dual-primary was switched off again");
    assert!(
        allow < dest_primary && dest_primary < src_secondary && src_secondary < disallow,
        "{}",
        rig.report()
    );
    assert_eq!(
        two_primaries_allowed(&rig),
        serde_json::json!([false, false]),
        "{}",
        rig.report()
    );
    // Primary on both only inside the window, with allow-two-primaries and protocol C.
    rig.check_invariants().unwrap();
}

#[test]
fn migration_to_a_host_whose_disk_is_not_uptodate_is_refused() {
    let setup = VirtSetup {
        drbd_init: vec!["--disk-1".into(), "Inconsistent".into()],
        ..VirtSetup::default()
    };
    let rig = running_on_alpha(setup);
    let before = events(&rig).len();
    let out = rig.migrate(DOMAIN, Node::Alpha, &[]).unwrap();
    assert!(!out.status.success(), "the migration succeeded\n{}", rig.report());
    let msg = stderr(&out);
    assert!(msg.contains("tandem"), "virsh does not show tandem's line: {msg}");
    assert!(
        msg.contains("Inconsistent") || msg.contains("UpToDate"),
        "the line does not say why: {msg}"
    );
    assert_eq!(
        rig.host(Node::Alpha).domstate(DOMAIN).unwrap().as_deref(),
        Some("running")
    );
    assert_eq!(
        rig.host(Node::Beta).domstate(DOMAIN).unwrap().as_deref(),
        Some("shut off")
    );
    // Nothing changed in DRBD: no role change, no dual-primary.
    let all = events(&rig);
    let new: Vec<&Value> = all[before..].iter().filter(|e| kind(e) != "refused").collect();
    assert!(
        new.iter().all(|e| kind(e) != "role" && kind(e) != "net-options"),
        "DRBD changed: {new:?}"
    );
    assert_eq!(rig.role(Node::Alpha).unwrap(), "Primary");
    assert_eq!(rig.role(Node::Beta).unwrap(), "Secondary");
    wait_no_windows(&rig, Duration::from_secs(5));
    rig.check_invariants().unwrap();
}

#[test]
fn starting_a_domain_that_runs_on_the_other_host_is_refused() {
    let rig = running_on_alpha(VirtSetup::default());
    let before = events(&rig).len();
    let out = rig.host(Node::Beta).virsh(&["start", DOMAIN]).unwrap();
    assert!(!out.status.success(), "the second start succeeded\n{}", rig.report());
    let msg = stderr(&out);
    assert!(
        msg.contains("tandem refuses to start vm1"),
        "virsh does not show tandem's line: {msg}"
    );
    assert_eq!(
        rig.host(Node::Beta).domstate(DOMAIN).unwrap().as_deref(),
        Some("shut off")
    );
    assert_eq!(
        rig.host(Node::Alpha).domstate(DOMAIN).unwrap().as_deref(),
        Some("running")
    );
    let new = &events(&rig)[before..];
    assert!(new.iter().all(|e| kind(e) != "role"), "DRBD roles changed: {new:?}");
    assert_eq!(rig.role(Node::Beta).unwrap(), "Secondary");
    rig.check_invariants().unwrap();
}

#[test]
fn destination_qemu_killed_mid_migration_demotes_the_destination() {
    let rig = running_on_alpha(VirtSetup::default());
    std::thread::scope(|s| {
        // 1 MiB/s: the firmware's pages alone keep the migration going for seconds.
        let migration = s.spawn(|| rig.migrate(DOMAIN, Node::Alpha, &["--bandwidth", "1"]).unwrap());
        let started = wait_for(Duration::from_secs(20), Duration::from_millis(10), || {
            rig.role(Node::Beta).is_ok_and(|r| r == "Primary") && rig.host(Node::Beta).qemu_pid(DOMAIN).is_some()
        });
        assert!(started.is_ok(), "the destination never started\n{}", rig.report());
        let pid = rig.host(Node::Beta).qemu_pid(DOMAIN).unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
        let out = migration.join().unwrap();
        assert!(!out.status.success(), "the migration succeeded without its destination");
    });
    assert_eq!(
        rig.host(Node::Alpha).domstate(DOMAIN).unwrap().as_deref(),
        Some("running")
    );
    rig.wait_role(Node::Beta, "Secondary", Duration::from_secs(10)).unwrap();
    wait_no_windows(&rig, Duration::from_secs(10));
    let off = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        two_primaries_allowed(&rig) == serde_json::json!([false, false])
    });
    assert!(off.is_ok(), "dual-primary stayed allowed\n{}", rig.report());
    assert_eq!(rig.role(Node::Alpha).unwrap(), "Primary");
    rig.check_invariants().unwrap();
}

#[test]
fn a_window_the_source_never_releases_is_closed_by_the_reconciler() {
    let setup = VirtSetup {
        timing_extra: vec!["migration_window_s = 10".into(), "request_timeout_ms = 5000".into()],
        ..VirtSetup::default()
    };
    let rig = running_on_alpha(setup);
    // The source's hook never tells tandem that the domain left (a source
    // libvirtd that crashed after the switch-over would not either).
    rig.disable_hook(Node::Alpha).unwrap();
    let out = rig.migrate(DOMAIN, Node::Alpha, &[]).unwrap();
    assert!(
        out.status.success(),
        "virsh migrate: {}\n{}",
        stderr(&out),
        rig.report()
    );
    assert_eq!(rig.role(Node::Alpha).unwrap(), "Primary", "demoted without a hook?");
    // Past the deadline the reconciler sees where vm1 runs (beta) and demotes alpha.
    rig.wait_role(Node::Alpha, "Secondary", Duration::from_secs(25))
        .unwrap();
    wait_no_windows(&rig, Duration::from_secs(10));
    assert_eq!(rig.role(Node::Beta).unwrap(), "Primary");
    assert_eq!(
        rig.host(Node::Beta).domstate(DOMAIN).unwrap().as_deref(),
        Some("running")
    );
    assert_eq!(two_primaries_allowed(&rig), serde_json::json!([false, false]));
    rig.check_invariants().unwrap();
}

/// `Cluster.Migrate` on `node`'s bus, as `tandemctl migrate` calls it.
fn dbus_migrate(rig: &VirtPair, node: Node, domain: &str) -> std::process::Output {
    std::process::Command::new("dbus-send")
        .args([
            "--system",
            "--print-reply",
            "--reply-timeout=120000",
            "--dest=org.tandem.Tandem1",
        ])
        .args(["/org/tandem/Tandem1", "org.tandem.Tandem1.Cluster.Migrate"])
        .arg(format!("string:{domain}"))
        .env("DBUS_SYSTEM_BUS_ADDRESS", rig.bus(node).address())
        .output()
        .expect("dbus-send (Debian: dbus-bin)")
}

#[test]
fn tandem_migrates_a_domain_when_asked_over_dbus() {
    let rig = running_on_alpha(VirtSetup::default());
    // Not running on beta: refused with the reason, nothing moves.
    let out = dbus_migrate(&rig, Node::Beta, DOMAIN);
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert!(
        msg.contains("org.tandem.Tandem1.Error.Refused") && msg.contains("does not run on this host"),
        "{msg}"
    );

    let out = dbus_migrate(&rig, Node::Alpha, DOMAIN);
    assert!(out.status.success(), "Migrate: {}\n{}", stderr(&out), rig.report());
    moved_to_beta(&rig);
    assert_eq!(two_primaries_allowed(&rig), serde_json::json!([false, false]));
    rig.check_invariants().unwrap();
}
