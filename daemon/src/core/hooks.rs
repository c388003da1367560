//! What the hooks ask and what the core answers: prepare an incoming migration,
//! admit a plain start, release a domain, and DRBD's fence-peer handler.

use super::io::{Action, DrbdOp, Event, FencePeerVerdict};
use super::membership::PeerState;
use super::protocol::PeerBody;
use super::types::{ActionId, DiskState, DomainName, DomainRun, Millis, RequestId, ResourceName, Role};
use super::windows::{Phase, Window, WindowSide};
use super::{Core, CoreError, Owner};
use std::collections::BTreeSet;

/// A set of actions that succeed or fail together.
#[derive(Debug, Clone, Default)]
pub(super) struct OpBatch {
    outstanding: BTreeSet<ActionId>,
    error: Option<String>,
    pub(super) domain: Option<DomainName>,
}

impl OpBatch {
    pub(super) fn for_domain(domain: DomainName) -> Self {
        OpBatch {
            domain: Some(domain),
            ..OpBatch::default()
        }
    }
    pub(super) fn add(&mut self, id: ActionId) {
        self.outstanding.insert(id);
    }
    pub(super) fn finish(&mut self, id: ActionId, result: Result<(), String>) {
        self.outstanding.remove(&id);
        if let Err(e) = result {
            self.error.get_or_insert(e);
        }
    }
    pub(super) fn is_empty(&self) -> bool {
        self.outstanding.is_empty()
    }
    pub(super) fn take_error(&mut self) -> Option<String> {
        self.error.take()
    }
}

/// A fence-peer handler waiting for its verdict.
#[derive(Debug, Clone)]
pub(super) struct FencePeerWait {
    resource: ResourceName,
    /// The `Outdate` request sent to the peer, if one is outstanding.
    pub(super) token: Option<u64>,
    /// Answered `Undecided` (I/O stays frozen) if nothing is established by then.
    pub(super) deadline: Millis,
    /// DRBD here was seen disconnected since the handler asked: seen connected
    /// after that, the link is back and the question moot.
    link_seen_down: bool,
}

impl Core {
    /// Why these resources cannot open a migration window, if they cannot.
    pub(super) fn not_replicating(&self, resources: &[ResourceName]) -> Option<String> {
        for r in resources {
            match self.observation(r) {
                None => return Some(format!("the state of resource {r} is not known yet")),
                Some(o) if !o.connected => return Some(format!("resource {r} is not connected to the peer")),
                Some(o) if !o.replicating_up_to_date() => {
                    return Some(format!(
                        "resource {r} is not UpToDate on both hosts (local {:?}, peer {:?})",
                        o.disk, o.peer_disk
                    ))
                }
                Some(_) => {}
            }
        }
        None
    }

    pub(super) fn check_request(&self, request: RequestId) -> Result<(), CoreError> {
        let busy = self.pending.values().any(|o| *o == Owner::Operator(request))
            || self.starts.contains_key(&request)
            || self.releases.contains_key(&request)
            || self.fence_peer.contains_key(&request)
            || self.windows.values().any(|w| w.hook_is(request));
        if busy {
            return Err(CoreError::DuplicateRequest(request));
        }
        Ok(())
    }

    fn refuse(&self, request: RequestId, domain: DomainName, reason: String, out: &mut Vec<Action>) {
        out.push(Action::Event(Event::Refused {
            domain,
            reason: reason.clone(),
        }));
        out.push(Action::Answer {
            request,
            result: Err(reason),
        });
    }

