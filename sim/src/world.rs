//! The simulated world: two hosts each running the real core, the network
//! between them, DRBD, the hypervisors, the fence devices, and a queue of timed
//! events. Nothing here decides anything for tandem: the cores do.

use crate::drbd::DrbdResource;
use crate::schedule::{DeviceMode, Fault, Scenario};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use tandem::core::{
    ActionId, Core, DomainName, DomainRun, DrbdOp, Input, LinkId, Persisted, RequestId, ResourceName,
    ResourceObservation,
};

/// How long a host takes to boot after power on.
pub const BOOT_MS: u64 = 3_000;
/// How long tandemd takes to come back after being killed.
pub const DAEMON_RESTART_MS: u64 = 500;
/// Heartbeat interval of the simulated daemons.
pub const HEARTBEAT_MS: u64 = 200;
/// A demote is retried this long while the device is held open.
pub const DEMOTE_RETRY_MS: u64 = 3_000;
/// A hook gives up on the daemon after this long.
pub const HOOK_TIMEOUT_MS: u64 = 30_000;
/// A schedule that needs more events than this is spinning.
pub const MAX_EVENTS: u64 = 200_000;
/// Resync of a resource after reconnect.
pub const RESYNC_MS: u64 = 800;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vm {
    Running {
        since: u64,
    },
    /// Incoming migration, before switch-over.
    Paused,
}

/// What to do when a hook's answer comes.
#[derive(Debug, Clone)]
pub(crate) enum HookCtx {
    Start { domain: usize, action: Option<ActionId> },
    MigBegin(u64),
    MigPrepare(u64),
    Release,
    FencePeerConn { res: usize },
    FencePeerPromote { res: usize, action: ActionId },
}

#[derive(Debug)]
pub(crate) struct Daemon {
    pub(crate) core: Core,
    pub(crate) boot: u64,
    /// Ground truth: a heartbeat of the peer reached this daemon.
    pub(crate) heard_peer: bool,
    pub(crate) operator_fence: bool,
    pub(crate) hooks: BTreeMap<RequestId, HookCtx>,
    pub(crate) next_request: u64,
    pub(crate) fed_res: Vec<Option<ResourceObservation>>,
    pub(crate) fed_dom: Vec<DomainRun>,
    pub(crate) wake: Option<u64>,
    pub(crate) hb_counter: u64,
}

#[derive(Debug)]
pub(crate) struct Host {
    pub(crate) powered: bool,
    pub(crate) daemon: Option<Daemon>,
    pub(crate) persisted: Persisted,
    pub(crate) vms: BTreeMap<usize, Vm>,
}

#[derive(Debug, Clone)]
pub(crate) struct Link {
    /// Packets arriving at node n get through.
    pub(crate) into: [bool; 2],
    pub(crate) loss_percent: u8,
}

#[derive(Debug, Clone)]
pub(crate) struct Migration {
    pub(crate) domain: usize,
    pub(crate) src: usize,
    pub(crate) dst: usize,
    pub(crate) origin: Option<(usize, u64, ActionId)>,
}

#[derive(Debug, Clone)]
pub(crate) enum Ev {
    HbTimer {
        host: usize,
        boot: u64,
    },
    Deliver {
        to: usize,
        to_boot: Option<u64>,
        input: Input,
    },
    Wake {
        host: usize,
        boot: u64,
    },
    DrbdExec {
        host: usize,
        boot: u64,
        action: ActionId,
        op: DrbdOp,
        give_up_at: u64,
    },
    FenceResult {
        host: usize,
        boot: u64,
        action: ActionId,
        target: usize,
        ok: bool,
    },
    HookTimeout {
        host: usize,
        boot: u64,
        request: RequestId,
    },
    MigSwitch(u64),
    DaemonStart(usize),
    Boot(usize),
    Fault(Fault),
    Check(usize),
    /// Nothing happens; the world settles (a resync finishing).
    Nudge,
}

/// Counts for the report.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub events: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub core_errors: BTreeMap<String, u64>,
    pub fences: u64,
    pub takeovers: u64,
    pub migrations_ok: u64,
    pub refusals: u64,
}

