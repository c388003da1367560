//! `bench-failover`: failover time on the two-node lab (tests/src/virt_pair.rs,
//! as `make lab` builds it), default timings. Run by `scripts/bench-failover.sh`.
//!
//! `BENCH_RUNS` (10) times: a fresh pair, domain `db` started on beta, beta
//! powered off through its BMC (ipmitool; every process of beta dies), then on
//! alpha: power off -> PeerLost (detection), -> FenceStarted (fence delay; none
//! on the preferred node), -> FenceConfirmed (fence), -> `db` running in
//! alpha's libvirt (promote and start). Before the first power off it also
//! reads both tandemd's RSS and CPU time over 10 s idle with two domains.
//!
//! Prints one line per run and a table on stderr, and `NAME VALUE` lines on
//! stdout: `failover_ms_p50`, `failover_ms_max`, the breakdown's medians, and
//! `lab_idle_rss_kb` (the larger of the two daemons) and `lab_idle_cpu_pct`.

use anyhow::{bail, Result};
use std::time::{Duration, Instant};
use tandem_tests::bench::{env_num, percentile, usage};
use tandem_tests::libvirt::{domain_xml, uuid_v4};
use tandem_tests::status::{self, unix_ms_now};
use tandem_tests::{wait_for, FenceSetup, Node, VirtPair, VirtSetup};

struct Run {
    total: u64,
    detect: u64,
    delay: u64,
    fence: u64,
    start: u64,
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

fn one_run(measure_idle: bool, idle: &mut Option<(u64, f64)>) -> Result<Run> {
    let setup = VirtSetup {
        fence: Some(FenceSetup::default()),
        power_kills_host: true,
        extra_resources: 1,
        ..VirtSetup::default()
    };
    let rig = VirtPair::start_healthy(setup)?;
    rig.host(Node::Beta)
        .define(&domain_xml("db", &uuid_v4(), &["/dev/drbd/by-res/r1/0"]))?;
    rig.host(Node::Alpha)
        .define(&domain_xml("web", &uuid_v4(), &["/dev/drbd/by-res/r0/0"]))?;
    if wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        rig.host(Node::Alpha).domstate("db").ok().flatten().is_some()
    })
    .is_err()
    {
        bail!("db's definition never reached alpha");
    }
    rig.host(Node::Beta).virsh_ok(&["start", "db"])?;
    rig.host(Node::Alpha).virsh_ok(&["start", "web"])?;
    if measure_idle {
        std::thread::sleep(Duration::from_secs(2));
        let pids = Node::BOTH.map(|n| rig.pair().daemon(n).pid());
        let before = pids.map(|p| usage(p).unwrap_or((0, 0)));
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(10));
        let after = pids.map(|p| usage(p).unwrap_or((0, 0)));
        let secs = t.elapsed().as_secs_f64();
        let tick = 100.0; // USER_HZ on Linux
        let cpu = (0..2)
            .map(|i| (after[i].1.saturating_sub(before[i].1)) as f64 / tick / secs * 100.0)
            .fold(0.0, f64::max);
        let rss = after.iter().map(|a| a.0).max().unwrap_or(0);
        *idle = Some((rss, cpu));
    } else {
        std::thread::sleep(Duration::from_millis(1500));
    }

    let off = unix_ms_now();
    rig.power_off(Node::Beta)?;
    if wait_for(Duration::from_secs(30), Duration::from_millis(10), || {
        rig.host(Node::Alpha).domstate("db").ok().flatten().as_deref() == Some("running")
    })
    .is_err()
    {
        bail!("db never ran on alpha\n{}", rig.report());
    }
    let running = unix_ms_now();
    // The status file is rewritten every 200 ms.
    std::thread::sleep(Duration::from_millis(300));
    let v = rig.status(Node::Alpha)?;
    let at = |kind: &str| status::events_named(&v, kind, off).first().map(|e| e.unix_ms);
    let (Some(lost), Some(started), Some(confirmed)) = (at("PeerLost"), at("FenceStarted"), at("FenceConfirmed"))
    else {
        bail!("alpha's status lacks the failover events: {v}");
    };
    Ok(Run {
        total: running - off,
        detect: lost.saturating_sub(off),
        delay: started.saturating_sub(lost),
        fence: confirmed.saturating_sub(started),
        start: running.saturating_sub(confirmed),
    })
}

fn main() -> Result<()> {
    let runs = env_num("BENCH_RUNS", 10)?;
    let mut idle = None;
    let mut all = Vec::new();
    for i in 0..runs {
        let r = one_run(i == 0, &mut idle)?;
        eprintln!(
            "run {:>2}: {:>5} ms  (detect {:>4}, fence delay {:>4}, fence {:>4}, promote+start {:>4})",
            i + 1,
            r.total,
            r.detect,
            r.delay,
            r.fence,
            r.start
        );
        all.push(r);
    }
    let col = |f: fn(&Run) -> u64| all.iter().map(f).collect::<Vec<_>>();
    let total = col(|r| r.total);
    let max = total.iter().copied().max().unwrap_or(0);
    eprintln!(
        "failover (power off -> domain running on the survivor): median {} ms, max {max} ms",
        percentile(&sorted(total.clone()), 50.0)
    );
    println!("failover_ms_p50 {}", percentile(&sorted(total.clone()), 50.0));
    println!("failover_ms_max {max}");
    println!(
        "failover_detect_ms_p50 {}",
        percentile(&sorted(col(|r| r.detect)), 50.0)
    );
    println!(
        "failover_fence_delay_ms_p50 {}",
        percentile(&sorted(col(|r| r.delay)), 50.0)
    );
    println!("failover_fence_ms_p50 {}", percentile(&sorted(col(|r| r.fence)), 50.0));
    println!("failover_start_ms_p50 {}", percentile(&sorted(col(|r| r.start)), 50.0));
    if let Some((rss, cpu)) = idle {
        eprintln!("idle with two domains: tandemd RSS {rss} kB, CPU {cpu:.2}% (the larger of the two daemons)");
        println!("lab_idle_rss_kb {rss}");
        println!("lab_idle_cpu_pct {cpu:.2}");
    }
    Ok(())
}
