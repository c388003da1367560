//! The core's interface: everything that goes in, everything that comes out.

use super::protocol::{Heartbeat, PeerBody, PeerMessage, WindowId};
use super::types::{
    ActionId, DomainName, DomainRun, LinkId, Millis, NodeId, RequestId, ResourceName, ResourceObservation,
};
use serde::{Deserialize, Serialize};

/// Something that happened, handed to [`super::Core::handle`] with the time it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Time passed; nothing else happened.
    Tick,
    /// An authenticated heartbeat arrived on a link.
    Heartbeat { link: LinkId, heartbeat: Heartbeat },
    /// An authenticated control-channel message arrived.
    Peer(PeerMessage),
    /// The local DRBD reports the state of a resource.
    ResourceObserved {
        resource: ResourceName,
        observation: ResourceObservation,
    },
    /// The local hypervisor reports a domain's state.
    DomainObserved { domain: DomainName, run: DomainRun },
    /// A domain is defined (or redefined) with these DRBD resources.
    DomainDefined {
        domain: DomainName,
        resources: Vec<ResourceName>,
    },
    /// The persistent definition of a domain `DomainDefined` told of, new or
    /// changed: to be defined on the peer as well.
    DomainDefinition { domain: DomainName, definition: String },
    /// Hook, migration destination, `migrate begin`: prepare an incoming migration.
    PrepareIncoming {
        request: RequestId,
        domain: DomainName,
        resources: Vec<ResourceName>,
    },
    /// Hook, `prepare begin`: the domain is about to start on this host.
    PrepareStart {
        request: RequestId,
        domain: DomainName,
        resources: Vec<ResourceName>,
    },
    /// Hook, `release end` (or block script `remove`): the domain no longer runs here.
    Release {
        request: RequestId,
        domain: DomainName,
        resources: Vec<ResourceName>,
    },
    /// DRBD's fence-peer handler on this host: replication of `resource` broke.
    FencePeer { request: RequestId, resource: ResourceName },
    /// A driver finished an action.
    ActionDone {
        action: ActionId,
        result: Result<(), String>,
    },
    /// A fence device answered: Ok means it confirmed the peer powered off.
    FenceDone {
        action: ActionId,
        result: Result<(), String>,
    },
    /// Operator: live-migrate a domain that runs here to the peer. With a
    /// `request`, the core answers it once the migration ended or was refused.
    OperatorMigrate {
        request: Option<RequestId>,
        domain: DomainName,
    },
    /// Operator: start a defined domain here (libvirt then runs the hooks, which
    /// check again and promote). The core answers `request` when it started or why not.
    OperatorStart { request: RequestId, domain: DomainName },
    /// Operator: stop a domain that runs here (`force`: at once, like
    /// `virsh destroy`; else the guest is asked to shut down). The hooks release
    /// its resources.
    OperatorStop {
        request: RequestId,
        domain: DomainName,
        force: bool,
    },
    /// Operator: drain this host (migrate everything away) or end the drain.
    OperatorStandby { on: bool },
    /// Operator: fence the peer now, even if it was never seen since start.
    OperatorFence,
    /// Operator (`tandemctl cleanup`): forget the failures; domains a failover
    /// gave up on are tried again while the peer stays fenced.
    OperatorCleanup,
}

/// How DRBD's fence-peer handler is to exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FencePeerVerdict {
    /// Exit 4: the peer's disk was outdated.
    PeerOutdated,
    /// Exit 7: a fence device confirmed the peer off.
    PeerFenced,
    /// Anything else: I/O stays frozen; the reason goes to stderr.
    Undecided(String),
}

impl FencePeerVerdict {
    /// The exit code DRBD interprets.
    pub fn exit_code(&self) -> i32 {
        match self {
            FencePeerVerdict::PeerOutdated => 4,
            FencePeerVerdict::PeerFenced => 7,
            FencePeerVerdict::Undecided(_) => 1,
        }
    }
}

/// A DRBD operation on a local resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DrbdOp {
    Promote {
        resource: ResourceName,
    },
    /// Retried by the driver while the device is held open, up to its deadline.
    Demote {
        resource: ResourceName,
    },
    /// `net-options --protocol=C --allow-two-primaries=yes|no`.
    DualPrimary {
        resource: ResourceName,
        allow: bool,
    },
    /// Mark the local disk Outdated (the peer's fence-peer handler asked).
    Outdate {
        resource: ResourceName,
    },
}

/// What the core wants done. Every action with an `ActionId` is answered by an
/// `ActionDone` or `FenceDone` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(PeerMessage),
    /// Answer a hook request: Ok lets the hypervisor go on, Err is the one line the
    /// user sees.
    Answer {
        request: RequestId,
        result: Result<(), String>,
    },
    FencePeerAnswer {
        request: RequestId,
        verdict: FencePeerVerdict,
    },
    Drbd {
        action: ActionId,
        op: DrbdOp,
    },
    Fence {
        action: ActionId,
        target: NodeId,
        level: usize,
    },
    StartDomain {
        action: ActionId,
        domain: DomainName,
    },
    MigrateDomain {
        action: ActionId,
        domain: DomainName,
    },
    StopDomain {
        action: ActionId,
        domain: DomainName,
        force: bool,
    },
    /// Define (or redefine) a domain from the peer's definition; the driver logs
    /// the outcome, nothing waits for it.
    DefineDomain {
        domain: DomainName,
        definition: String,
    },
    /// Write this state so a restarted daemon finds its open windows.
    Persist(Persisted),
    Event(Event),
}

/// What a restarted daemon needs back.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Persisted {
    pub windows: Vec<PersistedWindow>,
    /// The host's boot id when written (filled in by the daemon): windows do not
    /// survive a host reboot, since DRBD forgets dual-primary with it.
    #[serde(default)]
    pub host_boot: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedWindow {
    pub id: WindowId,
    pub domain: DomainName,
    pub resources: Vec<ResourceName>,
    pub deadline: Millis,
}

/// Things worth telling the operator (logs, D-Bus signals, the timeline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    PeerOnline {
        rejoined_after_fence: bool,
    },
    PeerLost,
    FenceStarted {
        level: usize,
    },
    FenceLevelFailed {
        level: usize,
        reason: String,
    },
    FenceRoundFailed {
        round: u32,
        retry_at: Millis,
    },
    FenceCancelled,
    FenceConfirmed,
    FailoverPlanned {
        domains: Vec<DomainName>,
    },
    FailoverSkipped {
        domain: DomainName,
        reason: String,
    },
    DomainTakenOver {
        domain: DomainName,
    },
    WindowOpened {
        window: WindowId,
        domain: DomainName,
    },
    WindowClosed {
        window: WindowId,
        domain: DomainName,
        reason: String,
    },
    Refused {
        domain: DomainName,
        reason: String,
    },
    MigrationFinished {
        domain: DomainName,
        result: Result<(), String>,
    },
    /// A control message could not be acted on; kept for the operator.
    PeerRequestRefused {
        what: String,
        reason: String,
    },
}

/// Shorthand used in `PeerBody` construction by the core.
pub(crate) fn send(from: NodeId, boot: u64, seq: u64, body: PeerBody) -> Action {
    Action::Send(PeerMessage { from, boot, seq, body })
}
