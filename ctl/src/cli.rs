//! `tandemctl`'s command line, in a file of its own: `build.rs` includes it
//! too, to write the man pages and shell completions from the same
//! definition. It may use only `clap` and `std` (the build script has nothing
//! else).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// The configuration file (the same as `tandem::config::DEFAULT_PATH`, which
/// a test in main.rs checks).
pub const DEFAULT_CONFIG: &str = "/etc/tandem/tandem.toml";

#[derive(Debug, Parser)]
#[command(
    name = "tandemctl",
    version,
    about = "Operate a tandem cluster",
    long_about = "Operate a tandem cluster: two virtualization hosts with DRBD-replicated \
VM disks that behave like one machine. Most commands go through the tandemd running on \
this host, over its D-Bus API (org.tandem.Tandem1 on the system bus, or \
DBUS_SYSTEM_BUS_ADDRESS), so they get the same checks as the libvirt hook; they need \
root. The configuration is /etc/tandem/tandem.toml and /etc/tandem/tandem.d/*.toml."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The cluster on one screen: nodes, links, peer, fencing, resources,
    /// domains, migration windows, failures and recent events.
    Status {
        /// The daemon's status document instead (docs/status-json.md; versioned).
        #[arg(long)]
        json: bool,
        /// Refresh until interrupted.
        #[arg(long)]
        watch: bool,
        /// Seconds between refreshes with --watch.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Drain this host for maintenance (`on`: live-migrate every domain to the
    /// peer and start nothing here) or end the drain (`off`; nothing moves back
    /// by itself).
    Standby {
        #[arg(value_enum)]
        state: OnOff,
        /// How long to wait for the domains to leave, in seconds.
        #[arg(long, default_value_t = 600)]
        wait: u64,
    },
    /// Forget failure records: domains a failover gave up on (tried again
    /// while the peer stays fenced) and failed fence attempts.
    Cleanup,
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
        #[arg(long, default_value = DEFAULT_CONFIG)]
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
pub enum ConfigCommand {
    /// Check a configuration; every error is printed with file, line and column.
    Check {
        #[arg(default_value = DEFAULT_CONFIG)]
        file: PathBuf,
        /// Fragments directory (default: tandem.d beside FILE, when it exists).
        #[arg(long)]
        config_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ActionArg {
    Status,
    Off,
    On,
    Reboot,
}
