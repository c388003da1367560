//! The pure core: every safety decision tandem makes, with no I/O, no clock and no
//! async runtime. Inputs go in with the time they happened; actions come out. The
//! daemon's drivers and the deterministic simulator (`tandem-sim`) drive the same
//! code.
//!
//! The pieces: [`membership`] (is the peer alive), [`arbiter`] (when to fence it),
//! the migration windows (`windows.rs`), the hooks' admission rules (`hooks.rs`) and
//! the takeover after a confirmed fence (`failover.rs`).

pub mod arbiter;
mod error;
mod failover;
mod hooks;
mod io;
pub mod membership;
mod outdate;
mod protocol;
mod types;
mod views;
mod windows;

#[cfg(test)]
mod tests;

pub use arbiter::{ArbiterPhase, ArbiterTimings};
pub use error::CoreError;
pub use io::{Action, DrbdOp, Event, FencePeerVerdict, Input, Persisted, PersistedWindow};
pub use membership::PeerState;
pub use protocol::{Heartbeat, PeerBody, PeerMessage, Summary, WindowId};
pub use types::*;
pub use views::{DomainView, FailureView, ResourceView, TakeoverView};

use arbiter::{Arbiter, ArbiterOut};
use failover::Takeover;
use hooks::{FencePeerWait, OpBatch};
use membership::{Membership, MembershipChange};
use std::collections::{BTreeMap, BTreeSet};
use windows::Window;

/// Settings the core needs; the daemon fills them from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreConfig {
    pub me: NodeId,
    pub links: usize,
    /// The peer is lost after this much silence on every link.
    pub dead_after_ms: u64,
    pub arbiter: ArbiterTimings,
    /// How many fence levels the peer has.
    pub peer_fence_levels: usize,
    /// The DRBD resources tandem manages.
    pub resources: Vec<ResourceName>,
    /// A migration window is closed by the reconciler after this long.
    pub window_deadline_ms: u64,
    /// A request to the peer not answered within this is refused.
    pub request_timeout_ms: u64,
    /// Pause between retries of a failed demote or takeover step.
    pub retry_ms: u64,
}

impl CoreConfig {
    /// Defaults as documented in docs/configuration.md, for node `me`.
    pub fn with_defaults(me: NodeId, resources: Vec<ResourceName>) -> Self {
        CoreConfig {
            me,
            links: 2,
            dead_after_ms: 1000,
            arbiter: ArbiterTimings {
                fence_delay_ms: if me.0 == 0 { 0 } else { 2000 },
                fence_timeout_ms: 30_000,
                backoff_initial_ms: 1000,
                backoff_max_ms: 30_000,
            },
            peer_fence_levels: 1,
            resources,
            window_deadline_ms: 600_000,
            request_timeout_ms: 10_000,
            retry_ms: 1000,
        }
    }
}

#[derive(Debug, Clone)]
struct DomainEntry {
    resources: Vec<ResourceName>,
    run: DomainRun,
}

/// What an action the core waits on belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    Window(WindowId),
    Start(RequestId),
    Release(RequestId),
    /// The outdate the peer asked for with this token (core/outdate.rs).
    LocalOutdate(u64),
    Takeover(DomainName),
    Migrate(DomainName),
    /// An operator's start or stop, answered to its request when done.
    Operator(RequestId),
    /// Undo of a half-done start; the result only matters to the log.
    Cleanup,
}

