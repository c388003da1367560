//! What the simulated drivers do with the cores' actions, and the hypervisor's
//! side of starts, stops and live migrations (with the hooks libvirt runs).

use crate::invariants;
use crate::schedule::DeviceMode;
use crate::world::{Ev, HookCtx, Migration, Vm, World, DEMOTE_RETRY_MS, HOOK_TIMEOUT_MS};
use rand::Rng;
use tandem::core::{Action, ActionId, DrbdOp, Event, FencePeerVerdict, Input, ResourceName, Role};

fn resource_index(r: &ResourceName) -> Option<usize> {
    r.0.strip_prefix('r').and_then(|n| n.parse().ok())
}

impl World {
    pub(crate) fn exec(&mut self, h: usize, boot: u64, action: Action) {
        match action {
            Action::Send(msg) => self.send_control(h, tandem::core::Input::Peer(msg)),
            Action::Answer { request, result } => {
                let ctx = self.hosts[h].daemon.as_mut().and_then(|d| d.hooks.remove(&request));
                if let Some(ctx) = ctx {
                    self.hook_answer(h, ctx, result);
                }
            }
            Action::FencePeerAnswer { request, verdict } => {
                let ctx = self.hosts[h].daemon.as_mut().and_then(|d| d.hooks.remove(&request));
                self.log(|| format!("node{h}: fence-peer handler exits {}", verdict.exit_code()));
                self.narrate(|| format!("node{h}: DRBD's fence-peer handler exits {}", verdict.exit_code()));
                let result = match verdict {
                    FencePeerVerdict::PeerOutdated | FencePeerVerdict::PeerFenced => Ok(()),
                    FencePeerVerdict::Undecided(r) => Err(r),
                };
                if let Some(ctx) = ctx {
                    self.hook_answer(h, ctx, result);
                }
            }
            Action::Drbd { action, op } => {
                let at = self.now + self.rng.gen_range(1..20);
                self.schedule(
                    at,
                    Ev::DrbdExec {
                        host: h,
                        boot,
                        action,
                        op,
                        give_up_at: at + DEMOTE_RETRY_MS,
                    },
                );
            }
            Action::Fence { action, target, level } => {
                self.stats.fences += 1;
                self.check_may_act_on_peer(h, "fenced its peer");
                let target = usize::from(target.0) & 1;
                let (delay, ok) = match self.fence_mode(target, level) {
                    DeviceMode::Works => (self.scenario.fence_latency_ms, true),
                    DeviceMode::Fails => (30, false),
                    DeviceMode::Hangs => return,
                };
                if ok {
                    self.power_offs_in_flight[target] += 1;
                }
                self.schedule(
                    self.now + delay,
                    Ev::FenceResult {
                        host: h,
                        boot,
                        action,
                        target,
                        ok,
                    },
                );
            }
            Action::StartDomain { action, domain } => {
                let Some(d) = self.domain_names.iter().position(|n| *n == domain) else {
                    return;
                };
                let takeover = self.operator_start != Some((h, d));
                if takeover {
                    self.check_may_act_on_peer(h, "took over a domain");
                }
                let other = 1 - h;
                if takeover
                    && self.hosts[other].powered
                    && (self.hosts[other].vms.contains_key(&d) || self.drbd[d].sides[other].role == Role::Primary)
                {
                    self.violate(
                        3,
                        format!("node{h} takes over vm{d} while node{other} is powered and holds it"),
                    );
                }
                self.run_hook(
                    h,
                    HookCtx::Start {
                        domain: d,
                        action: Some(action),
                    },
                    d,
                );
            }
            Action::StopDomain { action, domain, .. } => {
                // An operator's stop through the daemon: libvirt stops the guest,
                // runs `release end`, and answers.
                if let Some(d) = self.domain_names.iter().position(|n| *n == domain) {
                    if self.hosts[h].vms.remove(&d).is_some() {
                        self.log(|| format!("node{h}: vm{d} stopped by its daemon"));
                        self.run_hook(h, HookCtx::Release, d);
                    }
                }
                self.feed(h, Input::ActionDone { action, result: Ok(()) });
            }
            // The simulated hosts share their domain definitions already.
            Action::DefineDomain { .. } => {}
            Action::MigrateDomain { action, domain } => {
                if let Some(d) = self.domain_names.iter().position(|n| *n == domain) {
                    self.virsh_migrate(d, Some((h, boot, action)));
                }
            }
            Action::Persist(p) => self.hosts[h].persisted = p,
            Action::Event(e) => {
                match &e {
                    Event::DomainTakenOver { .. } => self.stats.takeovers += 1,
                    Event::Refused { .. } => self.stats.refusals += 1,
                    _ => {}
                }
                self.log(|| format!("node{h} event: {e:?}"));
                if let Some(line) = crate::lab::describe(&e) {
                    self.narrate(|| format!("node{h}: {line}"));
                }
            }
        }
    }