    /// Destination, `migrate begin`: ask the source to allow two primaries, then
    /// promote here. Answered once the window is open, or with the refusal.
    pub(super) fn prepare_incoming(
        &mut self,
        now: Millis,
        request: RequestId,
        domain: DomainName,
        resources: Vec<ResourceName>,
        out: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        self.check_request(request)?;
        self.check_resources(&domain, &resources)?;
        let refusal = if self.standby {
            Some("this host is in standby".to_string())
        } else if self.membership.state() != PeerState::Online {
            Some(format!(
                "the peer is {}; a migration needs it online",
                peer_word(self.membership.state())
            ))
        } else if self.local_run(&domain) != DomainRun::Stopped {
            Some(format!("{domain} already runs on this host"))
        } else if self.window_for(&domain).is_some() {
            Some(format!("{domain} already has a migration window"))
        } else {
            self.not_replicating(&resources)
        };
        if let Some(reason) = refusal {
            self.refuse(request, domain, format!("tandem refuses the migration: {reason}"), out);
            return Ok(());
        }
        self.define(&domain, &resources);
        let id = self.new_window_id();
        let until = now.plus(self.cfg.request_timeout_ms);
        let deadline = now.plus(self.cfg.window_deadline_ms);
        let w = Window::opening(
            domain.clone(),
            resources.clone(),
            WindowSide::Destination,
            Phase::AwaitSource { until },
            deadline,
            Some(request),
        );
        self.windows.insert(id, w);
        let msg = self.send(PeerBody::EnterDual {
            window: id,
            domain,
            resources,
        });
        out.push(msg);
        self.persist(out);
        Ok(())
    }

    /// `prepare begin`: admit a start here, or the destination half of a migration.
    pub(super) fn prepare_start(
        &mut self,
        request: RequestId,
        domain: DomainName,
        resources: Vec<ResourceName>,
        out: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        self.check_request(request)?;
        self.check_resources(&domain, &resources)?;
        if let Some((_, w)) = self.window_for(&domain) {
            let result = if w.side == WindowSide::Destination && w.is_open() {
                Ok(())
            } else {
                Err(format!(
                    "tandem refuses to start {domain}: it is in a migration that is not open here"
                ))
            };
            out.push(Action::Answer { request, result });
            return Ok(());
        }
        if let Some(reason) = self.start_refusal(&domain, &resources) {
            let reason = format!("tandem refuses to start {domain}: {reason}");
            self.refuse(request, domain, reason, out);
            return Ok(());
        }
        self.define(&domain, &resources);
        let mut batch = OpBatch::for_domain(domain);
        for r in resources {
            if self.observation(&r).is_some_and(|o| o.role == Role::Primary) {
                continue;
            }
            batch.add(self.drbd(Owner::Start(request), DrbdOp::Promote { resource: r }, out));
        }
        self.starts.insert(request, batch);
        self.finish_start(request, out);
        Ok(())
    }

    pub(super) fn start_refusal(&self, domain: &DomainName, resources: &[ResourceName]) -> Option<String> {
        // After a confirmed fence this host is the only one left: standby drains
        // it of ordinary starts, not of a failover.
        let peer_fenced = matches!(self.membership.state(), PeerState::Fenced { .. });
        if self.standby && !peer_fenced {
            return Some("this host is in standby".into());
        }
        match self.membership.state() {
            PeerState::Unknown => {
                return Some(
                    "the peer has not been seen since tandem started, so it may run the domain (wait-for-all; \
                     an operator fence of the peer lifts this)"
                        .into(),
                )
            }
            PeerState::Lost { .. } => return Some("the peer is lost and not fenced yet".into()),
            PeerState::Online => {
                let summary = self.membership.peer_summary();
                if summary.is_some_and(|s| s.domains.contains(domain)) {
                    return Some("it runs on the peer".into());
                }
                for r in resources {
                    let peer_primary = summary.is_some_and(|s| s.primaries.contains(r))
                        || self.observation(r).is_some_and(|o| o.peer_role == Role::Primary);
                    if peer_primary {
                        return Some(format!("the peer holds resource {r} Primary"));
                    }
                }
            }
            PeerState::Fenced { .. } => {}
        }
        for r in resources {
            match self.observation(r) {
                None => return Some(format!("the state of resource {r} is not known yet")),
                Some(o) if o.disk != DiskState::UpToDate => {
                    return Some(format!("resource {r} is {:?} here, not UpToDate", o.disk))
                }
                Some(_) => {}
            }
        }
        None
    }