/// One node's core.
#[derive(Debug, Clone)]
pub struct Core {
    cfg: CoreConfig,
    boot: u64,
    membership: Membership,
    arbiter: Arbiter,
    resources: BTreeMap<ResourceName, Option<ResourceObservation>>,
    domains: BTreeMap<DomainName, DomainEntry>,
    windows: BTreeMap<WindowId, Window>,
    pending: BTreeMap<ActionId, Owner>,
    starts: BTreeMap<RequestId, OpBatch>,
    releases: BTreeMap<RequestId, OpBatch>,
    fence_peer: BTreeMap<RequestId, FencePeerWait>,
    takeovers: BTreeMap<DomainName, Takeover>,
    /// Migrations started by tandem, with the operator's request waiting for each.
    migrating: BTreeMap<DomainName, Option<RequestId>>,
    /// The latest local definition of each DRBD-backed domain, sent to the peer
    /// when it changes and again whenever the peer comes online.
    definitions: BTreeMap<DomainName, String>,
    /// Domains migrated to the peer since its last heartbeat.
    handed_over: BTreeSet<DomainName>,
    peer_msg: Option<(u64, u64)>,
    standby: bool,
    /// Domains a failover gave up on, with the reason (until a cleanup).
    failed: BTreeMap<DomainName, String>,
    /// Outdates the peer asked for, by its token, until DRBD shows them.
    outdating: BTreeMap<u64, outdate::LocalOutdate>,
    next_action: u64,
    next_seq: u64,
    next_window: u64,
    next_token: u64,
}

impl Core {
    /// A core for a daemon that just started with boot id `boot` (random per start),
    /// given what the previous run of this daemon persisted.
    pub fn new(cfg: CoreConfig, boot: u64, restored: Persisted) -> Self {
        let membership = Membership::new(cfg.me, cfg.links, cfg.dead_after_ms);
        let arbiter = Arbiter::new(cfg.arbiter.clone(), cfg.peer_fence_levels);
        let resources = cfg.resources.iter().map(|r| (r.clone(), None)).collect();
        let mut core = Core {
            cfg,
            boot,
            membership,
            arbiter,
            resources,
            domains: BTreeMap::new(),
            windows: BTreeMap::new(),
            pending: BTreeMap::new(),
            starts: BTreeMap::new(),
            releases: BTreeMap::new(),
            fence_peer: BTreeMap::new(),
            takeovers: BTreeMap::new(),
            migrating: BTreeMap::new(),
            definitions: BTreeMap::new(),
            handed_over: BTreeSet::new(),
            peer_msg: None,
            standby: false,
            failed: BTreeMap::new(),
            outdating: BTreeMap::new(),
            next_action: 1,
            next_seq: 1,
            next_window: 1,
            next_token: 1,
        };
        for w in restored.windows {
            if w.resources.iter().all(|r| core.resources.contains_key(r)) {
                core.define(&w.domain, &w.resources);
                core.windows.insert(w.id, Window::restored(w));
            }
        }
        core
    }

    pub fn me(&self) -> NodeId {
        self.cfg.me
    }

    pub fn boot(&self) -> u64 {
        self.boot
    }

    pub fn peer_state(&self) -> PeerState {
        self.membership.state()
    }

    pub fn arbiter_phase(&self) -> ArbiterPhase {
        self.arbiter.phase()
    }

