//! After a fence device confirmed the peer off: close every window, promote the
//! peer's resources that are UpToDate here, start its domains. A domain whose disk
//! is not UpToDate here is reported, never promoted.

use super::io::{Action, DrbdOp, Event};
use super::membership::PeerState;
use super::types::{ActionId, DiskState, DomainName, DomainRun, Millis};
use super::{Core, Owner};
use std::collections::BTreeSet;

/// How many times a failed promote or start of a taken-over domain is retried.
const TAKEOVER_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Waiting for the domain's window to close or an incoming domain to vanish.
    Waiting {
        retry_at: Option<Millis>,
    },
    Promoting,
    Starting,
}

#[derive(Debug, Clone)]
pub(super) struct Takeover {
    step: Step,
    outstanding: BTreeSet<ActionId>,
    error: Option<String>,
    attempts: u32,
}

impl Takeover {
    fn new() -> Self {
        Takeover {
            step: Step::Waiting { retry_at: None },
            outstanding: BTreeSet::new(),
            error: None,
            attempts: 0,
        }
    }

    pub(super) fn retry_at(&self) -> Option<Millis> {
        match self.step {
            Step::Waiting { retry_at } => retry_at,
            _ => None,
        }
    }

    pub(super) fn finish(&mut self, now: Millis, action: ActionId, result: Result<(), String>, retry_ms: u64) {
        self.outstanding.remove(&action);
        if let Err(e) = result {
            self.error.get_or_insert(e);
        }
        if self.outstanding.is_empty() && self.error.is_some() {
            self.step = Step::Waiting {
                retry_at: Some(now.plus(retry_ms)),
            };
        }
    }
}

impl Core {
    /// A fence device confirmed the peer off.
    pub(super) fn peer_fenced(&mut self, _now: Millis, out: &mut Vec<Action>) {
        let ids: Vec<_> = self.windows.keys().copied().collect();
        for id in ids {
            self.close_window(id, false, "the peer was fenced".into(), None, out);
        }
        let domains: Vec<DomainName> = match self.membership.peer_summary() {
            Some(s) => {
                let mut d: BTreeSet<DomainName> = s.domains.iter().cloned().collect();
                d.extend(self.handed_over.iter().cloned());
                // A domain whose disk the peer held Primary may have started after
                // the last heartbeat listed it.
                for (name, e) in &self.domains {
                    if e.resources.iter().any(|r| s.primaries.contains(r)) {
                        d.insert(name.clone());
                    }
                }
                d.into_iter().collect()
            }
            // Never seen (an operator fenced it): every known domain not here.
            None => self
                .domains
                .iter()
                .filter(|(_, e)| e.run == DomainRun::Stopped)
                .map(|(n, _)| n.clone())
                .collect(),
        };
        out.push(Action::Event(Event::FailoverPlanned {
            domains: domains.clone(),
        }));
        for d in domains {
            self.takeovers.entry(d).or_insert_with(Takeover::new);
        }
    }

    pub(super) fn advance_takeovers(&mut self, now: Millis, out: &mut Vec<Action>) {
        if !matches!(self.membership.state(), PeerState::Fenced { .. } | PeerState::Online) {
            return;
        }
        let names: Vec<DomainName> = self.takeovers.keys().cloned().collect();
        for d in names {
            self.advance_takeover(now, d, out);
        }
    }

    fn advance_takeover(&mut self, now: Millis, domain: DomainName, out: &mut Vec<Action>) {
        let run = self.local_run(&domain);
        let has_window = self.window_for(&domain).is_some();
        let resources = self
            .domains
            .get(&domain)
            .map(|e| e.resources.clone())
            .unwrap_or_default();
        let Some(t) = self.takeovers.get_mut(&domain) else {
            return;
        };
        if !t.outstanding.is_empty() {
            return;
        }
        match t.step.clone() {
            Step::Waiting { retry_at } => {
                if retry_at.is_some_and(|at| now < at) {
                    return;
                }
                if run == DomainRun::Running {
                    self.takeovers.remove(&domain);
                    return;
                }
                if has_window || run == DomainRun::Paused {
                    // Re-examined on the next input; no timer needed.
                    t.step = Step::Waiting { retry_at: None };
                    return;
                }
                if let Some(e) = t.error.take() {
                    t.attempts += 1;
                    if t.attempts >= TAKEOVER_ATTEMPTS {
                        self.takeovers.remove(&domain);
                        out.push(Action::Event(Event::FailoverSkipped {
                            domain,
                            reason: format!("gave up after {TAKEOVER_ATTEMPTS} attempts: {e}"),
                        }));
                        return;
                    }
                }
                let stale = resources.iter().find_map(|r| match self.observation(r) {
                    Some(o) if o.disk == DiskState::UpToDate => None,
                    Some(o) => Some(format!("resource {r} is {:?} here", o.disk)),
                    None => Some(format!("the state of resource {r} is unknown")),
                });
                if let Some(reason) = stale {
                    self.takeovers.remove(&domain);
                    out.push(Action::Event(Event::FailoverSkipped { domain, reason }));
                    return;
                }
                let mut ids = BTreeSet::new();
                for r in resources {
                    ids.insert(self.drbd(Owner::Takeover(domain.clone()), DrbdOp::Promote { resource: r }, out));
                }
                if let Some(t) = self.takeovers.get_mut(&domain) {
                    t.outstanding = ids;
                    t.step = Step::Promoting;
                }
            }
            Step::Promoting => {
                let action = self.action(Owner::Takeover(domain.clone()));
                if let Some(t) = self.takeovers.get_mut(&domain) {
                    t.outstanding.insert(action);
                    t.step = Step::Starting;
                }
                out.push(Action::StartDomain { action, domain });
            }
            Step::Starting => {
                self.takeovers.remove(&domain);
                if let Some(d) = self.domains.get_mut(&domain) {
                    d.run = DomainRun::Running;
                }
                out.push(Action::Event(Event::DomainTakenOver { domain }));
            }
        }
    }
}