#[derive(Debug)]
pub struct World {
    pub(crate) now: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Ev>,
    seq: u64,
    pub(crate) rng: SmallRng,
    pub(crate) hosts: [Host; 2],
    pub(crate) drbd: Vec<DrbdResource>,
    pub(crate) domain_names: Vec<DomainName>,
    pub(crate) links: Vec<Link>,
    pub(crate) migrations: BTreeMap<u64, Migration>,
    next_mig: u64,
    pub(crate) scenario: Scenario,
    pub(crate) trace: Option<Vec<String>>,
    /// Readable key moments, for `tandem-sim --lab`.
    pub(crate) narration: Option<Vec<(u64, String)>>,
    pub(crate) violations: Vec<String>,
    pub stats: Stats,
    pub(crate) disturbances: u64,
    pub(crate) checks: Vec<crate::invariants::Expectation>,
    /// Working fence devices already told to power a host off.
    pub(crate) power_offs_in_flight: [u32; 2],
    /// While an operator's `tandemctl start` is fed to a host: (host, domain).
    /// The `StartDomain` it yields is an ordinary start, not a takeover.
    pub(crate) operator_start: Option<(usize, usize)>,
}

impl World {
    pub fn new(scenario: Scenario, seed: u64, trace: bool) -> Self {
        let drbd: Vec<DrbdResource> = (0..scenario.resources)
            .map(|r| DrbdResource::new(&format!("r{r}")))
            .collect();
        let domain_names = (0..scenario.domains.len())
            .map(|d| DomainName(format!("vm{d}")))
            .collect();
        let host = || Host {
            powered: true,
            daemon: None,
            persisted: Persisted::default(),
            vms: BTreeMap::new(),
        };
        let links = (0..scenario.links)
            .map(|_| Link {
                into: [true, true],
                loss_percent: 0,
            })
            .collect();
        let mut w = World {
            now: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            rng: SmallRng::seed_from_u64(seed ^ 0x7a6d_5eed),
            hosts: [host(), host()],
            drbd,
            domain_names,
            links,
            migrations: BTreeMap::new(),
            next_mig: 1,
            scenario,
            trace: if trace { Some(Vec::new()) } else { None },
            narration: None,
            violations: Vec::new(),
            stats: Stats::default(),
            disturbances: 0,
            checks: Vec::new(),
            power_offs_in_flight: [0, 0],
            operator_start: None,
        };
        for (d, h) in w.scenario.domains.clone().into_iter().enumerate() {
            if let Some(h) = h {
                let h = usize::from(h);
                w.hosts[h].vms.insert(d, Vm::Running { since: 0 });
                if let Some(r) = w.drbd.get_mut(d) {
                    r.sides[h].role = tandem::core::Role::Primary;
                }
            }
        }
        w.schedule(0, Ev::DaemonStart(0));
        if w.scenario.node1_powered {
            w.schedule(w.scenario.node1_start_ms, Ev::DaemonStart(1));
        } else {
            w.power_off(1);
            w.schedule(w.scenario.node1_start_ms, Ev::Fault(Fault::PowerOn(1)));
        }
        for (t, f) in w.scenario.faults.clone() {
            w.schedule(t, Ev::Fault(f));
        }
        w
    }