    pub(super) fn finish_start(&mut self, request: RequestId, out: &mut Vec<Action>) {
        let Some(b) = self.starts.get_mut(&request) else {
            return;
        };
        if !b.is_empty() {
            return;
        }
        let error = b.take_error();
        let domain = b.domain.clone();
        self.starts.remove(&request);
        match error {
            None => {
                // libvirt starts the domain as soon as the hook answers, and a
                // `virsh migrate` may follow before the next poll of the
                // hypervisor: count it as present (not yet executing) until the
                // hypervisor says how the start went. A failed start ends in
                // `release end`, which marks it stopped.
                if let Some(entry) = domain.as_ref().and_then(|d| self.domains.get_mut(d)) {
                    if entry.run == DomainRun::Stopped {
                        entry.run = DomainRun::Paused;
                    }
                }
                out.push(Action::Answer {
                    request,
                    result: Ok(()),
                });
            }
            Some(e) => {
                if let Some(d) = domain {
                    let resources = self.domains.get(&d).map(|e| e.resources.clone()).unwrap_or_default();
                    for r in resources {
                        if !self.used_by_other_local(&r, &d) {
                            self.drbd(Owner::Cleanup, DrbdOp::Demote { resource: r }, out);
                        }
                    }
                    let reason = format!("tandem could not prepare {d}: {e}");
                    self.refuse(request, d, reason, out);
                }
            }
        }
    }

    /// `release end`: the domain no longer runs here.
    pub(super) fn release(
        &mut self,
        now: Millis,
        request: RequestId,
        domain: DomainName,
        resources: Vec<ResourceName>,
        out: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        self.check_request(request)?;
        self.check_resources(&domain, &resources)?;
        self.define(&domain, &resources);
        if let Some(d) = self.domains.get_mut(&domain) {
            d.run = DomainRun::Stopped;
        }
        if let Some((id, w)) = self.window_for(&domain) {
            if w.side == WindowSide::Source {
                // Released by the source of a migration: it now runs on the peer,
                // even if no heartbeat said so before the peer died.
                self.handed_over.insert(domain.clone());
            }
            self.close_window(id, true, "the domain was released".into(), Some(request), out);
            self.advance_windows(now, out);
            return Ok(());
        }
        let mut batch = OpBatch::for_domain(domain.clone());
        for r in resources {
            if !self.used_by_other_local(&r, &domain) {
                batch.add(self.drbd(Owner::Release(request), DrbdOp::Demote { resource: r }, out));
            }
        }
        self.releases.insert(request, batch);
        self.finish_release(request, out);
        Ok(())
    }

    pub(super) fn finish_release(&mut self, request: RequestId, out: &mut Vec<Action>) {
        let Some(b) = self.releases.get_mut(&request) else {
            return;
        };
        if !b.is_empty() {
            return;
        }
        let result = match (b.take_error(), &b.domain) {
            (Some(e), Some(d)) => Err(format!("tandem could not demote the resources of {d}: {e}")),
            (Some(e), None) => Err(e),
            (None, _) => Ok(()),
        };
        self.releases.remove(&request);
        out.push(Action::Answer { request, result });
    }

    /// DRBD's fence-peer handler: replication of `resource` broke.
    pub(super) fn fence_peer_request(
        &mut self,
        now: Millis,
        request: RequestId,
        resource: ResourceName,
        out: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        self.check_request(request)?;
        if !self.resources.contains_key(&resource) {
            return Err(CoreError::UnknownResource(resource));
        }
        if let PeerState::Fenced { .. } = self.membership.state() {
            out.push(Action::FencePeerAnswer {
                request,
                verdict: FencePeerVerdict::PeerFenced,
            });
            return Ok(());
        }
        let wait = FencePeerWait {
            resource,
            token: None,
            deadline: now.plus(self.cfg.arbiter.fence_timeout_ms.saturating_mul(4)),
            link_seen_down: false,
        };
        self.fence_peer.insert(request, wait);
        if self.membership.state() == PeerState::Online {
            self.ask_outdate(request, out);
        }
        // Otherwise the arbiter's confirmed fence answers it (or the deadline does).
        Ok(())
    }

