//! The one D-Bus call each of tandem's thin clients makes: the libvirt hook
//! ([`crate::daemon_call`]) and the DRBD fence-peer handler ([`crate::fence_handler`]).
//!
//! A call connects to the system bus (or `DBUS_SYSTEM_BUS_ADDRESS`), calls one
//! method of `org.tandem.Tandem1.Hooks` and is bounded by a deadline, connection
//! included. It runs on a current-thread Tokio runtime built for the call:
//! `tandem_api::connect` is async, and zbus's `tokio` backend (the one
//! tandem-api enables) needs a Tokio runtime, while a current-thread one starts
//! no worker threads. Nothing here writes to stdout or stderr: the callers own
//! their one line.

use std::future::Future;
use std::time::{Duration, Instant};
use tandem_api::zbus;
use tandem_api::HooksProxy;

/// Where `Builder::system()` connects when `DBUS_SYSTEM_BUS_ADDRESS` is unset
/// (the D-Bus specification's default), for messages only.
const DEFAULT_SYSTEM_BUS: &str = "unix:path=/var/run/dbus/system_bus_socket";
/// Pause between attempts while tandemd is unreachable (see [`Retry::WhileUnreachable`]).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// One method of `org.tandem.Tandem1.Hooks`, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    PrepareIncoming { domain: String, resources: Vec<String> },
    PrepareStart { domain: String, resources: Vec<String> },
    Release { domain: String, resources: Vec<String> },
    FencePeer { resource: String },
}

/// A successful reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// PrepareIncoming, PrepareStart or Release succeeded.
    Done,
    /// FencePeer's exit code for DRBD (not yet checked: see [`crate::fence_handler`]).
    FencePeer(i32),
}

/// What to do when tandemd cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Fail at once: a user waits at virsh for the hook.
    Never,
    /// Try again every 500 ms until the deadline: the fence-peer handler runs
    /// while DRBD keeps I/O frozen anyway, and a tandemd being restarted by
    /// systemd is better waited for than answered with "broken".
    WhileUnreachable,
}

/// Why a call did not get a successful reply. The display is a lower-case
/// phrase for the caller to put into its line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// tandemd answered with a refusal ([`tandem_api::Error::Refused`],
    /// `NotFound` or `InvalidArgs`); the display is its one-line reason.
    #[error("{}", .0.reason())]
    Tandem(tandem_api::Error),
    /// The bus itself is not there.
    #[error("cannot connect to the D-Bus system bus ({detail})")]
    NoBus { detail: String },
    /// The bus is there, tandemd is not (or it is stopping).
    #[error("tandemd is not running ({detail})")]
    NotRunning { detail: String },
    /// The bus policy refused the call (tandem's Hooks interface is root only).
    #[error("the D-Bus policy denied the call, which only root may make ({detail})")]
    Denied { detail: String },
    /// No reply by the deadline.
    #[error("tandemd did not answer within {} s", secs(*.after))]
    Timeout { after: Duration },
    /// Retried until the deadline; `last` is the last attempt's failure.
    #[error("{last}; gave up after {} s", secs(*.after))]
    GaveUp { last: Box<ClientError>, after: Duration },
    /// Anything else (an unexpected D-Bus error, no runtime).
    #[error("{detail}")]
    Other { detail: String },
}

impl ClientError {
    /// The refusal tandemd sent, if that is what this is.
    pub fn tandem_reason(&self) -> Option<String> {
        match self {
            ClientError::Tandem(e) => Some(e.reason()),
            _ => None,
        }
    }

    /// Whether trying again later could reach tandemd.
    fn unreachable(&self) -> bool {
        matches!(self, ClientError::NoBus { .. } | ClientError::NotRunning { .. })
    }
}

/// `d` in seconds for a message, to a tenth: `2`, `0.5`.
fn secs(d: Duration) -> String {
    let s = format!("{:.1}", d.as_secs_f64());
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

/// [`ClientError::NoBus`], naming the address unless zbus's message already does.
fn no_bus(detail: &str) -> ClientError {
    let address = bus_address();
    ClientError::NoBus {
        detail: if detail.contains(&address) {
            detail.to_owned()
        } else {
            format!("{address}: {detail}")
        },
    }
}

/// The bus address a connection uses, for messages.
pub fn bus_address() -> String {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .ok()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| DEFAULT_SYSTEM_BUS.to_owned())
}

