//! A host loses power: its BMC (ipmi_sim) ends every process of the host
//! (tandemd, libvirtd, QEMU) and its DRBD replication link breaks; the survivor
//! fences it through that BMC and starts its domains from their synced
//! definitions. Two real libvirtd with QEMU (tests/src/virt_pair.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::time::{Duration, Instant};
use tandem_tests::bmc;
use tandem_tests::fenced::{arbiter, fence_history, Level};
use tandem_tests::libvirt::{domain_xml, uuid_v4};
use tandem_tests::status::{self, unix_ms_now};
use tandem_tests::virt_pair::{workspace_bin, RESOURCE_PATH};
use tandem_tests::{wait_for, FenceSetup, Node, VirtPair, VirtSetup};

fn running(rig: &VirtPair, node: Node, domain: &str) -> bool {
    rig.host(node).domstate(domain).ok().flatten().as_deref() == Some("running")
}

/// Waits until `pred` holds for `node`'s status; panics with the rig's report.
fn wait_status(
    rig: &VirtPair,
    node: Node,
    timeout: Duration,
    what: &str,
    mut pred: impl FnMut(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    let ok = wait_for(timeout, Duration::from_millis(50), || {
        rig.status(node)
            .map(|v| {
                let hit = pred(&v);
                last = v;
                hit
            })
            .unwrap_or(false)
    });
    assert!(
        ok.is_ok(),
        "{node}: {what}: not within {timeout:?}; last status {last}\n{}",
        rig.report()
    );
    last
}

/// Fencing with one IPMI level that gives up on a silent BMC after 1 s, and
/// rounds retried after 1 s, then 2 s.
fn quick_retry_fencing() -> VirtSetup {
    VirtSetup {
        fence: Some(FenceSetup {
            timing_extra: vec![("fence_backoff_max_ms", 2000)],
            levels: vec![Level::Ipmi {
                password: bmc::PASSWORD.into(),
                timeout_ms: 1000,
            }],
            ..FenceSetup::default()
        }),
        power_kills_host: true,
        ..VirtSetup::default()
    }
}

#[test]
fn a_host_powered_off_is_fenced_and_its_domain_runs_on_the_survivor() {
    let setup = VirtSetup {
        fence: Some(FenceSetup::default()),
        power_kills_host: true,
        ..VirtSetup::default()
    };
    let rig = VirtPair::start_healthy(setup).expect("rig");
    // Defined on beta only: tandem copies the definition to alpha.
    rig.host(Node::Beta)
        .define(&domain_xml("vm1", &uuid_v4(), &[RESOURCE_PATH]))
        .unwrap();
    let synced = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        rig.host(Node::Alpha).domstate("vm1").ok().flatten().is_some()
    });
    assert!(synced.is_ok(), "vm1's definition never reached alpha\n{}", rig.report());
    rig.host(Node::Beta).virsh_ok(&["start", "vm1"]).unwrap();
    let beta_qemu = rig.host(Node::Beta).qemu_pid("vm1").expect("beta's qemu");
    // Let a heartbeat carry "vm1 runs on beta" to alpha.
    std::thread::sleep(Duration::from_millis(1500));

    // beta's power goes, through its BMC, as an operator's ipmitool would do it.
    let cut = Instant::now();
    rig.power_off(Node::Beta).unwrap();
    assert!(
        bmc::process_gone(beta_qemu as u32),
        "beta's qemu survived the power off"
    );

    let back = wait_for(Duration::from_secs(30), Duration::from_millis(20), || {
        rig.host(Node::Alpha).domstate("vm1").ok().flatten().as_deref() == Some("running")
    });
    assert!(back.is_ok(), "vm1 does not run on alpha\n{}", rig.report());
    eprintln!("power off -> vm1 running on alpha: {} ms", cut.elapsed().as_millis());
    assert_eq!(rig.role(Node::Alpha).unwrap(), "Primary");
    // alpha fenced beta (its BMC said off) before it took over.
    let fenced = rig.bmc(Node::Beta).unwrap().log();
    assert!(
        fenced.lines().filter(|l| l.contains("set power 0")).count() >= 1,
        "{fenced}"
    );
    rig.check_invariants().unwrap();
}

