//! `tandem-drbd-handler`, DRBD's fence-peer and unfence-peer handler, as a
//! library: the argument and environment reading and the exit-code decision,
//! apart from the one D-Bus call ([`crate::client`]).
//!
//! ```text
//! handlers {
//!     fence-peer   "/usr/lib/tandem/tandem-drbd-handler fence-peer";
//!     unfence-peer "/usr/lib/tandem/tandem-drbd-handler unfence-peer";
//! }
//! ```
//!
//! DRBD reads a fence-peer handler's exit code: 4 "peer outdated" and 7 "peer
//! fenced" resume I/O; with `fencing resource-and-stonith`, anything it does not
//! take as a verdict ("fence-peer helper broken", here always 1) keeps I/O
//! frozen. So the handler exits 4 or 7 only when tandemd answered exactly that,
//! and 1 for everything else: tandemd unreachable, a refusal, a timeout, a code
//! it did not expect, bad arguments, no `DRBD_RESOURCE`. It never exits 5 ("peer
//! unreachable, assumed dead"), which would resume I/O without a fence.

use crate::client::{self, Answer, ClientError, Request, Retry};
use std::time::Duration;
use tandem_api::fence_peer_exit::{PEER_FENCED, PEER_OUTDATED};

pub const PROG: &str = "tandem-drbd-handler";
/// Every failure: DRBD logs "fence-peer helper broken" and I/O stays frozen.
pub const EXIT_FAILED: u8 = 1;
/// Overrides [`DEFAULT_TIMEOUT_SECS`] (whole seconds); `--timeout` overrides both.
pub const TIMEOUT_ENV: &str = "TANDEM_FENCE_PEER_TIMEOUT_SECS";
/// tandemd answers FencePeer within 4 × `fence_timeout_ms` (120 s with the
/// default 30 s); the margin lets its reasoned answer arrive before the handler
/// gives up on its own.
pub const DEFAULT_TIMEOUT_SECS: u64 = 130;

/// What the handler was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    FencePeer { timeout: Option<Duration> },
    UnfencePeer,
    Help,
    Version,
}

/// Arguments DRBD would not pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("expected fence-peer or unfence-peer (DRBD's handler name), got no argument")]
    Missing,
    #[error("unknown subcommand '{0}'; expected fence-peer or unfence-peer")]
    Unknown(String),
    #[error("--timeout needs a whole number of seconds above 0, not '{0}'")]
    BadTimeout(String),
    #[error("unexpected argument '{0}'")]
    Extra(String),
}

pub const USAGE: &str = "usage: tandem-drbd-handler fence-peer [--timeout SECS]
       tandem-drbd-handler unfence-peer

DRBD's fence-peer / unfence-peer handler for tandem. fence-peer asks tandemd
(Hooks.FencePeer, for $DRBD_RESOURCE) to outdate or fence the peer and exits
4 (peer outdated) or 7 (peer fenced) only on tandemd's confirmation; anything
else exits 1 and DRBD keeps I/O frozen. unfence-peer does nothing and exits 0.
Timeout: --timeout, else $TANDEM_FENCE_PEER_TIMEOUT_SECS, else 130 s.";

/// Reads the arguments (without the program name).
pub fn parse_args(args: &[String]) -> Result<Command, UsageError> {
    let Some((first, rest)) = args.split_first() else {
        return Err(UsageError::Missing);
    };
    match first.as_str() {
        "--help" | "-h" => return Ok(Command::Help),
        "--version" | "-V" => return Ok(Command::Version),
        "unfence-peer" => {
            return match rest.first() {
                Some(extra) => Err(UsageError::Extra(extra.clone())),
                None => Ok(Command::UnfencePeer),
            }
        }
        "fence-peer" => {}
        other => return Err(UsageError::Unknown(other.to_owned())),
    }
    let mut timeout = None;
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        let value = if let Some(v) = arg.strip_prefix("--timeout=") {
            v.to_owned()
        } else if arg == "--timeout" {
            it.next().cloned().unwrap_or_default()
        } else {
            return Err(UsageError::Extra(arg.clone()));
        };
        match value.parse::<u64>() {
            Ok(secs) if secs > 0 => timeout = Some(Duration::from_secs(secs)),
            _ => return Err(UsageError::BadTimeout(value)),
        }
    }
    Ok(Command::FencePeer { timeout })
}