    pub(crate) fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.events.insert(self.seq, ev);
        self.queue.push(Reverse((at, self.seq)));
    }

    pub(crate) fn log(&mut self, f: impl FnOnce() -> String) {
        let now = self.now;
        if let Some(t) = self.trace.as_mut() {
            t.push(format!("[{:>6}.{:03}] {}", now / 1000, now % 1000, f()));
        }
    }

    /// Records a readable line for the lab's timeline.
    pub(crate) fn narrate(&mut self, f: impl FnOnce() -> String) {
        let now = self.now;
        if let Some(n) = self.narration.as_mut() {
            n.push((now, f()));
        }
    }

    pub fn enable_narration(&mut self) {
        self.narration = Some(Vec::new());
    }

    pub fn narration(&self) -> &[(u64, String)] {
        self.narration.as_deref().unwrap_or(&[])
    }

    pub(crate) fn violate(&mut self, invariant: u8, what: String) {
        let line = format!("invariant {invariant} violated at {} ms: {what}", self.now);
        self.log(|| format!("!!! {line}"));
        self.violations.push(line);
    }

    /// Runs to the end of the scenario. Returns the violations.
    pub fn run(&mut self) -> Vec<String> {
        while let Some(&Reverse((t, seq))) = self.queue.peek() {
            if t > self.scenario.duration_ms || !self.violations.is_empty() {
                break;
            }
            self.queue.pop();
            self.now = t;
            let Some(ev) = self.events.remove(&seq) else {
                continue;
            };
            self.stats.events += 1;
            if self.stats.events > MAX_EVENTS {
                self.violate(
                    0,
                    format!("more than {MAX_EVENTS} events: a livelock between the cores and the drivers"),
                );
                break;
            }
            self.step(ev);
            self.settle();
            crate::invariants::check_state(self);
        }
        self.violations.clone()
    }

    pub fn trace_lines(&self) -> &[String] {
        self.trace.as_deref().unwrap_or(&[])
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::HbTimer { host, boot } => self.heartbeat(host, boot),
            Ev::Deliver { to, to_boot, input } => {
                let Some(d) = self.hosts[to].daemon.as_mut() else {
                    return;
                };
                if to_boot.is_some_and(|b| b != d.boot) {
                    return;
                }
                if matches!(input, Input::Heartbeat { .. }) {
                    d.heard_peer = true;
                }
                self.feed(to, input);
            }
            Ev::Wake { host, boot } => {
                if let Some(d) = self.hosts[host].daemon.as_mut() {
                    if d.boot == boot {
                        d.wake = None;
                        self.feed(host, Input::Tick);
                    }
                }
            }
            Ev::DrbdExec {
                host,
                boot,
                action,
                op,
                give_up_at,
            } => self.drbd_exec(host, boot, action, op, give_up_at),
            Ev::FenceResult {
                host,
                boot,
                action,
                target,
                ok,
            } => {
                if ok {
                    self.power_offs_in_flight[target] = self.power_offs_in_flight[target].saturating_sub(1);
                    if self.hosts[target].powered {
                        self.log(|| format!("node{target}: powered off by its fence device"));
                        self.narrate(|| format!("node{target}'s BMC powers it off"));
                    }
                    self.power_off(target);
                }
                if self.daemon_boot(host) == Some(boot) {
                    let result = if ok {
                        Ok(())
                    } else {
                        Err("fence device failed".to_string())
                    };
                    self.feed(host, Input::FenceDone { action, result });
                }
            }
            Ev::HookTimeout { host, boot, request } => {
                if self.daemon_boot(host) == Some(boot) {
                    let ctx = self.hosts[host].daemon.as_mut().and_then(|d| d.hooks.remove(&request));
                    if let Some(ctx) = ctx {
                        self.hook_answer(host, ctx, Err("hook timed out waiting for tandemd".into()));
                    }
                }
            }
            Ev::MigSwitch(m) => self.migration_switch(m),
            Ev::DaemonStart(h) => self.daemon_start(h),
            Ev::Boot(h) => {
                if !self.hosts[h].powered {
                    self.hosts[h].powered = true;
                    for r in &mut self.drbd {
                        r.host_up(h);
                    }
                    self.log(|| format!("node{h}: booted"));
                    self.daemon_start(h);
                }
            }
            Ev::Fault(f) => self.fault(f),
            Ev::Check(i) => crate::invariants::check_expectation(self, i),
            Ev::Nudge => {}
        }
    }

    pub(crate) fn daemon_boot(&self, host: usize) -> Option<u64> {
        self.hosts[host].daemon.as_ref().map(|d| d.boot)
    }

    fn heartbeat(&mut self, host: usize, boot: u64) {
        let Some(d) = self.hosts[host].daemon.as_mut() else {
            return;
        };
        if d.boot != boot {
            return;
        }
        d.hb_counter += 1;
        let hb = tandem::core::Heartbeat {
            from: d.core.me(),
            boot,
            counter: d.hb_counter,
            summary: d.core.summary(),
        };
        let to = 1 - host;
        for l in 0..self.links.len() {
            let link = &self.links[l];
            if !link.into[to] || (link.loss_percent > 0 && self.rng.gen_range(0..100) < link.loss_percent) {
                continue;
            }
            let mut delay = 1;
            if self.rng.gen_range(0..1000) < self.scenario.reorder_permille {
                delay += self.rng.gen_range(0..300);
            }
            let input = Input::Heartbeat {
                link: LinkId(l as u8),
                heartbeat: hb.clone(),
            };
            if self.rng.gen_range(0..1000) < self.scenario.duplicate_permille {
                let extra = self.rng.gen_range(0..100);
                self.schedule(
                    self.now + delay + extra,
                    Ev::Deliver {
                        to,
                        to_boot: None,
                        input: input.clone(),
                    },
                );
            }
            self.schedule(
                self.now + delay,
                Ev::Deliver {
                    to,
                    to_boot: None,
                    input,
                },
            );
        }
        self.schedule(self.now + HEARTBEAT_MS, Ev::HbTimer { host, boot });
    }

    /// Hands an input to a host's core and carries out what it asks.
    pub(crate) fn feed(&mut self, h: usize, input: Input) {
        let now = tandem::core::Millis(self.now);
        let Some(d) = self.hosts[h].daemon.as_mut() else {
            return;
        };
        let traced = !matches!(input, Input::Heartbeat { .. } | Input::Tick);
        let is_tick = matches!(input, Input::Tick);
        let desc = if traced && self.trace.is_some() {
            Some(format!("{input:?}"))
        } else {
            None
        };
        let result = d.core.handle(now, input);
        let boot = d.boot;
        match result {
            Ok(actions) => {
                let next = d.core.next_deadline().map(|m| m.0);
                if is_tick && next.is_some_and(|t| t <= self.now) {
                    let state = format!("{:?}", d.core);
                    self.violate(
                        0,
                        format!("node{h}'s core asks to be woken again at once after a tick: {state}"),
                    );
                    return;
                }
                if let Some(t) = next {
                    if d.wake.is_none_or(|w| t < w || w < self.now) {
                        d.wake = Some(t);
                        let at = t.max(self.now);
                        self.schedule(at, Ev::Wake { host: h, boot });
                    }
                }
                if let Some(desc) = desc {
                    self.log(|| format!("node{h} <- {desc}"));
                }
                for a in actions {
                    self.exec(h, boot, a);
                }
            }
            Err(e) => {
                let kind = format!("{e:?}");
                let kind = kind.split([' ', '(', '{']).next().unwrap_or("").to_string();
                *self.stats.core_errors.entry(kind).or_default() += 1;
                if let Some(desc) = desc {
                    self.log(|| format!("node{h} rejected {desc}: {e}"));
                }
            }
        }
    }

    /// Brings DRBD connections and the cores' observations up to date.
    fn settle(&mut self) {
        for _ in 0..16 {
            let changed = self.drbd_tick() | self.sync_observations();
            if !changed {
                return;
            }
        }
    }

    fn sync_observations(&mut self) -> bool {
        enum Obs {
            Res(usize, ResourceObservation),
            Dom(usize, DomainRun),
        }
        let mut changed = false;
        for h in 0..2 {
            let Some(d) = self.hosts[h].daemon.as_ref() else {
                continue;
            };
            let mut pending = Vec::new();
            for (r, res) in self.drbd.iter().enumerate() {
                let obs = res.observe(h, self.now);
                if d.fed_res[r] != Some(obs) {
                    pending.push(Obs::Res(r, obs));
                }
            }
            for dom in 0..self.domain_names.len() {
                let run = match self.hosts[h].vms.get(&dom) {
                    Some(Vm::Running { .. }) => DomainRun::Running,
                    Some(Vm::Paused) => DomainRun::Paused,
                    None => DomainRun::Stopped,
                };
                if d.fed_dom[dom] != run {
                    pending.push(Obs::Dom(dom, run));
                }
            }
            for o in pending {
                changed = true;
                let Some(d) = self.hosts[h].daemon.as_mut() else {
                    break;
                };
                let input = match o {
                    Obs::Res(r, observation) => {
                        d.fed_res[r] = Some(observation);
                        Input::ResourceObserved {
                            resource: ResourceName(format!("r{r}")),
                            observation,
                        }
                    }
                    Obs::Dom(dom, run) => {
                        d.fed_dom[dom] = run;
                        Input::DomainObserved {
                            domain: self.domain_names[dom].clone(),
                            run,
                        }
                    }
                };
                self.feed(h, input);
            }
        }
        changed
    }

    /// Connects and disconnects DRBD as the replication link (link 0) and the
    /// hosts allow; runs the fence-peer handler where DRBD would.
    fn drbd_tick(&mut self) -> bool {
        let mut changed = false;
        let link_ok = self.links.first().is_some_and(|l| l.into[0] && l.into[1]);
        for r in 0..self.drbd.len() {
            let res = &mut self.drbd[r];
            let should = link_ok && res.sides[0].up && res.sides[1].up && !res.standalone;
            if res.connected && !should {
                let frozen = res.disconnect();
                changed = true;
                // Half the time a side that did not freeze notices the break
                // only at its next ping, up to 10 s later (8.4's ping-int).
                if let [f] = frozen[..] {
                    if self.rng.gen_bool(0.5) {
                        let until = self.now + self.rng.gen_range(100..10_000);
                        self.drbd[r].late_notice = Some((1 - f, until));
                        self.schedule(until, Ev::Nudge);
                    }
                }
                self.log(|| format!("r{r}: disconnected, frozen I/O on {frozen:?}"));
                for n in frozen {
                    self.run_fence_peer(n, HookCtx::FencePeerConn { res: r }, r);
                }
            } else if !res.connected && should {
                changed = true;
                match res.connect(self.now, RESYNC_MS) {
                    Ok(()) => {
                        if let Some(t) = res.sync_until {
                            self.schedule(t, Ev::Nudge);
                        }
                        self.log(|| format!("r{r}: connected"));
                    }
                    Err(e) => self.violate(2, e),
                }
            }
            if self.drbd[r].finish_sync(self.now) {
                changed = true;
                self.log(|| format!("r{r}: resync finished"));
            }
        }
        crate::invariants::track_writes(self);
        changed
    }

    pub(crate) fn new_migration(&mut self, m: Migration) -> u64 {
        let id = self.next_mig;
        self.next_mig += 1;
        self.migrations.insert(id, m);
        id
    }

    /// Whether host `h` has power.
    pub fn is_powered(&self, h: usize) -> bool {
        self.hosts[h].powered
    }

    /// The DRBD role of resource `r` on host `h`.
    pub fn role(&self, r: usize, h: usize) -> tandem::core::Role {
        self.drbd[r].sides[h].role
    }

    /// Whether host `h` allows two primaries on resource `r`.
    pub fn dual_primary(&self, r: usize, h: usize) -> bool {
        self.drbd[r].sides[h].allow_two_primaries
    }

    /// Migration windows host `h`'s daemon holds (None: daemon not running).
    pub fn windows(&self, h: usize) -> Option<usize> {
        self.hosts[h].daemon.as_ref().map(|d| d.core.open_windows().count())
    }

    /// The peer state host `h`'s daemon sees.
    pub fn peer_state(&self, h: usize) -> Option<tandem::core::PeerState> {
        self.hosts[h].daemon.as_ref().map(|d| d.core.peer_state())
    }

    /// The violations found so far.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Runs until `t` ms (then `run` goes on to the end).
    pub fn run_until(&mut self, t: u64) -> Vec<String> {
        let end = self.scenario.duration_ms;
        self.scenario.duration_ms = t.min(end);
        let v = self.run();
        self.scenario.duration_ms = end;
        v
    }

    /// The host where a domain runs unpaused, if any.
    pub fn runs_on(&self, domain: usize) -> Option<usize> {
        (0..2).find(|&h| matches!(self.hosts[h].vms.get(&domain), Some(Vm::Running { .. })))
    }

    pub(crate) fn fence_mode(&self, target: usize, level: usize) -> DeviceMode {
        self.scenario.fence_levels[target]
            .get(level)
            .copied()
            .unwrap_or(DeviceMode::Fails)
    }

    pub(crate) fn next_request(&mut self, h: usize) -> Option<RequestId> {
        let d = self.hosts[h].daemon.as_mut()?;
        let r = RequestId(d.next_request);
        d.next_request += 1;
        Some(r)
    }
}
