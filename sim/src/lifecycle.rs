//! What happens to hosts: power, daemon starts and restarts, and the faults and
//! operator actions of a schedule.

use crate::schedule::Fault;
use crate::world::{Daemon, Ev, HookCtx, Migration, Vm, World, BOOT_MS, DAEMON_RESTART_MS};
use rand::Rng;
use std::collections::BTreeMap;
use tandem::core::{Core, CoreConfig, DomainRun, Input, ResourceName};

impl World {
    pub(crate) fn daemon_start(&mut self, h: usize) {
        if !self.hosts[h].powered || self.hosts[h].daemon.is_some() {
            return;
        }
        let resources: Vec<ResourceName> = (0..self.drbd.len()).map(|r| ResourceName(format!("r{r}"))).collect();
        let mut cfg = CoreConfig::with_defaults(tandem::core::NodeId(h as u8), resources);
        cfg.links = usize::from(self.scenario.links);
        cfg.peer_fence_levels = self.scenario.fence_levels[1 - h].len();
        cfg.window_deadline_ms = 60_000;
        cfg.arbiter.fence_timeout_ms = 5_000;
        cfg.request_timeout_ms = 5_000;
        let boot = self.rng.gen::<u64>() | 1;
        let core = Core::new(cfg, boot, self.hosts[h].persisted.clone());
        self.hosts[h].daemon = Some(Daemon {
            core,
            boot,
            heard_peer: false,
            operator_fence: false,
            hooks: BTreeMap::new(),
            next_request: 1,
            fed_res: vec![None; self.drbd.len()],
            fed_dom: vec![DomainRun::Stopped; self.domain_names.len()],
            wake: None,
            hb_counter: 0,
        });
        self.log(|| format!("node{h}: tandemd started (boot {:x})", boot & 0xffff));
        for d in 0..self.domain_names.len() {
            let input = Input::DomainDefined {
                domain: self.domain_names[d].clone(),
                resources: vec![ResourceName(format!("r{d}"))],
            };
            self.feed(h, input);
        }
        self.schedule(self.now, Ev::HbTimer { host: h, boot });
    }

    pub(crate) fn stop_daemon(&mut self, h: usize) {
        let Some(d) = self.hosts[h].daemon.take() else {
            return;
        };
        // Hooks waiting on it see the D-Bus name vanish.
        for (_, ctx) in d.hooks {
            self.hook_answer(h, ctx, Err("tandemd is not running".into()));
        }
    }

    pub(crate) fn power_off(&mut self, h: usize) {
        if !self.hosts[h].powered {
            return;
        }
        self.hosts[h].powered = false;
        self.stop_daemon(h);
        self.hosts[h].vms.clear();
        for r in &mut self.drbd {
            r.host_down(h);
        }
        let migs: Vec<(u64, Migration)> = self
            .migrations
            .iter()
            .filter(|(_, m)| m.src == h || m.dst == h)
            .map(|(k, m)| (*k, m.clone()))
            .collect();
        for (k, m) in migs {
            self.migrations.remove(&k);
            if m.src == h && self.hosts[m.dst].vms.get(&m.domain) == Some(&Vm::Paused) {
                // libvirt on the destination aborts the incoming migration.
                self.hosts[m.dst].vms.remove(&m.domain);
                self.run_hook(m.dst, HookCtx::Release, m.domain);
            }
            self.finish_origin(m.origin, Err("migration failed: a host went down".into()));
        }
    }

