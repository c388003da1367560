//! `bench-failover-fence`: how fast the survivor of a symmetric partition
//! fences its peer, on two real `tandemd` in two network namespaces with real
//! BMCs (`ipmi_sim`, whose power off kills the peer's `tandemd`; see
//! `tandem_tests::fenced`). Run by `scripts/bench-failover-fence.sh`, which
//! builds a release `tandemd` and records the figures.
//!
//! `BENCH_RUNS` (10) times: a fresh pair (default timing: heartbeats every
//! 200 ms, lost after 1000 ms, fence delay 2000 ms; one IPMI fence level),
//! healthy; every link cut both ways at a random phase of the heartbeat; then
//! on alpha (the preferred node, the survivor) the time from `PeerLost` to
//! `FenceConfirmed` in its status events, and from the moment its inbound cut
//! was in place to `FenceConfirmed`. Each run also checks the outcome: beta's
//! `tandemd` killed by its BMC, alpha's untouched.
//!
//! Prints one line per run and a table on stderr, and the figures as
//! `NAME VALUE` lines on stdout: `fence_confirm_ms_p50`, `fence_confirm_ms_max`
//! (PeerLost -> FenceConfirmed), `failover_cut_to_fence_ms_p50`,
//! `failover_cut_to_fence_ms_max` (cut -> FenceConfirmed).

use anyhow::{bail, Context, Result};
use rand::Rng;
use std::time::Duration;
use tandem_tests::bench::{env_num, percentile};
use tandem_tests::fenced::{fence_events, FENCE_KINDS};
use tandem_tests::status::{self, unix_ms_now};
use tandem_tests::{FenceSetup, FencedPair, Node};

#[derive(Debug, Clone, Copy)]
struct Run {
    /// PeerLost -> FenceConfirmed on alpha.
    confirm_ms: u64,
    /// alpha's inbound cut in place -> FenceConfirmed.
    cut_ms: u64,
    /// PeerLost -> the BMC saw beta's tandemd die.
    kill_ms: i64,
}

fn one_run() -> Result<Run> {
    let mut fp = FencedPair::start_healthy(FenceSetup::default(), Duration::from_secs(10))?;
    let interval = fp.setup().timing.heartbeat_interval_ms;
    std::thread::sleep(Duration::from_millis(rand::thread_rng().gen_range(0..interval)));
    let t0 = unix_ms_now();
    let cut = fp.partition()?;
    let waited = fp
        .pair_mut()
        .wait_node(Node::Alpha, Duration::from_secs(10), "beta fenced", |v| {
            status::peer_state(v) == Some("fenced")
        });
    let v = match waited {
        Ok((_, v)) => v,
        Err(e) => bail!("{e:#}\n{}", fp.report()),
    };
    let events = fence_events(&v, &FENCE_KINDS, t0);
    let kinds: Vec<&str> = events.iter().map(status::Event::kind).collect();
    if kinds != ["PeerLost", "FenceStarted", "FenceConfirmed"] {
        bail!("alpha's events after the cut: {events:?}\n{}", fp.report());
    }
    let (lost, confirmed) = (events[0].unix_ms, events[2].unix_ms);
    if !fp.daemon_gone(Node::Beta) {
        bail!("alpha confirmed the fence but beta's tandemd runs\n{}", fp.report());
    }
    // Past beta's fence delay: beta must not have fenced alpha.
    std::thread::sleep(Duration::from_millis(
        (lost + 2500).saturating_sub(unix_ms_now()).min(3000),
    ));
    fp.pair_mut().daemon_mut(Node::Alpha).ensure_running()?;
    if !fp.bmc(Node::Alpha).power_offs().is_empty() {
        bail!("beta fenced alpha too\n{}", fp.report());
    }
    let kill = fp
        .bmc(Node::Beta)
        .kills()
        .first()
        .copied()
        .context("beta's BMC log shows no kill")?;
    Ok(Run {
        confirm_ms: confirmed.saturating_sub(lost),
        cut_ms: confirmed.saturating_sub(cut[Node::Alpha.index()]),
        kill_ms: kill as i64 - lost as i64,
    })
}

fn main() -> Result<()> {
    let runs = env_num("BENCH_RUNS", 10)?;
    if runs == 0 {
        bail!("BENCH_RUNS must be at least 1");
    }
    let mut results = Vec::new();
    for i in 1..=runs {
        let r = one_run().with_context(|| format!("run {i} of {runs}"))?;
        eprintln!(
            "run {i:>2}: PeerLost -> FenceConfirmed {:>4} ms, cut -> FenceConfirmed {:>5} ms, \
             PeerLost -> beta killed {:>4} ms",
            r.confirm_ms, r.cut_ms, r.kill_ms
        );
        results.push(r);
    }
    let mut confirm: Vec<u64> = results.iter().map(|r| r.confirm_ms).collect();
    let mut cut: Vec<u64> = results.iter().map(|r| r.cut_ms).collect();
    confirm.sort_unstable();
    cut.sort_unstable();
    let max = |v: &[u64]| v.last().copied().unwrap_or(0);
    let figures = [
        ("fence_confirm_ms_p50", percentile(&confirm, 50.0)),
        ("fence_confirm_ms_max", max(&confirm)),
        ("failover_cut_to_fence_ms_p50", percentile(&cut, 50.0)),
        ("failover_cut_to_fence_ms_max", max(&cut)),
    ];
    eprintln!("{:<44} {:>8}", format!("over {runs} runs"), "ms");
    eprintln!("{:<44} {:>8}", "PeerLost -> FenceConfirmed p50", figures[0].1);
    eprintln!("{:<44} {:>8}", "PeerLost -> FenceConfirmed max", figures[1].1);
    eprintln!("{:<44} {:>8}", "cut -> FenceConfirmed p50", figures[2].1);
    eprintln!("{:<44} {:>8}", "cut -> FenceConfirmed max", figures[3].1);
    for (name, value) in figures {
        println!("{name} {value}");
    }
    Ok(())
}