    /// Takes the timings and the peer's number of fence levels of a reloaded
    /// configuration (config/reload.rs decides what a reload may change).
    /// Deadlines already set keep their time; the ones set from now on use
    /// the new values, and the peer is lost after the new `dead_after_ms`
    /// of silence. The node, its links and resources stay as they are.
    pub fn reconfigure(&mut self, cfg: &CoreConfig) {
        self.cfg.dead_after_ms = cfg.dead_after_ms;
        self.cfg.arbiter = cfg.arbiter.clone();
        self.cfg.peer_fence_levels = cfg.peer_fence_levels;
        self.cfg.window_deadline_ms = cfg.window_deadline_ms;
        self.cfg.request_timeout_ms = cfg.request_timeout_ms;
        self.cfg.retry_ms = cfg.retry_ms;
        self.membership.set_dead_after_ms(cfg.dead_after_ms);
        self.arbiter.reconfigure(cfg.arbiter.clone(), cfg.peer_fence_levels);
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    pub fn open_windows(&self) -> impl Iterator<Item = (&WindowId, &DomainName)> {
        self.windows.iter().map(|(id, w)| (id, &w.domain))
    }

    /// What this node announces in its heartbeats.
    pub fn summary(&self) -> Summary {
        Summary {
            domains: self
                .domains
                .iter()
                .filter(|(_, d)| d.run != DomainRun::Stopped)
                .map(|(n, _)| n.clone())
                .collect(),
            primaries: self
                .resources
                .iter()
                .filter(|(_, o)| o.is_some_and(|o| o.role == Role::Primary))
                .map(|(n, _)| n.clone())
                .collect(),
            standby: self.standby,
        }
    }

    /// The earliest time at which a `Tick` could change something.
    pub fn next_deadline(&self) -> Option<Millis> {
        let windows = self.windows.values().filter_map(|w| w.next_deadline());
        let takeovers = self.takeovers.values().filter_map(|t| t.retry_at());
        let fence_peer = self.fence_peer.values().map(|f| f.deadline);
        let outdates = self.outdating.values().map(outdate::LocalOutdate::next_deadline);
        [self.membership.next_deadline(), self.arbiter.next_deadline()]
            .into_iter()
            .flatten()
            .chain(windows)
            .chain(takeovers)
            .chain(fence_peer)
            .chain(outdates)
            .min()
    }

    /// Feeds one input. On `Err` nothing changed.
    pub fn handle(&mut self, now: Millis, input: Input) -> Result<Vec<Action>, CoreError> {
        let mut out = Vec::new();
        match input {
            Input::Tick => {}
            Input::Heartbeat { link, heartbeat } => {
                self.membership.check(link, &heartbeat)?;
                let change = self.membership.record(now, link, heartbeat);
                if let Some(s) = self.membership.peer_summary() {
                    self.handed_over.retain(|d| !s.domains.contains(d));
                }
                if let Some(change) = change {
                    self.membership_changed(now, change, &mut out);
                }
            }
            Input::Peer(msg) => self.peer_message(now, msg, &mut out)?,
            Input::ResourceObserved { resource, observation } => {
                let slot = self
                    .resources
                    .get_mut(&resource)
                    .ok_or(CoreError::UnknownResource(resource))?;
                *slot = Some(observation);
            }
            Input::DomainObserved { domain, run } => {
                let d = self.domains.get_mut(&domain).ok_or(CoreError::UnknownDomain(domain))?;
                d.run = run;
            }
            Input::DomainDefined { domain, resources } => {
                self.check_resources(&domain, &resources)?;
                self.define(&domain, &resources);
            }
            Input::DomainDefinition { domain, definition } => {
                if !self.domains.contains_key(&domain) {
                    return Err(CoreError::UnknownDomain(domain));
                }
                if self.definitions.get(&domain) != Some(&definition) {
                    if self.membership.state() == PeerState::Online {
                        let msg = self.send(PeerBody::Definition {
                            domain: domain.clone(),
                            definition: definition.clone(),
                        });
                        out.push(msg);
                    }
                    self.definitions.insert(domain, definition);
                }
            }
            Input::PrepareIncoming {
                request,
                domain,
                resources,
            } => self.prepare_incoming(now, request, domain, resources, &mut out)?,
            Input::PrepareStart {
                request,
                domain,
                resources,
            } => self.prepare_start(request, domain, resources, &mut out)?,
            Input::Release {
                request,
                domain,
                resources,
            } => self.release(now, request, domain, resources, &mut out)?,
            Input::FencePeer { request, resource } => self.fence_peer_request(now, request, resource, &mut out)?,
            Input::ActionDone { action, result } => self.action_done(now, action, result, &mut out)?,
            Input::FenceDone { action, result } => {
                if !self.arbiter.awaits(action) {
                    return Err(CoreError::UnexpectedFenceResult(action));
                }
                let outs = self.arbiter.fence_result(now, result, || alloc(&mut self.next_action));
                self.arbiter_out(now, outs, &mut out);
            }
            Input::OperatorMigrate { request, domain } => self.operator_migrate(request, domain, &mut out)?,
            Input::OperatorStart { request, domain } => self.operator_start(request, domain, &mut out)?,
            Input::OperatorStop { request, domain, force } => self.operator_stop(request, domain, force, &mut out)?,
            Input::OperatorStandby { on } => {
                self.standby = on;
                if on {
                    let here: Vec<DomainName> = self
                        .domains
                        .iter()
                        .filter(|(_, d)| d.run == DomainRun::Running)
                        .map(|(n, _)| n.clone())
                        .collect();
                    for d in here {
                        // A domain that cannot leave now stays; standby only drains.
                        let _ = self.operator_migrate(None, d, &mut out);
                    }
                }
            }
            Input::OperatorFence => self.arbiter.operator_fence(now),
            Input::OperatorCleanup => self.cleanup_failures(),
        }
        self.advance(now, &mut out);
        Ok(out)
    }

    /// Everything time- or state-driven that any input may have unblocked.
    fn advance(&mut self, now: Millis, out: &mut Vec<Action>) {
        if let Some(change) = self.membership.tick(now) {
            self.membership_changed(now, change, out);
        }
        let still_lost = matches!(self.membership.state(), PeerState::Lost { .. } | PeerState::Unknown);
        let outs = self.arbiter.tick(now, still_lost, || alloc(&mut self.next_action));
        self.arbiter_out(now, outs, out);
        self.advance_windows(now, out);
        self.advance_fence_peer(now, out);
        self.advance_outdates(now, out);
        self.advance_takeovers(now, out);
    }

    fn membership_changed(&mut self, now: Millis, change: MembershipChange, out: &mut Vec<Action>) {
        match change {
            MembershipChange::PeerOnline { rejoined_after_fence } => {
                out.push(Action::Event(Event::PeerOnline { rejoined_after_fence }));
                let defs: Vec<(DomainName, String)> =
                    self.definitions.iter().map(|(d, x)| (d.clone(), x.clone())).collect();
                for (domain, definition) in defs {
                    let msg = self.send(PeerBody::Definition { domain, definition });
                    out.push(msg);
                }
                if let Some(a) = self.arbiter.peer_online() {
                    self.arbiter_out(now, vec![a], out);
                }
                self.retry_outdates(now, out);
            }
            MembershipChange::PeerLost => {
                out.push(Action::Event(Event::PeerLost));
                self.arbiter.peer_lost(now, self.membership.seen_since_boot());
            }
        }
    }

    fn arbiter_out(&mut self, now: Millis, outs: Vec<ArbiterOut>, out: &mut Vec<Action>) {
        for o in outs {
            match o {
                ArbiterOut::Fence { action, level } => {
                    out.push(Action::Event(Event::FenceStarted { level }));
                    out.push(Action::Fence {
                        action,
                        target: self.cfg.me.other(),
                        level,
                    });
                }
                ArbiterOut::Confirmed => {
                    self.membership.mark_fenced(now);
                    out.push(Action::Event(Event::FenceConfirmed));
                    self.peer_fenced(now, out);
                }
                ArbiterOut::LevelFailed { level, reason } => {
                    out.push(Action::Event(Event::FenceLevelFailed { level, reason }))
                }
                ArbiterOut::RoundFailed { round, retry_at } => {
                    out.push(Action::Event(Event::FenceRoundFailed { round, retry_at }))
                }
                ArbiterOut::Cancelled => out.push(Action::Event(Event::FenceCancelled)),
            }
        }
    }

    fn peer_message(&mut self, now: Millis, msg: PeerMessage, out: &mut Vec<Action>) -> Result<(), CoreError> {
        if msg.from != self.cfg.me.other() {
            return Err(CoreError::NotThePeer(msg.from));
        }
        if let Some((boot, last)) = self.peer_msg {
            if boot == msg.boot && msg.seq <= last {
                return Err(CoreError::DuplicateMessage {
                    boot,
                    seq: msg.seq,
                    last,
                });
            }
        }
        // Validate the body before the sequence number is consumed.
        match &msg.body {
            PeerBody::EnterDual { .. }
            | PeerBody::Outdate { .. }
            | PeerBody::Definition { .. }
            | PeerBody::OutdateCancel { .. } => {}
            PeerBody::EnterDualAnswer { window, .. } | PeerBody::LeaveDual { window } => {
                if !self.windows.contains_key(window) {
                    return Err(CoreError::UnknownWindow(*window));
                }
            }
            PeerBody::OutdateAnswer { token, .. } => {
                if !self.fence_peer.values().any(|f| f.token == Some(*token)) {
                    return Err(CoreError::UnexpectedOutdateAnswer(*token));
                }
            }
        }
        if let PeerBody::Outdate { resource, .. } = &msg.body {
            if !self.resources.contains_key(resource) {
                return Err(CoreError::UnknownResource(resource.clone()));
            }
        }
        self.peer_msg = Some((msg.boot, msg.seq));
        match msg.body {
            PeerBody::EnterDual {
                window,
                domain,
                resources,
            } => self.peer_enter_dual(now, window, domain, resources, out),
            PeerBody::EnterDualAnswer { window, result } => self.peer_enter_dual_answer(now, window, result, out),
            PeerBody::LeaveDual { window } => self.close_window(window, false, "the peer closed it".into(), None, out),
            PeerBody::Outdate { token, resource } => self.peer_outdate(now, token, resource, out),
            PeerBody::OutdateAnswer { token, result, .. } => self.outdate_answer(token, result, out),
            PeerBody::OutdateCancel { token } => {
                self.outdating.remove(&token);
            }
            PeerBody::Definition { domain, definition } => {
                // Where a domain runs, its own definition is the one that counts:
                // the peer's copy may be older.
                if self.local_run(&domain) == DomainRun::Stopped && self.definitions.get(&domain) != Some(&definition) {
                    out.push(Action::DefineDomain { domain, definition });
                }
            }
        }
        Ok(())
    }

    fn action_done(
        &mut self,
        now: Millis,
        action: ActionId,
        result: Result<(), String>,
        out: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        let owner = self
            .pending
            .remove(&action)
            .ok_or(CoreError::UnexpectedResult(action))?;
        match owner {
            Owner::Window(w) => {
                if let Some(win) = self.windows.get_mut(&w) {
                    win.batch.finish(action, result);
                }
            }
            Owner::Start(r) => {
                if let Some(b) = self.starts.get_mut(&r) {
                    b.finish(action, result);
                }
                self.finish_start(r, out);
            }
            Owner::Release(r) => {
                if let Some(b) = self.releases.get_mut(&r) {
                    b.finish(action, result);
                }
                self.finish_release(r, out);
            }
            Owner::LocalOutdate(token) => self.local_outdate_done(now, token, result),
            Owner::Takeover(d) => {
                if let Some(t) = self.takeovers.get_mut(&d) {
                    t.finish(now, action, result, self.cfg.retry_ms);
                }
            }
            Owner::Migrate(d) => {
                if let Some(Some(request)) = self.migrating.remove(&d) {
                    out.push(Action::Answer {
                        request,
                        result: result.clone(),
                    });
                }
                out.push(Action::Event(Event::MigrationFinished { domain: d, result }));
            }
            Owner::Operator(request) => out.push(Action::Answer { request, result }),
            Owner::Cleanup => {}
        }
        Ok(())
    }

    fn operator_migrate(
        &mut self,
        request: Option<RequestId>,
        domain: DomainName,
        out: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        if let Some(r) = request {
            if self.migrating.values().any(|w| *w == Some(r)) {
                return Err(CoreError::DuplicateRequest(r));
            }
        }
        let d = self.known_domain(&domain)?;
        let refusal = if d.run == DomainRun::Stopped {
            Some(format!("{domain} does not run on this host"))
        } else if self.membership.state() != PeerState::Online {
            Some("the peer is not online".to_string())
        } else if self.migrating.contains_key(&domain) {
            Some(format!("{domain} is already migrating"))
        } else {
            None
        };
        if let Some(reason) = refusal {
            if let Some(request) = request {
                out.push(Action::Answer {
                    request,
                    result: Err(format!("tandem refuses to migrate {domain}: {reason}")),
                });
            }
            out.push(Action::Event(Event::Refused { domain, reason }));
            return Ok(());
        }
        let action = self.action(Owner::Migrate(domain.clone()));
        self.migrating.insert(domain.clone(), request);
        out.push(Action::MigrateDomain { action, domain });
        Ok(())
    }

    /// The same checks as a hook's `prepare begin`, before asking the hypervisor
    /// (whose hook then checks again and promotes).
    fn operator_start(
        &mut self,
        request: RequestId,
        domain: DomainName,
        out: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        self.check_request(request)?;
        let d = self.known_domain(&domain)?;
        let refusal = if d.run != DomainRun::Stopped {
            Some(format!("{domain} already runs here"))
        } else if self.window_for(&domain).is_some() {
            Some(format!("{domain} is in a migration"))
        } else {
            let resources = d.resources.clone();
            self.start_refusal(&domain, &resources)
        };
        if let Some(reason) = refusal {
            out.push(Action::Answer {
                request,
                result: Err(format!("tandem refuses to start {domain}: {reason}")),
            });
            out.push(Action::Event(Event::Refused { domain, reason }));
            return Ok(());
        }
        let action = self.action(Owner::Operator(request));
        out.push(Action::StartDomain { action, domain });
        Ok(())
    }

    fn operator_stop(
        &mut self,
        request: RequestId,
        domain: DomainName,
        force: bool,
        out: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        self.check_request(request)?;
        let d = self.known_domain(&domain)?;
        if d.run == DomainRun::Stopped {
            out.push(Action::Answer {
                request,
                result: Err(format!("tandem cannot stop {domain}: it does not run on this host")),
            });
            return Ok(());
        }
        let action = self.action(Owner::Operator(request));
        out.push(Action::StopDomain { action, domain, force });
        Ok(())
    }

    fn check_resources(&self, domain: &DomainName, resources: &[ResourceName]) -> Result<(), CoreError> {
        match resources.iter().find(|r| !self.resources.contains_key(*r)) {
            Some(r) => Err(CoreError::DomainUsesUnknownResource {
                domain: domain.clone(),
                resource: r.clone(),
            }),
            None => Ok(()),
        }
    }

    fn define(&mut self, domain: &DomainName, resources: &[ResourceName]) {
        let e = self.domains.entry(domain.clone()).or_insert(DomainEntry {
            resources: Vec::new(),
            run: DomainRun::Stopped,
        });
        e.resources = resources.to_vec();
    }

    /// A domain this host knows (defined or seen running), or the operator's error.
    fn known_domain(&self, domain: &DomainName) -> Result<&DomainEntry, CoreError> {
        self.domains
            .get(domain)
            .ok_or_else(|| CoreError::UnknownDomain(domain.clone()))
    }

    fn local_run(&self, domain: &DomainName) -> DomainRun {
        self.domains.get(domain).map_or(DomainRun::Stopped, |d| d.run)
    }

    fn observation(&self, resource: &ResourceName) -> Option<ResourceObservation> {
        self.resources.get(resource).copied().flatten()
    }

    /// Whether a domain other than `except` that is present here uses `resource`.
    fn used_by_other_local(&self, resource: &ResourceName, except: &DomainName) -> bool {
        self.domains
            .iter()
            .any(|(n, d)| n != except && d.run != DomainRun::Stopped && d.resources.contains(resource))
    }

    fn action(&mut self, owner: Owner) -> ActionId {
        let id = alloc(&mut self.next_action);
        self.pending.insert(id, owner);
        id
    }

    fn drbd(&mut self, owner: Owner, op: DrbdOp, out: &mut Vec<Action>) -> ActionId {
        let action = self.action(owner);
        out.push(Action::Drbd { action, op });
        action
    }

    fn send(&mut self, body: PeerBody) -> Action {
        let seq = alloc(&mut self.next_seq);
        io::send(self.cfg.me, self.boot, seq.0, body)
    }

    fn persist(&self, out: &mut Vec<Action>) {
        let windows = self
            .windows
            .iter()
            .map(|(id, w)| PersistedWindow {
                id: *id,
                domain: w.domain.clone(),
                resources: w.resources.clone(),
                deadline: w.deadline,
            })
            .collect();
        out.push(Action::Persist(Persisted {
            windows,
            host_boot: None,
        }));
    }
}

fn alloc(counter: &mut u64) -> ActionId {
    let id = ActionId(*counter);
    *counter += 1;
    id
}