#[test]
fn a_symmetric_partition_leaves_exactly_one_host_running_domains() {
    let setup = VirtSetup {
        fence: Some(FenceSetup::default()),
        power_kills_host: true,
        extra_resources: 1,
        ..VirtSetup::default()
    };
    let rig = VirtPair::start_healthy(setup).expect("rig");
    rig.host(Node::Alpha)
        .define(&domain_xml("web", &uuid_v4(), &["/dev/drbd/by-res/r0/0"]))
        .unwrap();
    rig.host(Node::Beta)
        .define(&domain_xml("db", &uuid_v4(), &["/dev/drbd/by-res/r1/0"]))
        .unwrap();
    let synced = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        rig.host(Node::Alpha).domstate("db").ok().flatten().is_some()
            && rig.host(Node::Beta).domstate("web").ok().flatten().is_some()
    });
    assert!(synced.is_ok(), "definitions were not copied\n{}", rig.report());
    rig.host(Node::Alpha).virsh_ok(&["start", "web"]).unwrap();
    rig.host(Node::Beta).virsh_ok(&["start", "db"]).unwrap();
    std::thread::sleep(Duration::from_millis(1500));

    // Both links cut both ways, and alpha's replication link with them.
    rig.pair().lab().cut_all().unwrap();
    rig.drbd().run(&["net-cut", "r0"]).unwrap();

    // alpha is the preferred node: it fences beta at once; beta, which waits its
    // fence delay, is powered off before it can fence alpha.
    let back = wait_for(Duration::from_secs(30), Duration::from_millis(20), || {
        rig.host(Node::Alpha).domstate("db").ok().flatten().as_deref() == Some("running")
    });
    assert!(back.is_ok(), "db does not run on alpha\n{}", rig.report());
    assert_eq!(
        rig.host(Node::Alpha).domstate("web").unwrap().as_deref(),
        Some("running")
    );
    let beta_bmc = rig.bmc(Node::Beta).unwrap().log();
    let alpha_bmc = rig.bmc(Node::Alpha).unwrap().log();
    assert!(beta_bmc.contains("set power 0"), "beta was not powered off: {beta_bmc}");
    assert!(
        !alpha_bmc.contains("set power 0"),
        "alpha was powered off too: {alpha_bmc}"
    );
    assert!(
        tandem_tests::bmc::process_gone(rig.pair().daemon(Node::Beta).pid()),
        "beta's tandemd still runs"
    );
    // Nothing of beta runs any more: its network namespace is empty but for alpha's BMC.
    let left: Vec<i32> = rig
        .pair()
        .lab()
        .ns(Node::Beta)
        .pids()
        .unwrap()
        .into_iter()
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() != "ipmi_sim"))
        .collect();
    assert!(left.is_empty(), "processes of beta survived its power off: {left:?}");
    rig.check_invariants().unwrap();
}

