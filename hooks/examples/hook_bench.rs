//! Wall time of a program run, process start to exit, as libvirt sees a hook:
//! spawned with a file on stdin and stdout/stderr discarded, waited for.
//!
//! ```text
//! hook_bench RUNS STDIN-FILE PROGRAM [ARGS...]
//! ```
//!
//! Prints `p50_ms`, `p99_ms`, `max_ms` and `failures` (runs that did not exit 0).
//! Used by scripts/bench-hook.sh.

use std::fs::File;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [runs, stdin, program, rest @ ..] = args.as_slice() else {
        eprintln!("usage: hook_bench RUNS STDIN-FILE PROGRAM [ARGS...]");
        return ExitCode::from(2);
    };
    let Ok(runs) = runs.parse::<usize>() else {
        eprintln!("hook_bench: RUNS must be a number, not {runs:?}");
        return ExitCode::from(2);
    };
    let mut times = Vec::with_capacity(runs);
    let mut failures = 0;
    for _ in 0..runs {
        let input = match File::open(stdin) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("hook_bench: {stdin}: {e}");
                return ExitCode::from(1);
            }
        };
        let started = Instant::now();
        let status = Command::new(program)
            .args(rest)
            .stdin(Stdio::from(input))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let took = started.elapsed();
        match status {
            Ok(s) if s.success() => {}
            Ok(_) => failures += 1,
            Err(e) => {
                eprintln!("hook_bench: cannot run {program}: {e}");
                return ExitCode::from(1);
            }
        }
        times.push(took.as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    // Nearest-rank percentiles.
    let pct = |p: f64| -> f64 {
        let rank = ((p / 100.0) * times.len() as f64).ceil() as usize;
        times.get(rank.saturating_sub(1)).copied().unwrap_or(f64::NAN)
    };
    println!("p50_ms {:.3}", pct(50.0));
    println!("p99_ms {:.3}", pct(99.0));
    println!("max_ms {:.3}", times.last().copied().unwrap_or(f64::NAN));
    println!("failures {failures}");
    ExitCode::SUCCESS
}
