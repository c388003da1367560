//! The safety invariants of DESIGN.md, checked against the simulated world's
//! ground truth (what the hypervisors run, what DRBD holds), never against what
//! a core believes.

use crate::schedule::DeviceMode;
use crate::world::{Ev, Vm, World};
use tandem::core::{DiskState, PeerState, Role};

/// Time allowed for a failover after a crash or a partition, with working fencing.
pub const FAILOVER_DEADLINE_MS: u64 = 12_000;

/// A domain must have run this long before a crash for the survivor to be
/// expected to know about it (two heartbeats).
const KNOWN_AFTER_MS: u64 = 400;

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Failover { survivor: usize },
    OneSurvivor,
}

#[derive(Debug, Clone)]
pub(crate) struct Expectation {
    kind: Kind,
    faults_at_creation: u64,
    /// Domains and the host each ran on, that must be running afterwards.
    domains: Vec<(usize, usize)>,
}

/// Invariants 1 and 2, after every event.
pub(crate) fn check_state(w: &mut World) {
    for d in 0..w.domain_names.len() {
        let running = (0..2)
            .filter(|&h| w.hosts[h].powered && matches!(w.hosts[h].vms.get(&d), Some(Vm::Running { .. })))
            .count();
        if running > 1 {
            w.violate(1, format!("vm{d} runs unpaused on both hosts"));
        }
    }
    for r in 0..w.drbd.len() {
        let res = &w.drbd[r];
        let both_primary = res.sides.iter().all(|s| s.up && s.role == Role::Primary);
        if !both_primary {
            continue;
        }
        let name = format!("r{r}");
        let agreed = (0..2).all(|h| window_covers(w, h, &name));
        if !agreed {
            w.violate(
                2,
                format!("{name} is Primary on both hosts outside a window both daemons agreed to"),
            );
        }
    }
}

fn window_covers(w: &World, h: usize, resource: &str) -> bool {
    // The domain vmN uses rN.
    let domain = format!("vm{}", resource.trim_start_matches('r'));
    match &w.hosts[h].daemon {
        Some(d) => d.core.open_windows().any(|(_, dom)| dom.0 == domain),
        None => w.hosts[h].persisted.windows.iter().any(|pw| pw.domain.0 == domain),
    }
}

/// Records which side holds writes the other lacks; both at once is a split brain.
pub(crate) fn track_writes(w: &mut World) {
    for r in 0..w.drbd.len() {
        if w.drbd[r].connected {
            continue;
        }
        for h in 0..2 {
            let s = &w.drbd[r].sides[h];
            let writes = s.up
                && s.role == Role::Primary
                && !s.frozen
                && w.hosts[h].powered
                && matches!(w.hosts[h].vms.get(&r), Some(Vm::Running { .. }));
            if writes {
                w.drbd[r].sides[h].ahead = true;
            }
        }
        if w.drbd[r].sides.iter().all(|s| s.ahead) {
            w.drbd[r].sides[0].ahead = false;
            w.violate(2, format!("r{r}: split brain, both hosts wrote while disconnected"));
        }
    }
}

/// Invariant 4: a promotion must not expose data older than the other side's.
pub(crate) fn check_promotion(w: &mut World, h: usize, r: usize) {
    if w.drbd[r].sides[1 - h].ahead {
        w.violate(
            4,
            format!("node{h} promoted r{r} although node{} holds newer writes", 1 - h),
        );
    }
}

fn fencing_works(w: &World, target: usize) -> bool {
    let levels = &w.scenario.fence_levels[target];
    levels.contains(&DeviceMode::Works) && !levels.contains(&DeviceMode::Hangs)
}

/// Whether the survivor must be able to take domain `d` over. Not when the
/// failing host's DRBD is frozen with its fence-peer handler waiting on the
/// survivor to outdate the disk: the survivor cannot know whether its "done"
/// reached the peer (which then wrote on), so outdated data stays outdated.
fn survivor_can_take(w: &World, survivor: usize, d: usize) -> bool {
    let res = &w.drbd[d];
    res.sides[survivor].disk == DiskState::UpToDate
        && !res.sides[1 - survivor].ahead
        && !res.sides[1 - survivor].frozen
        && !res.standalone
}

fn known_running(w: &World, h: usize) -> Vec<usize> {
    w.hosts[h]
        .vms
        .iter()
        .filter_map(|(&d, vm)| match vm {
            Vm::Running { since } if w.now.saturating_sub(*since) >= KNOWN_AFTER_MS => Some(d),
            _ => None,
        })
        .collect()
}

fn daemon_ready(w: &World, h: usize) -> bool {
    w.power_offs_in_flight[h] == 0
        && w.hosts[h].powered
        && w.hosts[h]
            .daemon
            .as_ref()
            .is_some_and(|d| d.heard_peer && d.core.peer_state() == PeerState::Online)
}

fn add(w: &mut World, e: Expectation) {
    w.checks.push(e);
    let i = w.checks.len() - 1;
    w.schedule(w.now + FAILOVER_DEADLINE_MS, Ev::Check(i));
}

/// Invariant 5: host `dead` is about to lose power.
pub(crate) fn expect_failover(w: &mut World, dead: usize) {
    let survivor = 1 - dead;
    if !w.hosts[dead].powered || !daemon_ready(w, survivor) || !fencing_works(w, dead) {
        return;
    }
    let domains = known_running(w, dead)
        .into_iter()
        .filter(|&d| survivor_can_take(w, survivor, d))
        .map(|d| (d, dead))
        .collect();
    let e = Expectation {
        kind: Kind::Failover { survivor },
        faults_at_creation: total_faults(w),
        domains,
    };
    add(w, e);
}

/// Invariant 6: every link is about to be cut.
pub(crate) fn expect_one_survivor(w: &mut World) {
    if !(daemon_ready(w, 0) && daemon_ready(w, 1) && fencing_works(w, 0) && fencing_works(w, 1)) {
        return;
    }
    let mut domains = Vec::new();
    for h in 0..2 {
        for d in known_running(w, h) {
            if survivor_can_take(w, 1 - h, d) {
                domains.push((d, h));
            }
        }
    }
    let e = Expectation {
        kind: Kind::OneSurvivor,
        faults_at_creation: total_faults(w),
        domains,
    };
    add(w, e);
}

fn total_faults(w: &World) -> u64 {
    w.stats.faults.values().sum()
}

pub(crate) fn check_expectation(w: &mut World, i: usize) {
    let Some(e) = w.checks.get(i).cloned() else {
        return;
    };
    // Only a quiet period proves anything: another fault may legitimately stop it.
    if total_faults(w) != e.faults_at_creation {
        return;
    }
    let survivor = match e.kind {
        Kind::Failover { survivor } => survivor,
        Kind::OneSurvivor => {
            let up: Vec<usize> = (0..2).filter(|&h| w.hosts[h].powered).collect();
            if up.len() != 1 {
                w.violate(6, format!("after a partition {} hosts are still powered", up.len()));
                return;
            }
            up[0]
        }
    };
    for (d, _) in e.domains {
        if !matches!(w.hosts[survivor].vms.get(&d), Some(Vm::Running { .. })) {
            w.violate(
                5,
                format!(
                    "vm{d} is not running on the survivor node{survivor} {FAILOVER_DEADLINE_MS} ms after the failure"
                ),
            );
        }
    }
}