#[test]
fn an_unreachable_bmc_holds_the_takeover_until_it_answers_again() {
    let mut rig = VirtPair::with_domain_running(quick_retry_fencing(), "vm1", Node::Beta).expect("rig");
    std::thread::sleep(Duration::from_millis(1500));
    let t0 = unix_ms_now();
    // The power supply fails and takes the BMC with it.
    rig.lose_power_and_bmc(Node::Beta).unwrap();

    let v = wait_status(
        &rig,
        Node::Alpha,
        Duration::from_secs(20),
        "two failed fence rounds",
        |v| status::events_named(v, "FenceRoundFailed", t0).len() >= 2 && arbiter(v) == Some("fence-backoff"),
    );
    eprintln!("alpha while beta's BMC is silent: {}", status::summary(&v));
    // No takeover without a confirmed fence, and the status says why.
    assert!(
        !running(&rig, Node::Alpha, "vm1"),
        "vm1 started on alpha without a fence\n{}",
        rig.report()
    );
    assert_eq!(rig.role(Node::Alpha).unwrap(), "Secondary");
    assert_eq!(status::peer_state(&v), Some("lost"), "{v}");
    let history = fence_history(&v);
    assert!(history.len() >= 2, "{history:?}");
    for r in &history {
        assert!(r.node == "beta" && r.action == "off" && r.is_error(), "{r:?}");
    }
    // What the operator sees at 3 a.m.
    let screen = std::process::Command::new(workspace_bin("tandemctl").unwrap())
        .arg("status")
        .env("DBUS_SYSTEM_BUS_ADDRESS", rig.bus(Node::Alpha).address())
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&screen.stdout);
    for expected in [
        "Peer    beta: lost",
        "fencing FAILED, retrying (no takeover until a device confirms power off)",
        "last attempt: off beta error:",
    ] {
        assert!(screen.contains(expected), "missing {expected:?} in:\n{screen}");
    }

    rig.restart_bmc(Node::Beta).unwrap();
    let back = wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        running(&rig, Node::Alpha, "vm1")
    });
    assert!(
        back.is_ok(),
        "vm1 does not run on alpha after beta's BMC came back\n{}",
        rig.report()
    );
    let v = rig.status(Node::Alpha).unwrap();
    assert_eq!(status::peer_state(&v), Some("fenced"), "{v}");
    let last = fence_history(&v).pop().expect("a fence record");
    assert!(!last.is_error() && last.result == "off", "{last:?}");
    assert_eq!(rig.role(Node::Alpha).unwrap(), "Primary");
    rig.check_invariants().unwrap();
}

#[test]
fn a_fenced_host_powered_on_again_rejoins_and_nothing_moves_back() {
    let setup = VirtSetup {
        fence: Some(FenceSetup::default()),
        power_kills_host: true,
        ..VirtSetup::default()
    };
    let mut rig = VirtPair::with_domain_running(setup, "vm1", Node::Beta).expect("rig");
    std::thread::sleep(Duration::from_millis(1500));
    rig.power_off(Node::Beta).unwrap();
    let back = wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        running(&rig, Node::Alpha, "vm1")
    });
    assert!(back.is_ok(), "vm1 does not run on alpha\n{}", rig.report());

    // Beta gets power again and boots: libvirtd, DRBD, tandemd.
    rig.power_on_and_boot(Node::Beta).unwrap();
    wait_status(&rig, Node::Beta, Duration::from_secs(15), "beta sees alpha", |v| {
        status::peer_state(v) == Some("online")
    });
    wait_status(
        &rig,
        Node::Alpha,
        Duration::from_secs(15),
        "alpha sees beta again",
        |v| status::peer_state(v) == Some("online"),
    );
    // Its disk was resynced from alpha's, which went on being written.
    let beta = rig.drbd().node_state("r0", Node::Beta).unwrap();
    assert_eq!(beta["disk"], "UpToDate", "{beta}");
    assert_eq!(beta["cstate"], "Connected", "{beta}");
    let resynced = rig
        .drbd()
        .history()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "connection" && e["resync"]["target"] == Node::Beta.index() as u64);
    assert!(resynced, "no resync of beta\n{}", rig.report());

    // Nothing moves back by itself: vm1 stays on alpha, defined but off on beta.
    std::thread::sleep(Duration::from_secs(5));
    assert!(running(&rig, Node::Alpha, "vm1"), "{}", rig.report());
    assert_eq!(
        rig.host(Node::Beta).domstate("vm1").unwrap().as_deref(),
        Some("shut off")
    );
    assert_eq!(rig.role(Node::Alpha).unwrap(), "Primary");
    assert_eq!(rig.role(Node::Beta).unwrap(), "Secondary");
    // And alpha was never fenced by the returning beta.
    let alpha_bmc = rig.bmc(Node::Alpha).unwrap().log();
    assert!(!alpha_bmc.contains("set power 0"), "{alpha_bmc}");
    rig.check_invariants().unwrap();
}
