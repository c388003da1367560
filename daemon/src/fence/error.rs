//! Fencing errors. Each one names the device (kind and address) and says what
//! went wrong in words an operator can act on; none carries a password.

use super::{DeviceId, FenceAction, PowerState};
use crate::config::SecretError;

/// One device failed one action.
#[derive(Debug, thiserror::Error)]
#[error("{action} through {device}: {kind}")]
pub struct DeviceError {
    pub device: DeviceId,
    pub action: FenceAction,
    pub kind: DeviceErrorKind,
}

/// What went wrong, by cause, so callers (and tests) can tell the cases apart.
#[derive(Debug, thiserror::Error)]
pub enum DeviceErrorKind {
    #[error("cannot read the password: {0}")]
    Secret(#[source] SecretError),
    /// The BMC answered, and the password did not match.
    #[error("the BMC rejected the password of user \"{user}\" ({detail})")]
    WrongPassword { user: String, detail: String },
    /// The BMC has no such user.
    #[error("the BMC has no user \"{user}\" ({detail})")]
    UnknownUser { user: String, detail: String },
    /// The BMC will not let this user do what fencing needs.
    #[error("insufficient privilege: {detail}")]
    Privilege { detail: String },
    /// Nothing to talk to: refused, no route, no such host.
    #[error("unreachable: {detail}")]
    Unreachable { detail: String },
    /// The device did not answer in time: a BMC that stopped answering, a hung
    /// agent (killed), or a power state that never changed.
    #[error("timed out after {ms} ms: {detail}")]
    Timeout { ms: u64, detail: String },
    /// The device answered and refused the command (an IPMI completion code, a
    /// session the BMC would not open).
    #[error("{detail}")]
    Refused { detail: String },
    /// The answer made no sense, or the session broke: worth another try.
    #[error("{detail}")]
    Protocol { detail: String },
    /// Asked for `wanted`, and the device still reports `seen`.
    #[error("the power is still {seen} after the {wanted} command (not confirmed within {ms} ms)")]
    NotConfirmed {
        wanted: PowerState,
        seen: PowerState,
        ms: u64,
    },
    /// The IPMI library panicked; the panic was caught and counts as a failure.
    #[error("the IPMI library (ipmi-rs) panicked: {message}")]
    LibraryPanic { message: String },
    #[error("cannot run the agent: {detail}")]
    Spawn { detail: String },
    /// The agent ran and reported failure.
    #[error("the agent failed ({status}){}", stderr_suffix(.stderr))]
    AgentFailed { status: String, stderr: String },
    /// Configured, but this build cannot do it.
    #[error("{detail}")]
    Unsupported { detail: String },
}

fn stderr_suffix(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

impl DeviceErrorKind {
    /// Whether trying again, within the same budget, may help: lost packets and
    /// broken sessions, not a wrong password.
    pub fn is_transient(&self) -> bool {
        matches!(self, DeviceErrorKind::Timeout { .. } | DeviceErrorKind::Protocol { .. })
    }
}

/// A fence level, or every level, failed.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("node {node}, fence level {level}, device {position} of {count}: {source}")]
    Device {
        node: String,
        /// Counted from 1.
        level: usize,
        /// Counted from 1.
        position: usize,
        count: usize,
        #[source]
        source: DeviceError,
    },
    #[error("node {node} has no fence level {level} (it has {count})")]
    NoSuchLevel { node: String, level: usize, count: usize },
    #[error("node {node}, fence level {level} has no devices")]
    EmptyLevel { node: String, level: usize },
    #[error("node {node} has no fence levels configured")]
    NoLevels { node: String },
    #[error("{action} of node {node}: all {} fence levels failed: {}", .failures.len(), join(.failures))]
    AllLevelsFailed {
        node: String,
        action: FenceAction,
        failures: Vec<FenceError>,
    },
}

fn join(errors: &[FenceError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl FenceError {
    /// The device error behind this one (the last level's, for a walk).
    pub fn device_error(&self) -> Option<&DeviceError> {
        match self {
            FenceError::Device { source, .. } => Some(source),
            FenceError::AllLevelsFailed { failures, .. } => failures.last().and_then(FenceError::device_error),
            FenceError::NoSuchLevel { .. } | FenceError::EmptyLevel { .. } | FenceError::NoLevels { .. } => None,
        }
    }
}
