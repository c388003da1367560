//! From the merged tree to a [`Config`]: each section is deserialized on its own
//! (so a broken section does not hide the errors of the others), then checked.
//! Checks that relate two sections run only when both came through cleanly,
//! which keeps every reported error a real one.

use super::de::{field, Ctx};
use super::model::{Cluster, Config, Drbd, Hypervisor, Timing, XlTransport};
use super::nodes::check_nodes;
use super::raw::{HypervisorKind, RawCluster, RawDrbd, RawHypervisor, RawTiming, XlTransportKind, S, SECTIONS};
use super::source::{Diag, Raw};
use crate::core::{NodeId, ResourceName};
use std::path::PathBuf;

pub(crate) fn build(root: &Raw, diags: &mut Vec<Diag>) -> Option<Config> {
    let ctx = Ctx::default();
    let config = check(root, &ctx);
    diags.extend(ctx.into_diags());
    config
}

fn check(root: &Raw, ctx: &Ctx) -> Option<Config> {
    // Sections that are missing altogether are reported at the top of the main file.
    let top = root.span.start;
    ctx.unknown_keys(root, "", SECTIONS);

    let cluster: Option<RawCluster> = match field(root, "", "cluster", ctx) {
        Some(c) => c.ok(),
        None => {
            ctx.report(
                top,
                "the [cluster] section is missing; it needs at least name = \"...\"".into(),
            );
            None
        }
    };
    let timing = match field::<RawTiming>(root, "", "timing", ctx) {
        Some(Ok(t)) => check_timing(&t, ctx),
        Some(Err(())) => None,
        None => Some(Timing::default()),
    };
    let nodes = check_nodes(root, ctx, timing.as_ref());
    let drbd = match field::<RawDrbd>(root, "", "drbd", ctx) {
        Some(d) => d.ok().and_then(|d| check_drbd(&d, ctx)),
        None => {
            ctx.report(
                top,
                "the [drbd] section is missing; it needs at least resources = [\"...\"], \
                 the DRBD resources tandem manages"
                    .into(),
            );
            None
        }
    };
    let hypervisor = match field::<RawHypervisor>(root, "", "hypervisor", ctx) {
        Some(h) => h.ok().and_then(|h| check_hypervisor(&h, ctx)),
        None => check_hypervisor(&RawHypervisor::default(), ctx),
    };
    let cluster = cluster.and_then(|c| check_cluster(&c, nodes.names.as_ref(), ctx));

    Some(Config {
        cluster: cluster?,
        timing: timing?,
        nodes: nodes.nodes?,
        drbd: drbd?,
        hypervisor: hypervisor?,
        sources: Vec::new(),
    })
}

pub(crate) fn at<T>(s: &S<T>) -> usize {
    s.span().start
}

/// Checks an absolute path: tandem runs with `/` as its working directory, and a
/// relative path there is more likely a mistake than a plan.
fn absolute(s: &S<String>, name: &str, ctx: &Ctx) -> Option<PathBuf> {
    let v = s.get_ref();
    if v.starts_with('/') {
        Some(PathBuf::from(v))
    } else {
        ctx.report(at(s), format!("{name} must be an absolute path, not \"{v}\""));
        None
    }
}

/// An optional absolute path with a default.
fn path_or(s: &Option<S<String>>, name: &str, default: &str, ctx: &Ctx) -> Option<PathBuf> {
    match s {
        Some(s) => absolute(s, name, ctx),
        None => Some(PathBuf::from(default)),
    }
}

