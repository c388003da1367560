//! `drbdsetup events2` lines, typed.
//!
//! Format (drbd-utils `drbdsetup_events2.c`): `ACTION OBJECT key:value...`, with
//! ACTION one of exists/create/change/destroy/call/response/rename and OBJECT one
//! of resource/device/connection/peer-device/path/helper; `exists -` ends the
//! initial state dump. Since drbd-utils 9.x, `change` lines carry only the
//! fields that changed (plus the identifying ones), so every state field here is
//! an `Option`: `None` means "not in this line", never "unknown". Keys this code
//! does not use (statistics, `may_promote`, ...) are skipped, so `--statistics`
//! and `--full` output parses the same. Values never contain spaces (drbdsetup
//! prints names and paths as they are; DRBD forbids spaces in names).

use super::error::ParseError;
use super::types::{ConnState, DrbdDisk, DrbdRole, ReplState};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Exists,
    Create,
    Change,
    Destroy,
    Call,
    Response,
    Rename,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event2 {
    /// `exists -`: the initial dump is complete; what follows are changes.
    InitialStateDone,
    Resource(Action, ResourceEv),
    Device(Action, DeviceEv),
    Connection(Action, ConnectionEv),
    PeerDevice(Action, PeerDeviceEv),
    Path(Action, PathEv),
    Helper(Action, HelperEv),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceEv {
    pub name: String,
    pub role: Option<DrbdRole>,
    /// "no", or a list of reasons: "user", "no-data", "fencing", "quorum".
    pub suspended: Option<String>,
    pub may_promote: Option<bool>,
    /// `rename resource name:OLD new_name:NEW`.
    pub new_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceEv {
    pub name: String,
    pub volume: u32,
    pub minor: Option<u32>,
    pub disk: Option<DrbdDisk>,
    /// "none" when diskless.
    pub backing_dev: Option<String>,
    pub quorum: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionEv {
    pub name: String,
    pub peer_node_id: Option<u32>,
    pub conn_name: Option<String>,
    pub connection: Option<ConnState>,
    pub peer_role: Option<DrbdRole>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerDeviceEv {
    pub name: String,
    pub peer_node_id: Option<u32>,
    pub conn_name: Option<String>,
    pub volume: u32,
    pub replication: Option<ReplState>,
    pub peer_disk: Option<DrbdDisk>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathEv {
    pub name: String,
    pub peer_node_id: Option<u32>,
    pub local: Option<String>,
    pub peer: Option<String>,
    pub established: Option<bool>,
}

/// A user-mode helper DRBD called (`call`) or that returned (`response`), e.g.
/// `fence-peer` with its exit status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HelperEv {
    pub name: String,
    pub peer_node_id: Option<u32>,
    pub volume: Option<u32>,
    pub helper: String,
    pub status: Option<i32>,
}

impl HelperEv {
    /// The helper's exit code. DRBD reports `call_usermodehelper()`'s return,
    /// a wait status, so exit code 7 arrives as `status:1792`.
    pub fn exit_code(&self) -> Option<i32> {
        self.status.map(|s| (s >> 8) & 0xff)
    }
}

/// Parses one events2 line. A timestamp prefix (`--timestamps`) is skipped.
pub fn parse_events2_line(line: &str) -> Result<Event2, ParseError> {
    let err = |reason: String| ParseError::new("events2 line", reason, line);
    let mut words = line.split_whitespace().peekable();
    // `--timestamps` puts an ISO 8601 time first: 2024-01-02T03:04:05.000000+01:00.
    if words
        .peek()
        .is_some_and(|w| w.len() > 10 && w.as_bytes().get(4) == Some(&b'-'))
    {
        words.next();
    }
    let action = match words.next() {
        Some("exists") => Action::Exists,
        Some("create") => Action::Create,
        Some("change") => Action::Change,
        Some("destroy") => Action::Destroy,
        Some("call") => Action::Call,
        Some("response") => Action::Response,
        Some("rename") => Action::Rename,
        Some(other) => return Err(err(format!("unknown action {other:?}"))),
        None => return Err(err("empty line".into())),
    };
    let object = words.next().ok_or_else(|| err("no object".into()))?;
    if object == "-" {
        return if action == Action::Exists {
            Ok(Event2::InitialStateDone)
        } else {
            Err(err("'-' after an action other than exists".into()))
        };
    }
    let mut kv = Vec::new();
    for w in words {
        // Values may contain ':' themselves (`local:ipv4:1.2.3.4:7789`): split once.
        match w.split_once(':') {
            Some((k, v)) => kv.push((k, v)),
            None => return Err(err(format!("word {w:?} is not key:value"))),
        }
    }
    let fields = Fields { kv: &kv, line };
    let name = fields.required("name")?.to_owned();
    Ok(match object {
        "resource" => Event2::Resource(
            action,
            ResourceEv {
                name,
                role: fields.parsed("role")?,
                suspended: fields.get("suspended").map(str::to_owned),
                may_promote: fields.yes_no("may_promote")?,
                new_name: fields.get("new_name").map(str::to_owned),
            },
        ),
        "device" => Event2::Device(
            action,
            DeviceEv {
                name,
                volume: fields.required_num("volume")?,
                minor: fields.num("minor")?,
                disk: fields.parsed("disk")?,
                backing_dev: fields.get("backing_dev").map(str::to_owned),
                quorum: fields.yes_no("quorum")?,
            },
        ),
        "connection" => Event2::Connection(
            action,
            ConnectionEv {
                name,
                peer_node_id: fields.num("peer-node-id")?,
                conn_name: fields.get("conn-name").map(str::to_owned),
                connection: fields.parsed("connection")?,
                peer_role: fields.parsed("role")?,
            },
        ),
        "peer-device" => Event2::PeerDevice(
            action,
            PeerDeviceEv {
                name,
                peer_node_id: fields.num("peer-node-id")?,
                conn_name: fields.get("conn-name").map(str::to_owned),
                volume: fields.required_num("volume")?,
                replication: fields.parsed("replication")?,
                peer_disk: fields.parsed("peer-disk")?,
            },
        ),
        "path" => Event2::Path(
            action,
            PathEv {
                name,
                peer_node_id: fields.num("peer-node-id")?,
                local: fields.get("local").map(str::to_owned),
                peer: fields.get("peer").map(str::to_owned),
                established: fields.yes_no("established")?,
            },
        ),
        "helper" => Event2::Helper(
            action,
            HelperEv {
                name,
                peer_node_id: fields.num("peer-node-id")?,
                volume: fields.num("volume")?,
                helper: fields.required("helper")?.to_owned(),
                status: fields.num("status")?,
            },
        ),
        other => return Err(err(format!("unknown object {other:?}"))),
    })
}

struct Fields<'a> {
    kv: &'a [(&'a str, &'a str)],
    line: &'a str,
}

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.kv.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn required(&self, key: &str) -> Result<&'a str, ParseError> {
        self.get(key)
            .ok_or_else(|| ParseError::new("events2 line", format!("no {key}:"), self.line))
    }

    fn parsed<T: FromStr>(&self, key: &str) -> Result<Option<T>, ParseError>
    where
        T::Err: std::fmt::Display,
    {
        self.get(key)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|e| ParseError::new("events2 line", format!("{key}: {e}"), self.line))
            })
            .transpose()
    }

    fn num<T: FromStr>(&self, key: &str) -> Result<Option<T>, ParseError> {
        self.get(key)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|_| ParseError::new("events2 line", format!("{key}:{v} is not a number"), self.line))
            })
            .transpose()
    }

    fn required_num<T: FromStr>(&self, key: &str) -> Result<T, ParseError> {
        self.num(key)?
            .ok_or_else(|| ParseError::new("events2 line", format!("no {key}:"), self.line))
    }

    fn yes_no(&self, key: &str) -> Result<Option<bool>, ParseError> {
        match self.get(key) {
            None => Ok(None),
            Some("yes") | Some("true") => Ok(Some(true)),
            Some("no") | Some("false") => Ok(Some(false)),
            Some(v) => Err(ParseError::new(
                "events2 line",
                format!("{key}:{v} is not yes/no"),
                self.line,
            )),
        }
    }
}
