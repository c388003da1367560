//! tandemd and whole hosts going away and coming back at awkward moments, on
//! two real libvirtd with QEMU, BMCs and the DRBD stand-in
//! (tests/src/virt_pair.rs): a daemon killed in the middle of a live
//! migration, and a host that boots while its peer stays dark.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::time::Duration;
use tandem_tests::status::{self, unix_ms_now};
use tandem_tests::{wait_for, FenceSetup, Node, VirtPair, VirtSetup};

const DOMAIN: &str = "vm1";

fn running(rig: &VirtPair, node: Node) -> bool {
    rig.host(node).domstate(DOMAIN).ok().flatten().as_deref() == Some("running")
}

fn allow_two_primaries(rig: &VirtPair, node: Node) -> Value {
    rig.drbd().node_state("r0", node).unwrap()["allow_two_primaries"].clone()
}

/// vm1 runs on alpha and is live-migrated to beta at 1 MiB/s; once beta
/// holds r0 Primary (inside the window), `victim`'s tandemd is SIGKILLed and
/// started again. Whatever the migration's outcome, vm1 must run on exactly
/// one host, from a Primary there, with the other host Secondary, the window
/// closed on both daemons and dual-primary off.
fn kill_tandemd_mid_migration(victim: Node) {
    let mut rig = VirtPair::with_domain_running(VirtSetup::default(), DOMAIN, Node::Alpha).expect("rig");
    let mut migration = rig
        .migrate_command(DOMAIN, Node::Alpha, &["--bandwidth", "1"])
        .unwrap()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let inside = wait_for(Duration::from_secs(20), Duration::from_millis(10), || {
        rig.role(Node::Beta).is_ok_and(|r| r == "Primary") && rig.host(Node::Beta).qemu_pid(DOMAIN).is_some()
    });
    if inside.is_err() {
        let _ = migration.kill();
        let _ = migration.wait();
        panic!("the migration window never opened\n{}", rig.report());
    }
    rig.pair_mut().restart(victim).unwrap();

    let out = migration.wait_with_output().unwrap();
    eprintln!(
        "virsh migrate after {victim}'s tandemd restarted: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    rig.wait_no_windows(Duration::from_secs(60)).unwrap();
    let (on_alpha, on_beta) = (running(&rig, Node::Alpha), running(&rig, Node::Beta));
    assert!(
        on_alpha != on_beta,
        "vm1 running on alpha: {on_alpha}, on beta: {on_beta}\n{}",
        rig.report()
    );
    if out.status.success() {
        assert!(on_beta, "virsh said the migration worked\n{}", rig.report());
    }
    let (runs, idle) = if on_beta {
        (Node::Beta, Node::Alpha)
    } else {
        (Node::Alpha, Node::Beta)
    };
    rig.wait_role(idle, "Secondary", Duration::from_secs(30)).unwrap();
    assert_eq!(rig.role(runs).unwrap(), "Primary");
    let off = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        Node::BOTH
            .iter()
            .all(|n| allow_two_primaries(&rig, *n) == Value::Bool(false))
    });
    assert!(off.is_ok(), "dual-primary stayed allowed\n{}", rig.report());
    rig.pair_mut().ensure_running().unwrap();
    rig.check_invariants().unwrap();
}

#[test]
fn the_source_tandemd_killed_mid_migration_loses_no_domain() {
    kill_tandemd_mid_migration(Node::Alpha);
}

#[test]
fn the_destination_tandemd_killed_mid_migration_loses_no_domain() {
    kill_tandemd_mid_migration(Node::Beta);
}

#[test]
fn a_host_booted_alone_waits_for_its_peer_and_fences_nobody() {
    let setup = VirtSetup {
        fence: Some(FenceSetup::default()),
        power_kills_host: true,
        ..VirtSetup::default()
    };
    let mut rig = VirtPair::with_domain_running(setup, DOMAIN, Node::Beta).expect("rig");
    std::thread::sleep(Duration::from_millis(1500));
    // The whole rack loses power; only alpha comes back.
    rig.lose_power(Node::Beta).unwrap();
    rig.lose_power(Node::Alpha).unwrap();
    let t0 = unix_ms_now();
    rig.power_on_and_boot(Node::Alpha).unwrap();

    // Well past dead_after and beta's fence delay.
    std::thread::sleep(Duration::from_secs(8));
    let v = rig.status(Node::Alpha).unwrap();
    eprintln!("alpha booted alone: {}", status::summary(&v));
    assert_eq!(status::peer_state(&v), Some("unknown"), "{v}");
    assert!(
        status::events_named(&v, "FenceStarted", t0).is_empty(),
        "alpha fenced after booting alone: {v}"
    );
    let beta_bmc = rig.bmc(Node::Beta).unwrap().log();
    assert_eq!(
        beta_bmc.lines().filter(|l| l.contains("set power 0")).count(),
        1,
        "only the rack's power cut may show: {beta_bmc}"
    );
    // vm1 last ran on beta, which alpha cannot see: nothing starts it here.
    assert_eq!(
        rig.host(Node::Alpha).domstate(DOMAIN).unwrap().as_deref(),
        Some("shut off")
    );
    let refused = rig.host(Node::Alpha).virsh(&["start", DOMAIN]).unwrap();
    assert!(!refused.status.success(), "virsh start vm1 worked on alpha alone");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("tandem"), "{why}");
    assert_eq!(rig.role(Node::Alpha).unwrap(), "Secondary");

    // Beta comes back: the pair is whole again and vm1 may start.
    rig.power_on_and_boot(Node::Beta).unwrap();
    rig.pair_mut().wait_healthy(Duration::from_secs(20)).unwrap();
    rig.host(Node::Alpha).virsh_ok(&["start", DOMAIN]).unwrap();
    assert_eq!(rig.role(Node::Alpha).unwrap(), "Primary");
    rig.check_invariants().unwrap();
}
