//! Migration windows: DRBD dual-primary for exactly the time a live migration
//! needs it. The destination opens a window (hook `migrate begin`), the source
//! agrees and allows two primaries, the destination allows them too and promotes.
//! `release end` on either side, the peer's `LeaveDual`, a fence, or the deadline
//! close it: demote where the domain does not run, then leave dual-primary.

use super::hooks::OpBatch;
use super::io::{Action, DrbdOp, Event, PersistedWindow};
use super::protocol::{PeerBody, WindowId};
use super::types::{DomainName, DomainRun, Millis, RequestId, ResourceName};
use super::{Core, Owner};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WindowSide {
    /// The domain migrates to this host.
    Destination,
    /// The domain migrates away from this host.
    Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Destination: `EnterDual` sent, waiting for the source until `until`.
    AwaitSource {
        until: Millis,
    },
    EnableDual,
    /// Destination: promoting the resources.
    Promote,
    Open,
    Demote,
    DisableDual,
}

#[derive(Debug, Clone)]
pub(super) struct Closing {
    notify_peer: bool,
    reason: String,
    retry_at: Option<Millis>,
}

#[derive(Debug, Clone)]
pub(super) struct Window {
    pub(super) domain: DomainName,
    pub(super) resources: Vec<ResourceName>,
    pub(super) side: WindowSide,
    pub(super) phase: Phase,
    pub(super) deadline: Millis,
    pub(super) batch: OpBatch,
    /// The hook waiting for this window: `migrate begin` while it opens, or
    /// `release end` while it closes.
    hook: Option<RequestId>,
    closing: Option<Closing>,
}

impl Window {
    pub(super) fn opening(
        domain: DomainName,
        resources: Vec<ResourceName>,
        side: WindowSide,
        phase: Phase,
        deadline: Millis,
        hook: Option<RequestId>,
    ) -> Self {
        Window {
            domain,
            resources,
            side,
            phase,
            deadline,
            batch: OpBatch::default(),
            hook,
            closing: None,
        }
    }

    /// A window a previous run of the daemon had open. Its side no longer
    /// matters: whatever happens next closes it.
    pub(super) fn restored(w: PersistedWindow) -> Self {
        Window::opening(w.domain, w.resources, WindowSide::Source, Phase::Open, w.deadline, None)
    }

    pub(super) fn hook_request(&self) -> Option<RequestId> {
        self.hook
    }

    pub(super) fn is_open(&self) -> bool {
        self.phase == Phase::Open && self.closing.is_none()
    }

    pub(super) fn next_deadline(&self) -> Option<Millis> {
        match (&self.closing, self.phase) {
            (Some(c), _) => c.retry_at,
            (None, Phase::AwaitSource { until }) => Some(until.min(self.deadline)),
            (None, _) => Some(self.deadline),
        }
    }
}

impl Core {
    pub(super) fn window_for(&self, domain: &DomainName) -> Option<(WindowId, &Window)> {
        self.windows
            .iter()
            .find(|(_, w)| &w.domain == domain)
            .map(|(id, w)| (*id, w))
    }

    pub(super) fn new_window_id(&mut self) -> WindowId {
        let n = self.next_window;
        self.next_window += 1;
        WindowId {
            opener: self.cfg.me,
            boot: self.boot,
            n,
        }
    }

    /// Source side: the destination asks to allow two primaries.
    pub(super) fn peer_enter_dual(
        &mut self,
        now: Millis,
        window: WindowId,
        domain: DomainName,
        resources: Vec<ResourceName>,
        out: &mut Vec<Action>,
    ) {
        let refusal = if self.check_resources(&domain, &resources).is_err() {
            Some("it names a resource this host does not manage".to_string())
        } else if self.local_run(&domain) == DomainRun::Stopped {
            Some(format!("{domain} does not run on the source"))
        } else if self.window_for(&domain).is_some() {
            Some(format!("{domain} already has a migration window"))
        } else {
            self.not_replicating(&resources)
        };
        if let Some(reason) = refusal {
            out.push(Action::Event(Event::PeerRequestRefused {
                what: format!("enter dual-primary for {domain}"),
                reason: reason.clone(),
            }));
            let msg = self.send(PeerBody::EnterDualAnswer {
                window,
                result: Err(reason),
            });
            out.push(msg);
            return;
        }
        let deadline = now.plus(self.cfg.window_deadline_ms);
        let mut w = Window::opening(
            domain,
            resources.clone(),
            WindowSide::Source,
            Phase::EnableDual,
            deadline,
            None,
        );
        for r in resources {
            let id = self.drbd(
                Owner::Window(window),
                DrbdOp::DualPrimary {
                    resource: r,
                    allow: true,
                },
                out,
            );
            w.batch.add(id);
        }
        self.windows.insert(window, w);
        self.persist(out);
    }

