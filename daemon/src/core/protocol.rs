//! What the two daemons say to each other: heartbeats (UDP, every link) and
//! control-channel messages (TCP, one link at a time). The encoding and the
//! authentication live in `net/`; these are the meanings the core acts on.

use super::types::{DomainName, NodeId, ResourceName};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The compact state a node announces in every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Domains present on the sender (running or paused), sorted.
    pub domains: Vec<DomainName>,
    /// Resources the sender's DRBD holds Primary, sorted.
    pub primaries: Vec<ResourceName>,
    /// The sender is draining itself for maintenance.
    pub standby: bool,
}

/// One heartbeat as the core sees it once the transport has authenticated it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub from: NodeId,
    /// Random per daemon start: a new boot id is a new incarnation of the peer.
    pub boot: u64,
    /// Strictly increasing within one boot id.
    pub counter: u64,
    pub summary: Summary,
}

/// A migration window, named by the node that opened it and its own counter, so
/// both daemons use the same name and requests about it are idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowId {
    pub opener: NodeId,
    pub boot: u64,
    pub n: u64,
}

impl fmt::Display for WindowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}-{:x}-{}", self.opener.0, self.boot & 0xffff, self.n)
    }
}

/// A control-channel message from the peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerMessage {
    pub from: NodeId,
    pub boot: u64,
    /// Strictly increasing within one boot id; a retransmission after a reconnect
    /// repeats the sequence number, which makes it detectable as a duplicate.
    pub seq: u64,
    pub body: PeerBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerBody {
    /// Destination to source: allow two primaries for these resources so I can
    /// promote them for the incoming migration of `domain`.
    EnterDual {
        window: WindowId,
        domain: DomainName,
        resources: Vec<ResourceName>,
    },
    /// Source to destination: dual-primary is on here (Ok) or refused (reason).
    EnterDualAnswer {
        window: WindowId,
        result: Result<(), String>,
    },
    /// Either side: this window is over; leave dual-primary, and demote if the
    /// domain does not run on your side.
    LeaveDual { window: WindowId },
    /// DRBD's fence-peer handler on the sender: replication broke, outdate your disk.
    Outdate { token: u64, resource: ResourceName },
    /// The persistent definition (libvirt's inactive domain XML) of a domain
    /// with DRBD disks, as the sender has it now: the receiver defines it too, so
    /// a failover can start the domain there.
    Definition { domain: DomainName, definition: String },
    /// Answer to `Outdate`.
    OutdateAnswer {
        token: u64,
        resource: ResourceName,
        result: Result<(), String>,
    },
    /// The sender's replication link came back: stop working on `Outdate`
    /// `token`, and answer nothing.
    OutdateCancel { token: u64 },
}
