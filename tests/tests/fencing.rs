//! Acceptance tests of fencing: two real `tandemd` in two network namespaces,
//! each host with a real BMC (`ipmi_sim`) whose power off kills that host's
//! `tandemd`. When the links are cut, the survivor must fence its peer through
//! the peer's BMC, and record it.
//!
//! A node's BMC runs inside the *other* node's namespace on 127.0.0.1 (see
//! `tandem_tests::fenced`): the fencing node reaches it whatever happens to
//! the heartbeat links, like a BMC on a management network.
//!
//! Needs root, `ip`, `iptables`, `ipmi_sim` (openipmi) and `fence_ipmilan`
//! (fence-agents); scripts/deps.sh installs them. Each test builds its own
//! namespaces and BMCs, so they run in parallel.

// Test code: helpers beside the #[test] functions panic like they do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;
use tandem_tests::bmc;
use tandem_tests::fenced::{
    arbiter, fence_events, fence_history, FenceRecord, Level, BMC_PORTS, FENCE_IPMILAN, FENCE_KINDS,
};
use tandem_tests::status::{self, unix_ms_now, PeerWatch};
use tandem_tests::{FenceSetup, FencedPair, Node};

/// The default `timing.fence_delay_ms`: how long beta waits before fencing.
const FENCE_DELAY_MS: u64 = 2000;

fn healthy(setup: FenceSetup) -> FencedPair {
    FencedPair::start_healthy(setup, Duration::from_secs(10)).expect("both daemons up and seeing each other")
}

/// Waits until `pred` holds for `node`'s status (only `node` has to keep
/// running); on failure panics with both statuses, BMC and daemon logs.
fn wait(fp: &mut FencedPair, node: Node, timeout: Duration, what: &str, pred: impl FnMut(&Value) -> bool) -> Value {
    match fp.pair_mut().wait_node(node, timeout, what, pred) {
        Ok((_, v)) => v,
        Err(e) => panic!("{e:#}\n{}", fp.report()),
    }
}

fn kinds(events: &[status::Event]) -> Vec<&str> {
    events.iter().map(status::Event::kind).collect()
}

fn count(v: &Value, kind: &str, since: u64) -> usize {
    status::events_named(v, kind, since).len()
}

/// `node`'s `tandemd` was killed by its BMC: SIGKILL, the BMC shows power
/// off, and its log one power off that killed the process.
fn assert_killed_by_bmc(fp: &mut FencedPair, node: Node) {
    let pid = fp.pair().daemon(node).pid();
    assert!(
        fp.daemon_gone(node),
        "{node}'s tandemd (pid {pid}) still runs\n{}",
        fp.report()
    );
    let exit = fp
        .pair_mut()
        .daemon_mut(node)
        .wait_exit(Duration::from_secs(2))
        .unwrap()
        .expect("reaped");
    assert_eq!(
        exit.signal(),
        Some(9),
        "{node}'s tandemd ended by {exit}, not by the BMC's SIGKILL"
    );
    let b = fp.bmc(node);
    assert_eq!(b.power_on(), Some(false), "{node}'s BMC power:\n{}", b.log());
    assert_eq!(b.power_offs().len(), 1, "{node}'s BMC log:\n{}", b.log());
    assert!(
        b.log().contains(&format!("killed {pid}")),
        "{node}'s BMC log:\n{}",
        b.log()
    );
}

/// `node` was never fenced: its `tandemd` runs, its BMC was never told off.
fn assert_untouched(fp: &mut FencedPair, node: Node) {
    fp.pair_mut()
        .daemon_mut(node)
        .ensure_running()
        .unwrap_or_else(|e| panic!("{e:#}\n{}", fp.report()));
    let b = fp.bmc(node);
    assert_eq!(b.power_on(), Some(true), "{node}'s BMC power:\n{}", b.log());
    assert!(
        b.power_offs().is_empty(),
        "{node} was fenced; its BMC log:\n{}\n{}",
        b.log(),
        fp.report()
    );
}

