//! `bench-status`: `tandemctl status --json` with 100 domains and 100 DRBD
//! resources, and tandemd's memory at that size. Run by `scripts/bench-status.sh`.
//!
//! The two-host rig (tests/src/virt_pair.rs) with resources r0..r99 in the
//! DRBD stand-in and domains d0..d99 (one disk each, r0..r99) defined on alpha
//! and copied to beta by tandem; d0..d`BENCH_RUNNING` (2) run on alpha. Once
//! both daemons list all 100 domains, `BENCH_RUNS` (30) times each: `tandemctl
//! status --json` on alpha (the whole document over D-Bus, parsed) and, as the
//! peer an admin runs today to see the same domains, `virsh list --all` on
//! alpha's libvirtd. Prints `NAME VALUE` lines on stdout: `status_json_ms_100`
//! (median), `status_json_ms_100_p99`, `virsh_list_ms_100`,
//! `status_vs_virsh_list` (ratio of medians), `rss_kb_100` (the larger
//! tandemd's VmRSS after 10 s idle at that size), `rss_anon_kb_100` (its
//! anonymous part) and `pss_kb_100` (shared pages divided among their users).

use anyhow::{bail, Context, Result};
use std::process::Command;
use std::time::{Duration, Instant};
use tandem_tests::bench::{env_num, percentile, usage};
use tandem_tests::libvirt::{domain_xml, uuid_v4};
use tandem_tests::virt_pair::workspace_bin;
use tandem_tests::{wait_for, Node, VirtPair, VirtSetup};

const SIZE: usize = 100;

fn timed(mut command: Command) -> Result<f64> {
    let t = Instant::now();
    let out = command.output().context("cannot run the command")?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!("failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(ms)
}

fn domains_listed(rig: &VirtPair, node: Node) -> usize {
    rig.status(node)
        .ok()
        .and_then(|v| v.get("domains").and_then(|d| d.as_array()).map(Vec::len))
        .unwrap_or(0)
}

fn main() -> Result<()> {
    let runs: usize = env_num("BENCH_RUNS", 30)?;
    let running: usize = env_num("BENCH_RUNNING", 2)?;
    let setup = VirtSetup {
        extra_resources: SIZE - 1,
        ..VirtSetup::default()
    };
    let t = Instant::now();
    let rig = VirtPair::start_healthy(setup)?;
    eprintln!("rig with {SIZE} resources up in {} s", t.elapsed().as_secs());
    for i in 0..SIZE {
        let disk = format!("/dev/drbd/by-res/r{i}/0");
        rig.host(Node::Alpha)
            .define(&domain_xml(&format!("d{i}"), &uuid_v4(), &[&disk]))?;
    }
    let all = wait_for(Duration::from_secs(120), Duration::from_millis(500), || {
        Node::BOTH.iter().all(|n| domains_listed(&rig, *n) == SIZE)
    });
    if all.is_err() {
        bail!(
            "the daemons list {} and {} domains, not {SIZE}\n{}",
            domains_listed(&rig, Node::Alpha),
            domains_listed(&rig, Node::Beta),
            rig.report()
        );
    }
    for i in 0..running.min(SIZE) {
        rig.host(Node::Alpha).virsh_ok(&["start", &format!("d{i}")])?;
    }
    std::thread::sleep(Duration::from_secs(10));
    for n in Node::BOTH {
        let pid = rig.pair().daemon(n).pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|t| t.trim().to_owned())
                .unwrap_or_default()
        };
        eprintln!(
            "{n}'s tandemd: RSS {} (anonymous {}, files {}), {} threads",
            field("VmRSS:"),
            field("RssAnon:"),
            field("RssFile:"),
            field("Threads:")
        );
    }
    let rss = Node::BOTH
        .iter()
        .map(|n| usage(rig.pair().daemon(*n).pid()).map(|u| u.0).unwrap_or(0))
        .max()
        .unwrap_or(0);
    // RSS counts every touched page of the ~57 shared libraries libvirt's
    // client pulls in; anonymous memory is tandemd's own.
    let kb = |file: &str, key: &str| -> u64 {
        Node::BOTH
            .iter()
            .map(|n| {
                let pid = rig.pair().daemon(*n).pid();
                std::fs::read_to_string(format!("/proc/{pid}/{file}"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix(key))
                            .and_then(|v| v.split_whitespace().next())
                            .and_then(|v| v.parse().ok())
                    })
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    };
    let (anon, pss) = (kb("status", "RssAnon:"), kb("smaps_rollup", "Pss:"));

    let tandemctl = workspace_bin("tandemctl")?;
    let bus = rig.bus(Node::Alpha).address().to_owned();
    let mut status = Vec::new();
    let mut virsh = Vec::new();
    for _ in 0..runs {
        let mut c = Command::new(&tandemctl);
        c.args(["status", "--json"]).env("DBUS_SYSTEM_BUS_ADDRESS", &bus);
        status.push(timed(c)?);
        let mut v = Command::new("virsh");
        v.arg("-c").arg(rig.host(Node::Alpha).uri()).args(["list", "--all"]);
        virsh.push(timed(v)?);
    }
    status.sort_by(f64::total_cmp);
    virsh.sort_by(f64::total_cmp);
    let (s50, s99, v50) = (
        percentile(&status, 50.0),
        percentile(&status, 99.0),
        percentile(&virsh, 50.0),
    );
    eprintln!(
        "{SIZE} domains, {SIZE} resources, {running} running: tandemctl status --json p50 {s50:.1} ms p99 {s99:.1} ms; \
         virsh list --all p50 {v50:.1} ms; tandemd RSS {rss} kB"
    );
    println!("status_json_ms_100 {s50:.2}");
    println!("status_json_ms_100_p99 {s99:.2}");
    println!("virsh_list_ms_100 {v50:.2}");
    println!("status_vs_virsh_list {:.3}", s50 / v50);
    println!("rss_kb_100 {rss}");
    println!("rss_anon_kb_100 {anon}");
    println!("pss_kb_100 {pss}");
    Ok(())
}