/// Sends `request` to tandemd and waits for its reply until `deadline`.
pub fn ask(request: &Request, deadline: Instant, retry: Retry) -> Result<Answer, ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| ClientError::Other {
            detail: format!("cannot start the D-Bus client's runtime: {e}"),
        })?;
    runtime.block_on(ask_async(request, deadline, retry))
}

async fn ask_async(request: &Request, deadline: Instant, retry: Retry) -> Result<Answer, ClientError> {
    let started = Instant::now();
    let mut last: Option<ClientError> = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let give_up = |last: Option<ClientError>| {
            let after = started.elapsed();
            match last {
                Some(e) => ClientError::GaveUp {
                    last: Box::new(e),
                    after,
                },
                None => ClientError::Timeout { after },
            }
        };
        if remaining.is_zero() {
            return Err(give_up(last));
        }
        // zbus's own method timeout is a backstop a little beyond the deadline,
        // so the deadline below is what ends a call (with the message above).
        match bounded(remaining, attempt(request, remaining + Duration::from_secs(1))).await {
            None => return Err(give_up(last)),
            Some(Ok(answer)) => return Ok(answer),
            Some(Err(e)) if retry == Retry::WhileUnreachable && e.unreachable() => {
                last = Some(e);
                let pause = RETRY_PAUSE.min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
            Some(Err(e)) => return Err(e),
        }
    }
}

/// `future`'s output, or `None` after `limit`.
async fn bounded<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, future).await.ok()
}

async fn attempt(request: &Request, method_timeout: Duration) -> Result<Answer, ClientError> {
    let conn = tandem_api::connect(Some(method_timeout))
        .await
        .map_err(|e| no_bus(&e.to_string()))?;
    // No property cache: it would cost a GetAll round trip (and the rights to
    // read) before the one call that matters.
    let proxy = HooksProxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|e| classify(tandem_api::Error::ZBus(e)))?;
    let reply = match request {
        Request::PrepareIncoming { domain, resources } => proxy
            .prepare_incoming(domain, &strs(resources))
            .await
            .map(|()| Answer::Done),
        Request::PrepareStart { domain, resources } => proxy
            .prepare_start(domain, &strs(resources))
            .await
            .map(|()| Answer::Done),
        Request::Release { domain, resources } => proxy.release(domain, &strs(resources)).await.map(|()| Answer::Done),
        Request::FencePeer { resource } => proxy.fence_peer(resource).await.map(Answer::FencePeer),
    };
    reply.map_err(classify)
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Sorts a failed call into what the callers tell apart.
fn classify(e: tandem_api::Error) -> ClientError {
    use tandem_api::Error;
    match e {
        Error::Refused(_) | Error::NotFound(_) | Error::InvalidArgs(_) => ClientError::Tandem(e),
        Error::ShuttingDown(m) => ClientError::NotRunning {
            detail: format!("it is stopping: {m}"),
        },
        Error::ZBus(z) => classify_zbus(z),
    }
}

fn classify_zbus(e: zbus::Error) -> ClientError {
    let name = match &e {
        zbus::Error::MethodError(name, ..) => Some(name.as_str().to_owned()),
        zbus::Error::FDO(f) => Some(zbus::DBusError::name(&**f).as_str().to_owned()),
        _ => None,
    };
    let detail = tandem_api::Error::ZBus(e).reason();
    match name.as_deref() {
        // Nobody owns org.tandem.Tandem1, or its owner left before replying.
        Some(
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner"
            | "org.freedesktop.DBus.Error.NoReply",
        ) => ClientError::NotRunning { detail },
        Some("org.freedesktop.DBus.Error.AccessDenied") => ClientError::Denied { detail },
        Some(_) => ClientError::Other { detail },
        // Not a D-Bus error reply: the connection to the bus broke.
        None => no_bus(&detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_read_naturally() {
        assert_eq!(secs(Duration::from_secs(2)), "2");
        assert_eq!(secs(Duration::from_millis(2500)), "2.5");
        assert_eq!(secs(Duration::from_millis(300)), "0.3");
        assert_eq!(secs(Duration::from_millis(2004)), "2");
    }

    #[test]
    fn tandem_refusals_keep_their_reason() {
        let e = classify(tandem_api::Error::Refused("no".into()));
        assert_eq!(e.tandem_reason().as_deref(), Some("no"));
        assert_eq!(e.to_string(), "no");
        assert!(!e.unreachable());
        let e = classify(tandem_api::Error::ShuttingDown("bye".into()));
        assert!(e.unreachable());
        assert_eq!(e.tandem_reason(), None);
    }
}
