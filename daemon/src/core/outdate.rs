//! This node's side of the peer's request to outdate a resource (the peer's
//! DRBD fence-peer handler asks, to resume its I/O without fencing us).
//!
//! `drbdadm outdate`'s exit code is not the answer: a real DRBD 8.4 that still
//! counts itself connected (it notices a broken link only at its next ping)
//! exits 0 and changes nothing, and DRBD 9 refuses with `(-6)`. An "outdated"
//! answer lets the peer write on without us, so it is given only once DRBD
//! itself reports the disk Outdated (or worse); until then the outdate is
//! retried every `retry_ms`, and after `request_timeout_ms` the answer is a
//! refusal (the peer's handler then keeps I/O frozen and the arbiter decides).

use super::io::{Action, DrbdOp, Event};
use super::membership::PeerState;
use super::protocol::PeerBody;
use super::types::{DiskState, DomainRun, Millis, ResourceName, Role};
use super::{Core, Owner};

#[derive(Debug, Clone)]
pub(super) struct LocalOutdate {
    resource: ResourceName,
    give_up_at: Millis,
    /// When to run `drbdadm outdate` again; `None` while one runs.
    retry_at: Option<Millis>,
    last_error: Option<String>,
}

impl LocalOutdate {
    pub(super) fn next_deadline(&self) -> Millis {
        self.retry_at.map_or(self.give_up_at, |r| r.min(self.give_up_at))
    }
}

fn outdated(disk: DiskState) -> bool {
    matches!(
        disk,
        DiskState::Outdated | DiskState::Inconsistent | DiskState::Diskless
    )
}

impl Core {
    /// The peer's handler asks this node to outdate its disk.
    pub(super) fn peer_outdate(&mut self, now: Millis, token: u64, resource: ResourceName, out: &mut Vec<Action>) {
        let primary = self.observation(&resource).is_some_and(|o| o.role == Role::Primary);
        let in_use = self
            .domains
            .values()
            .any(|d| d.run != DomainRun::Stopped && d.resources.contains(&resource));
        if primary || in_use {
            let reason = format!("resource {resource} is Primary or in use on this host");
            out.push(Action::Event(Event::PeerRequestRefused {
                what: format!("outdate {resource}"),
                reason: reason.clone(),
            }));
            self.answer_outdate(token, resource, Err(reason), out);
            return;
        }
        self.outdating.insert(
            token,
            LocalOutdate {
                resource: resource.clone(),
                give_up_at: now.plus(self.cfg.request_timeout_ms),
                retry_at: None,
                last_error: None,
            },
        );
        self.run_outdate(token, resource, out);
    }

    fn run_outdate(&mut self, token: u64, resource: ResourceName, out: &mut Vec<Action>) {
        self.drbd(Owner::LocalOutdate(token), DrbdOp::Outdate { resource }, out);
    }

    /// `drbdadm outdate` ended; the answer waits for DRBD's own state.
    pub(super) fn local_outdate_done(&mut self, now: Millis, token: u64, result: Result<(), String>) {
        if let Some(w) = self.outdating.get_mut(&token) {
            w.retry_at = Some(now.plus(self.cfg.retry_ms));
            if let Err(e) = result {
                w.last_error = Some(e);
            }
        }
    }

    /// Answers what DRBD now shows outdated, retries, gives up at the deadline.
    /// A peer that went silent gets no answer and no more retries: its frozen
    /// Primary wrote nothing since the break, so outdating the data here now
    /// would only keep it from being taken over after the peer is fenced.
    pub(super) fn advance_outdates(&mut self, now: Millis, out: &mut Vec<Action>) {
        if self.membership.state() != PeerState::Online {
            self.outdating.clear();
            return;
        }
        let tokens: Vec<u64> = self.outdating.keys().copied().collect();
        for token in tokens {
            let Some(w) = self.outdating.get(&token).cloned() else {
                continue;
            };
            let obs = self.observation(&w.resource);
            if obs.is_some_and(|o| outdated(o.disk)) {
                self.outdating.remove(&token);
                self.answer_outdate(token, w.resource, Ok(()), out);
            } else if now >= w.give_up_at {
                self.outdating.remove(&token);
                let state = obs.map_or("unknown".to_owned(), |o| {
                    format!(
                        "{:?}, {}",
                        o.disk,
                        if o.connected { "still connected" } else { "disconnected" }
                    )
                });
                let why = match w.last_error {
                    Some(e) => format!("{} is {state} here ({e})", w.resource),
                    None => format!("{} is {state} here after drbdadm outdate", w.resource),
                };
                self.answer_outdate(token, w.resource, Err(why), out);
            } else if w.retry_at.is_some_and(|at| now >= at) {
                if let Some(e) = self.outdating.get_mut(&token) {
                    e.retry_at = None;
                }
                self.run_outdate(token, w.resource, out);
            }
        }
    }