/// Letters, digits and `_ . -`, starting with a letter or digit: safe as a file
/// name, a command argument and a D-Bus path element after escaping.
pub(crate) fn plain_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// What DRBD accepts and what is safe to pass to drbdadm: no leading '-' that it
/// would read as an option.
fn resource_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['-', '.'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check_cluster(c: &RawCluster, names: Option<&[String; 2]>, ctx: &Ctx) -> Option<Cluster> {
    let before = ctx.reports();
    let name = c.name.get_ref();
    if !plain_name(name, 64) {
        ctx.report(
            at(&c.name),
            format!(
                "cluster.name \"{name}\" must be 1 to 64 letters, digits, '_', '.' or '-', \
                 starting with a letter or digit"
            ),
        );
    }
    let authkey = path_or(&c.authkey, "cluster.authkey", Cluster::DEFAULT_AUTHKEY, ctx);
    let heartbeat_port = port(
        &c.heartbeat_port,
        "cluster.heartbeat_port",
        Cluster::DEFAULT_HEARTBEAT_PORT,
        ctx,
    );
    let control_port = port(
        &c.control_port,
        "cluster.control_port",
        Cluster::DEFAULT_CONTROL_PORT,
        ctx,
    );
    let names = names?;
    let preferred = match &c.preferred {
        None => NodeId(0),
        Some(p) => match names.iter().position(|n| n == p.get_ref()) {
            Some(1) => NodeId(1),
            Some(_) => NodeId(0),
            None => {
                ctx.report(
                    at(p),
                    format!(
                        "cluster.preferred is \"{}\", which is not a node; it must be \"{}\" or \"{}\"",
                        p.get_ref(),
                        names[0],
                        names[1]
                    ),
                );
                NodeId(0)
            }
        },
    };
    (ctx.reports() == before).then_some(Cluster {
        name: name.clone(),
        authkey: authkey?,
        preferred,
        heartbeat_port,
        control_port,
    })
}

fn port(p: &Option<S<u16>>, name: &str, default: u16, ctx: &Ctx) -> u16 {
    match p {
        None => default,
        Some(p) if *p.get_ref() == 0 => {
            ctx.report(at(p), format!("{name} must be a port from 1 to 65535, not 0"));
            default
        }
        Some(p) => *p.get_ref(),
    }
}

/// A timing value and, when the file sets it, where.
#[derive(Clone, Copy)]
struct Tv {
    name: &'static str,
    value: u64,
    at: Option<usize>,
}

impl Tv {
    fn new(name: &'static str, s: &Option<S<u64>>, default: u64) -> Self {
        Tv {
            name,
            value: s.as_ref().map_or(default, |s| *s.get_ref()),
            at: s.as_ref().map(at),
        }
    }

    /// Checks `min <= value <= max`; `why` says what the bound protects.
    fn range(&self, min: u64, max: u64, unit: &str, why: &str, ctx: &Ctx) {
        if let Some(at) = self.at {
            if self.value < min || self.value > max {
                ctx.report(
                    at,
                    format!(
                        "timing.{} is {}; it must be from {min} to {max} {unit}{why}",
                        self.name, self.value
                    ),
                );
            }
        }
    }
}

/// Reports a broken relation between two timings at whichever of them the file
/// sets (the first one when both are set: it is the one the message is about).
fn relation(ok: bool, a: Tv, b: Tv, message: String, ctx: &Ctx) {
    if !ok {
        if let Some(at) = a.at.or(b.at) {
            ctx.report(at, message);
        }
    }
}

fn check_timing(t: &RawTiming, ctx: &Ctx) -> Option<Timing> {
    let before = ctx.reports();
    let d = Timing::default();
    let hb = Tv::new(
        "heartbeat_interval_ms",
        &t.heartbeat_interval_ms,
        d.heartbeat_interval_ms,
    );
    let dead = Tv::new("dead_after_ms", &t.dead_after_ms, d.dead_after_ms);
    let delay = Tv::new("fence_delay_ms", &t.fence_delay_ms, d.fence_delay_ms);
    let fence_to = Tv::new("fence_timeout_ms", &t.fence_timeout_ms, d.fence_timeout_ms);
    let bo_init = Tv::new(
        "fence_backoff_initial_ms",
        &t.fence_backoff_initial_ms,
        d.fence_backoff_initial_ms,
    );
    let bo_max = Tv::new("fence_backoff_max_ms", &t.fence_backoff_max_ms, d.fence_backoff_max_ms);
    let window = Tv::new("migration_window_s", &t.migration_window_s, d.migration_window_s);
    let request = Tv::new("request_timeout_ms", &t.request_timeout_ms, d.request_timeout_ms);
    let retry = Tv::new("retry_ms", &t.retry_ms, d.retry_ms);

    hb.range(
        10,
        10_000,
        "ms",
        "; faster floods the links, slower cannot detect a failure in useful time",
        ctx,
    );
    dead.range(30, 600_000, "ms", "", ctx);
    delay.range(
        1,
        600_000,
        "ms",
        "; with no delay both nodes would fence each other at once in a split, \
         and both would end up powered off",
        ctx,
    );
    fence_to.range(
        1000,
        600_000,
        "ms",
        "; no fence device confirms a power off faster than a second",
        ctx,
    );
    bo_init.range(100, 600_000, "ms", "", ctx);
    bo_max.range(100, 3_600_000, "ms", "", ctx);
    window.range(
        10,
        86_400,
        "s",
        "; a live migration of a large guest can take long, but not days",
        ctx,
    );
    request.range(100, 600_000, "ms", "", ctx);
    retry.range(10, 600_000, "ms", "", ctx);

    relation(
        dead.value > hb.value.saturating_mul(2),
        dead,
        hb,
        format!(
            "timing.dead_after_ms is {} but must be more than twice timing.heartbeat_interval_ms \
             (2 x {} = {}), so that one lost heartbeat is not taken for a dead peer",
            dead.value,
            hb.value,
            hb.value.saturating_mul(2)
        ),
        ctx,
    );
    relation(
        delay.value > hb.value || delay.value == 0,
        delay,
        hb,
        format!(
            "timing.fence_delay_ms is {} but must be more than timing.heartbeat_interval_ms ({}): \
             the two nodes notice a split up to one heartbeat apart, and the preferred node \
             must get its head start",
            delay.value, hb.value
        ),
        ctx,
    );
    relation(
        bo_max.value >= bo_init.value,
        bo_max,
        bo_init,
        format!(
            "timing.fence_backoff_max_ms is {} but must be at least timing.fence_backoff_initial_ms ({})",
            bo_max.value, bo_init.value
        ),
        ctx,
    );
    relation(
        request.value < window.value.saturating_mul(1000),
        request,
        window,
        format!(
            "timing.request_timeout_ms is {} but must be shorter than the migration window \
             (timing.migration_window_s = {} s), or a migration could outlive its window \
             while waiting for the peer",
            request.value, window.value
        ),
        ctx,
    );

    (ctx.reports() == before).then_some(Timing {
        heartbeat_interval_ms: hb.value,
        dead_after_ms: dead.value,
        fence_delay_ms: delay.value,
        fence_timeout_ms: fence_to.value,
        fence_backoff_initial_ms: bo_init.value,
        fence_backoff_max_ms: bo_max.value,
        migration_window_s: window.value,
        request_timeout_ms: request.value,
        retry_ms: retry.value,
    })
}

fn check_drbd(d: &RawDrbd, ctx: &Ctx) -> Option<Drbd> {
    let before = ctx.reports();
    let drbdadm = path_or(&d.drbdadm, "drbd.drbdadm", Drbd::DEFAULT_DRBDADM, ctx);
    let drbdsetup = path_or(&d.drbdsetup, "drbd.drbdsetup", Drbd::DEFAULT_DRBDSETUP, ctx);
    let list = d.resources.get_ref();
    if list.is_empty() {
        ctx.report(
            at(&d.resources),
            "drbd.resources is empty; list the DRBD resources tandem manages".into(),
        );
    }
    let mut resources: Vec<ResourceName> = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let name = r.get_ref();
        let here = format!("drbd.resources[{}]", i + 1);
        if name == "all" {
            ctx.report(
                at(r),
                format!("{here}: \"all\" means every resource to drbdadm; list the resources by name"),
            );
        } else if !resource_name(name) {
            ctx.report(
                at(r),
                format!(
                    "{here} \"{name}\" is not a resource name tandem accepts: letters, digits, \
                     '_', '.' and '-', not starting with '-' or '.'"
                ),
            );
        } else if resources.iter().any(|x| x.0 == *name) {
            ctx.report(at(r), format!("{here} \"{name}\" is listed twice"));
        }
        resources.push(ResourceName(name.clone()));
    }
    (ctx.reports() == before).then_some(Drbd {
        drbdadm: drbdadm?,
        drbdsetup: drbdsetup?,
        resources,
    })
}