/// The handler's time budget: `--timeout`, else [`TIMEOUT_ENV`], else the default.
/// An unreadable variable falls back to the default rather than failing a fence.
pub fn timeout(option: Option<Duration>, env: impl Fn(&str) -> Option<String>) -> Duration {
    option
        .or_else(|| {
            env(TIMEOUT_ENV)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
        })
        .unwrap_or(Duration::from_secs(DEFAULT_TIMEOUT_SECS))
}

/// What DRBD tells its handler, as far as the log line needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrbdEnv {
    /// `DRBD_RESOURCE`.
    pub resource: String,
    /// `DRBD_MINOR`, `DRBD_VOLUME` (space-separated lists for several volumes).
    pub minor: Option<String>,
    pub volume: Option<String>,
    /// `DRBD_PEER_NODE_ID` (DRBD 9) and that node's name, `DRBD_NODE_ID_<n>`;
    /// DRBD 8.4 gives the name as `DRBD_PEER` instead.
    pub peer_node_id: Option<String>,
    pub peer_name: Option<String>,
    /// `DRBD_PEER_ADDRESS`, `DRBD_PEER_AF`.
    pub peer_address: Option<String>,
    pub peer_af: Option<String>,
}

/// The environment is not what DRBD passes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("DRBD_RESOURCE is not set; this handler is meant to be run by DRBD")]
    NoResource,
    #[error("DRBD_RESOURCE is not a resource name tandem accepts: {0}")]
    BadResource(String),
}

impl DrbdEnv {
    /// Reads DRBD's variables through `env` (`std::env::var` in the binary).
    pub fn read(env: impl Fn(&str) -> Option<String>) -> Result<DrbdEnv, EnvError> {
        let get = |k: &str| env(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let resource = get("DRBD_RESOURCE").ok_or(EnvError::NoResource)?;
        tandem_api::validate_resource(&resource).map_err(|e| EnvError::BadResource(e.to_string()))?;
        let peer_node_id = get("DRBD_PEER_NODE_ID");
        let peer_name = peer_node_id
            .as_ref()
            .and_then(|id| get(&format!("DRBD_NODE_ID_{id}")))
            .or_else(|| get("DRBD_PEER"));
        Ok(DrbdEnv {
            resource,
            minor: get("DRBD_MINOR"),
            volume: get("DRBD_VOLUME"),
            peer_node_id,
            peer_name,
            peer_address: get("DRBD_PEER_ADDRESS"),
            peer_af: get("DRBD_PEER_AF"),
        })
    }

    /// `r0 (minor 0, volume 0, peer beta, node id 1, at ipv4 10.0.0.2)`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = &self.minor {
            parts.push(format!("minor {m}"));
        }
        if let Some(v) = &self.volume {
            parts.push(format!("volume {v}"));
        }
        if let Some(n) = &self.peer_name {
            parts.push(format!("peer {n}"));
        }
        if let Some(id) = &self.peer_node_id {
            parts.push(format!("node id {id}"));
        }
        if let Some(a) = &self.peer_address {
            let af = self.peer_af.as_deref().map(|af| format!("{af} ")).unwrap_or_default();
            parts.push(format!("at {af}{a}"));
        }
        if parts.is_empty() {
            self.resource.clone()
        } else {
            format!("{} ({})", self.resource, parts.join(", "))
        }
    }
}

/// The request the handler sends.
pub fn request(env: &DrbdEnv) -> Request {
    Request::FencePeer {
        resource: env.resource.clone(),
    }
}

/// How bad a log line is (for syslog).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Error,
}