    /// Invariant 7: a daemon that never heard its peer since it started neither
    /// fences nor takes over, unless an operator said so.
    fn check_may_act_on_peer(&mut self, h: usize, what: &str) {
        let allowed = self.hosts[h]
            .daemon
            .as_ref()
            .is_none_or(|d| d.heard_peer || d.operator_fence);
        if !allowed {
            self.violate(7, format!("node{h} {what} without having seen it since start"));
        }
    }

    /// The control channel: TCP over the first link that works both ways.
    fn send_control(&mut self, from: usize, input: Input) {
        let to = 1 - from;
        let Some(to_boot) = self.daemon_boot(to) else {
            return;
        };
        if !self.links.iter().any(|l| l.into[0] && l.into[1]) {
            self.log(|| format!("node{from}: control message lost, no link"));
            return;
        }
        let delay = self.rng.gen_range(1..5);
        if self.rng.gen_range(0..1000) < self.scenario.duplicate_permille {
            // A retransmission after a reconnect.
            let ev = Ev::Deliver {
                to,
                to_boot: Some(to_boot),
                input: input.clone(),
            };
            self.schedule(self.now + delay + 50, ev);
        }
        self.schedule(
            self.now + delay,
            Ev::Deliver {
                to,
                to_boot: Some(to_boot),
                input,
            },
        );
    }

    /// Runs a libvirt hook for `domain` on host `h`: the hook asks tandemd.
    pub(crate) fn run_hook(&mut self, h: usize, ctx: HookCtx, domain: usize) {
        let resources = vec![ResourceName(format!("r{domain}"))];
        let name = self.domain_names[domain].clone();
        let Some(request) = self.next_request(h) else {
            self.hook_answer(h, ctx, Err("cannot reach tandemd".into()));
            return;
        };
        let input = match ctx {
            HookCtx::MigBegin(_) => Input::PrepareIncoming {
                request,
                domain: name,
                resources,
            },
            HookCtx::Start { .. } | HookCtx::MigPrepare(_) => Input::PrepareStart {
                request,
                domain: name,
                resources,
            },
            HookCtx::Release => Input::Release {
                request,
                domain: name,
                resources,
            },
            HookCtx::FencePeerConn { .. } | HookCtx::FencePeerPromote { .. } => return,
        };
        self.call_daemon(h, request, ctx, input);
    }

    /// DRBD runs its fence-peer handler on host `h` for resource `r`.
    pub(crate) fn run_fence_peer(&mut self, h: usize, ctx: HookCtx, r: usize) {
        let Some(request) = self.next_request(h) else {
            self.hook_answer(h, ctx, Err("cannot reach tandemd".into()));
            return;
        };
        let input = Input::FencePeer {
            request,
            resource: ResourceName(format!("r{r}")),
        };
        self.call_daemon(h, request, ctx, input);
    }

    fn call_daemon(&mut self, h: usize, request: tandem::core::RequestId, ctx: HookCtx, input: Input) {
        let Some(d) = self.hosts[h].daemon.as_mut() else {
            return;
        };
        d.hooks.insert(request, ctx);
        let boot = d.boot;
        self.schedule(self.now + HOOK_TIMEOUT_MS, Ev::HookTimeout { host: h, boot, request });
        self.feed(h, input);
    }

