//! What a hook invocation asks of tandem, decided from the arguments alone plus
//! the domain's DRBD disks.
//!
//! libvirt runs `/etc/libvirt/hooks/qemu.d/tandem DOMAIN OPERATION SUBOP EXTRA`
//! (and the same under `libxl.d/`) with the domain XML on stdin. The table
//! (libvirt's operations from libvirt.org/hooks.html):
//!
//! | operation | subop | plan | why |
//! |---|---|---|---|
//! | `migrate` | `begin` | [`HookPlan::PrepareIncoming`] | destination of a live migration: open the dual-primary window before QEMU/libxl opens the disks |
//! | `prepare` | `begin` | [`HookPlan::PrepareStart`] | every start (plain, restore, migration destination) passes here before any disk is opened; the daemon tells a start from the second half of a migration by its open window |
//! | `release` | `end` | [`HookPlan::Release`] | the domain no longer runs here, whatever the reason (`-`, `migrated`, `failed`, `shutdown`, `from snapshot`, ...): demote |
//! | `start` | `begin` | [`HookPlan::Nothing`] | `prepare` already admitted the start |
//! | `started` | `begin` | Nothing | the daemon sees running domains itself |
//! | `stopped` | `end` | Nothing | QEMU has exited but libvirt still holds the disks (labels): `release` demotes |
//! | `restore` | `begin` | Nothing | the `prepare begin` that follows admits it; stdout stays empty so the XML is unchanged |
//! | `reconnect` | `begin` | Nothing | libvirtd restarted; failing would kill a running domain |
//! | `attach` | `begin` | Nothing | an external QEMU taken over; failing would kill it |
//! | anything else | | [`HookPlan::None`] with a warning on stderr | see below |
//!
//! The three acting plans become [`HookPlan::None`] when the domain has no DRBD
//! disk: tandem has nothing to say about it.
//!
//! **Unknown operations** (a newer libvirt, or a known operation with an
//! unexpected subop) are let through (exit 0) with one warning line on stderr.
//! Every start of a domain still passes through `prepare begin`, and every stop
//! through `release end`, so ignoring a new operation cannot let a domain start
//! unchecked, while refusing one could block starts or, for operations like
//! `reconnect`, kill running domains. A refusal is only safe where tandem knows
//! what is being refused.

use crate::drbd::DrbdDisk;
use crate::{DomainName, ResourceName};

/// The arguments are not what libvirt passes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("expected the libvirt hook arguments DOMAIN OPERATION SUBOP [EXTRA], got {got} argument(s)")]
    Count { got: usize },
    #[error("the domain name (first argument) is empty")]
    EmptyDomain,
}

/// The hook's arguments, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookArgs {
    pub domain: DomainName,
    pub operation: String,
    pub subop: String,
    /// `-` when libvirt has nothing to say; the shutoff reason for `release end`
    /// from libvirt 10.5.
    pub extra: String,
}

/// Reads `DOMAIN OPERATION SUBOP [EXTRA]` (without the program name). `EXTRA`
/// defaults to `-`; arguments after it are ignored, so a libvirt that adds one
/// still works.
pub fn parse_args(args: &[String]) -> Result<HookArgs, ArgError> {
    let [domain, operation, subop, rest @ ..] = args else {
        return Err(ArgError::Count { got: args.len() });
    };
    if domain.is_empty() {
        return Err(ArgError::EmptyDomain);
    }
    Ok(HookArgs {
        domain: DomainName(domain.clone()),
        operation: operation.clone(),
        subop: subop.clone(),
        extra: rest.first().cloned().unwrap_or_else(|| "-".to_owned()),
    })
}

/// What an operation asks for, before looking at the disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The daemon must act if the domain has DRBD disks.
    PrepareIncoming,
    PrepareStart,
    Release,
    /// A known operation tandem leaves alone.
    Nothing,
    /// Not an operation this version knows.
    Unknown,
}

impl Step {
    /// Whether the plan depends on the domain XML (only then is stdin read).
    pub fn needs_disks(self) -> bool {
        matches!(self, Step::PrepareIncoming | Step::PrepareStart | Step::Release)
    }
}

