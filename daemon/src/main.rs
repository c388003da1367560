//! `tandemd`: the tandem system daemon.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use tandem::runtime::{self, Options};

#[derive(Debug, Parser)]
#[command(name = "tandemd", version, about = "tandem: two virtualization hosts as one machine")]
struct Cli {
    /// The configuration file.
    #[arg(long, default_value = tandem::config::DEFAULT_PATH)]
    config: PathBuf,
    /// Directory of configuration fragments (*.toml); default: tandem.d beside --config.
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// This host's node name in the configuration (default: the host name).
    #[arg(long)]
    node: Option<String>,
    /// Write the status (JSON) to this file.
    #[arg(long)]
    status_file: Option<PathBuf>,
    /// Where state that survives a restart is kept.
    #[arg(long, default_value = "/var/lib/tandem")]
    state_dir: PathBuf,
    /// Offer the D-Bus API on the system bus (DBUS_SYSTEM_BUS_ADDRESS when set), or not at all.
    #[arg(long, value_enum, default_value_t = tandem::dbus::Bus::System)]
    dbus: tandem::dbus::Bus,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let fragments = cli
        .config_dir
        .or_else(|| cli.config.parent().map(|p| p.join("tandem.d")))
        .filter(|p| p.is_dir());
    let opts = Options {
        config: cli.config,
        fragments,
        node: cli.node,
        status_file: cli.status_file,
        state_dir: cli.state_dir,
        dbus: cli.dbus,
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tandemd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(runtime::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandemd: {e}");
            ExitCode::FAILURE
        }
    }
}
