//! How long the DRBD side of a live migration takes through the daemon's
//! driver, against the stand-in: "prepare incoming" (allow dual-primary on
//! both sides, promote the destination) and "released" (demote the source,
//! both leave dual-primary), and how much of it is process spawning.
//!
//! Run by scripts/bench-drbd.sh:
//! `bench_drbd --bin-dir target/release [--runs 50]`; prints a table and
//! `RESULT name value` lines.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use tandem::core::{DrbdOp, ResourceName, Role};
use tandem::drbd::{DrbdDriver, DrbdOptions, Observations};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

struct Series {
    name: &'static str,
    ms: Vec<f64>,
}

impl Series {
    fn new(name: &'static str) -> Self {
        Series { name, ms: Vec::new() }
    }
    fn add(&mut self, d: Duration) {
        self.ms.push(d.as_secs_f64() * 1000.0);
    }
    fn p(&self, p: f64) -> f64 {
        let mut s = self.ms.clone();
        s.sort_by(f64::total_cmp);
        pct(&s, p)
    }
}

fn driver(bin: &std::path::Path, state: &std::path::Path, node: usize) -> DrbdDriver {
    let cfg = tandem::config::Drbd {
        drbdadm: bin.join("drbdadm"),
        drbdsetup: bin.join("drbdsetup"),
        resources: vec![ResourceName::from("r0")],
    };
    DrbdDriver::new(
        &cfg,
        DrbdOptions {
            env: vec![
                ("TANDEM_DRBD_STATE".into(), state.into()),
                ("TANDEM_DRBD_NODE".into(), node.to_string().into()),
            ],
            ..DrbdOptions::default()
        },
    )
}

async fn wait_role(obs: &mut Observations, role: Role) -> Result<(), String> {
    let r0 = ResourceName::from("r0");
    if obs.current().get(&r0).is_some_and(|o| o.role == role) {
        return Ok(());
    }
    let wait = async {
        while let Some((r, o)) = obs.next().await {
            if r == r0 && o.role == role {
                return Ok(());
            }
        }
        Err("observation stream ended".to_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .map_err(|_| "no observation within 10 s".to_owned())?
}

async fn spawn_once(program: &std::path::Path, state: &std::path::Path) -> Result<Duration, String> {
    let t = Instant::now();
    let out = tokio::process::Command::new(program)
        .arg("--version")
        .env("TANDEM_DRBD_STATE", state)
        .env("TANDEM_DRBD_NODE", "0")
        .output()
        .await
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!("{} --version failed", program.display()));
    }
    Ok(t.elapsed())
}

