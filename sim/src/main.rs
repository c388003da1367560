//! `tandem-sim`: random fault schedules against two real cores.
//!
//! `tandem-sim --seeds N` runs seeds 0..N and ends with `schedules: N violations: V`;
//! `tandem-sim --seed S --trace` replays one schedule and prints its timeline.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;
use tandem_sim::{run_seed, Outcome};

struct Args {
    seeds: Option<u64>,
    seed: Option<u64>,
    start: u64,
    trace: bool,
    lab: bool,
    threads: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seeds: None,
        seed: None,
        start: 0,
        trace: false,
        lab: false,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            it.next()
                .ok_or(format!("{name} needs a number"))?
                .parse()
                .map_err(|e| format!("{name}: {e}"))
        };
        match arg.as_str() {
            "--seeds" => a.seeds = Some(num("--seeds")?),
            "--seed" => a.seed = Some(num("--seed")?),
            "--start" => a.start = num("--start")?,
            "--threads" => a.threads = num("--threads")?.max(1) as usize,
            "--trace" => a.trace = true,
            "--lab" => a.lab = true,
            "-h" | "--help" => {
                println!(
                    "usage: tandem-sim --seeds N [--start S] [--threads T]\n       tandem-sim --seed S [--trace]\n       tandem-sim --lab"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if a.seeds.is_none() && a.seed.is_none() && !a.lab {
        return Err("give --seeds N or --seed S (see --help)".into());
    }
    Ok(a)
}

/// Schedules run, fault kinds seen, events processed, failed outcomes.
type ThreadResult = (u64, BTreeMap<&'static str, u64>, u64, Vec<Outcome>);

fn print_failure(o: &Outcome) {
    println!("FAILED seed {}:", o.seed);
    for v in &o.violations {
        println!("  {v}");
    }
    let replay = tandem_sim::run_seed(o.seed, true);
    let tail = replay.trace.len().saturating_sub(60);
    println!("last events (replay with: tandem-sim --seed {} --trace):", o.seed);
    for l in &replay.trace[tail..] {
        println!("  {l}");
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tandem-sim: {e}");
            return ExitCode::from(2);
        }
    };
    if args.lab {
        let (lines, ok) = tandem_sim::lab::run();
        for l in lines {
            println!("{l}");
        }
        return if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    if let Some(seed) = args.seed {
        let o = run_seed(seed, true);
        if args.trace {
            for l in &o.trace {
                println!("{l}");
            }
        }
        println!("schedules: 1 violations: {}", o.violations.len());
        for v in &o.violations {
            println!("  {v}");
        }
        return if o.violations.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let n = args.seeds.unwrap_or(0);
    let started = Instant::now();
    let threads = args.threads.min(n.max(1) as usize);
    let results: Vec<ThreadResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads as u64)
            .map(|t| {
                let start = args.start;
                s.spawn(move || {
                    let mut faults = BTreeMap::new();
                    let mut events = 0;
                    let mut failed = Vec::new();
                    let mut count = 0;
                    let mut seed = start + t;
                    while seed < start + n {
                        let o = run_seed(seed, false);
                        for (k, v) in &o.stats.faults {
                            *faults.entry(*k).or_insert(0) += v;
                        }
                        events += o.stats.events;
                        count += 1;
                        if !o.violations.is_empty() {
                            failed.push(o);
                        }
                        seed += threads as u64;
                    }
                    (count, faults, events, failed)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut failed: Vec<Outcome> = Vec::new();
    let (mut count, mut events) = (0u64, 0u64);
    for (c, f, e, fl) in results {
        count += c;
        events += e;
        for (k, v) in f {
            *faults.entry(k).or_insert(0) += v;
        }
        failed.extend(fl);
    }
    failed.sort_by_key(|o| o.seed);
    println!("fault kinds over {count} schedules:");
    for (k, v) in &faults {
        println!("  {k:<16} {v}");
    }
    println!(
        "{count} schedules in {elapsed:.2} s: {:.0} schedules/s, {:.0} events/s, {threads} threads",
        count as f64 / elapsed.max(1e-9),
        events as f64 / elapsed.max(1e-9)
    );
    if let Some(first) = failed.first() {
        print_failure(first);
        let seeds: Vec<String> = failed.iter().take(20).map(|o| o.seed.to_string()).collect();
        println!("failing seeds: {}", seeds.join(" "));
    }
    println!("schedules: {count} violations: {}", failed.len());
    if failed.is_empty() && count == n {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
