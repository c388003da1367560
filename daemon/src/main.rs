//! `tandemd`: the tandem system daemon.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tandem::runtime::{self, Options};
use tandem::systemd::{self, Notifier};

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
    // Read (and hidden from the programs tandemd runs) before any thread starts.
    let notifier = Notifier::from_env();
    Notifier::unset_environment();
    // Journal lines when systemd connected stderr to the journal.
    systemd::init_logging();
    let notifier = notifier.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot notify systemd; going on without");
        Notifier::disabled()
    });
    // Looked for at every load, so one created later is read by a reload.
    let fragments = cli
        .config_dir
        .or_else(|| cli.config.parent().map(|p| p.join("tandem.d")));
    let opts = Options {
        config: cli.config,
        fragments,
        node: cli.node,
        status_file: cli.status_file,
        state_dir: cli.state_dir,
        dbus: cli.dbus,
        notifier: Arc::new(notifier),
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
            // journald files the line as an error.
            let priority = if systemd::stderr_is_journal() { "<3>" } else { "" };
            eprintln!("{priority}tandemd: {e}");
            ExitCode::FAILURE
        }
    }
}
