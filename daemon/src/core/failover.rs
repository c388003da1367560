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

/// How far a takeover got (for the status screen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TakeoverStage {
    Waiting,
    Promoting,
    Starting,
}

impl Takeover {
    pub(super) fn stage(&self) -> TakeoverStage {
        match self.step {
            Step::Waiting { .. } => TakeoverStage::Waiting,
            Step::Promoting => TakeoverStage::Promoting,
            Step::Starting => TakeoverStage::Starting,
        }
    }

    pub(super) fn attempts(&self) -> u32 {
        self.attempts
    }

    pub(super) fn last_error(&self) -> Option<&str> {
        self.error.as_deref()
    }

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

    /// A takeover ends without the domain: reported now, and kept in the
    /// failures until an operator's cleanup.
    fn skip_takeover(&mut self, domain: DomainName, reason: String, out: &mut Vec<Action>) {
        self.failed.insert(domain.clone(), reason.clone());
        out.push(Action::Event(Event::FailoverSkipped { domain, reason }));
    }

    /// `tandemctl cleanup`: forgets the failures; with the peer still fenced,
    /// each failed domain that does not run here gets a fresh takeover, which
    /// checks everything (windows, UpToDate disks) again from the start.
    pub(super) fn cleanup_failures(&mut self) {
        let failed = std::mem::take(&mut self.failed);
        if !matches!(self.membership.state(), PeerState::Fenced { .. }) {
            return;
        }
        for domain in failed.into_keys() {
            if self.local_run(&domain) != DomainRun::Running {
                self.takeovers.entry(domain).or_insert_with(Takeover::new);
            }
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
                        self.skip_takeover(domain, format!("gave up after {TAKEOVER_ATTEMPTS} attempts: {e}"), out);
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
                    self.skip_takeover(domain, reason, out);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::*;

    fn observed(disk: DiskState) -> Input {
        Input::ResourceObserved {
            resource: "r0".into(),
            observation: ResourceObservation {
                role: Role::Secondary,
                disk,
                connected: false,
                peer_role: Role::Unknown,
                peer_disk: DiskState::Unknown,
            },
        }
    }

    /// vm1 runs on the peer, r0 here is Outdated; the peer dies and is fenced.
    fn fenced_with_vm1_skipped() -> Core {
        let cfg = CoreConfig::with_defaults(NodeId(0), vec!["r0".into()]);
        let mut c = Core::new(cfg, 1, Persisted::default());
        c.handle(
            Millis(0),
            Input::DomainDefined {
                domain: "vm1".into(),
                resources: vec!["r0".into()],
            },
        )
        .unwrap();
        let summary = Summary {
            domains: vec!["vm1".into()],
            primaries: vec!["r0".into()],
            standby: false,
        };
        for link in 0..2 {
            c.handle(
                Millis(10),
                Input::Heartbeat {
                    link: LinkId(link),
                    heartbeat: Heartbeat {
                        from: NodeId(1),
                        boot: 2,
                        counter: 1 + u64::from(link),
                        summary: summary.clone(),
                    },
                },
            )
            .unwrap();
        }
        c.handle(Millis(20), observed(DiskState::Outdated)).unwrap();
        assert_eq!(c.domain_views()[0].on_peer, Some(true));
        let out = c.handle(Millis(5000), Input::Tick).unwrap();
        let fence = out
            .iter()
            .find_map(|a| match a {
                Action::Fence { action, .. } => Some(*action),
                _ => None,
            })
            .expect("the preferred node fences at once");
        let out = c
            .handle(
                Millis(5100),
                Input::FenceDone {
                    action: fence,
                    result: Ok(()),
                },
            )
            .unwrap();
        assert!(
            out.iter().any(
                |a| matches!(a, Action::Event(Event::FailoverSkipped { reason, .. }) if reason.contains("Outdated"))
            ),
            "{out:?}"
        );
        c
    }

    #[test]
    fn a_skipped_takeover_is_a_failure_until_cleanup_retries_it() {
        let mut c = fenced_with_vm1_skipped();
        let failures = c.failure_views();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].domain, "vm1");
        assert!(failures[0].reason.contains("r0 is Outdated here"), "{failures:?}");
        assert_eq!(c.domain_views()[0].on_peer, None, "the peer is not online");
        // Nothing happens by itself once the data is good again...
        let out = c.handle(Millis(6000), observed(DiskState::UpToDate)).unwrap();
        assert!(!out.iter().any(|a| matches!(a, Action::Drbd { .. })), "{out:?}");
        // ...until an operator cleans up: a fresh takeover promotes r0.
        let out = c.handle(Millis(7000), Input::OperatorCleanup).unwrap();
        assert!(c.failure_views().is_empty());
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Drbd { op: DrbdOp::Promote { resource }, .. } if resource.0 == "r0")),
            "{out:?}"
        );
        let views = c.domain_views();
        assert_eq!(views[0].takeover.as_ref().map(|t| t.stage), Some("promoting"));
    }

    #[test]
    fn cleanup_with_the_peer_back_only_forgets() {
        let mut c = fenced_with_vm1_skipped();
        c.handle(Millis(6000), observed(DiskState::UpToDate)).unwrap();
        c.handle(
            Millis(6100),
            Input::Heartbeat {
                link: LinkId(0),
                heartbeat: Heartbeat {
                    from: NodeId(1),
                    boot: 3,
                    counter: 1,
                    summary: Summary::default(),
                },
            },
        )
        .unwrap();
        let out = c.handle(Millis(7000), Input::OperatorCleanup).unwrap();
        assert!(c.failure_views().is_empty());
        assert!(!out.iter().any(|a| matches!(a, Action::Drbd { .. })), "{out:?}");
    }
}
