//! DRBD's own state vocabulary, as drbdsetup prints it (`drbd_strings.c` in
//! drbd-utils), and its reduction to the core's [`Role`] and [`DiskState`].
//!
//! The names are kept complete rather than reduced at parse time so a parse
//! failure means "DRBD said something we never heard of", not "we chose to
//! forget a detail".

use crate::core::{DiskState, Role};
use std::fmt;
use std::str::FromStr;

/// `role:` of a resource or of a connection's peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DrbdRole {
    Primary,
    Secondary,
    Unknown,
}

/// A disk state, in DRBD's own order (`enum drbd_disk_state`): "worse" sorts first,
/// which is what taking the worst of several volumes relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DrbdDisk {
    Diskless,
    Attaching,
    Detaching,
    Failed,
    Negotiating,
    Inconsistent,
    Outdated,
    DUnknown,
    Consistent,
    UpToDate,
}

/// `connection:` in events2 (DRBD 9 names, plus the 8.4 ones drbdsetup-84 reports).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConnState {
    StandAlone,
    Disconnecting,
    Unconnected,
    Timeout,
    BrokenPipe,
    NetworkFailure,
    ProtocolError,
    TearDown,
    Connecting,
    Connected,
    /// 8.4's names for "trying to connect".
    WFConnection,
    WFReportParams,
    /// Anything newer: never counted as connected.
    Other(String),
}

impl ConnState {
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnState::Connected)
    }
}

/// `replication:` of a peer device (`enum drbd_repl_state`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReplState {
    Off,
    Established,
    StartingSyncS,
    StartingSyncT,
    WFBitMapS,
    WFBitMapT,
    WFSyncUUID,
    SyncSource,
    SyncTarget,
    VerifyS,
    VerifyT,
    PausedSyncS,
    PausedSyncT,
    Ahead,
    Behind,
    Other(String),
}

/// A state name DRBD printed that this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown DRBD {what} {value:?}")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
}

impl FromStr for DrbdRole {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Primary" => Ok(DrbdRole::Primary),
            "Secondary" => Ok(DrbdRole::Secondary),
            "Unknown" => Ok(DrbdRole::Unknown),
            _ => Err(UnknownName {
                what: "role",
                value: s.to_owned(),
            }),
        }
    }
}

impl FromStr for DrbdDisk {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "Diskless" => DrbdDisk::Diskless,
            "Attaching" => DrbdDisk::Attaching,
            "Detaching" => DrbdDisk::Detaching,
            "Failed" => DrbdDisk::Failed,
            "Negotiating" => DrbdDisk::Negotiating,
            "Inconsistent" => DrbdDisk::Inconsistent,
            "Outdated" => DrbdDisk::Outdated,
            "DUnknown" => DrbdDisk::DUnknown,
            "Consistent" => DrbdDisk::Consistent,
            "UpToDate" => DrbdDisk::UpToDate,
            _ => {
                return Err(UnknownName {
                    what: "disk state",
                    value: s.to_owned(),
                })
            }
        })
    }
}

impl FromStr for ConnState {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "StandAlone" => ConnState::StandAlone,
            "Disconnecting" => ConnState::Disconnecting,
            "Unconnected" => ConnState::Unconnected,
            "Timeout" => ConnState::Timeout,
            "BrokenPipe" => ConnState::BrokenPipe,
            "NetworkFailure" => ConnState::NetworkFailure,
            "ProtocolError" => ConnState::ProtocolError,
            "TearDown" => ConnState::TearDown,
            "Connecting" => ConnState::Connecting,
            "Connected" => ConnState::Connected,
            "WFConnection" => ConnState::WFConnection,
            "WFReportParams" => ConnState::WFReportParams,
            other => ConnState::Other(other.to_owned()),
        })
    }
}

impl FromStr for ReplState {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "Off" => ReplState::Off,
            "Established" => ReplState::Established,
            "StartingSyncS" => ReplState::StartingSyncS,
            "StartingSyncT" => ReplState::StartingSyncT,
            "WFBitMapS" => ReplState::WFBitMapS,
            "WFBitMapT" => ReplState::WFBitMapT,
            "WFSyncUUID" => ReplState::WFSyncUUID,
            "SyncSource" => ReplState::SyncSource,
            "SyncTarget" => ReplState::SyncTarget,
            "VerifyS" => ReplState::VerifyS,
            "VerifyT" => ReplState::VerifyT,
            "PausedSyncS" => ReplState::PausedSyncS,
            "PausedSyncT" => ReplState::PausedSyncT,
            "Ahead" => ReplState::Ahead,
            "Behind" => ReplState::Behind,
            other => ReplState::Other(other.to_owned()),
        })
    }
}

