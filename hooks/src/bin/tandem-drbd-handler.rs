//! `tandem-drbd-handler`: DRBD's fence-peer / unfence-peer handler for tandem.
//!
//! ```text
//! handlers {
//!     fence-peer   "/usr/lib/tandem/tandem-drbd-handler fence-peer";
//!     unfence-peer "/usr/lib/tandem/tandem-drbd-handler unfence-peer";
//! }
//! ```
//!
//! Exit codes: `fence-peer` 4 (tandem outdated the peer) or 7 (tandem confirmed
//! the peer powered off), else 1 (DRBD keeps I/O frozen); `unfence-peer` 0;
//! usage errors 1, never 4 or 7; `--help`/`--version` 0. See
//! [`tandem_hooks::fence_handler`].
//!
//! Each line goes to stderr and to syslog: DRBD runs its handlers from a kernel
//! helper, whose stderr nobody reads.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::process::ExitCode;
use std::time::Duration;
use tandem_hooks::fence_handler::{self, Command, DrbdEnv, Severity, EXIT_FAILED, PROG, USAGE};

/// The syslog socket; overridden (or, set empty, turned off) by [`SYSLOG_ENV`].
const SYSLOG_SOCKET: &str = "/dev/log";
const SYSLOG_ENV: &str = "TANDEM_SYSLOG_SOCKET";
/// Beyond the call's own deadline, before the watchdog ends a hung run.
const WATCHDOG_GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let command = match fence_handler::parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            log(Severity::Error, &format!("{PROG}: {e}; see --help"));
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match command {
        Command::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("{PROG} {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::UnfencePeer => {
            // tandem puts no DRBD-level constraint on the peer (it fences the
            // whole host or outdates the disk), so there is nothing to lift.
            let resource = std::env::var("DRBD_RESOURCE").unwrap_or_else(|_| "(no DRBD_RESOURCE)".to_owned());
            log(
                Severity::Info,
                &format!("{PROG}: unfence-peer {resource}: nothing to undo (tandem sets no DRBD-level constraint)"),
            );
            ExitCode::SUCCESS
        }
        Command::FencePeer { timeout } => {
            let env = match DrbdEnv::read(|k| std::env::var(k).ok()) {
                Ok(env) => env,
                Err(e) => {
                    log(
                        Severity::Error,
                        &format!("{PROG}: fence-peer: {e}; exit 1, DRBD keeps I/O frozen"),
                    );
                    return ExitCode::from(EXIT_FAILED);
                }
            };
            let budget = fence_handler::timeout(timeout, |k| std::env::var(k).ok());
            start_watchdog(&env.resource, budget + WATCHDOG_GRACE);
            ExitCode::from(fence_handler::fence_peer(&env, budget, log))
        }
    }
}

/// One line on stderr and to syslog (facility daemon). Neither may fail the
/// handler: a closed stderr or a missing syslog socket are ignored.
fn log(severity: Severity, line: &str) {
    let line = tandem_hooks::one_line(line, 2000);
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    let path = std::env::var(SYSLOG_ENV).unwrap_or_else(|_| SYSLOG_SOCKET.to_owned());
    if path.is_empty() {
        return;
    }
    // <priority> = facility daemon (3) × 8 + severity (err 3, info 6). The
    // local socket takes a message without timestamp or host; syslog adds them.
    let priority = 3 * 8
        + match severity {
            Severity::Error => 3,
            Severity::Info => 6,
        };
    let tagged = line
        .strip_prefix(PROG)
        .and_then(|l| l.strip_prefix(": "))
        .unwrap_or(&line);
    let message = format!("<{priority}>{PROG}[{}]: {tagged}", std::process::id());
    if let Ok(socket) = UnixDatagram::unbound() {
        let _ = socket.send_to(message.as_bytes(), &path);
    }
}

/// A last bound on the run: the call has its own deadline, but a handler that
/// hangs keeps DRBD waiting. Giving up exits 1, which keeps I/O frozen.
fn start_watchdog(resource: &str, limit: Duration) {
    let resource = resource.to_owned();
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        log(
            Severity::Error,
            &format!(
                "{PROG}: fence-peer {resource}: no outcome after {} s; exit 1, DRBD keeps I/O frozen",
                limit.as_secs()
            ),
        );
        std::process::exit(i32::from(EXIT_FAILED));
    });
}