    pub(crate) fn hook_answer(&mut self, h: usize, ctx: HookCtx, result: Result<(), String>) {
        match ctx {
            HookCtx::Start { domain, action } => {
                let result = result.and_then(|()| self.hypervisor_start(h, domain));
                if let Err(e) = &result {
                    self.log(|| format!("node{h}: start of vm{domain} failed: {e}"));
                }
                if let Some(action) = action {
                    self.feed(h, Input::ActionDone { action, result });
                }
            }
            HookCtx::MigBegin(m) => {
                let Some(mig) = self.migrations.get(&m).cloned() else {
                    return;
                };
                match result {
                    Ok(()) => self.run_hook(mig.dst, HookCtx::MigPrepare(m), mig.domain),
                    Err(e) => self.fail_migration(m, e),
                }
            }
            HookCtx::MigPrepare(m) => {
                let Some(mig) = self.migrations.get(&m).cloned() else {
                    return;
                };
                let src_runs = matches!(self.hosts[mig.src].vms.get(&mig.domain), Some(Vm::Running { .. }));
                let result = result.and_then(|()| {
                    if self.drbd[mig.domain].sides[mig.dst].role != Role::Primary {
                        Err("qemu cannot open the disk: DRBD is Secondary here".to_string())
                    } else if !src_runs || !self.hosts[mig.dst].powered {
                        Err("the source domain is gone".to_string())
                    } else {
                        Ok(())
                    }
                });
                match result {
                    Ok(()) => {
                        self.hosts[mig.dst].vms.insert(mig.domain, Vm::Paused);
                        let at = self.now + self.scenario.migration_ms;
                        self.schedule(at, Ev::MigSwitch(m));
                    }
                    Err(e) => {
                        self.run_hook(mig.dst, HookCtx::Release, mig.domain);
                        self.fail_migration(m, e);
                    }
                }
            }
            HookCtx::Release => {}
            HookCtx::FencePeerConn { res } => {
                if result.is_ok() && !self.drbd[res].connected {
                    self.drbd[res].sides[h].frozen = false;
                }
            }
            HookCtx::FencePeerPromote { res, action } => {
                let result = match result {
                    Ok(()) => self.promote_checked(h, res, true),
                    Err(e) => Err(format!(
                        "r{res}: State change failed: (-7) Refusing to be Primary while peer is not outdated ({e})"
                    )),
                };
                self.feed(h, Input::ActionDone { action, result });
            }
        }
    }

    fn hypervisor_start(&mut self, h: usize, domain: usize) -> Result<(), String> {
        if !self.hosts[h].powered {
            return Err("host is down".into());
        }
        if self.hosts[h].vms.contains_key(&domain) {
            return Err("domain is already active".into());
        }
        if self.drbd[domain].sides[h].role != Role::Primary {
            self.run_hook(h, HookCtx::Release, domain);
            return Err("qemu cannot open the disk: DRBD is Secondary here".into());
        }
        self.hosts[h].vms.insert(domain, Vm::Running { since: self.now });
        self.log(|| format!("node{h}: vm{domain} running"));
        self.narrate(|| format!("node{h}: vm{domain} is running"));
        Ok(())
    }

    fn promote_checked(&mut self, h: usize, r: usize, settled: bool) -> Result<(), String> {
        let result = self.drbd[r].promote(h, settled);
        if result.is_ok() {
            invariants::check_promotion(self, h, r);
        }
        result
    }