async fn run() -> Result<(), String> {
    let bin = PathBuf::from(arg("--bin-dir").ok_or("--bin-dir DIR (where drbdadm and drbdsetup are)")?);
    let runs: usize = arg("--runs").map_or(Ok(50), |r| r.parse()).map_err(|_| "--runs N")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let init = Command::new(bin.join("tandem-drbd-standin"))
        .args(["init", "--resource", "r0", "--hosts", "alpha,beta"])
        .args(["--fencing", "resource-and-stonith", "--primary", "0"])
        .env("TANDEM_DRBD_STATE", dir.path())
        .status()
        .map_err(|e| e.to_string())?;
    if !init.success() {
        return Err("stand-in init failed".into());
    }
    let hosts = [driver(&bin, dir.path(), 0), driver(&bin, dir.path(), 1)];
    let mut seen = [hosts[0].observations(), hosts[1].observations()];
    let r0 = ResourceName::from("r0");
    let allow = |a| DrbdOp::DualPrimary {
        resource: r0.clone(),
        allow: a,
    };
    let (mut prepare, mut prepare_seen, mut release, mut demote) = (
        Series::new("prepare (commands done)"),
        Series::new("prepare (Primary observed)"),
        Series::new("release (commands done)"),
        Series::new("release: demote alone"),
    );
    // The domain ping-pongs: odd runs migrate back.
    for i in 0..runs + 3 {
        let (src, dst) = if i % 2 == 0 { (0, 1) } else { (1, 0) };
        let t = Instant::now();
        hosts[dst].execute(&allow(true)).await.map_err(|e| e.to_string())?;
        hosts[src].execute(&allow(true)).await.map_err(|e| e.to_string())?;
        hosts[dst]
            .execute(&DrbdOp::Promote { resource: r0.clone() })
            .await
            .map_err(|e| e.to_string())?;
        let done = t.elapsed();
        wait_role(&mut seen[dst], Role::Primary).await?;
        let observed = t.elapsed();
        let t = Instant::now();
        hosts[src]
            .execute(&DrbdOp::Demote { resource: r0.clone() })
            .await
            .map_err(|e| e.to_string())?;
        let demoted = t.elapsed();
        hosts[src].execute(&allow(false)).await.map_err(|e| e.to_string())?;
        hosts[dst].execute(&allow(false)).await.map_err(|e| e.to_string())?;
        let released = t.elapsed();
        wait_role(&mut seen[src], Role::Secondary).await?;
        if i >= 3 {
            prepare.add(done);
            prepare_seen.add(observed);
            release.add(released);
            demote.add(demoted);
        }
    }
    let mut spawn = Series::new("spawn `drbdadm --version` (stand-in)");
    let mut real = Series::new("spawn `drbdadm --version` (real 9.22)");
    for _ in 0..runs {
        spawn.add(spawn_once(&bin.join("drbdadm"), dir.path()).await?);
        if let Ok(d) = spawn_once(std::path::Path::new("/usr/sbin/drbdadm"), dir.path()).await {
            real.add(d);
        }
    }
    let check = Command::new(bin.join("tandem-drbd-standin"))
        .arg("check")
        .env("TANDEM_DRBD_STATE", dir.path())
        .output()
        .map_err(|e| e.to_string())?;

    println!("DRBD migration steps through DrbdDriver + stand-in, {runs} runs");
    println!("{:<42} {:>9} {:>9}", "measure", "p50 ms", "p99 ms");
    for s in [&prepare, &prepare_seen, &release, &demote, &spawn, &real] {
        if !s.ms.is_empty() {
            println!("{:<42} {:>9.2} {:>9.2}", s.name, s.p(0.5), s.p(0.99));
        }
    }
    // Each step is one drbdadm process (the stand-in's drbdadm does the
    // drbdsetup part in-process; the real one spawns drbdsetup too).
    let share = |total: f64, spawns: f64| 100.0 * spawns * spawn.p(0.5) / total;
    println!(
        "process spawning: 3 drbdadm runs per prepare = {:.0}% of its p50, 3 per release = {:.0}%",
        share(prepare.p(0.5), 3.0),
        share(release.p(0.5), 3.0)
    );
    println!(
        "history invariants (Primary on both only with allow-two-primaries on both): {}",
        if check.status.success() { "held" } else { "BROKEN" }
    );
    for (name, v) in [
        ("drbd_prepare_ms_p50", prepare.p(0.5)),
        ("drbd_prepare_ms_p99", prepare.p(0.99)),
        ("drbd_prepare_observed_ms_p50", prepare_seen.p(0.5)),
        ("drbd_release_ms_p50", release.p(0.5)),
        ("drbd_release_ms_p99", release.p(0.99)),
        ("drbd_demote_ms_p50", demote.p(0.5)),
        ("drbd_spawn_ms_p50", spawn.p(0.5)),
    ] {
        println!("RESULT {name} {v:.3}");
    }
    if !check.status.success() {
        return Err(String::from_utf8_lossy(&check.stdout).into_owned());
    }
    Ok(())
}

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench_drbd: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run()) {
        eprintln!("bench_drbd: {e}");
        std::process::exit(1);
    }
}