fn check_xl(h: &RawHypervisor, ctx: &Ctx) -> Option<Hypervisor> {
    let xl = path_or(&h.xl, "hypervisor.xl", Hypervisor::DEFAULT_XL, ctx);
    let config_dir = path_or(
        &h.config_dir,
        "hypervisor.config_dir",
        Hypervisor::DEFAULT_XL_CONFIG_DIR,
        ctx,
    );
    let kind = h
        .migration_transport
        .as_ref()
        .map_or(XlTransportKind::Ssh, |t| *t.get_ref());
    let transport = match (kind, &h.migration_port) {
        (XlTransportKind::Ssh, Some(p)) => {
            ctx.report(
                at(p),
                "hypervisor.migration_port applies to migration_transport = \"tcp\" only; \
                 with \"ssh\" (the default) ssh's own port is used"
                    .into(),
            );
            None
        }
        (XlTransportKind::Ssh, None) => Some(XlTransport::Ssh),
        (XlTransportKind::Tcp, Some(p)) if *p.get_ref() == 0 => {
            ctx.report(
                at(p),
                "hypervisor.migration_port is 0; it must be from 1 to 65535".into(),
            );
            None
        }
        (XlTransportKind::Tcp, p) => Some(XlTransport::Tcp {
            port: p.as_ref().map_or(XL_TCP_PORT, |p| *p.get_ref()),
        }),
    };
    Some(Hypervisor::Xl {
        xl: xl?,
        config_dir: config_dir?,
        transport: transport?,
    })
}

