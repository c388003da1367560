//! `bench-peer-link`: figures of the peer link, measured on two real `tandemd`
//! in two network namespaces (see `scripts/bench-peer-link.sh`, which builds
//! release binaries and runs this as root). Prints a table and merges
//! `detect_ms_p50`, `detect_ms_max`, `false_losses`, `idle_rss_kb`,
//! `idle_cpu_pct` and `soak_s` into `target/bench/results.json`.
//!
//! 1. Idle: VmRSS and CPU% of each daemon of an idle, healthy pair over 10 s.
//! 2. Detection: `BENCH_CUTS` (20) times, every link is cut both ways at a random
//!    phase of the heartbeat; the latency is from the moment a node's inbound
//!    cut was in place to the `PeerLost` event in its status (both nodes count).
//! 3. Soak: 30% loss both ways on link 0 for `BENCH_SOAK_S` (600) seconds, with
//!    both CPUs kept busy by two `yes > /dev/null`; every `PeerLost` is false.
//!
//! Environment: `TANDEMD_BIN` (the daemon to measure), `BENCH_SOAK_S`,
//! `BENCH_CUTS`, `BENCH_RESULTS` (default `target/bench/results.json`).

use anyhow::{bail, Context, Result};
use rand::Rng;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tandem_tests::bench::{env_num, percentile};
use tandem_tests::lab::LINKS;
use tandem_tests::status::{self, unix_ms_now, PeerWatch};
use tandem_tests::{cmd, Node, Pair, Timing};

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("pid {pid} is gone"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let get = |i: usize| -> Result<u64> {
        fields
            .get(i - 3)
            .context("short /proc/PID/stat")?
            .parse()
            .context("bad /proc/PID/stat")
    };
    Ok(get(14)? + get(15)?)
}

/// VmRSS in kB.
fn rss_kb(pid: u32) -> Result<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("pid {pid} is gone"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS in /proc/PID/status")?;
    line.split_whitespace()
        .nth(1)
        .context("bad VmRSS line")?
        .parse()
        .context("bad VmRSS value")
}

fn clock_ticks_per_s() -> Result<u64> {
    let out = cmd::run::<&str>("getconf", &["CLK_TCK"])?;
    out.trim().parse().context("bad CLK_TCK")
}

#[derive(Debug)]
struct Idle {
    rss_kb: [u64; 2],
    cpu_pct: [f64; 2],
}

fn idle(pair: &mut Pair, secs: u64) -> Result<Idle> {
    let hz = clock_ticks_per_s()?;
    let pids = Node::BOTH.map(|n| pair.daemon(n).pid());
    for pid in pids {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "tandemd" {
            bail!("pid {pid} is {comm:?}, not tandemd: cannot measure it");
        }
    }
    let start = Instant::now();
    let t0 = [cpu_ticks(pids[0])?, cpu_ticks(pids[1])?];
    std::thread::sleep(Duration::from_secs(secs));
    let t1 = [cpu_ticks(pids[0])?, cpu_ticks(pids[1])?];
    let wall = start.elapsed().as_secs_f64();
    pair.ensure_running()?;
    let pct = |i: usize| (t1[i].saturating_sub(t0[i])) as f64 / hz as f64 / wall * 100.0;
    Ok(Idle {
        rss_kb: [rss_kb(pids[0])?, rss_kb(pids[1])?],
        cpu_pct: [pct(0), pct(1)],
    })
}

/// One cut of every link; the detection latency of each node in ms.
fn one_cut(pair: &mut Pair, rng: &mut impl Rng) -> Result<[u64; 2]> {
    // A random phase against the 200 ms heartbeat.
    std::thread::sleep(Duration::from_millis(rng.gen_range(0..200)));
    let since = unix_ms_now();
    let mut cut_at = [0u64; 2];
    for node in Node::BOTH {
        pair.lab().isolate(node)?;
        cut_at[node.index()] = unix_ms_now();
    }
    let mut lat = [0u64; 2];
    for node in Node::BOTH {
        let (_, v) = pair.wait_status(node, Duration::from_secs(10), "peer lost after the cut", |v| {
            !status::events_named(v, "PeerLost", since).is_empty()
        })?;
        let ev = status::events_named(&v, "PeerLost", since);
        let at = ev.first().map_or(0, |e| e.unix_ms);
        lat[node.index()] = at.saturating_sub(cut_at[node.index()]);
    }
    pair.lab().heal_all()?;
    pair.wait_healthy(Duration::from_secs(15))?;
    // Let the arbiter and the control channel settle before the next cut.
    std::thread::sleep(Duration::from_millis(1000));
    Ok(lat)
}

/// Busy loops on every CPU, killed (by pid) when dropped.
struct Burners(Vec<Child>);

impl Burners {
    fn start(n: usize) -> Result<Burners> {
        let mut b = Burners(Vec::new());
        for _ in 0..n {
            let child = Command::new("yes")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start `yes` as CPU burner")?;
            b.0.push(child);
        }
        Ok(b)
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug)]
struct Soak {
    false_losses: u64,
    not_online_samples: usize,
    link0_down_samples: usize,
    samples: usize,
}

