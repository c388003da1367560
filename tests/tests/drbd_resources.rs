//! The resource side of tandem with two real daemons, two real libvirtd and the
//! DRBD stand-in (tests/src/virt_pair.rs): demotes that meet a device still held
//! open, promotes of data that is not UpToDate, and DRBD's fence-peer handler
//! (`tandem-drbd-handler`, run by the stand-in as DRBD runs it) when
//! replication breaks with and without the heartbeats.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::time::Duration;
use tandem_tests::virt_pair::RESOURCE;
use tandem_tests::{wait_for, FenceSetup, Node, VirtPair, VirtSetup};

const DOMAIN: &str = "vm1";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// `vm1` started on alpha through virsh (and so through alpha's hook).
fn running_on_alpha(setup: VirtSetup) -> VirtPair {
    VirtPair::with_domain_running(setup, DOMAIN, Node::Alpha).expect("rig with vm1 on alpha")
}

/// The fence-peer handler's answers the stand-in applied, as (node, exit code).
fn handler_results(rig: &VirtPair) -> Vec<(u64, i64)> {
    rig.drbd()
        .history()
        .unwrap()
        .iter()
        .filter(|e| e.get("event").and_then(Value::as_str) == Some("fence-peer-result"))
        .filter_map(|e| {
            let node = e.get("node")?.as_u64()?;
            let code = e.get("exit")?.as_i64()?;
            Some((node, code))
        })
        .collect()
}