    /// Destination side: the source's answer to `EnterDual`.
    pub(super) fn peer_enter_dual_answer(
        &mut self,
        now: Millis,
        window: WindowId,
        result: Result<(), String>,
        out: &mut Vec<Action>,
    ) {
        let Some(w) = self.windows.get(&window) else {
            return;
        };
        if !matches!(w.phase, Phase::AwaitSource { .. }) || w.closing.is_some() {
            return;
        }
        match result {
            Ok(()) => {
                let resources = w.resources.clone();
                let mut ids = Vec::new();
                for r in resources {
                    ids.push(self.drbd(
                        Owner::Window(window),
                        DrbdOp::DualPrimary {
                            resource: r,
                            allow: true,
                        },
                        out,
                    ));
                }
                if let Some(w) = self.windows.get_mut(&window) {
                    w.phase = Phase::EnableDual;
                    ids.into_iter().for_each(|id| w.batch.add(id));
                }
            }
            Err(reason) => {
                let _ = now;
                self.close_window(window, false, format!("the source refused: {reason}"), None, out);
            }
        }
    }

    /// Starts closing a window (idempotent). `hook` is a `release end` that waits
    /// for the close.
    pub(super) fn close_window(
        &mut self,
        window: WindowId,
        notify_peer: bool,
        reason: String,
        hook: Option<RequestId>,
        out: &mut Vec<Action>,
    ) {
        let Some(w) = self.windows.get_mut(&window) else {
            if let Some(h) = hook {
                out.push(Action::Answer {
                    request: h,
                    result: Ok(()),
                });
            }
            return;
        };
        if let Some(h) = hook {
            if let Some(old) = w.hook.replace(h) {
                if old != h {
                    out.push(Action::Answer {
                        request: old,
                        result: Err(format!("migration window for {} closed: {reason}", w.domain)),
                    });
                }
            }
        }
        match &mut w.closing {
            Some(c) => c.notify_peer |= notify_peer,
            None => {
                w.closing = Some(Closing {
                    notify_peer,
                    reason,
                    retry_at: None,
                })
            }
        }
    }

    pub(super) fn advance_windows(&mut self, now: Millis, out: &mut Vec<Action>) {
        let ids: Vec<WindowId> = self.windows.keys().copied().collect();
        for id in ids {
            self.advance_window(now, id, out);
        }
    }

    fn advance_window(&mut self, now: Millis, id: WindowId, out: &mut Vec<Action>) {
        // Bounded: each pass either returns or moves the phase forward.
        for _ in 0..8 {
            let Some(w) = self.windows.get_mut(&id) else {
                return;
            };
            if !w.batch.is_empty() {
                return;
            }
            if w.closing.is_none() {
                let expired = match w.phase {
                    Phase::AwaitSource { until } if now >= until => {
                        Some("the source did not answer in time".to_string())
                    }
                    _ if now >= w.deadline => Some("its deadline passed".to_string()),
                    _ => None,
                };
                if let Some(reason) = expired {
                    self.close_window(id, true, reason, None, out);
                    continue;
                }
                if !self.advance_opening(id, out) {
                    return;
                }
                continue;
            }
            if !self.advance_closing(now, id, out) {
                return;
            }
        }
    }

