//! `tandemctl`: the operator's command line.

mod cli;
mod daemon;
mod progress;
mod status;

use anyhow::Context;
use clap::Parser;
use cli::{ActionArg, Cli, Command, ConfigCommand, OnOff};
use std::process::ExitCode;
use tandem::config;
use tandem::fence::{fence_direct, FenceAction, FenceLevels, PowerState};
use tandem::net::write_new_key;

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
        Command::Status { json, watch, interval } => {
            if !(interval.is_finite() && (0.1..=3600.0).contains(&interval)) {
                anyhow::bail!("--interval {interval}: give seconds between 0.1 and 3600");
            }
            daemon::status(json, watch, std::time::Duration::from_secs_f64(interval))
        }
        Command::Standby { state, wait } => daemon::standby(state == OnOff::On, std::time::Duration::from_secs(wait)),
        Command::Cleanup => daemon::cleanup(),
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_cli_default_config_is_the_daemons() {
        assert_eq!(super::cli::DEFAULT_CONFIG, tandem::config::DEFAULT_PATH);
    }

    #[test]
    fn the_cli_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
