//! What the core knows, as the status screen shows it: each resource with
//! both sides' roles and disks, each domain with where it runs, the takeovers
//! under way and the domains a failover gave up on. Read-only; `tandemctl
//! status` and `Cluster.StatusJson` render these (docs/status-json.md).

use super::failover::TakeoverStage;
use super::membership::PeerState;
use super::types::{DiskState, DomainRun, Role};
use super::Core;
use serde::Serialize;

/// One DRBD resource tandem manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceView {
    pub name: String,
    /// `None` until DRBD was first read.
    pub role: Option<Role>,
    pub disk: Option<DiskState>,
    pub connected: bool,
    pub peer_role: Option<Role>,
    pub peer_disk: Option<DiskState>,
}

/// Where a domain runs, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainView {
    pub name: String,
    /// "running", "paused" or "stopped" on this host.
    pub here: &'static str,
    /// Whether the peer's last heartbeat listed it as present there; `None`
    /// while the peer is not online.
    pub on_peer: Option<bool>,
    pub resources: Vec<String>,
    /// A migration tandem started (`tandemctl migrate`, standby) is under way.
    pub migrating: bool,
    /// This host is taking it over from a fenced peer.
    pub takeover: Option<TakeoverView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TakeoverView {
    /// "waiting", "promoting" or "starting".
    pub stage: &'static str,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// A domain a failover did not start, and why; kept until `tandemctl cleanup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureView {
    pub domain: String,
    pub reason: String,
}

fn run_word(run: DomainRun) -> &'static str {
    match run {
        DomainRun::Running => "running",
        DomainRun::Paused => "paused",
        DomainRun::Stopped => "stopped",
    }
}

impl Core {
    pub fn resource_views(&self) -> Vec<ResourceView> {
        self.resources
            .iter()
            .map(|(name, o)| ResourceView {
                name: name.0.clone(),
                role: o.map(|o| o.role),
                disk: o.map(|o| o.disk),
                connected: o.is_some_and(|o| o.connected),
                peer_role: o.map(|o| o.peer_role),
                peer_disk: o.map(|o| o.peer_disk),
            })
            .collect()
    }

    pub fn domain_views(&self) -> Vec<DomainView> {
        let peer = match self.membership.state() {
            PeerState::Online => self.membership.peer_summary(),
            _ => None,
        };
        self.domains
            .iter()
            .map(|(name, d)| DomainView {
                name: name.0.clone(),
                here: run_word(d.run),
                on_peer: peer.map(|s| s.domains.contains(name)),
                resources: d.resources.iter().map(|r| r.0.clone()).collect(),
                migrating: self.migrating.contains_key(name),
                takeover: self.takeovers.get(name).map(|t| TakeoverView {
                    stage: match t.stage() {
                        TakeoverStage::Waiting => "waiting",
                        TakeoverStage::Promoting => "promoting",
                        TakeoverStage::Starting => "starting",
                    },
                    attempts: t.attempts(),
                    last_error: t.last_error().map(str::to_owned),
                }),
            })
            .collect()
    }

    pub fn failure_views(&self) -> Vec<FailureView> {
        self.failed
            .iter()
            .map(|(d, reason)| FailureView {
                domain: d.0.clone(),
                reason: reason.clone(),
            })
            .collect()
    }

    /// Whether this host drains (`tandemctl standby on`).
    pub fn standby(&self) -> bool {
        self.standby
    }

    /// Whether the peer's last heartbeat said it drains; `None` while it is
    /// not online.
    pub fn peer_standby(&self) -> Option<bool> {
        match self.membership.state() {
            PeerState::Online => self.membership.peer_summary().map(|s| s.standby),
            _ => None,
        }
    }
}