impl fmt::Display for DrbdRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DrbdRole::Primary => "Primary",
            DrbdRole::Secondary => "Secondary",
            DrbdRole::Unknown => "Unknown",
        })
    }
}

impl fmt::Display for DrbdDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DrbdDisk::Diskless => "Diskless",
            DrbdDisk::Attaching => "Attaching",
            DrbdDisk::Detaching => "Detaching",
            DrbdDisk::Failed => "Failed",
            DrbdDisk::Negotiating => "Negotiating",
            DrbdDisk::Inconsistent => "Inconsistent",
            DrbdDisk::Outdated => "Outdated",
            DrbdDisk::DUnknown => "DUnknown",
            DrbdDisk::Consistent => "Consistent",
            DrbdDisk::UpToDate => "UpToDate",
        })
    }
}

impl From<DrbdRole> for Role {
    fn from(r: DrbdRole) -> Role {
        match r {
            DrbdRole::Primary => Role::Primary,
            DrbdRole::Secondary => Role::Secondary,
            DrbdRole::Unknown => Role::Unknown,
        }
    }
}

impl From<DrbdDisk> for DiskState {
    /// Transient states count as the state they may end in at worst: an
    /// attaching disk is not data anyone may promote on yet.
    fn from(d: DrbdDisk) -> DiskState {
        match d {
            DrbdDisk::UpToDate => DiskState::UpToDate,
            DrbdDisk::Consistent => DiskState::Consistent,
            DrbdDisk::Outdated => DiskState::Outdated,
            DrbdDisk::Inconsistent | DrbdDisk::Attaching | DrbdDisk::Negotiating => DiskState::Inconsistent,
            DrbdDisk::Diskless | DrbdDisk::Detaching | DrbdDisk::Failed => DiskState::Diskless,
            DrbdDisk::DUnknown => DiskState::Unknown,
        }
    }
}

/// What a resource that DRBD does not have up (never configured, `down`, or
/// destroyed) looks like to the core: nothing to promote, nobody connected.
pub const DOWN: crate::core::ResourceObservation = crate::core::ResourceObservation {
    role: Role::Unknown,
    disk: DiskState::Diskless,
    connected: false,
    peer_role: Role::Unknown,
    peer_disk: DiskState::Unknown,
};

/// The one reduction from DRBD's objects to the core's observation, shared by
/// events2, `status --json` and /proc/drbd so they can never disagree:
/// - `disk` is the worst of the volumes (DRBD's own order), Diskless if none;
/// - the peer is one connection (the caller picks it); `connected` means
///   exactly `Connected`;
/// - while not connected the peer's role is `Unknown`, and its disk is `Unknown`
///   unless DRBD itself marked it `Outdated`/`Inconsistent` (what a fence-peer
///   handler's exit code 3/4/7 does): DRBD may print the loss of the connection
///   and the loss of the peer's disk as two lines, and a stale `UpToDate` must
///   not outlive the connection.
pub(crate) fn reduce(
    role: Option<DrbdRole>,
    disks: impl Iterator<Item = DrbdDisk>,
    peer: Option<(bool, Option<DrbdRole>, &mut dyn Iterator<Item = DrbdDisk>)>,
) -> crate::core::ResourceObservation {
    let role = role.map_or(Role::Unknown, Role::from);
    let disk = disks.min().map_or(DiskState::Diskless, DiskState::from);
    let Some((connected, peer_role, peer_disks)) = peer else {
        return crate::core::ResourceObservation {
            role,
            disk,
            connected: false,
            peer_role: Role::Unknown,
            peer_disk: DiskState::Unknown,
        };
    };
    let worst_peer = peer_disks.min().unwrap_or(DrbdDisk::DUnknown);
    let (peer_role, peer_disk) = if connected {
        (peer_role.map_or(Role::Unknown, Role::from), DiskState::from(worst_peer))
    } else {
        let disk = match worst_peer {
            DrbdDisk::Outdated => DiskState::Outdated,
            DrbdDisk::Inconsistent => DiskState::Inconsistent,
            _ => DiskState::Unknown,
        };
        (Role::Unknown, disk)
    };
    crate::core::ResourceObservation {
        role,
        disk,
        connected,
        peer_role,
        peer_disk,
    }
}