fn soak(pair: &mut Pair, secs: u64) -> Result<Soak> {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let since = unix_ms_now();
    let burners = Burners::start(cpus)?;
    for node in Node::BOTH {
        pair.lab().loss(0, node, 0.3)?;
    }
    let files = Node::BOTH
        .iter()
        .map(|n| (*n, pair.daemon(*n).status_file().to_path_buf()))
        .collect();
    let watch = PeerWatch::start(files, Duration::from_millis(50));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut next_report = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(500).min(end.saturating_duration_since(Instant::now())));
        pair.ensure_running()?;
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(60);
            eprintln!(
                "  soak: {} s left",
                end.saturating_duration_since(Instant::now()).as_secs()
            );
        }
    }
    let samples = watch.stop();
    drop(burners);
    pair.lab().heal(0)?;
    let mut false_losses = 0u64;
    for node in Node::BOTH {
        let v = pair.status(node)?;
        false_losses += status::events_named(&v, "PeerLost", since).len() as u64;
    }
    Ok(Soak {
        false_losses,
        not_online_samples: samples
            .iter()
            .filter(|s| s.peer_state.as_deref() != Ok("online"))
            .count(),
        link0_down_samples: samples
            .iter()
            .filter(|s| s.links_up.first() == Some(&Some(false)))
            .count(),
        samples: samples.len(),
    })
}

/// Reads `path` (a JSON object, if it exists), sets `updates` in it and writes
/// it back atomically.
fn merge_results(path: &Path, updates: Map<String, Value>) -> Result<()> {
    let mut obj = match std::fs::read_to_string(path) {
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => m,
            _ => bail!("{} exists but is not a JSON object; not overwriting it", path.display()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    obj.extend(updates);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(&Value::Object(obj))? + "\n";
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

fn main() -> Result<()> {
    let soak_s = env_num("BENCH_SOAK_S", 600)?;
    let cuts = env_num("BENCH_CUTS", 20)?;
    let results: PathBuf = match std::env::var_os("BENCH_RESULTS") {
        Some(p) if !p.is_empty() => p.into(),
        _ => tandem_tests::env::target_dir().join("bench").join("results.json"),
    };
    tandem_tests::preflight()?;
    let bin = tandem_tests::tandemd_bin()?;
    let timing = Timing::default();
    eprintln!(
        "bench-peer-link: {} ({} links, heartbeat {} ms, dead after {} ms); {cuts} cuts, soak {soak_s} s",
        bin.display(),
        LINKS,
        timing.heartbeat_interval_ms,
        timing.dead_after_ms
    );
    let mut pair = Pair::start(timing)?;
    pair.wait_healthy(Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(2));

    eprintln!("idle pair, 10 s ...");
    let idle = idle(&mut pair, 10)?;

    eprintln!("detection, {cuts} cuts of every link ...");
    let mut rng = rand::thread_rng();
    let mut lat = Vec::new();
    for i in 0..cuts {
        let l = one_cut(&mut pair, &mut rng)?;
        eprintln!("  cut {:2}: alpha {} ms, beta {} ms", i + 1, l[0], l[1]);
        lat.extend(l);
    }
    lat.sort_unstable();
    let p50 = percentile(&lat, 50.0);
    let max = lat.last().copied().unwrap_or(0);
    let min = lat.first().copied().unwrap_or(0);

    eprintln!("soak, 30% loss on link 0 both ways, CPUs busy, {soak_s} s ...");
    let soak = soak(&mut pair, soak_s)?;
    let exits = Node::BOTH.map(|n| pair.daemon_mut(n).stop(Duration::from_secs(3)));
    for (node, e) in Node::BOTH.iter().zip(exits) {
        let (status, in_time) = e?;
        if !status.success() || !in_time {
            eprintln!("warning: {node} stopped with {status} (in time: {in_time})");
        }
    }

    println!("peer link bench (tandemd {})", bin.display());
    println!("{:<44} {:>12}", "figure", "value");
    println!("{:<44} {:>12}", "detection p50 (ms)", p50);
    println!("{:<44} {:>12}", "detection max (ms)", max);
    println!("{:<44} {:>12}", "detection min (ms)", min);
    println!("{:<44} {:>12}", "detection samples (2 nodes x cuts)", lat.len());
    println!(
        "{:<44} {:>12}",
        format!("false PeerLost events ({soak_s} s soak)"),
        soak.false_losses
    );
    println!(
        "{:<44} {:>12}",
        "soak samples not online / total",
        format!("{}/{}", soak.not_online_samples, soak.samples)
    );
    println!(
        "{:<44} {:>12}",
        "soak samples with lossy link 0 down", soak.link0_down_samples
    );
    println!("{:<44} {:>12}", "idle RSS alpha (kB)", idle.rss_kb[0]);
    println!("{:<44} {:>12}", "idle RSS beta (kB)", idle.rss_kb[1]);
    println!("{:<44} {:>12.2}", "idle CPU alpha (% of one CPU)", idle.cpu_pct[0]);
    println!("{:<44} {:>12.2}", "idle CPU beta (% of one CPU)", idle.cpu_pct[1]);

    let cpu = idle.cpu_pct[0].max(idle.cpu_pct[1]);
    let mut updates = Map::new();
    updates.insert("detect_ms_p50".into(), json!(p50));
    updates.insert("detect_ms_max".into(), json!(max));
    updates.insert("false_losses".into(), json!(soak.false_losses));
    updates.insert("idle_rss_kb".into(), json!(idle.rss_kb[0].max(idle.rss_kb[1])));
    updates.insert("idle_cpu_pct".into(), json!((cpu * 100.0).round() / 100.0));
    updates.insert("soak_s".into(), json!(soak_s));
    merge_results(&results, updates)?;
    println!("merged into {}", results.display());
    Ok(())
}