/// Sleeps until `unix_ms`.
fn sleep_until(unix_ms: u64) {
    let now = unix_ms_now();
    if unix_ms > now {
        std::thread::sleep(Duration::from_millis(unix_ms - now));
    }
}

fn is_ok_off(r: &FenceRecord, level: u64, kind: &str) -> bool {
    r.node == "beta" && r.level == level && r.kind == kind && r.action == "off" && r.result == "off"
}

#[test]
fn symmetric_partition_the_preferred_node_fences_its_peer_through_the_bmc() {
    let mut fp = healthy(FenceSetup::default());
    let (alpha, beta) = (Node::Alpha, Node::Beta);
    let beta_pid = fp.pair().daemon(beta).pid();
    // The management network: beta's BMC answers on alpha's loopback only.
    assert!(bmc::answers(fp.pair().lab().ns(alpha), BMC_PORTS[1], Duration::from_secs(1)).unwrap());
    assert!(!bmc::answers(fp.pair().lab().ns(beta), BMC_PORTS[1], Duration::from_millis(200)).unwrap());

    let t0 = unix_ms_now();
    let cut = fp.partition().expect("cut every link both ways");
    let v = wait(&mut fp, alpha, Duration::from_secs(10), "beta fenced", |v| {
        status::peer_state(v) == Some("fenced")
    });
    eprintln!("alpha: {}", status::summary(&v));

    // Beta's process is gone, killed by its BMC.
    assert_killed_by_bmc(&mut fp, beta);

    // Alpha's events: lost, fence started at level 0 at once, confirmed.
    let events = fence_events(&v, &FENCE_KINDS, t0);
    assert_eq!(
        kinds(&events),
        ["PeerLost", "FenceStarted", "FenceConfirmed"],
        "alpha's events: {events:?}"
    );
    assert_eq!(events[1].event, "FenceStarted { level: 0 }", "{events:?}");
    assert_eq!(arbiter(&v), Some("fenced"), "{v}");
    let (lost, started, confirmed) = (events[0].unix_ms, events[1].unix_ms, events[2].unix_ms);
    assert!(
        started - lost < FENCE_DELAY_MS,
        "the preferred node waited {} ms before fencing",
        started - lost
    );

    // The history: one attempt, level 1, the BMC, off, confirmed off.
    let history = fence_history(&v);
    assert_eq!(history.len(), 1, "alpha's fence_history: {history:?}");
    let r = &history[0];
    assert!(is_ok_off(r, 1, "ipmi"), "{r:?}");
    assert_eq!(r.device, format!("127.0.0.1:{}", BMC_PORTS[1]), "{r:?}");
    assert!(
        r.unix_ms >= lost && r.unix_ms <= confirmed,
        "{r:?} outside {lost}..{confirmed}"
    );

    let kill = fp.bmc(beta).kills()[0];
    eprintln!(
        "alpha: PeerLost -> FenceConfirmed {} ms (PeerLost -> FenceStarted {} ms, BMC killed beta's \
         tandemd {} ms after PeerLost; the device took {} ms); cut -> PeerLost {} ms, \
         cut -> FenceConfirmed {} ms",
        confirmed - lost,
        started - lost,
        kill as i64 - lost as i64,
        r.duration_ms,
        lost - cut[alpha.index()],
        confirmed - cut[alpha.index()],
    );

    // Beta never fenced alpha, not even after its own fence delay had passed.
    sleep_until(lost + FENCE_DELAY_MS + 1000);
    assert_untouched(&mut fp, alpha);
    let vb = fp.status(beta).expect("beta's last status");
    assert_eq!(count(&vb, "FenceStarted", t0), 0, "beta started a fence: {vb}");
    eprintln!(
        "beta's last status before it died (pid {beta_pid}): {}",
        status::summary(&vb)
    );
    let v = fp.status(alpha).expect("status");
    assert_eq!(status::peer_state(&v), Some("fenced"), "{v}");
    assert_eq!(
        kinds(&fence_events(&v, &FENCE_KINDS, t0)),
        ["PeerLost", "FenceStarted", "FenceConfirmed"],
        "{v}"
    );
    assert_eq!(fence_history(&v).len(), 1, "{v}");
}