/// The handler's exit code and its last log line, from the call's outcome.
pub fn verdict(resource: &str, outcome: Result<Answer, ClientError>) -> (u8, Severity, String) {
    let failed = |why: String| {
        // tandemd's own reason may already say it.
        let tail = if why.contains("I/O stays frozen") {
            " (exit 1)"
        } else {
            "; exit 1, DRBD keeps I/O frozen"
        };
        (
            EXIT_FAILED,
            Severity::Error,
            format!("{PROG}: fence-peer {resource}: {why}{tail}"),
        )
    };
    match outcome {
        Ok(Answer::FencePeer(PEER_OUTDATED)) => (
            4,
            Severity::Info,
            format!("{PROG}: fence-peer {resource}: tandem outdated the peer's disk (exit 4)"),
        ),
        Ok(Answer::FencePeer(PEER_FENCED)) => (
            7,
            Severity::Info,
            format!("{PROG}: fence-peer {resource}: tandem confirmed the peer powered off (exit 7)"),
        ),
        Ok(Answer::FencePeer(code)) => failed(format!(
            "tandem answered {code}, which is neither 4 (peer outdated) nor 7 (peer fenced)"
        )),
        Ok(Answer::Done) => failed("tandem answered without an exit code".to_owned()),
        Err(e) => match e.tandem_reason() {
            Some(reason) => failed(format!("tandem: {reason}")),
            None => failed(format!("could not reach tandem: {e}")),
        },
    }
}

