//! `tandemctl`: the operator's command line.

mod daemon;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tandem::config;
use tandem::fence::{fence_direct, FenceAction, FenceLevels, PowerState};
use tandem::net::write_new_key;

#[derive(Debug, Parser)]
#[command(name = "tandemctl", version, about = "Operate a tandem cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a new random cluster key (mode 0600); copy the same file to both nodes.
    Keygen {
        /// Where to write it.
        #[arg(default_value = "/etc/tandem/authkey")]
        path: PathBuf,
        /// Replace an existing key (both nodes must then get the new one).
        #[arg(long)]
        force: bool,
    },
    /// Fence a node: by default the running daemon powers off its peer through
    /// the peer's fence levels and waits for the confirmation.
    Fence {
        /// The node, as named in the configuration.
        node: String,
        /// With --direct: what to do (the daemon only powers off).
        #[arg(long, value_enum)]
        action: Option<ActionArg>,
        /// How long to wait for the daemon's confirmation, in seconds.
        #[arg(long, default_value_t = 120)]
        wait: u64,
        /// Straight from the configuration, without a daemon: to test a fence
        /// setup before the cluster runs (like `fence_ipmilan -o status`).
        #[arg(long)]
        direct: bool,
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Live-migrate a domain that runs here to the peer (through the daemon,
    /// which checks and opens the migration window as for `virsh migrate`).
    Migrate {
        domain: String,
        /// How long to wait for the migration, in seconds.
        #[arg(long, default_value_t = 600)]
        wait: u64,
    },
    /// Start a domain on this host, through the daemon (the same checks as a
    /// `virsh start` through the hook).
    Start {
        domain: String,
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Stop a domain that runs on this host, through the daemon.
    Stop {
        domain: String,
        /// At once, like `virsh destroy`, instead of asking the guest to shut down.
        #[arg(long)]
        force: bool,
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a configuration; every error is printed with file, line and column.
    Check {
        #[arg(default_value = config::DEFAULT_PATH)]
        file: PathBuf,
        /// Fragments directory (default: tandem.d beside FILE, when it exists).
        #[arg(long)]
        config_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ActionArg {
    Status,
    Off,
    On,
    Reboot,
}

impl From<ActionArg> for FenceAction {
    fn from(a: ActionArg) -> Self {
        match a {
            ActionArg::Status => FenceAction::Status,
            ActionArg::Off => FenceAction::Off,
            ActionArg::On => FenceAction::On,
            ActionArg::Reboot => FenceAction::Reboot,
        }
    }
}

/// `tandemctl fence NODE --direct`. Exit codes as fence-agents: 0 success (for
/// status: on), 2 status off, 1 failure.
fn fence(node: &str, action: FenceAction, config_path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let dir = config_path.parent().map(|p| p.join("tandem.d")).filter(|p| p.is_dir());
    let cfg = config::load(config_path, dir.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let target = cfg
        .node_by_name(node)
        .ok_or_else(|| anyhow::anyhow!("no node {node:?} in {}", config_path.display()))?;
    if target.fence.is_empty() {
        anyhow::bail!("node {node} has no fence levels in {}", config_path.display());
    }
    let levels = FenceLevels::new(target.name.clone(), &target.fence);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = rt.block_on(fence_direct(&levels, action))?;
    let state = match outcome.state {
        PowerState::On => "on",
        PowerState::Off => "off",
    };
    println!(
        "{node}: {} done, power {state} (confirmed by fence level {}, {} ms)",
        action.as_str(),
        outcome.level,
        outcome.duration.as_millis()
    );
    Ok(match (action, outcome.state) {
        (FenceAction::Status, PowerState::Off) => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Fence {
            node,
            action,
            wait,
            direct,
            config,
        } => {
            if direct {
                return fence(&node, action.unwrap_or(ActionArg::Status).into(), &config);
            }
            match action {
                None | Some(ActionArg::Off) => daemon::fence(&node, std::time::Duration::from_secs(wait)),
                Some(other) => anyhow::bail!(
                    "the daemon only powers its peer off; --action {} needs --direct",
                    FenceAction::from(other).as_str()
                ),
            }
        }
        Command::Migrate { domain, wait } => daemon::migrate(&domain, std::time::Duration::from_secs(wait)),
        Command::Start { domain, wait } => daemon::start(&domain, std::time::Duration::from_secs(wait)),
        Command::Stop { domain, force, wait } => daemon::stop(&domain, force, std::time::Duration::from_secs(wait)),
        Command::Keygen { path, force } => {
            let key = write_new_key(&path, force).with_context(|| "keygen".to_string())?;
            println!(
                "wrote {} (mode 0600, fingerprint {})",
                path.display(),
                key.fingerprint()
            );
            println!("copy it to the other node, to the path its configuration names (cluster.authkey)");
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check { file, config_dir },
        } => {
            let dir = config_dir
                .or_else(|| file.parent().map(|p| p.join("tandem.d")))
                .filter(|p| p.is_dir());
            match config::load(&file, dir.as_deref()) {
                Ok(cfg) => {
                    println!(
                        "{}: ok (cluster {}, nodes {} and {}, {} link(s), {} resource(s))",
                        file.display(),
                        cfg.cluster.name,
                        cfg.nodes[0].name,
                        cfg.nodes[1].name,
                        cfg.links(),
                        cfg.drbd.resources.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("{} error(s)", errors.len());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tandemctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