    fn answer_outdate(
        &mut self,
        token: u64,
        resource: ResourceName,
        result: Result<(), String>,
        out: &mut Vec<Action>,
    ) {
        let msg = self.send(PeerBody::OutdateAnswer {
            token,
            resource,
            result,
        });
        out.push(msg);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::*;

    fn observed(disk: DiskState, connected: bool) -> Input {
        Input::ResourceObserved {
            resource: "r0".into(),
            observation: ResourceObservation {
                role: Role::Secondary,
                disk,
                connected,
                peer_role: Role::Primary,
                peer_disk: DiskState::UpToDate,
            },
        }
    }

    /// alpha, Secondary UpToDate and still connected as far as its DRBD knows,
    /// is asked by beta to outdate r0.
    fn asked() -> (Core, Vec<Action>) {
        let mut cfg = CoreConfig::with_defaults(NodeId(0), vec!["r0".into()]);
        // The peer stays online (its heartbeats are not the point here).
        cfg.links = 1;
        cfg.dead_after_ms = 60_000;
        let mut c = Core::new(cfg, 1, Persisted::default());
        c.handle(
            Millis(0),
            Input::Heartbeat {
                link: LinkId(0),
                heartbeat: Heartbeat {
                    from: NodeId(1),
                    boot: 2,
                    counter: 1,
                    summary: Summary::default(),
                },
            },
        )
        .unwrap();
        c.handle(Millis(1), observed(DiskState::UpToDate, true)).unwrap();
        let out = c.handle(Millis(10), outdate_request()).unwrap();
        (c, out)
    }

    /// beta's handler asks alpha to outdate r0 (token 7).
    fn outdate_request() -> Input {
        Input::Peer(PeerMessage {
            from: NodeId(1),
            boot: 2,
            seq: 1,
            body: PeerBody::Outdate {
                token: 7,
                resource: "r0".into(),
            },
        })
    }

    /// `drbdadm outdate` (action `action`) ended at `t` with `result`.
    fn done(c: &mut Core, t: u64, action: ActionId, result: Result<(), String>) -> Vec<Action> {
        c.handle(Millis(t), Input::ActionDone { action, result }).unwrap()
    }

    fn outdate_action(out: &[Action]) -> Option<ActionId> {
        out.iter().find_map(|a| match a {
            Action::Drbd {
                action,
                op: DrbdOp::Outdate { .. },
            } => Some(*action),
            _ => None,
        })
    }

    fn answer(out: &[Action]) -> Option<Result<(), String>> {
        out.iter().find_map(|a| match a {
            Action::Send(m) => match &m.body {
                PeerBody::OutdateAnswer { token: 7, result, .. } => Some(result.clone()),
                _ => None,
            },
            _ => None,
        })
    }

    #[test]
    fn an_outdate_that_changed_nothing_is_retried_and_answered_only_when_drbd_shows_it() {
        let (mut c, out) = asked();
        let first = outdate_action(&out).expect("drbdadm outdate");
        // DRBD 8.4, still connected: exit 0, nothing changed. No answer yet.
        let out = done(&mut c, 20, first, Ok(()));
        assert_eq!(answer(&out), None, "{out:?}");
        // retry_ms later it runs again.
        let out = c.handle(Millis(1020), Input::Tick).unwrap();
        let second = outdate_action(&out).expect("a second drbdadm outdate");
        done(&mut c, 1030, second, Ok(()));
        // DRBD noticed the broken link and outdated the disk: now the answer.
        let out = c.handle(Millis(1100), observed(DiskState::Outdated, false)).unwrap();
        assert_eq!(answer(&out), Some(Ok(())), "{out:?}");
        assert!(c.outdating.is_empty());
    }

    #[test]
    fn an_outdate_drbd_never_shows_is_refused_at_the_deadline() {
        let (mut c, out) = asked();
        let first = outdate_action(&out).unwrap();
        done(
            &mut c,
            20,
            first,
            Err("r0: State change failed: (-6) Refusing to be Outdated while Connected".into()),
        );
        let mut t = 20;
        let mut refused = None;
        while refused.is_none() && t < 20_000 {
            t = c.next_deadline().unwrap().0;
            let out = c.handle(Millis(t), Input::Tick).unwrap();
            if let Some(a) = outdate_action(&out) {
                done(&mut c, t + 5, a, Err("(-6)".into()));
            }
            refused = answer(&out);
        }
        let e = refused.expect("an answer").unwrap_err();
        assert!(e.contains("r0 is UpToDate, still connected here"), "{e}");
        // request_timeout_ms (10 s) after the request.
        assert_eq!(t, 10_010);
    }

    #[test]
    fn a_cancelled_outdate_is_neither_retried_nor_answered() {
        let (mut c, out) = asked();
        let first = outdate_action(&out).unwrap();
        done(&mut c, 20, first, Ok(()));
        // The peer's replication link came back.
        c.handle(
            Millis(30),
            Input::Peer(PeerMessage {
                from: NodeId(1),
                boot: 2,
                seq: 2,
                body: PeerBody::OutdateCancel { token: 7 },
            }),
        )
        .unwrap();
        assert!(c.outdating.is_empty());
        let out = c.handle(Millis(1100), observed(DiskState::UpToDate, false)).unwrap();
        assert!(outdate_action(&out).is_none() && answer(&out).is_none(), "{out:?}");
    }

    #[test]
    fn a_primary_refuses_at_once() {
        let cfg = CoreConfig::with_defaults(NodeId(0), vec!["r0".into()]);
        let mut c = Core::new(cfg, 1, Persisted::default());
        c.handle(
            Millis(1),
            Input::ResourceObserved {
                resource: "r0".into(),
                observation: ResourceObservation {
                    role: Role::Primary,
                    disk: DiskState::UpToDate,
                    connected: false,
                    peer_role: Role::Unknown,
                    peer_disk: DiskState::Unknown,
                },
            },
        )
        .unwrap();
        let out = c.handle(Millis(10), outdate_request()).unwrap();
        assert!(outdate_action(&out).is_none());
        assert!(answer(&out).is_some_and(|r| r.is_err()));
    }
}