    /// One step of an opening window whose batch is done. Returns whether to go on.
    fn advance_opening(&mut self, id: WindowId, out: &mut Vec<Action>) -> bool {
        let Some(w) = self.windows.get_mut(&id) else {
            return false;
        };
        let failed = w.batch.take_error();
        match (w.phase, w.side) {
            (Phase::AwaitSource { .. }, _) | (Phase::Open, _) | (Phase::Demote, _) | (Phase::DisableDual, _) => false,
            (Phase::EnableDual, WindowSide::Source) => {
                let result = match failed {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
                if result.is_ok() {
                    w.phase = Phase::Open;
                    let ev = Event::WindowOpened {
                        window: id,
                        domain: w.domain.clone(),
                    };
                    out.push(Action::Event(ev));
                }
                let failed = result.as_ref().err().cloned();
                let msg = self.send(PeerBody::EnterDualAnswer { window: id, result });
                out.push(msg);
                if let Some(e) = failed {
                    self.close_window(id, false, format!("allowing two primaries failed: {e}"), None, out);
                    return true;
                }
                false
            }
            (Phase::EnableDual, WindowSide::Destination) => {
                if let Some(e) = failed {
                    self.close_window(id, true, format!("allowing two primaries failed: {e}"), None, out);
                    return true;
                }
                w.phase = Phase::Promote;
                let resources = w.resources.clone();
                for r in resources {
                    let a = self.drbd(Owner::Window(id), DrbdOp::Promote { resource: r }, out);
                    if let Some(w) = self.windows.get_mut(&id) {
                        w.batch.add(a);
                    }
                }
                true
            }
            (Phase::Promote, _) => {
                if let Some(e) = failed {
                    self.close_window(id, true, format!("promote failed: {e}"), None, out);
                    return true;
                }
                w.phase = Phase::Open;
                let domain = w.domain.clone();
                // The hypervisor starts the incoming domain (paused) as soon as
                // the hook answers: count it as present here until the
                // hypervisor or a release says otherwise, so that a window the
                // source closes does not demote the disk it is arriving on
                // (xl has no hypervisor view in tandem yet; libvirt's may lag).
                if let Some(entry) = self.domains.get_mut(&domain) {
                    if entry.run == DomainRun::Stopped {
                        entry.run = DomainRun::Paused;
                    }
                }
                let Some(w) = self.windows.get_mut(&id) else {
                    return false;
                };
                if let Some(h) = w.hook.take() {
                    out.push(Action::Answer {
                        request: h,
                        result: Ok(()),
                    });
                }
                out.push(Action::Event(Event::WindowOpened { window: id, domain }));
                self.persist(out);
                false
            }
        }
    }

    /// One step of a closing window whose batch is done. Returns whether to go on.
    fn advance_closing(&mut self, now: Millis, id: WindowId, out: &mut Vec<Action>) -> bool {
        let Some(w) = self.windows.get_mut(&id) else {
            return false;
        };
        let failed = w.batch.take_error();
        let Some(closing) = w.closing.as_mut() else {
            return false;
        };
        if let Some(at) = closing.retry_at {
            if now < at {
                return false;
            }
            closing.retry_at = None;
        }
        match w.phase {
            Phase::AwaitSource { .. } | Phase::EnableDual | Phase::Promote | Phase::Open => {
                if let Some(h) = w.hook.take() {
                    // A `migrate begin` still waiting: the migration is refused.
                    if w.side == WindowSide::Destination && w.phase != Phase::Open {
                        let reason = closing.reason.clone();
                        out.push(Action::Answer {
                            request: h,
                            result: Err(format!("cannot prepare {} for migration: {reason}", w.domain)),
                        });
                    } else {
                        w.hook = Some(h);
                    }
                }
                w.phase = Phase::Demote;
                let domain = w.domain.clone();
                let resources = w.resources.clone();
                if self.local_run(&domain) == DomainRun::Stopped {
                    for r in resources {
                        if self.used_by_other_local(&r, &domain) {
                            continue;
                        }
                        let a = self.drbd(Owner::Window(id), DrbdOp::Demote { resource: r }, out);
                        if let Some(w) = self.windows.get_mut(&id) {
                            w.batch.add(a);
                        }
                    }
                }
                true
            }
            Phase::Demote => {
                if let Some(e) = failed {
                    // Never leave dual-primary while both sides may be Primary.
                    closing.retry_at = Some(now.plus(self.cfg.retry_ms));
                    w.phase = Phase::Open;
                    let domain = w.domain.clone();
                    if let Some(h) = w.hook.take() {
                        out.push(Action::Answer {
                            request: h,
                            result: Err(format!("demote of {domain} failed, retrying: {e}")),
                        });
                    }
                    return false;
                }
                w.phase = Phase::DisableDual;
                let resources = w.resources.clone();
                for r in resources {
                    let a = self.drbd(
                        Owner::Window(id),
                        DrbdOp::DualPrimary {
                            resource: r,
                            allow: false,
                        },
                        out,
                    );
                    if let Some(w) = self.windows.get_mut(&id) {
                        w.batch.add(a);
                    }
                }
                true
            }
            Phase::DisableDual => {
                let notify = closing.notify_peer;
                let reason = closing.reason.clone();
                let hook = w.hook.take();
                let domain = w.domain.clone();
                self.windows.remove(&id);
                if notify {
                    let msg = self.send(PeerBody::LeaveDual { window: id });
                    out.push(msg);
                }
                if let Some(h) = hook {
                    let result = match failed {
                        Some(e) => Err(format!("leaving dual-primary failed: {e}")),
                        None => Ok(()),
                    };
                    out.push(Action::Answer { request: h, result });
                }
                out.push(Action::Event(Event::WindowClosed {
                    window: id,
                    domain,
                    reason,
                }));
                self.persist(out);
                false
            }
        }
    }
}