/// The table above, for one `OPERATION SUBOP`.
pub fn classify(operation: &str, subop: &str) -> Step {
    match (operation, subop) {
        ("migrate", "begin") => Step::PrepareIncoming,
        ("prepare", "begin") => Step::PrepareStart,
        ("release", "end") => Step::Release,
        ("start" | "started" | "restore" | "reconnect" | "attach", "begin") | ("stopped", "end") => Step::Nothing,
        _ => Step::Unknown,
    }
}

/// What the daemon is asked to do for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRequest {
    pub domain: DomainName,
    /// The resources of the resolved disks, each once, in the order first seen.
    pub resources: Vec<ResourceName>,
    /// Every DRBD disk, including those whose resource is not known (see
    /// [`HookRequest::unresolved`]).
    pub disks: Vec<DrbdDisk>,
    /// `release end`'s shutoff reason (libvirt 10.5+); `None` for `-`.
    pub reason: Option<String>,
}

impl HookRequest {
    /// DRBD disks whose resource the hook could not name (a `/dev/drbdN` or
    /// by-disk path missing from the DRBD configuration). The daemon must
    /// resolve them or refuse: a start with a disk of unknown resource is not
    /// safe to admit.
    pub fn unresolved(&self) -> impl Iterator<Item = &DrbdDisk> {
        self.disks.iter().filter(|d| d.resource.is_none())
    }
}

/// Why tandem has nothing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// An operation tandem acts on, for a domain without DRBD disks.
    NoDrbdDisks { domain: DomainName },
    /// An operation this version does not know: let through, with a warning.
    UnknownOperation {
        domain: DomainName,
        operation: String,
        subop: String,
    },
}

/// What the hook does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookPlan {
    /// Not tandem's business: exit 0 at once.
    None(Skip),
    /// A known operation that needs nothing from tandem: exit 0 at once.
    Nothing { domain: DomainName, operation: String },
    /// Destination `migrate begin`: open a migration window.
    PrepareIncoming(HookRequest),
    /// `prepare begin`: admit a start (or the destination half of a migration).
    PrepareStart(HookRequest),
    /// `release end`: the domain no longer runs here; demote.
    Release(HookRequest),
}

impl HookPlan {
    /// The request to send to the daemon, for the plans that need one.
    pub fn request(&self) -> Option<&HookRequest> {
        match self {
            HookPlan::PrepareIncoming(r) | HookPlan::PrepareStart(r) | HookPlan::Release(r) => Some(r),
            HookPlan::None(_) | HookPlan::Nothing { .. } => None,
        }
    }

    /// The line to print on stderr even though the hook succeeds.
    pub fn warning(&self) -> Option<String> {
        match self {
            HookPlan::None(Skip::UnknownOperation {
                domain,
                operation,
                subop,
            }) => Some(crate::one_line(
                &format!(
                    "tandem-libvirt-hook: warning: {domain}: operation '{operation} {subop}' is unknown to this \
                     version of tandem; letting it through"
                ),
                1000,
            )),
            _ => None,
        }
    }
}

/// Decides what a hook invocation asks of tandem. `args` are the hook's
/// arguments without the program name; `disks` the domain's DRBD disks (only
/// looked at for the operations where [`Step::needs_disks`]).
pub fn plan(args: &[String], disks: &[DrbdDisk]) -> Result<HookPlan, ArgError> {
    let a = parse_args(args)?;
    let step = classify(&a.operation, &a.subop);
    let request = || {
        let mut resources: Vec<ResourceName> = Vec::new();
        for r in disks.iter().filter_map(|d| d.resource.as_ref()) {
            if !resources.contains(r) {
                resources.push(r.clone());
            }
        }
        HookRequest {
            domain: a.domain.clone(),
            resources,
            disks: disks.to_vec(),
            reason: (step == Step::Release && a.extra != "-").then(|| a.extra.clone()),
        }
    };
    if step.needs_disks() && disks.is_empty() {
        return Ok(HookPlan::None(Skip::NoDrbdDisks { domain: a.domain }));
    }
    Ok(match step {
        Step::PrepareIncoming => HookPlan::PrepareIncoming(request()),
        Step::PrepareStart => HookPlan::PrepareStart(request()),
        Step::Release => HookPlan::Release(request()),
        Step::Nothing => HookPlan::Nothing {
            domain: a.domain,
            operation: a.operation,
        },
        Step::Unknown => HookPlan::None(Skip::UnknownOperation {
            domain: a.domain,
            operation: a.operation,
            subop: a.subop,
        }),
    })
}
