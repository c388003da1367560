//! tandemd under systemd: readiness, watchdog and reload notifications
//! (`sd_notify(3)`'s datagram protocol, written here rather than linked from
//! libsystemd), and log lines journald files with their priority.
//!
//! Everything is a no-op when the daemon was not started by systemd
//! (`NOTIFY_SOCKET` and `JOURNAL_STREAM` unset), so the same binary runs from
//! a shell, in the tests and in the lab unchanged.
//!
//! - `READY=1` is sent by the runtime once the peer link listens and, with
//!   `--dbus system`, the D-Bus name is owned: a `systemctl start tandemd`
//!   that returned means hooks can reach the daemon.
//! - `WATCHDOG=1` is sent from the event loop itself, every half of
//!   `WATCHDOG_USEC`, so a loop that hangs stops the keep-alives and systemd
//!   restarts the daemon.
//! - `RELOADING=1` (with `MONOTONIC_USEC`) then `READY=1` frame a SIGHUP reload;
//!   `STOPPING=1` starts the shutdown; `STATUS=` tells `systemctl status` what
//!   the daemon waits for or what the last reload did.

use std::fmt;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;
use tracing::debug;
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Where systemd listens for notifications, read once at start.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

/// Why `NOTIFY_SOCKET` could not be used; logged once, then ignored.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={0:?} is neither an absolute path nor an abstract name (@...)")]
    BadAddress(String),
    #[error("NOTIFY_SOCKET={addr:?}: {source}")]
    Socket {
        addr: String,
        #[source]
        source: io::Error,
    },
}

