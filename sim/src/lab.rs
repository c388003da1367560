//! `tandem-sim --lab`: one live migration and one failover in the simulated
//! cluster, told as a timeline a newcomer can follow.

use crate::schedule::{Fault, Scenario};
use crate::world::World;
use tandem::core::Event;

/// A sentence for the events an operator cares about.
pub fn describe(e: &Event) -> Option<String> {
    Some(match e {
        Event::PeerOnline { rejoined_after_fence } => {
            if *rejoined_after_fence {
                "the fenced peer is back (new boot)".into()
            } else {
                "peer online".into()
            }
        }
        Event::PeerLost => "peer lost: no heartbeat on any link for 1000 ms".into(),
        Event::FenceStarted { level } => format!("fencing the peer through fence level {}", level + 1),
        Event::FenceLevelFailed { level, reason } => format!("fence level {} failed: {reason}", level + 1),
        Event::FenceRoundFailed { round, .. } => format!("every fence level failed (round {round}); retrying"),
        Event::FenceConfirmed => "fence device confirmed the peer is powered off".into(),
        Event::FailoverPlanned { domains } => {
            let names: Vec<&str> = domains.iter().map(|d| d.0.as_str()).collect();
            format!("taking over {}", names.join(", "))
        }
        Event::FailoverSkipped { domain, reason } => format!("NOT taking over {domain}: {reason}"),
        Event::DomainTakenOver { domain } => format!("{domain} taken over"),
        Event::WindowOpened { domain, .. } => format!("migration window for {domain} open: DRBD dual-primary"),
        Event::WindowClosed { domain, reason, .. } => {
            format!("migration window for {domain} closed ({reason}): single primary again")
        }
        Event::Refused { domain, reason } => format!("refused for {domain}: {reason}"),
        _ => return None,
    })
}

/// The lab's scenario: vm0 on node0, vm1 on node1; vm0 migrates to node1,
/// then node1 loses power.
pub fn scenario() -> Scenario {
    Scenario::basic(14_000)
        .at(1_000, Fault::Migrate { domain: 0 })
        .at(6_000, Fault::Crash(1))
}

/// Runs the lab and returns the lines to print and whether every invariant held.
pub fn run() -> (Vec<String>, bool) {
    let mut s = scenario();
    s.domains = vec![Some(0), Some(1)];
    s.resources = 2;
    let mut w = World::new(s, 1, false);
    w.enable_narration();
    let violations = w.run();
    let mut lines = vec![
        "tandem lab (simulated): two hosts, node0 and node1, two heartbeat links, DRBD resources r0 and r1".to_string(),
        "vm0 runs on node0 (r0 Primary there), vm1 on node1 (r1 Primary there); node0 is the preferred node"
            .to_string(),
        String::new(),
    ];
    let n = w.narration();
    for (t, line) in n {
        lines.push(format!("{:>6} ms  {line}", t));
    }
    let at = |needle: &str| n.iter().find(|(_, l)| l.contains(needle)).map(|(t, _)| *t);
    lines.push(String::new());
    if let (Some(a), Some(b)) = (at("virsh migrate"), at("switched over")) {
        lines.push(format!(
            "live migration of vm0: {} ms from `virsh migrate` to switch-over",
            b - a
        ));
    }
    if let (Some(o), Some(c)) = (at("window for vm0 open"), at("window for vm0 closed")) {
        lines.push(format!(
            "r0 was dual-primary for {} ms, only inside the migration window",
            c - o
        ));
    }
    if let (Some(crash), Some(lost), Some(fenced)) = (at("loses power"), at("peer lost"), at("confirmed the peer")) {
        let last = n
            .iter()
            .filter(|(_, l)| l.contains("taken over"))
            .map(|(t, _)| *t)
            .max()
            .unwrap_or(fenced);
        lines.push(format!(
            "failover: detected {} ms after the power loss, fenced {} ms later, all domains running {} ms after the power loss",
            lost - crash,
            fenced - lost,
            last - crash
        ));
    }
    if violations.is_empty() {
        lines.push("every safety invariant held at every step".into());
    } else {
        lines.extend(violations.iter().cloned());
    }
    (lines, violations.is_empty())
}