    pub(crate) fn fault(&mut self, f: Fault) {
        *self.stats.faults.entry(f.kind()).or_default() += 1;
        if f.is_disturbance() {
            self.disturbances += 1;
        }
        self.log(|| format!("*** {f}"));
        self.narrate(|| format!("*** {f}"));
        match f {
            Fault::CutLink { link, to } => {
                if let Some(l) = self.links.get_mut(usize::from(link)) {
                    match to {
                        Some(n) => l.into[usize::from(n) & 1] = false,
                        None => l.into = [false, false],
                    }
                }
            }
            Fault::HealLink { link } => {
                if let Some(l) = self.links.get_mut(usize::from(link)) {
                    l.into = [true, true];
                    l.loss_percent = 0;
                }
            }
            Fault::Loss { link, percent } => {
                if let Some(l) = self.links.get_mut(usize::from(link)) {
                    l.loss_percent = percent.min(100);
                }
            }
            Fault::Partition => {
                crate::invariants::expect_one_survivor(self);
                for l in &mut self.links {
                    l.into = [false, false];
                }
            }
            Fault::HealAll => {
                for l in &mut self.links {
                    l.into = [true, true];
                    l.loss_percent = 0;
                }
            }
            Fault::Crash(h) => {
                let h = usize::from(h) & 1;
                crate::invariants::expect_failover(self, h);
                self.power_off(h);
            }
            Fault::PowerOn(h) => {
                let h = usize::from(h) & 1;
                if !self.hosts[h].powered {
                    self.schedule(self.now + BOOT_MS, Ev::Boot(h));
                }
            }
            Fault::RestartDaemon(h) => {
                let h = usize::from(h) & 1;
                if self.hosts[h].daemon.is_some() {
                    self.stop_daemon(h);
                    self.schedule(self.now + DAEMON_RESTART_MS, Ev::DaemonStart(h));
                }
            }
            Fault::FenceDevice { target, level, mode } => {
                if let Some(m) = self.scenario.fence_levels[usize::from(target) & 1].get_mut(level) {
                    *m = mode;
                }
            }
            Fault::Start { host, domain } => self.operator_start(usize::from(host) & 1, domain),
            Fault::Stop { domain } => self.operator_stop(domain),
            Fault::Migrate { domain } => self.virsh_migrate(domain, None),
            Fault::TandemMigrate { domain } => {
                if let Some(h) = self.runs_on(domain) {
                    let input = Input::OperatorMigrate {
                        request: None,
                        domain: self.domain_names[domain].clone(),
                    };
                    self.feed(h, input);
                }
            }
            Fault::TandemStart { host, domain } => {
                let h = usize::from(host) & 1;
                if let Some(request) = self.next_request(h) {
                    let input = Input::OperatorStart {
                        request,
                        domain: self.domain_names[domain].clone(),
                    };
                    self.operator_start = Some((h, domain));
                    self.feed(h, input);
                    self.operator_start = None;
                }
            }
            Fault::TandemStop { domain } => {
                if let Some(h) = self.runs_on(domain) {
                    if let Some(request) = self.next_request(h) {
                        let input = Input::OperatorStop {
                            request,
                            domain: self.domain_names[domain].clone(),
                            force: true,
                        };
                        self.feed(h, input);
                    }
                }
            }
            Fault::Standby { host, on } => self.feed(usize::from(host) & 1, Input::OperatorStandby { on }),
            Fault::Cleanup { host } => self.feed(usize::from(host) & 1, Input::OperatorCleanup),
            Fault::KillIncoming { domain } => {
                let mig = self
                    .migrations
                    .iter()
                    .find(|(_, m)| m.domain == domain)
                    .map(|(k, m)| (*k, m.clone()));
                if let Some((k, m)) = mig {
                    if self.hosts[m.dst].vms.remove(&m.domain).is_some() {
                        self.migrations.remove(&k);
                        self.run_hook(m.dst, HookCtx::Release, m.domain);
                        self.finish_origin(m.origin, Err("the destination qemu died".into()));
                    }
                }
            }
            Fault::OperatorFence { host } => {
                let h = usize::from(host) & 1;
                if let Some(d) = self.hosts[h].daemon.as_mut() {
                    d.operator_fence = true;
                }
                self.feed(h, Input::OperatorFence);
            }
        }
    }
}
