//! The named scenarios of the core's issue, each an ordinary test on the
//! simulated cluster: what an operator would check afterwards.

use tandem::core::{PeerState, Role};
use tandem_sim::{DeviceMode, Fault, Scenario, World};

fn world(s: Scenario) -> World {
    World::new(s, 42, true)
}

fn assert_clean(w: &World) {
    assert!(
        w.violations().is_empty(),
        "violations: {:?}\n{}",
        w.violations(),
        w.trace_lines().join("\n")
    );
}

/// vm0 and vm1 run on node0 and node1; all links cut at 3 s.
#[test]
fn symmetric_partition_with_working_fencing_leaves_one_survivor_running_everything() {
    let mut w = world(Scenario::basic(20_000).at(3_000, Fault::Partition));
    w.run();
    assert_clean(&w);
    // node0 is preferred: it fences at once, node1 would have waited 2 s.
    assert!(w.is_powered(0) && !w.is_powered(1));
    assert_eq!(w.runs_on(0), Some(0));
    assert_eq!(w.runs_on(1), Some(0));
    assert_eq!(w.stats.fences, 1);
}

#[test]
fn failing_fence_device_means_no_takeover_until_it_succeeds() {
    let mut s = Scenario::basic(40_000).at(3_000, Fault::Crash(1));
    s.fence_levels[1] = vec![DeviceMode::Fails];
    let mut w = world(s.at(
        25_000,
        Fault::FenceDevice {
            target: 1,
            level: 0,
            mode: DeviceMode::Works,
        },
    ));
    w.run_until(24_900);
    assert_clean(&w);
    assert_eq!(
        w.runs_on(1),
        None,
        "vm1 must not be taken over without a confirmed fence"
    );
    assert_eq!(w.role(1, 0), Role::Secondary);
    assert!(w.stats.fences >= 5, "fencing is retried: {} attempts", w.stats.fences);
    w.run();
    assert_clean(&w);
    assert_eq!(w.runs_on(1), Some(0), "taken over once the device works");
}

#[test]
fn peer_back_during_the_fence_delay_is_not_fenced() {
    // node1 stops hearing node0 (cut into node1 on both links); node0 still hears
    // node1. node1 is not preferred: it waits 2 s, and the links heal after 1.5 s.
    let s = Scenario::basic(12_000)
        .at(3_000, Fault::CutLink { link: 0, to: Some(1) })
        .at(3_000, Fault::CutLink { link: 1, to: Some(1) })
        .at(5_500, Fault::HealAll);
    let mut w = world(s);
    w.run();
    assert_clean(&w);
    assert!(
        w.trace_lines().iter().any(|l| l.contains("node1 event: PeerLost")),
        "node1 did lose its peer"
    );
    assert_eq!(w.stats.fences, 0);
    assert!(w.is_powered(0) && w.is_powered(1));
    assert_eq!(w.peer_state(1), Some(PeerState::Online));
    assert_eq!((w.runs_on(0), w.runs_on(1)), (Some(0), Some(1)));
}

#[test]
fn boot_without_the_peer_fences_nobody_and_starts_nothing_of_the_peer() {
    let mut s = Scenario::basic(20_000).at(5_000, Fault::Start { host: 0, domain: 1 });
    s.node1_powered = false;
    s.node1_start_ms = 1_000_000;
    let mut w = world(s);
    w.run();
    assert_clean(&w);
    assert_eq!(w.stats.fences, 0);
    assert_eq!(
        w.runs_on(1),
        None,
        "vm1 may run on the unseen peer: its start is refused"
    );
    assert!(w.trace_lines().iter().any(|l| l.contains("wait-for-all")));
    assert_eq!(w.runs_on(0), Some(0), "what ran here keeps running");
}