impl Notifier {
    /// A notifier that does nothing (not under systemd).
    pub fn disabled() -> Self {
        Notifier {
            target: None,
            watchdog: None,
        }
    }

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`. Call before
    /// any thread starts: see [`Notifier::unset_environment`].
    pub fn from_env() -> Result<Self, NotifyError> {
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        let Some(addr) = std::env::var_os("NOTIFY_SOCKET").filter(|a| !a.is_empty()) else {
            return Ok(Notifier {
                target: None,
                watchdog: None,
            });
        };
        let addr = addr.to_string_lossy().into_owned();
        let target = socket_addr(&addr)?;
        let socket = UnixDatagram::unbound().map_err(|source| NotifyError::Socket {
            addr: addr.clone(),
            source,
        })?;
        // A notification must never block the event loop; systemd's socket
        // has room for far more than tandemd ever sends.
        socket.set_nonblocking(true).map_err(|source| NotifyError::Socket {
            addr: addr.clone(),
            source,
        })?;
        Ok(Notifier {
            target: Some((socket, target)),
            watchdog,
        })
    }

    /// Removes the variables so that the programs tandemd runs (fence agents,
    /// drbdadm, password scripts) do not inherit them and notify in its name.
    /// Must run before other threads exist (it changes the environment).
    pub fn unset_environment() {
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(var);
        }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often the event loop sends `WATCHDOG=1` (half of `WATCHDOG_USEC`),
    /// when systemd asked for keep-alives.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref().and(self.watchdog)
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    pub fn reloading(&self) {
        let mut msg = String::from("RELOADING=1\nSTATUS=reloading the configuration");
        if let Some(us) = monotonic_usec() {
            msg.push_str(&format!("\nMONOTONIC_USEC={us}"));
        }
        self.send(&msg);
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    fn send(&self, msg: &str) {
        if let Some((socket, addr)) = &self.target {
            if let Err(e) = socket.send_to_addr(msg.as_bytes(), addr) {
                debug!(error = %e, "cannot notify the service manager");
            }
        }
    }
}

/// A `STATUS=` value is one line.
fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// `NOTIFY_SOCKET` as a socket address: a path, or `@name` for an abstract one.
fn socket_addr(addr: &str) -> Result<SocketAddr, NotifyError> {
    let bad = || NotifyError::BadAddress(addr.to_owned());
    let sock_err = |source| NotifyError::Socket {
        addr: addr.to_owned(),
        source,
    };
    if let Some(name) = addr.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes()).map_err(sock_err)
    } else if addr.starts_with('/') {
        SocketAddr::from_pathname(addr).map_err(sock_err)
    } else {
        Err(bad())
    }
}

/// Half of `WATCHDOG_USEC`, when it is set, positive and (with `WATCHDOG_PID`)
/// meant for process `me`.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(me) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

/// `CLOCK_MONOTONIC` in microseconds, which systemd wants with `RELOADING=1`.
fn monotonic_usec() -> Option<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    let secs = u64::try_from(t.tv_sec()).ok()?;
    let nanos = u64::try_from(t.tv_nsec()).ok()?;
    Some(secs.saturating_mul(1_000_000).saturating_add(nanos / 1000))
}

/// Whether stderr is the journal stream systemd connected (`JOURNAL_STREAM` is
/// `DEVICE:INODE` of that stream; a daemon whose stderr was redirected
/// elsewhere by its caller writes plain lines).
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(parse_journal_stream) else {
        return false;
    };
    stderr_dev_ino().is_some_and(|s| s == (dev, ino))
}

fn parse_journal_stream(s: &str) -> Option<(u64, u64)> {
    let (dev, ino) = s.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

fn stderr_dev_ino() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// syslog priority of a tracing level, as journald reads it from a `<N>` prefix.
pub fn syslog_priority(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        tracing::Level::DEBUG | tracing::Level::TRACE => 7,
    }
}

/// Log lines for the journal: `<N>` (the syslog priority journald files the
/// line under), then the usual fields, without a timestamp (journald adds
/// its own), the level word (the priority says it) or colours.
#[derive(Debug)]
pub struct JournalFormat {
    inner: Format<Full, ()>,
}

impl Default for JournalFormat {
    fn default() -> Self {
        JournalFormat {
            inner: Format::default().without_time().with_level(false).with_ansi(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", syslog_priority(event.metadata().level()))?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// The log subscriber of `tandemd`: journal lines when stderr is the journal,
/// the usual human lines on stderr otherwise. `TANDEM_LOG` filters (default
/// `info`).
pub fn init_logging() {
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    if stderr_is_journal() {
        tracing_subscriber::fmt()
            .with_writer(io::stderr)
            .fmt_fields(DefaultFields::new())
            .event_format(JournalFormat::default())
            .with_env_filter(filter())
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_writer(io::stderr)
            .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
            .with_env_filter(filter())
            .init();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn watchdog_is_half_the_interval_and_only_for_us() {
        assert_eq!(
            watchdog_interval(Some("2000000"), None, 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            watchdog_interval(Some("2000000"), Some("7"), 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(watchdog_interval(Some("2000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn notify_socket_addresses() {
        assert!(socket_addr("/run/systemd/notify").is_ok());
        assert!(socket_addr("@abstract/name").is_ok());
        assert!(matches!(socket_addr("relative"), Err(NotifyError::BadAddress(_))));
    }

    #[test]
    fn journal_stream_value() {
        assert_eq!(parse_journal_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_journal_stream("8:12345\n"), Some((8, 12345)));
        assert_eq!(parse_journal_stream("8"), None);
        assert_eq!(parse_journal_stream("x:1"), None);
    }

    #[test]
    fn notifications_reach_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                SocketAddr::from_pathname(&path).unwrap(),
            )),
            watchdog: Some(Duration::from_millis(500)),
        };
        assert!(n.enabled());
        assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(500)));
        n.ready("ready\nnow");
        n.watchdog();
        n.reloading();
        let mut buf = [0u8; 512];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ready now");
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        let len = listener.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(text.starts_with("RELOADING=1\n"), "{text}");
        assert!(text.contains("\nMONOTONIC_USEC="), "{text}");
    }

    #[test]
    fn disabled_notifier_does_nothing() {
        let n = Notifier::disabled();
        assert!(!n.enabled());
        assert_eq!(n.watchdog_interval(), None);
        n.ready("x");
        n.stopping();
    }

    #[test]
    fn priorities() {
        assert_eq!(syslog_priority(&tracing::Level::ERROR), 3);
        assert_eq!(syslog_priority(&tracing::Level::WARN), 4);
        assert_eq!(syslog_priority(&tracing::Level::INFO), 6);
        assert_eq!(syslog_priority(&tracing::Level::DEBUG), 7);
    }
}
