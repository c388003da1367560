//! `bench_blockdrbd RUNS BLOCK_DRBD`: wall time of `block-drbd add` and
//! `block-drbd remove`, spawn to exit, for RUNS domains with one DRBD disk each,
//! as libxl runs the script. The environment (the xenstore stand-in first on
//! PATH with TANDEM_XENSTORE_FILE, the DRBD stand-in, the bus) is set up by
//! scripts/bench-blockdrbd.sh. Between runs (not timed) the domain's xenstore
//! entries are written and removed as libxl would. Prints `add_p50_ms`,
//! `add_p99_ms`, `remove_p50_ms`, `remove_p99_ms`, `failures`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tandem_xenstore_standin::{canonical, Store};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(runs), Some(block)) = (args.get(1).and_then(|r| r.parse::<u32>().ok()), args.get(2)) else {
        return Err("usage: bench_blockdrbd RUNS BLOCK_DRBD".into());
    };
    let tree = PathBuf::from(std::env::var_os("TANDEM_XENSTORE_FILE").ok_or("TANDEM_XENSTORE_FILE is not set")?);
    let resource = std::env::var("BENCH_RESOURCE").unwrap_or_else(|_| "r0".into());
    let edit = |f: &dyn Fn(&mut Store) -> Result<(), String>| -> Result<(), String> {
        let mut s = Store::open(&tree, true).map_err(|e| e.to_string())?;
        f(&mut s)?;
        s.save().map_err(|e| e.to_string())
    };
    let (mut add, mut remove, mut failures) = (Vec::new(), Vec::new(), 0u32);
    for i in 0..runs {
        let domid = 1 + i % 30000;
        let be = format!("/local/domain/0/backend/vbd/{domid}/51712");
        let dom = format!("/local/domain/{domid}");
        edit(&|s| {
            for (k, v) in [
                (format!("{dom}/name"), format!("bench{domid}")),
                (format!("{be}/params"), resource.clone()),
                (format!("{be}/script"), "/etc/xen/scripts/block-drbd".into()),
                (format!("{be}/frontend-id"), domid.to_string()),
                (format!("{be}/mode"), "w".into()),
                (format!("{be}/type"), "phy".into()),
                (format!("{be}/state"), "2".into()),
            ] {
                let p = canonical(&k).map_err(|e| format!("{k}: {e:?}"))?;
                s.root.write(&p, v.as_bytes()).map_err(|e| format!("{k}: {e:?}"))?;
            }
            Ok(())
        })?;
        let xenbus_path = format!("backend/vbd/{domid}/51712");
        for (action, times) in [("add", &mut add), ("remove", &mut remove)] {
            let started = Instant::now();
            let status = Command::new(block)
                .arg(action)
                .env("XENBUS_PATH", &xenbus_path)
                .env("XENBUS_TYPE", "vbd")
                .env("XENBUS_BASE_PATH", "backend")
                .env("script", "/etc/xen/scripts/block-drbd")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .status()
                .map_err(|e| format!("{block}: {e}"))?;
            times.push(started.elapsed());
            if !status.success() {
                failures += 1;
            }
        }
        edit(&|s| {
            for p in [&be, &dom] {
                s.root.rm(p).map_err(|e| format!("{p}: {e:?}"))?;
            }
            Ok(())
        })?;
    }
    for (name, times) in [("add", &mut add), ("remove", &mut remove)] {
        times.sort_unstable();
        println!("{name}_p50_ms {:.3}", ms(percentile(times, 50)));
        println!("{name}_p99_ms {:.3}", ms(percentile(times, 99)));
    }
    println!("failures {failures}");
    Ok(())
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = (sorted.len() * p).div_ceil(100).saturating_sub(1).min(sorted.len() - 1);
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