#[test]
fn migration_without_a_source_hook_is_closed_by_the_reconciler() {
    // The destination's qemu dies mid-migration: libvirt runs `release end` on
    // the destination only. The destination's daemon is restarting then, so the
    // hook reaches nobody and nothing tells the source: only deadlines close it.
    let mut s = Scenario::basic(80_000)
        .at(2_000, Fault::Migrate { domain: 0 })
        .at(2_800, Fault::RestartDaemon(1))
        .at(3_000, Fault::KillIncoming { domain: 0 });
    s.migration_ms = 3_000;
    let mut w = world(s);
    w.run_until(2_700);
    assert_eq!(w.role(0, 1), Role::Primary, "destination promoted for the migration");
    w.run_until(50_000);
    assert_clean(&w);
    assert!(
        w.windows(0).unwrap_or(0) >= 1,
        "the source still holds the window before its deadline"
    );
    w.run();
    assert_clean(&w);
    assert_eq!(w.windows(0), Some(0));
    assert_eq!(w.windows(1), Some(0));
    assert_eq!(w.runs_on(0), Some(0));
    assert_eq!((w.role(0, 0), w.role(0, 1)), (Role::Primary, Role::Secondary));
    assert!(
        !w.dual_primary(0, 0) && !w.dual_primary(0, 1),
        "dual-primary left on both"
    );
}

#[test]
fn destination_crash_mid_migration_keeps_the_domain_on_the_source() {
    let mut s = Scenario::basic(20_000)
        .at(2_000, Fault::Migrate { domain: 0 })
        .at(3_000, Fault::Crash(1));
    s.migration_ms = 3_000;
    let mut w = world(s);
    w.run();
    assert_clean(&w);
    assert_eq!(w.runs_on(0), Some(0));
    assert_eq!(w.runs_on(1), Some(0), "node1's own domain taken over after the fence");
    assert_eq!(w.windows(0), Some(0));
    assert!(!w.dual_primary(0, 0));
}

#[test]
fn source_crash_mid_migration_restarts_the_domain_on_the_destination() {
    let mut s = Scenario::basic(20_000)
        .at(2_000, Fault::Migrate { domain: 0 })
        .at(3_000, Fault::Crash(0));
    s.migration_ms = 3_000;
    let mut w = world(s);
    w.run();
    assert_clean(&w);
    assert!(!w.is_powered(0));
    assert_eq!(w.runs_on(0), Some(1), "vm0 restarted on the destination");
    assert_eq!(w.runs_on(1), Some(1));
    assert_eq!(w.windows(1), Some(0));
    assert!(!w.dual_primary(0, 1));
}

#[test]
fn live_migration_is_dual_primary_only_inside_the_window() {
    let mut s = Scenario::basic(10_000).at(2_000, Fault::Migrate { domain: 0 });
    s.migration_ms = 2_000;
    let mut w = world(s);
    w.run_until(1_999);
    assert!(!w.dual_primary(0, 0) && !w.dual_primary(0, 1));
    w.run_until(3_000);
    assert!(w.dual_primary(0, 0) && w.dual_primary(0, 1));
    assert_eq!((w.role(0, 0), w.role(0, 1)), (Role::Primary, Role::Primary));
    w.run();
    assert_clean(&w);
    assert_eq!(w.runs_on(0), Some(1));
    assert_eq!((w.role(0, 0), w.role(0, 1)), (Role::Secondary, Role::Primary));
    assert!(!w.dual_primary(0, 0) && !w.dual_primary(0, 1));
}

#[test]
fn second_start_on_the_other_host_is_refused() {
    let mut w = world(Scenario::basic(6_000).at(2_000, Fault::Start { host: 1, domain: 0 }));
    w.run();
    assert_clean(&w);
    assert_eq!(w.runs_on(0), Some(0));
    assert!(w
        .trace_lines()
        .iter()
        .any(|l| l.contains("refuses to start vm0: it runs on the peer")));
}

#[test]
fn replication_link_cut_outdates_the_peer_and_keeps_heartbeats() {
    // Link 0 carries DRBD; link 1 still carries heartbeats and the control channel.
    let mut w = world(Scenario::basic(8_000).at(2_000, Fault::CutLink { link: 0, to: None }));
    w.run();
    assert_clean(&w);
    assert_eq!(w.stats.fences, 0);
    assert!(w.trace_lines().iter().any(|l| l.contains("fence-peer handler exits 4")));
    assert_eq!((w.runs_on(0), w.runs_on(1)), (Some(0), Some(1)));
}

#[test]
fn two_thousand_random_schedules_hold_every_invariant() {
    let bad: Vec<(u64, Vec<String>)> = (0..2_000)
        .map(|seed| tandem_sim::run_seed(seed, false))
        .filter(|o| !o.violations.is_empty())
        .map(|o| (o.seed, o.violations))
        .collect();
    assert!(bad.is_empty(), "failing seeds: {bad:?}");
}