    pub(crate) fn drbd_exec(&mut self, h: usize, boot: u64, action: ActionId, op: DrbdOp, give_up_at: u64) {
        if !self.hosts[h].powered {
            return;
        }
        let r = match &op {
            DrbdOp::Promote { resource }
            | DrbdOp::Demote { resource }
            | DrbdOp::DualPrimary { resource, .. }
            | DrbdOp::Outdate { resource } => resource_index(resource),
        };
        let Some(r) = r.filter(|&r| r < self.drbd.len()) else {
            return;
        };
        let result = match op {
            DrbdOp::Promote { .. } => {
                if self.drbd[r].promote_needs_fence_peer(h) {
                    self.run_fence_peer(h, HookCtx::FencePeerPromote { res: r, action }, r);
                    return;
                }
                self.promote_checked(h, r, false)
            }
            DrbdOp::Demote { .. } => {
                let held = self.hosts[h].vms.contains_key(&r);
                let result = self.drbd[r].demote(h, held);
                if result.is_err() && held && self.now < give_up_at {
                    let ev = Ev::DrbdExec {
                        host: h,
                        boot,
                        action,
                        op: DrbdOp::Demote {
                            resource: ResourceName(format!("r{r}")),
                        },
                        give_up_at,
                    };
                    self.schedule(self.now + 200, ev);
                    return;
                }
                result
            }
            DrbdOp::DualPrimary { allow, .. } => self.drbd[r].set_dual(h, allow),
            DrbdOp::Outdate { .. } => self.drbd[r].outdate(h, self.now),
        };
        if self.daemon_boot(h) == Some(boot) {
            self.feed(h, Input::ActionDone { action, result });
        }
    }

    pub(crate) fn migration_switch(&mut self, m: u64) {
        let Some(mig) = self.migrations.remove(&m) else {
            return;
        };
        let src_runs = matches!(self.hosts[mig.src].vms.get(&mig.domain), Some(Vm::Running { .. }));
        let dst_waits = self.hosts[mig.dst].vms.get(&mig.domain) == Some(&Vm::Paused);
        if !(src_runs && dst_waits) {
            self.finish_origin(mig.origin, Err("migration failed".into()));
            return;
        }
        self.hosts[mig.src].vms.remove(&mig.domain);
        self.hosts[mig.dst]
            .vms
            .insert(mig.domain, Vm::Running { since: self.now });
        self.stats.migrations_ok += 1;
        self.log(|| format!("vm{} migrated node{} -> node{}", mig.domain, mig.src, mig.dst));
        self.narrate(|| format!("vm{} switched over: now running on node{}", mig.domain, mig.dst));
        // Source: `stopped end`, `release end migrated`.
        self.run_hook(mig.src, HookCtx::Release, mig.domain);
        self.finish_origin(mig.origin, Ok(()));
    }

    fn fail_migration(&mut self, m: u64, reason: String) {
        if let Some(mig) = self.migrations.remove(&m) {
            self.log(|| format!("migration of vm{} failed: {reason}", mig.domain));
            self.finish_origin(mig.origin, Err(reason));
        }
    }

    pub(crate) fn finish_origin(&mut self, origin: Option<(usize, u64, ActionId)>, result: Result<(), String>) {
        if let Some((h, boot, action)) = origin {
            if self.daemon_boot(h) == Some(boot) {
                self.feed(h, Input::ActionDone { action, result });
            }
        }
    }

    fn migrating(&self, domain: usize) -> bool {
        self.migrations.values().any(|m| m.domain == domain)
    }

    pub(crate) fn operator_start(&mut self, h: usize, domain: usize) {
        if domain >= self.domain_names.len()
            || !self.hosts[h].powered
            || self.hosts[h].vms.contains_key(&domain)
            || self.migrating(domain)
        {
            return;
        }
        self.run_hook(h, HookCtx::Start { domain, action: None }, domain);
    }

    pub(crate) fn operator_stop(&mut self, domain: usize) {
        if self.migrating(domain) {
            return;
        }
        if let Some(h) = self.runs_on(domain) {
            self.hosts[h].vms.remove(&domain);
            self.log(|| format!("node{h}: vm{domain} shut down"));
            self.run_hook(h, HookCtx::Release, domain);
        }
    }

    /// `virsh migrate --live` from where the domain runs to the other host.
    pub(crate) fn virsh_migrate(&mut self, domain: usize, origin: Option<(usize, u64, ActionId)>) {
        let src = self.runs_on(domain);
        let Some(src) = src.filter(|&s| self.hosts[1 - s].powered && !self.migrating(domain)) else {
            self.finish_origin(origin, Err("cannot migrate now".into()));
            return;
        };
        let dst = 1 - src;
        let m = self.new_migration(Migration {
            domain,
            src,
            dst,
            origin,
        });
        // Destination: `migrate begin` with the domain XML.
        self.run_hook(dst, HookCtx::MigBegin(m), domain);
    }
}
