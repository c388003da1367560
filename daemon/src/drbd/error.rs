//! Errors of the DRBD driver, and the reading of DRBD's own refusals.
//!
//! drbdsetup reports a refused state change on stderr as
//! `r0: State change failed: (-12) Device is held open by someone` (DRBD 9; 8.4
//! prefixes the minor, `0: ...`), optionally followed by `additional info from
//! kernel:` lines, and exits 11 (17 for `(-2)`, 5 for `(-16)`, see
//! `check_error()` in drbdsetup.c); configuration errors read
//! `r0: Failure: (139) Protocol C required` with exit 10. drbdadm passes the
//! text and the exit code through and adds `Command '...' terminated with exit
//! code N`. The code, not the text, is what decisions are made on.

use crate::core::{ResourceName, ResourceObservation};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A line DRBD printed that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse {what}: {reason} (in {line:?})")]
pub struct ParseError {
    pub what: &'static str,
    pub reason: String,
    /// The offending line or an excerpt, for the log.
    pub line: String,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, reason: impl Into<String>, line: &str) -> Self {
        let mut excerpt: String = line.chars().take(200).collect();
        if excerpt.len() < line.len() {
            excerpt.push_str("...");
        }
        ParseError {
            what,
            reason: reason.into(),
            line: excerpt,
        }
    }
}

/// Which DRBD refusal it was; the codes are `enum drbd_state_rv` (negative) and
/// `enum drbd_ret_code` (100 and up) from drbd-headers' `linux/drbd.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// (-1) Multiple primaries not allowed by config.
    TwoPrimaries,
    /// (-2) Need access to UpToDate data.
    NoUpToDateDisk,
    /// (-6) Refusing to be Outdated while Connected.
    ConnectedOutdates,
    /// (-7) Refusing to be Primary while peer is not outdated.
    PrimaryNop,
    /// (-12) Device is held open by someone.
    DeviceInUse,
    /// (-16) Disk state is lower than outdated.
    LowerThanOutdated,
    /// (-25) No quorum.
    NoQuorum,
    /// (139) Protocol C required.
    NotProtocolC,
    /// Any other state change refusal (negative code).
    OtherStateChange,
    /// Any other `Failure: (N)` (configuration or netlink error, code >= 100).
    OtherFailure,
}

/// DRBD's answer to a command it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrbdFailure {
    pub code: i32,
    pub refusal: Refusal,
    /// DRBD's text for the code, e.g. "Device is held open by someone".
    pub message: String,
    /// The kernel's `additional info` lines, e.g. who holds the device open.
    pub info: Vec<String>,
}

impl fmt::Display for DrbdFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}) {}", self.code, self.message)?;
        if !self.info.is_empty() {
            write!(f, " [{}]", self.info.join("; "))?;
        }
        Ok(())
    }
}

fn refusal_of(code: i32) -> Refusal {
    match code {
        -1 => Refusal::TwoPrimaries,
        -2 => Refusal::NoUpToDateDisk,
        -6 => Refusal::ConnectedOutdates,
        -7 => Refusal::PrimaryNop,
        -12 => Refusal::DeviceInUse,
        -16 => Refusal::LowerThanOutdated,
        -25 => Refusal::NoQuorum,
        139 => Refusal::NotProtocolC,
        c if c < 0 => Refusal::OtherStateChange,
        _ => Refusal::OtherFailure,
    }
}

/// Finds DRBD's refusal in a command's stderr: the first `State change failed:
/// (N) text` or `Failure: (N) text` line, with any `additional info from
/// kernel:` lines after it. `None` when stderr holds no such line (the command
/// failed some other way: usage error, missing resource, timeout...).
pub fn parse_failure(stderr: &str) -> Option<DrbdFailure> {
    let mut lines = stderr.lines();
    let mut found = None;
    for line in lines.by_ref() {
        let rest = line
            .split_once("State change failed: ")
            .or_else(|| line.split_once("Failure: "))
            .map(|(_, rest)| rest.trim());
        let Some(rest) = rest else { continue };
        let Some(inner) = rest.strip_prefix('(') else { continue };
        let Some((code, message)) = inner.split_once(')') else {
            continue;
        };
        let Ok(code) = code.trim().parse::<i32>() else { continue };
        found = Some(DrbdFailure {
            code,
            refusal: refusal_of(code),
            message: message.trim().to_owned(),
            info: Vec::new(),
        });
        break;
    }
    let mut failure = found?;
    let mut in_info = false;
    for line in lines {
        if line.starts_with("additional info from kernel:") {
            in_info = true;
        } else if line.starts_with("Command '") {
            break;
        } else if in_info && !line.trim().is_empty() {
            failure.info.push(line.trim().to_owned());
        }
    }
    Some(failure)
}

/// What the driver was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Promote,
    Demote,
    DualPrimary { allow: bool },
    Outdate,
    Query,
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpKind::Promote => f.write_str("promote"),
            OpKind::Demote => f.write_str("demote"),
            OpKind::DualPrimary { allow: true } => f.write_str("allow dual-primary on"),
            OpKind::DualPrimary { allow: false } => f.write_str("leave dual-primary on"),
            OpKind::Outdate => f.write_str("outdate"),
            OpKind::Query => f.write_str("query"),
        }
    }
}

/// The last state the driver saw, shown with a refusal so the reader sees what
/// blocked it without a second command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenState(pub Option<ResourceObservation>);

impl fmt::Display for SeenState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => Ok(()),
            Some(o) => write!(
                f,
                " (last seen: role {:?}, disk {:?}, {}, peer {:?}/{:?})",
                o.role,
                o.disk,
                if o.connected { "connected" } else { "not connected" },
                o.peer_role,
                o.peer_disk
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DrbdError {
    /// DRBD refused: the failure carries DRBD's code and text.
    #[error("{op} {resource}: DRBD refused: {failure}{state}; `{command}` exited {exit_code}")]
    Refused {
        op: OpKind,
        resource: ResourceName,
        failure: DrbdFailure,
        exit_code: i32,
        command: String,
        state: SeenState,
    },
    /// Demote kept failing because something holds the device open.
    #[error("demote {resource}: still held open after {waited:?} and {attempts} attempts: {failure}{state}")]
    StillHeldOpen {
        resource: ResourceName,
        waited: Duration,
        attempts: u32,
        failure: DrbdFailure,
        state: SeenState,
    },
    /// The command failed without a DRBD refusal line (usage error, unknown
    /// resource, killed by a signal...).
    #[error("{op} {resource}: `{command}` {status}: {stderr}")]
    Failed {
        op: OpKind,
        resource: ResourceName,
        command: String,
        /// "exited 10" or "was killed by a signal".
        status: String,
        stderr: String,
    },
    #[error("{op} {resource}: `{command}` did not finish within {timeout:?} and was killed")]
    Timeout {
        op: OpKind,
        resource: ResourceName,
        command: String,
        timeout: Duration,
    },
    #[error("{op} {resource}: cannot run {program}: {source}")]
    Spawn {
        op: OpKind,
        resource: ResourceName,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {resource}: {source}")]
    Parse {
        op: OpKind,
        resource: ResourceName,
        #[source]
        source: ParseError,
    },
    #[error("{resource}: not a resource this driver manages")]
    NotManaged { resource: ResourceName },
}

impl DrbdError {
    /// DRBD's refusal, when there was one.
    pub fn failure(&self) -> Option<&DrbdFailure> {
        match self {
            DrbdError::Refused { failure, .. } | DrbdError::StillHeldOpen { failure, .. } => Some(failure),
            _ => None,
        }
    }
}