#[test]
fn an_unreachable_bmc_is_retried_with_backoff_until_it_answers() {
    // Beta's fence delay is raised out of the way: in this partition beta
    // would otherwise fence alpha once its 2 s are up (alpha cannot fence
    // it), which is what `the_other_node_fences_when_the_preferred_one_cannot`
    // checks. Rounds retry after 1 s, then 2 s (the maximum).
    let setup = FenceSetup {
        timing_extra: vec![("fence_delay_ms", 60_000), ("fence_backoff_max_ms", 2000)],
        levels: vec![Level::Ipmi {
            password: bmc::PASSWORD.into(),
            timeout_ms: 1000,
        }],
        ..FenceSetup::default()
    };
    let mut fp = healthy(setup);
    let (alpha, beta) = (Node::Alpha, Node::Beta);
    fp.stop_bmc(beta).expect("stop beta's BMC");
    assert!(!bmc::answers(fp.pair().lab().ns(alpha), BMC_PORTS[1], Duration::from_millis(200)).unwrap());
    let watch = PeerWatch::start(
        vec![(alpha, fp.pair().daemon(alpha).status_file().to_path_buf())],
        Duration::from_millis(50),
    );

    let t0 = unix_ms_now();
    fp.partition().expect("cut every link both ways");
    let v = wait(
        &mut fp,
        alpha,
        Duration::from_secs(15),
        "three failed rounds, backing off",
        |v| count(v, "FenceRoundFailed", t0) >= 3 && arbiter(v) == Some("fence-backoff"),
    );
    let t_restart = unix_ms_now();
    fp.restart_bmc(beta).expect("restart beta's BMC");

    eprintln!("alpha while beta's BMC was down: {}", status::summary(&v));
    assert_eq!(status::peer_state(&v), Some("lost"), "{v}");
    let events = fence_events(&v, &FENCE_KINDS, t0);
    for e in &events {
        eprintln!("  {} {}", e.unix_ms, e.event);
    }
    assert_eq!(
        kinds(&events),
        [
            "PeerLost",
            "FenceStarted",
            "FenceLevelFailed",
            "FenceRoundFailed",
            "FenceStarted",
            "FenceLevelFailed",
            "FenceRoundFailed",
            "FenceStarted",
            "FenceLevelFailed",
            "FenceRoundFailed",
        ],
        "{v}"
    );
    let history = fence_history(&v);
    assert_eq!(history.len(), 3, "{history:?}");
    for r in &history {
        assert!(
            r.node == "beta" && r.level == 1 && r.kind == "ipmi" && r.action == "off" && r.is_error(),
            "{r:?}"
        );
    }
    // Backoff: the second round starts 1 s after the first failed, the third 2 s after the second.
    let at = |i: usize| events[i].unix_ms;
    let gaps = [at(4) - at(3), at(7) - at(6)];
    eprintln!("waits between rounds: {gaps:?} ms");
    assert!(
        (900..1500).contains(&gaps[0]),
        "first backoff {} ms, expected 1000",
        gaps[0]
    );
    assert!(
        (1900..2500).contains(&gaps[1]),
        "second backoff {} ms, expected 2000",
        gaps[1]
    );
    // Beta is alive, unfenced.
    assert!(!fp.daemon_gone(beta), "beta died without a fence\n{}", fp.report());

    // The BMC answers again: the next round (2 s after the third failed) fences.
    let v = wait(
        &mut fp,
        alpha,
        Duration::from_secs(8),
        "beta fenced once its BMC is back",
        |v| status::peer_state(v) == Some("fenced"),
    );
    let samples = watch.stop();
    assert_killed_by_bmc(&mut fp, beta);
    let events = fence_events(&v, &FENCE_KINDS, t0);
    let n = events.len();
    assert_eq!(
        kinds(events.get(10..).unwrap_or_default()),
        ["FenceStarted", "FenceConfirmed"],
        "the first retry after the restart should fence: {events:?}"
    );
    let round_failed = events[n - 3].unix_ms;
    let (started, confirmed) = (events[n - 2].unix_ms, events[n - 1].unix_ms);
    assert!(started >= t_restart, "{events:?}");
    assert!(
        (1900..2500).contains(&(started - round_failed)),
        "last backoff {} ms, expected the 2000 ms maximum",
        started - round_failed
    );
    assert_eq!(arbiter(&v), Some("fenced"), "{v}");
    let history = fence_history(&v);
    let last = history.last().expect("a record");
    assert!(is_ok_off(last, 1, "ipmi"), "{history:?}");
    assert!(
        history[..history.len() - 1].iter().all(FenceRecord::is_error),
        "{history:?}"
    );
    eprintln!(
        "BMC back -> FenceStarted {} ms, -> FenceConfirmed {} ms",
        started - t_restart,
        confirmed - t_restart
    );

    // Never shown fenced while the BMC was down.
    let early: Vec<_> = samples
        .iter()
        .filter(|s| s.unix_ms < t_restart && s.peer_state.as_deref() == Ok("fenced"))
        .collect();
    assert!(samples.len() > 50, "{} samples", samples.len());
    assert!(
        early.is_empty(),
        "alpha showed beta fenced before its BMC was back: {early:?}"
    );

    // Beta, still in its (long) fence delay when it died, never fenced alpha.
    assert_untouched(&mut fp, alpha);
    let vb = fp.status(beta).expect("beta's last status");
    assert_eq!(arbiter(&vb), Some("fence-delay"), "{vb}");
    assert_eq!(count(&vb, "FenceStarted", t0), 0, "{vb}");
}