/// The port of migration_transport = "tcp" when none is given (the one xl's
/// documentation uses for its socat example).
const XL_TCP_PORT: u16 = 8002;

fn check_hypervisor(h: &RawHypervisor, ctx: &Ctx) -> Option<Hypervisor> {
    let before = ctx.reports();
    let kind = h.kind.as_ref().map_or(HypervisorKind::Libvirt, |k| *k.get_ref());
    let kind_name = match kind {
        HypervisorKind::Libvirt => "libvirt",
        HypervisorKind::Xl => "xl",
        HypervisorKind::None => "none",
    };
    if let (Some(uri), false) = (&h.uri, kind == HypervisorKind::Libvirt) {
        ctx.report(
            at(uri),
            format!("hypervisor.uri applies to kind = \"libvirt\" only, and kind is \"{kind_name}\""),
        );
    }
    if let (Some(b), false) = (&h.migration_bandwidth_mib, kind == HypervisorKind::Libvirt) {
        ctx.report(
            at(b),
            format!(
                "hypervisor.migration_bandwidth_mib applies to kind = \"libvirt\" only, and kind is \"{kind_name}\""
            ),
        );
    }
    let xl_only = [
        ("xl", h.xl.as_ref().map(at)),
        ("config_dir", h.config_dir.as_ref().map(at)),
        ("migration_transport", h.migration_transport.as_ref().map(at)),
        ("migration_port", h.migration_port.as_ref().map(at)),
    ];
    if kind != HypervisorKind::Xl {
        for (key, pos) in xl_only {
            if let Some(pos) = pos {
                ctx.report(
                    pos,
                    format!("hypervisor.{key} applies to kind = \"xl\" only, and kind is \"{kind_name}\""),
                );
            }
        }
    }
    let hv = match kind {
        HypervisorKind::Libvirt => {
            let uri = h
                .uri
                .as_ref()
                .map_or(Hypervisor::DEFAULT_LIBVIRT_URI.to_string(), |u| u.get_ref().clone());
            if let Some(u) = &h.uri {
                let ok = uri.split_once("://").is_some_and(|(scheme, _)| {
                    !scheme.is_empty()
                        && scheme
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                }) && !uri.chars().any(char::is_whitespace);
                if !ok {
                    ctx.report(
                        at(u),
                        format!("hypervisor.uri \"{uri}\" is not a libvirt URI such as \"qemu:///system\" or \"xen:///system\""),
                    );
                }
            }
            let migration_bandwidth_mib = h.migration_bandwidth_mib.as_ref().map_or(0, |b| *b.get_ref());
            if let Some(b) = &h.migration_bandwidth_mib {
                if *b.get_ref() > 1_000_000 {
                    ctx.report(
                        at(b),
                        format!(
                            "hypervisor.migration_bandwidth_mib is {}; it must be from 0 (unlimited) to 1000000 MiB/s",
                            b.get_ref()
                        ),
                    );
                }
            }
            Some(Hypervisor::Libvirt {
                uri,
                migration_bandwidth_mib,
            })
        }
        HypervisorKind::Xl => check_xl(h, ctx),
        HypervisorKind::None => Some(Hypervisor::None),
    };
    if ctx.reports() == before {
        hv
    } else {
        None
    }
}
