//! Fault schedules: what happens to the simulated cluster and when. A named
//! scenario writes one by hand; `random` draws one from a seed.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceMode {
    /// Powers the target off and confirms it.
    Works,
    /// Answers with an error (BMC unreachable, wrong password).
    Fails,
    /// Never answers (BMC frozen).
    Hangs,
}

/// One thing that happens to the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Drop everything arriving on `link` at `to` (None: both directions).
    CutLink {
        link: u8,
        to: Option<u8>,
    },
    HealLink {
        link: u8,
    },
    /// Random loss of heartbeats on a link, in percent, both directions.
    Loss {
        link: u8,
        percent: u8,
    },
    /// Every link cut both ways.
    Partition,
    HealAll,
    /// The host loses power: its domains, DRBD and daemon are gone.
    Crash(u8),
    PowerOn(u8),
    /// tandemd killed and restarted; domains and DRBD stay.
    RestartDaemon(u8),
    FenceDevice {
        target: u8,
        level: usize,
        mode: DeviceMode,
    },
    /// `virsh start` on a host.
    Start {
        host: u8,
        domain: usize,
    },
    /// `virsh shutdown` where the domain runs.
    Stop {
        domain: usize,
    },
    /// `virsh migrate --live` from where the domain runs to the other host.
    Migrate {
        domain: usize,
    },
    /// `tandemctl migrate` on the host running the domain.
    TandemMigrate {
        domain: usize,
    },
    /// `tandemctl start` on a host (through its daemon, then libvirt and its hook).
    TandemStart {
        host: u8,
        domain: usize,
    },
    /// `tandemctl stop --force` on the host running the domain.
    TandemStop {
        domain: usize,
    },
    Standby {
        host: u8,
        on: bool,
    },
    /// `tandemctl fence` on a host: fence its peer now.
    OperatorFence {
        host: u8,
    },
    /// `tandemctl cleanup` on a host: forget failures, retry failed takeovers.
    Cleanup {
        host: u8,
    },
    /// The destination's qemu of a running migration dies: libvirt runs
    /// `release end` on the destination and no hook at all on the source.
    KillIncoming {
        domain: usize,
    },
}

impl Fault {
    /// A short name for counting how often each kind occurred.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::CutLink { .. } => "cut-link",
            Fault::HealLink { .. } => "heal-link",
            Fault::Loss { .. } => "loss",
            Fault::Partition => "partition",
            Fault::HealAll => "heal-all",
            Fault::Crash(_) => "crash",
            Fault::PowerOn(_) => "power-on",
            Fault::RestartDaemon(_) => "restart-daemon",
            Fault::FenceDevice { .. } => "fence-device",
            Fault::Start { .. } => "start",
            Fault::Stop { .. } => "stop",
            Fault::Migrate { .. } => "migrate",
            Fault::TandemMigrate { .. } => "tandem-migrate",
            Fault::TandemStart { .. } => "tandem-start",
            Fault::TandemStop { .. } => "tandem-stop",
            Fault::Standby { .. } => "standby",
            Fault::OperatorFence { .. } => "operator-fence",
            Fault::Cleanup { .. } => "cleanup",
            Fault::KillIncoming { .. } => "kill-incoming",
        }
    }

    /// Whether this disturbs the cluster (as opposed to an ordinary operator action).
    pub fn is_disturbance(&self) -> bool {
        !matches!(
            self,
            Fault::Start { .. }
                | Fault::Stop { .. }
                | Fault::Migrate { .. }
                | Fault::TandemMigrate { .. }
                | Fault::TandemStart { .. }
                | Fault::TandemStop { .. }
                | Fault::Cleanup { .. }
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::CutLink { link, to: None } => write!(f, "cut link {link}"),
            Fault::CutLink { link, to: Some(n) } => write!(f, "cut link {link} into node{n}"),
            Fault::HealLink { link } => write!(f, "heal link {link}"),
            Fault::Loss { link, percent } => write!(f, "{percent}% loss on link {link}"),
            Fault::Partition => write!(f, "partition (all links cut)"),
            Fault::HealAll => write!(f, "heal all links"),
            Fault::Crash(n) => write!(f, "node{n} loses power"),
            Fault::PowerOn(n) => write!(f, "node{n} powered on"),
            Fault::RestartDaemon(n) => write!(f, "tandemd on node{n} killed and restarted"),
            Fault::FenceDevice { target, level, mode } => {
                write!(f, "fence device for node{target} level {level} now {mode:?}")
            }
            Fault::Start { host, domain } => write!(f, "virsh start vm{domain} on node{host}"),
            Fault::Stop { domain } => write!(f, "virsh shutdown vm{domain}"),
            Fault::Migrate { domain } => write!(f, "virsh migrate --live vm{domain}"),
            Fault::TandemMigrate { domain } => write!(f, "tandemctl migrate vm{domain}"),
            Fault::TandemStart { host, domain } => write!(f, "tandemctl start vm{domain} on node{host}"),
            Fault::TandemStop { domain } => write!(f, "tandemctl stop --force vm{domain}"),
            Fault::Standby { host, on } => {
                write!(f, "tandemctl standby {} on node{host}", if *on { "on" } else { "off" })
            }
            Fault::OperatorFence { host } => write!(f, "tandemctl fence (peer) on node{host}"),
            Fault::Cleanup { host } => write!(f, "tandemctl cleanup on node{host}"),
            Fault::KillIncoming { domain } => write!(f, "the incoming qemu of vm{domain} dies on the destination"),
        }
    }
}

