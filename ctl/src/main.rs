//! `tandemctl`: the operator's command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tandem::config;
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
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
