//! Plain value types shared by the core's state machines.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Milliseconds on a monotonic clock. The core never reads a clock: every input
/// carries the time it happened, so the simulation can drive it deterministically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Millis(pub u64);

impl Millis {
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// One of the two cluster members, as numbered in the configuration (0 or 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u8);

impl NodeId {
    /// The other member of a two-node cluster.
    pub fn other(self) -> NodeId {
        NodeId(1 - (self.0 & 1))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node{}", self.0)
    }
}

/// Index of a heartbeat link in the configuration's link list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LinkId(pub u8);

/// A DRBD resource name (`r0`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceName(pub String);

/// A hypervisor domain name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DomainName(pub String);

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ResourceName {
    fn from(s: &str) -> Self {
        ResourceName(s.to_owned())
    }
}

impl From<&str> for DomainName {
    fn from(s: &str) -> Self {
        DomainName(s.to_owned())
    }
}

/// DRBD role of one side of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Primary,
    Secondary,
    Unknown,
}

/// DRBD disk state, reduced to what the core's decisions need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DiskState {
    UpToDate,
    /// Attached after a reboot without the peer: the data may be stale.
    Consistent,
    Outdated,
    Inconsistent,
    Diskless,
    /// The peer's disk while disconnected (`DUnknown`).
    Unknown,
}

/// What the local DRBD reports about one resource (from events2 or /proc/drbd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceObservation {
    pub role: Role,
    pub disk: DiskState,
    pub connected: bool,
    pub peer_role: Role,
    pub peer_disk: DiskState,
}

impl ResourceObservation {
    /// Connected with UpToDate disks on both sides: the only state in which a
    /// migration window may open.
    pub fn replicating_up_to_date(&self) -> bool {
        self.connected && self.disk == DiskState::UpToDate && self.peer_disk == DiskState::UpToDate
    }
}

/// What the local hypervisor reports about a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DomainRun {
    /// Not running here (shut off or not defined).
    Stopped,
    /// Running and executing guest code.
    Running,
    /// Present but not executing: an incoming migration before switch-over, or paused.
    Paused,
}

/// Identifies a hook call (libvirt hook, block script, DRBD handler) waiting for an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// Identifies a driver action the core waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActionId(pub u64);