fn node_field(rig: &VirtPair, node: Node, key: &str) -> Value {
    rig.drbd()
        .node_state(RESOURCE, node)
        .ok()
        .and_then(|n| n.get(key).cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn a_demote_while_the_device_is_held_open_retries_then_says_so() {
    let rig = running_on_alpha(VirtSetup::default());
    // Something other than the domain's QEMU keeps the device open on alpha.
    rig.drbd()
        .run(&["hold", RESOURCE, "--node", "0", "--name", "backup-agent"])
        .unwrap();
    let out = rig.host(Node::Alpha).virsh(&["destroy", DOMAIN]).unwrap();
    assert!(out.status.success(), "virsh destroy: {}", stderr(&out));
    // Not forced: the data stays Primary where it is held, and tandem says why.
    assert_eq!(rig.role(Node::Alpha).unwrap(), "Primary");
    let refusals = rig
        .drbd()
        .history()
        .unwrap()
        .iter()
        .filter(|e| e.get("event").and_then(Value::as_str) == Some("refused") && e.get("node") == Some(&Value::from(0)))
        .count();
    assert!(
        refusals >= 2,
        "the demote was not retried ({refusals} attempts)\n{}",
        rig.report()
    );
    let log = rig.pair().daemon(Node::Alpha).stderr();
    assert!(
        log.contains("held open") && log.contains("resource=r0"),
        "tandemd did not say that r0 is held open:\n{}",
        rig.report()
    );
    let libvirt_log = rig.host(Node::Alpha).log();
    assert!(
        libvirt_log.contains("tandem could not demote the resources of vm1"),
        "the hook's line is not in libvirtd's log:\n{libvirt_log}"
    );
    // Released: the next start and stop work as usual.
    rig.drbd().run(&["unhold", RESOURCE, "--node", "0"]).unwrap();
    let out = rig.host(Node::Alpha).virsh(&["start", DOMAIN]).unwrap();
    assert!(out.status.success(), "virsh start: {}", stderr(&out));
    let out = rig.host(Node::Alpha).virsh(&["destroy", DOMAIN]).unwrap();
    assert!(out.status.success(), "virsh destroy: {}", stderr(&out));
    rig.wait_role(Node::Alpha, "Secondary", Duration::from_secs(10))
        .unwrap();
    rig.check_invariants().unwrap();
}

#[test]
fn a_start_on_data_that_is_not_uptodate_is_refused() {
    let setup = VirtSetup {
        drbd_init: vec!["--disk-0".into(), "Outdated".into()],
        ..VirtSetup::default()
    };
    let rig = VirtPair::start_healthy(setup).expect("rig");
    rig.define_everywhere(DOMAIN).unwrap();
    let out = rig.host(Node::Alpha).virsh(&["start", DOMAIN]).unwrap();
    assert!(!out.status.success(), "started on Outdated data\n{}", rig.report());
    let msg = stderr(&out);
    assert!(
        msg.contains("tandem refuses to start vm1") && msg.contains("Outdated"),
        "{msg}"
    );
    assert_eq!(rig.role(Node::Alpha).unwrap(), "Secondary");
    assert_eq!(
        rig.host(Node::Alpha).domstate(DOMAIN).unwrap().as_deref(),
        Some("shut off")
    );
    // The peer has UpToDate data: the domain starts there.
    let out = rig.host(Node::Beta).virsh(&["start", DOMAIN]).unwrap();
    assert!(
        out.status.success(),
        "virsh start on beta: {}\n{}",
        stderr(&out),
        rig.report()
    );
    assert_eq!(rig.role(Node::Beta).unwrap(), "Primary");
    rig.check_invariants().unwrap();
}

#[test]
fn replication_broken_while_the_peer_is_reachable_outdates_it() {
    let rig = running_on_alpha(VirtSetup::default());
    rig.drbd().run(&["net-cut", RESOURCE, "--wait"]).unwrap();
    // `--wait` has been seen returning before the handler's answer under load.
    let _ = wait_for(Duration::from_secs(30), Duration::from_millis(20), || {
        !handler_results(&rig).is_empty()
    });
    assert_eq!(handler_results(&rig), vec![(0, 4)], "{}", rig.report());
    assert_eq!(
        node_field(&rig, Node::Beta, "disk"),
        Value::from("Outdated"),
        "{}",
        rig.report()
    );
    assert_eq!(node_field(&rig, Node::Alpha, "suspended_fencing"), Value::Bool(false));
    assert_eq!(rig.role(Node::Alpha).unwrap(), "Primary");
    assert_eq!(
        rig.host(Node::Alpha).domstate(DOMAIN).unwrap().as_deref(),
        Some("running")
    );
    // Nobody was fenced: the peer's daemon still runs and is still online.
    let mut rig = rig;
    rig.pair_mut().ensure_running().unwrap();
    let v = rig.status(Node::Alpha).unwrap();
    assert_eq!(tandem_tests::status::peer_state(&v), Some("online"));
    rig.check_invariants().unwrap();
}

#[test]
fn replication_and_heartbeats_broken_fence_the_peer_before_answering_7() {
    let setup = VirtSetup {
        fence: Some(FenceSetup::default()),
        ..VirtSetup::default()
    };
    let rig = running_on_alpha(setup);
    // beta vanishes from alpha's view: every link and the replication link.
    rig.pair().lab().cut_all().unwrap();
    rig.drbd().run(&["net-cut", RESOURCE, "--wait"]).unwrap();
    let _ = wait_for(Duration::from_secs(30), Duration::from_millis(20), || {
        !handler_results(&rig).is_empty()
    });
    let results = handler_results(&rig);
    assert_eq!(results, vec![(0, 7)], "{}", rig.report());
    let bmc = rig.bmc(Node::Beta).unwrap();
    assert_eq!(bmc.power_offs().len(), 1, "beta's BMC log:\n{}", bmc.log());
    assert!(bmc.power_on() == Some(false));
    let gone = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        tandem_tests::bmc::process_gone(rig.pair().daemon(Node::Beta).pid())
    });
    assert!(gone.is_ok(), "beta's tandemd survived its power off");
    // The answer came only after the power off was confirmed.
    let answered = rig
        .drbd()
        .history()
        .unwrap()
        .iter()
        .find(|e| e.get("event").and_then(Value::as_str) == Some("fence-peer-result"))
        .and_then(|e| e.get("t_ms").and_then(Value::as_u64))
        .unwrap();
    assert!(bmc.power_offs()[0] <= answered, "answered 7 before the power off");
    assert_eq!(node_field(&rig, Node::Alpha, "suspended_fencing"), Value::Bool(false));
    assert_eq!(
        rig.host(Node::Alpha).domstate(DOMAIN).unwrap().as_deref(),
        Some("running")
    );
    rig.check_invariants().unwrap();
}