    fn ask_outdate(&mut self, request: RequestId, out: &mut Vec<Action>) {
        let token = self.next_token;
        self.next_token += 1;
        let Some(w) = self.fence_peer.get_mut(&request) else {
            return;
        };
        w.token = Some(token);
        let resource = w.resource.clone();
        let msg = self.send(PeerBody::Outdate { token, resource });
        out.push(msg);
    }

    /// The peer is back: ask it to outdate for every handler still waiting.
    pub(super) fn retry_outdates(&mut self, _now: Millis, out: &mut Vec<Action>) {
        let waiting: Vec<RequestId> = self
            .fence_peer
            .iter()
            .filter(|(_, w)| w.token.is_none())
            .map(|(r, _)| *r)
            .collect();
        for r in waiting {
            self.ask_outdate(r, out);
        }
    }

    pub(super) fn outdate_answer(&mut self, token: u64, result: Result<(), String>, out: &mut Vec<Action>) {
        let Some(request) = self
            .fence_peer
            .iter()
            .find(|(_, w)| w.token == Some(token))
            .map(|(r, _)| *r)
        else {
            return;
        };
        self.fence_peer.remove(&request);
        let verdict = match result {
            Ok(()) => FencePeerVerdict::PeerOutdated,
            Err(e) => FencePeerVerdict::Undecided(format!("the peer did not outdate its disk: {e}")),
        };
        out.push(Action::FencePeerAnswer { request, verdict });
    }

    /// Handlers answered by a confirmed fence, or given up at their deadline.
    pub(super) fn advance_fence_peer(&mut self, now: Millis, out: &mut Vec<Action>) {
        // The replication link came back while a handler waited: DRBD ignores
        // the handler's answer now, and the peer must stop trying to outdate
        // (a retry there after a later break would outdate it for a question
        // nobody asks any more).
        let requests: Vec<RequestId> = self.fence_peer.keys().copied().collect();
        for request in requests {
            let Some(w) = self.fence_peer.get(&request) else {
                continue;
            };
            let connected = self.observation(&w.resource).is_some_and(|o| o.connected);
            if !connected {
                if let Some(w) = self.fence_peer.get_mut(&request) {
                    w.link_seen_down = true;
                }
                continue;
            }
            if !w.link_seen_down {
                continue;
            }
            let token = w.token;
            self.fence_peer.remove(&request);
            if let Some(token) = token {
                let msg = self.send(PeerBody::OutdateCancel { token });
                out.push(msg);
            }
            out.push(Action::FencePeerAnswer {
                request,
                verdict: FencePeerVerdict::Undecided("the replication link is back".into()),
            });
        }
        let fenced = matches!(self.membership.state(), PeerState::Fenced { .. });
        let done: Vec<RequestId> = self
            .fence_peer
            .iter()
            .filter(|(_, w)| fenced || now >= w.deadline)
            .map(|(r, _)| *r)
            .collect();
        for request in done {
            self.fence_peer.remove(&request);
            let verdict = if fenced {
                FencePeerVerdict::PeerFenced
            } else {
                FencePeerVerdict::Undecided(
                    "the peer could neither be outdated nor confirmed fenced; I/O stays frozen".into(),
                )
            };
            out.push(Action::FencePeerAnswer { request, verdict });
        }
    }
}

pub(super) fn peer_word(s: PeerState) -> &'static str {
    match s {
        PeerState::Unknown => "not seen since start",
        PeerState::Online => "online",
        PeerState::Lost { .. } => "lost",
        PeerState::Fenced { .. } => "fenced",
    }
}

impl Window {
    pub(super) fn hook_is(&self, request: RequestId) -> bool {
        self.hook_request() == Some(request)
    }
}
