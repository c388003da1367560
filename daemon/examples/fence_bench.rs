//! tandem's side of scripts/bench-fence.sh: times IPMI fence actions against one
//! BMC through the daemon's own fence code, one session for all the runs (as the
//! daemon keeps it).
//!
//!   fence_bench --address 127.0.0.1 --port 9623 --user admin \
//!               --password-file /path/0600-file --action off --runs 10
//!
//! Prints one line per run and then `median_ms N`. For `off` the node is powered
//! on before each run, untimed, so every run really switches the power.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Instant;
use tandem::config::{IpmiDevice, IpmiPrivilege, Secret};
use tandem::fence::{Fencer, IpmiFencer};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Action {
    Status,
    Off,
    On,
    Reboot,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    #[arg(long, default_value_t = 623)]
    port: u16,
    #[arg(long, default_value = "admin")]
    user: String,
    #[arg(long)]
    password_file: PathBuf,
    #[arg(long, value_enum)]
    action: Action,
    #[arg(long, default_value_t = 10)]
    runs: usize,
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fence_bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let fencer = IpmiFencer::new(IpmiDevice {
        address: args.address,
        port: args.port,
        username: args.user,
        password: Secret::file(args.password_file),
        cipher_suite: IpmiDevice::DEFAULT_CIPHER_SUITE,
        privilege: IpmiPrivilege::Admin,
        timeout_ms: args.timeout_ms,
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut times = Vec::with_capacity(args.runs);
    rt.block_on(async {
        for run in 1..=args.runs {
            if matches!(args.action, Action::Off | Action::Reboot) {
                fencer.on().await?;
            }
            let started = Instant::now();
            let state = match args.action {
                Action::Status => fencer.status().await?,
                Action::Off => fencer.off().await?,
                Action::On => fencer.on().await?,
                Action::Reboot => fencer.reboot().await?,
            };
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            println!("run {run}: {ms:.2} ms, power {state}");
            times.push(ms);
        }
        anyhow::Ok(())
    })?;
    times.sort_by(f64::total_cmp);
    let median = match times.len() {
        0 => 0.0,
        n if n % 2 == 1 => times[n / 2],
        n => (times[n / 2 - 1] + times[n / 2]) / 2.0,
    };
    println!("median_ms {median:.2}");
    Ok(())
}