#[test]
fn a_failing_first_level_falls_through_to_fence_ipmilan() {
    assert!(
        Path::new(FENCE_IPMILAN).exists(),
        "{FENCE_IPMILAN} (Debian package fence-agents) must be installed: run scripts/deps.sh"
    );
    let setup = FenceSetup {
        levels: vec![
            Level::Ipmi {
                password: "not-the-password".into(),
                timeout_ms: 2000,
            },
            Level::fence_ipmilan(),
        ],
        ..FenceSetup::default()
    };
    let mut fp = healthy(setup);
    let (alpha, beta) = (Node::Alpha, Node::Beta);
    let t0 = unix_ms_now();
    fp.partition().expect("cut every link both ways");
    let v = wait(&mut fp, alpha, Duration::from_secs(15), "beta fenced by level 2", |v| {
        status::peer_state(v) == Some("fenced")
    });
    eprintln!("alpha: {}", status::summary(&v));
    assert_killed_by_bmc(&mut fp, beta);

    let events = fence_events(&v, &FENCE_KINDS, t0);
    for e in &events {
        eprintln!("  {} {}", e.unix_ms, e.event);
    }
    assert_eq!(
        kinds(&events),
        [
            "PeerLost",
            "FenceStarted",
            "FenceLevelFailed",
            "FenceStarted",
            "FenceConfirmed"
        ],
        "{v}"
    );
    assert_eq!(events[1].event, "FenceStarted { level: 0 }");
    assert!(events[2].event.starts_with("FenceLevelFailed { level: 0"), "{events:?}");
    assert_eq!(events[3].event, "FenceStarted { level: 1 }");

    let history = fence_history(&v);
    for r in &history {
        eprintln!("  history: {r:?}");
    }
    assert_eq!(history.len(), 2, "{history:?}");
    let (first, second) = (&history[0], &history[1]);
    assert!(
        first.node == "beta" && first.level == 1 && first.kind == "ipmi" && first.action == "off",
        "{first:?}"
    );
    assert!(
        first.is_error() && first.result.contains("password"),
        "level 1 should fail on the password: {first:?}"
    );
    assert!(
        !first.result.contains("not-the-password"),
        "a password in the history: {first:?}"
    );
    assert!(is_ok_off(second, 2, "agent"), "{second:?}");
    let lost = events[0].unix_ms;
    // fence_ipmilan powers off early and then waits (power_wait) before it
    // confirms: the kill, not the confirmation, must beat beta's fence delay.
    let kill = fp.bmc(beta).kills()[0];
    eprintln!(
        "alpha: PeerLost -> level 1 failed {} ms (device {} ms), -> beta killed by its BMC {} ms, \
         -> FenceConfirmed by fence_ipmilan {} ms (device {} ms)",
        events[2].unix_ms - lost,
        first.duration_ms,
        kill as i64 - lost as i64,
        events[4].unix_ms - lost,
        second.duration_ms
    );

    sleep_until(lost + FENCE_DELAY_MS + 1000);
    assert_untouched(&mut fp, alpha);
    let vb = fp.status(beta).expect("beta's last status");
    assert_eq!(count(&vb, "FenceStarted", t0), 0, "beta started a fence: {vb}");
}