/// Runs `fence-peer` for `env`: the start line, the call, the verdict. `log`
/// receives each line.
pub fn fence_peer(env: &DrbdEnv, budget: Duration, mut log: impl FnMut(Severity, &str)) -> u8 {
    log(
        Severity::Info,
        &format!(
            "{PROG}: fence-peer {}: asking tandem to outdate or fence the peer (up to {} s)",
            env.describe(),
            budget.as_secs()
        ),
    );
    let deadline = std::time::Instant::now() + budget;
    let outcome = client::ask(&request(env), deadline, Retry::WhileUnreachable);
    let (code, severity, line) = verdict(&env.resource, outcome);
    log(severity, &line);
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn arguments() {
        assert_eq!(
            parse_args(&args(&["fence-peer"])),
            Ok(Command::FencePeer { timeout: None })
        );
        assert_eq!(
            parse_args(&args(&["fence-peer", "--timeout", "300"])),
            Ok(Command::FencePeer {
                timeout: Some(Duration::from_secs(300))
            })
        );
        assert_eq!(
            parse_args(&args(&["fence-peer", "--timeout=5"])),
            Ok(Command::FencePeer {
                timeout: Some(Duration::from_secs(5))
            })
        );
        assert_eq!(parse_args(&args(&["unfence-peer"])), Ok(Command::UnfencePeer));
        assert_eq!(parse_args(&args(&["--help"])), Ok(Command::Help));
        assert_eq!(parse_args(&[]), Err(UsageError::Missing));
        assert_eq!(
            parse_args(&args(&["outdate-peer"])),
            Err(UsageError::Unknown("outdate-peer".into()))
        );
        assert_eq!(
            parse_args(&args(&["fence-peer", "--timeout"])),
            Err(UsageError::BadTimeout(String::new()))
        );
        assert_eq!(
            parse_args(&args(&["fence-peer", "--timeout", "0"])),
            Err(UsageError::BadTimeout("0".into()))
        );
        assert_eq!(
            parse_args(&args(&["unfence-peer", "x"])),
            Err(UsageError::Extra("x".into()))
        );
    }

    #[test]
    fn timeouts() {
        let none = env_of(&[]);
        assert_eq!(timeout(None, &none), Duration::from_secs(DEFAULT_TIMEOUT_SECS));
        let set = env_of(&[(TIMEOUT_ENV, "7")]);
        assert_eq!(timeout(None, &set), Duration::from_secs(7));
        assert_eq!(timeout(Some(Duration::from_secs(3)), &set), Duration::from_secs(3));
        let bad = env_of(&[(TIMEOUT_ENV, "soon")]);
        assert_eq!(timeout(None, &bad), Duration::from_secs(DEFAULT_TIMEOUT_SECS));
    }

    #[test]
    fn drbd9_environment() {
        let env = DrbdEnv::read(env_of(&[
            ("DRBD_RESOURCE", "r0"),
            ("DRBD_MINOR", "0 1"),
            ("DRBD_VOLUME", "0 1"),
            ("DRBD_PEER_NODE_ID", "1"),
            ("DRBD_NODE_ID_0", "alpha"),
            ("DRBD_NODE_ID_1", "beta"),
            ("DRBD_PEER_ADDRESS", "10.0.0.2"),
            ("DRBD_PEER_AF", "ipv4"),
        ]))
        .unwrap();
        assert_eq!(
            env.describe(),
            "r0 (minor 0 1, volume 0 1, peer beta, node id 1, at ipv4 10.0.0.2)"
        );
        assert_eq!(request(&env), Request::FencePeer { resource: "r0".into() });
    }

    #[test]
    fn drbd84_environment_and_the_bare_minimum() {
        let env = DrbdEnv::read(env_of(&[("DRBD_RESOURCE", "r0"), ("DRBD_PEER", "beta")])).unwrap();
        assert_eq!(env.describe(), "r0 (peer beta)");
        let env = DrbdEnv::read(env_of(&[("DRBD_RESOURCE", "r0")])).unwrap();
        assert_eq!(env.describe(), "r0");
    }

    #[test]
    fn a_missing_or_odd_resource_is_an_error() {
        assert_eq!(DrbdEnv::read(env_of(&[])), Err(EnvError::NoResource));
        assert_eq!(
            DrbdEnv::read(env_of(&[("DRBD_RESOURCE", " ")])),
            Err(EnvError::NoResource)
        );
        assert!(matches!(
            DrbdEnv::read(env_of(&[("DRBD_RESOURCE", "r 0")])),
            Err(EnvError::BadResource(_))
        ));
    }

    #[test]
    fn only_4_and_7_pass_through() {
        for code in [4, 7] {
            assert_eq!(
                verdict("r0", Ok(Answer::FencePeer(code))).0,
                u8::try_from(code).unwrap()
            );
        }
        for code in [0, 1, 3, 5, 6, 8, 255, 260, 263, -1] {
            let (exit, severity, line) = verdict("r0", Ok(Answer::FencePeer(code)));
            assert_eq!((exit, severity), (EXIT_FAILED, Severity::Error), "{code}");
            assert!(line.ends_with("exit 1, DRBD keeps I/O frozen"), "{line}");
        }
        assert_eq!(verdict("r0", Ok(Answer::Done)).0, EXIT_FAILED);
        let (_, _, line) = verdict(
            "r0",
            Err(ClientError::Tandem(tandem_api::Error::Refused(
                "no verdict; I/O stays frozen".into(),
            ))),
        );
        assert_eq!(
            line,
            "tandem-drbd-handler: fence-peer r0: tandem: no verdict; I/O stays frozen (exit 1)"
        );
        let (exit, _, line) = verdict(
            "r0",
            Err(ClientError::Tandem(tandem_api::Error::Refused("undecided".into()))),
        );
        assert_eq!(exit, EXIT_FAILED);
        assert_eq!(
            line,
            "tandem-drbd-handler: fence-peer r0: tandem: undecided; exit 1, DRBD keeps I/O frozen"
        );
        let (exit, _, line) = verdict(
            "r0",
            Err(ClientError::Timeout {
                after: Duration::from_secs(130),
            }),
        );
        assert_eq!(exit, EXIT_FAILED);
        assert_eq!(
            line,
            "tandem-drbd-handler: fence-peer r0: could not reach tandem: tandemd did not answer within 130 s; \
             exit 1, DRBD keeps I/O frozen"
        );
    }
}