/// The shape of a simulated cluster and what happens to it.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub links: u8,
    pub resources: usize,
    /// Initial host of each domain (`vmN` uses resource `rN`), None = stopped.
    pub domains: Vec<Option<u8>>,
    /// Fence levels per target node.
    pub fence_levels: [Vec<DeviceMode>; 2],
    /// Latency of a working fence device, ms.
    pub fence_latency_ms: u64,
    pub faults: Vec<(u64, Fault)>,
    pub duration_ms: u64,
    /// Heartbeat reordering and duplication, per mille.
    pub reorder_permille: u16,
    pub duplicate_permille: u16,
    /// Live-migration transfer time, ms.
    pub migration_ms: u64,
    /// Both daemons start at time 0 (false: node1 starts late, as after a reboot).
    pub node1_start_ms: u64,
    pub node1_powered: bool,
}

impl Scenario {
    /// Two hosts, two links, three domains (vm0 on node0, vm1 on node1, vm2 stopped),
    /// one working fence level each, no faults.
    pub fn basic(duration_ms: u64) -> Self {
        Scenario {
            links: 2,
            resources: 3,
            domains: vec![Some(0), Some(1), None],
            fence_levels: [vec![DeviceMode::Works], vec![DeviceMode::Works]],
            fence_latency_ms: 200,
            faults: Vec::new(),
            duration_ms,
            reorder_permille: 0,
            duplicate_permille: 0,
            migration_ms: 1500,
            node1_start_ms: 0,
            node1_powered: true,
        }
    }

    pub fn at(mut self, t: u64, fault: Fault) -> Self {
        self.faults.push((t, fault));
        self
    }

    /// A random schedule: a few seconds of settling, up to eight disturbances and
    /// operator actions, then a quiet tail so failovers can complete.
    pub fn random(seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut s = Scenario::basic(45_000);
        s.reorder_permille = if rng.gen_bool(0.3) { rng.gen_range(0..200) } else { 0 };
        s.duplicate_permille = if rng.gen_bool(0.3) { rng.gen_range(0..100) } else { 0 };
        s.fence_latency_ms = rng.gen_range(5..1500);
        s.migration_ms = rng.gen_range(200..4000);
        for target in 0..2 {
            let levels = rng.gen_range(1..=2);
            s.fence_levels[target] = (0..levels)
                .map(|_| match rng.gen_range(0..10) {
                    0 => DeviceMode::Fails,
                    1 => DeviceMode::Hangs,
                    _ => DeviceMode::Works,
                })
                .collect();
        }
        s.domains = (0..s.resources)
            .map(|_| match rng.gen_range(0..3) {
                0 => None,
                h => Some(h as u8 - 1),
            })
            .collect();
        if rng.gen_bool(0.1) {
            s.node1_start_ms = rng.gen_range(0..20_000);
            if rng.gen_bool(0.5) {
                s.node1_powered = false;
            }
        }
        let n = rng.gen_range(0..=8);
        let mut t = 2_000;
        for _ in 0..n {
            t += rng.gen_range(0..4_000);
            let host = rng.gen_range(0..2u8);
            let domain = rng.gen_range(0..s.resources);
            let link = rng.gen_range(0..s.links);
            let f = match rng.gen_range(0..100) {
                0..=9 => Fault::CutLink {
                    link,
                    to: if rng.gen_bool(0.3) { Some(host) } else { None },
                },
                10..=14 => Fault::HealLink { link },
                15..=19 => Fault::Loss {
                    link,
                    percent: rng.gen_range(10..60),
                },
                20..=29 => Fault::Partition,
                30..=34 => Fault::HealAll,
                35..=46 => Fault::Crash(host),
                47..=52 => Fault::PowerOn(host),
                53..=57 => Fault::RestartDaemon(host),
                58..=62 => Fault::FenceDevice {
                    target: host,
                    level: rng.gen_range(0..2),
                    mode: match rng.gen_range(0..3) {
                        0 => DeviceMode::Fails,
                        1 => DeviceMode::Hangs,
                        _ => DeviceMode::Works,
                    },
                },
                63..=68 => Fault::Start { host, domain },
                69..=71 => Fault::TandemStart { host, domain },
                72..=74 => Fault::Stop { domain },
                75..=76 => Fault::TandemStop { domain },
                77..=88 => Fault::Migrate { domain },
                89..=93 => Fault::TandemMigrate { domain },
                94..=95 => Fault::KillIncoming { domain },
                96 => Fault::Cleanup { host },
                97 => Fault::Standby {
                    host,
                    on: rng.gen_bool(0.6),
                },
                _ => Fault::OperatorFence { host },
            };
            s.faults.push((t, f));
        }
        s
    }
}