#[test]
fn the_other_node_fences_when_the_preferred_one_cannot() {
    // Beta's BMC is down, so alpha (preferred) fails to fence; beta, after its
    // fence delay, fences alpha. A symmetric partition still ends with
    // exactly one survivor.
    let mut fp = healthy(FenceSetup {
        levels: vec![Level::Ipmi {
            password: bmc::PASSWORD.into(),
            timeout_ms: 1000,
        }],
        ..FenceSetup::default()
    });
    let (alpha, beta) = (Node::Alpha, Node::Beta);
    fp.stop_bmc(beta).expect("stop beta's BMC");
    let t0 = unix_ms_now();
    fp.partition().expect("cut every link both ways");
    let v = wait(&mut fp, beta, Duration::from_secs(10), "alpha fenced by beta", |v| {
        status::peer_state(v) == Some("fenced")
    });
    eprintln!("beta: {}", status::summary(&v));
    assert_killed_by_bmc(&mut fp, alpha);

    let events = fence_events(&v, &FENCE_KINDS, t0);
    assert_eq!(
        kinds(&events),
        ["PeerLost", "FenceStarted", "FenceConfirmed"],
        "beta's events: {events:?}"
    );
    let (lost, started, confirmed) = (events[0].unix_ms, events[1].unix_ms, events[2].unix_ms);
    eprintln!(
        "beta: PeerLost -> FenceStarted {} ms (fence delay {FENCE_DELAY_MS} ms), -> FenceConfirmed {} ms",
        started - lost,
        confirmed - lost
    );
    assert!(
        started - lost + 50 >= FENCE_DELAY_MS,
        "beta fenced {} ms after losing alpha, before its fence delay",
        started - lost
    );
    let history = fence_history(&v);
    assert_eq!(history.len(), 1, "{history:?}");
    let r = &history[0];
    assert!(
        r.node == "alpha" && r.level == 1 && r.kind == "ipmi" && r.result == "off",
        "{r:?}"
    );

    // Alpha tried and failed, and never claimed a fence.
    let va = fp.status(alpha).expect("alpha's last status");
    eprintln!("alpha's last status: {}", status::summary(&va));
    assert_ne!(status::peer_state(&va), Some("fenced"), "{va}");
    assert!(count(&va, "FenceLevelFailed", t0) >= 1, "{va}");
    assert!(fence_history(&va).iter().all(FenceRecord::is_error), "{va}");

    std::thread::sleep(Duration::from_millis(500));
    fp.pair_mut()
        .daemon_mut(beta)
        .ensure_running()
        .unwrap_or_else(|e| panic!("{e:#}\n{}", fp.report()));
    assert!(
        fp.bmc(beta).power_offs().is_empty(),
        "beta's BMC was told off: {}",
        fp.bmc(beta).log()
    );
}
