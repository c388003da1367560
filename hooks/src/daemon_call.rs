//! The hook's call into tandemd, for the plans that need the daemon
//! ([`HookPlan::PrepareIncoming`], [`HookPlan::PrepareStart`], [`HookPlan::Release`]):
//! one call of `org.tandem.Tandem1.Hooks` (`PrepareIncoming`, `PrepareStart`,
//! `Release`, each with the domain name and its resources) on the system bus, or
//! on `DBUS_SYSTEM_BUS_ADDRESS` when set.
//!
//! `Ok(())` when the daemon agreed (or the release is done); otherwise a
//! [`CallError`] whose display is the one line the binary prints on stderr
//! before exiting 1 (virsh shows it to the user):
//!
//! - tandem refused: `tandem: <the daemon's reason>`;
//! - tandem could not be asked (no bus, tandemd not running, the bus policy, no
//!   answer by the deadline): `tandem-libvirt-hook: could not reach tandem about
//!   the start of DOMAIN: <why>; the start is refused for safety`. A release says
//!   instead that the resources may still be Primary: libvirt ignores a failing
//!   `release` hook, so the line is for its log and the admin;
//! - a prepare with a disk whose resource the hook could not name
//!   ([`crate::HookRequest::unresolved`]): refused here, without asking the
//!   daemon, since it cannot be told which resource to check and promote. A
//!   release of such a domain releases the resources it can name and reports
//!   the rest.
//!
//! Nothing is written to stdout (on `migrate begin` libvirt would take it as
//! replacement XML), libvirt is never called, the whole call is bounded by a
//! deadline, and no child process is started. The connection is only made here,
//! so a domain without DRBD disks never touches D-Bus.

use crate::client::{self, ClientError, Request, Retry};
use crate::plan::{HookPlan, HookRequest};
use crate::DomainName;
use std::time::{Duration, Instant};

/// Overrides [`DEFAULT_TIMEOUT_SECS`]. libvirt does not pass it (it gives hooks a
/// fixed environment); it is for tests and for running the hook by hand.
pub const TIMEOUT_ENV: &str = "TANDEM_HOOK_TIMEOUT_SECS";
/// The whole run of an acting hook: a prepare waits for both daemons to agree,
/// and promotes and demotes retry while a device is held. libvirt itself would
/// wait forever.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

/// The hook's time budget, from [`TIMEOUT_ENV`] (whole seconds) or the default.
pub fn timeout_from_env() -> Duration {
    let secs = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    Duration::from_secs(secs)
}

/// What the hook was doing, for its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    IncomingMigration,
    Start,
    Release,
}

impl Action {
    fn of(plan: &HookPlan) -> Option<(Action, &HookRequest)> {
        match plan {
            HookPlan::PrepareIncoming(r) => Some((Action::IncomingMigration, r)),
            HookPlan::PrepareStart(r) => Some((Action::Start, r)),
            HookPlan::Release(r) => Some((Action::Release, r)),
            HookPlan::None(_) | HookPlan::Nothing { .. } => None,
        }
    }

    fn subject(self, domain: &DomainName) -> String {
        match self {
            Action::IncomingMigration => format!("the incoming migration of {domain}"),
            Action::Start => format!("the start of {domain}"),
            Action::Release => format!("the release of {domain}"),
        }
    }

    /// What became of the operation when tandem could not be asked.
    fn consequence(self) -> &'static str {
        match self {
            Action::IncomingMigration => "the migration is refused for safety",
            Action::Start => "the start is refused for safety",
            Action::Release => "its DRBD resources may still be Primary here (libvirt ignores a failing release hook)",
        }
    }
}

/// Why the hook exits 1; the display is its line on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// tandemd said no.
    #[error("tandem: {reason}")]
    Refused { reason: String },
    /// tandemd could not be asked, or gave no answer in time.
    #[error("tandem-libvirt-hook: could not reach tandem about {subject}: {cause}; {consequence}")]
    Unreachable {
        subject: String,
        cause: ClientError,
        consequence: &'static str,
    },
    /// A prepare with DRBD disks the hook cannot name a resource for.
    #[error(
        "tandem-libvirt-hook: {domain}: cannot tell tandem which DRBD resource backs {disks}; \
         {consequence}"
    )]
    Unresolved {
        domain: DomainName,
        disks: String,
        consequence: &'static str,
    },
    /// A release that went through for the resources the hook could name.
    #[error(
        "tandem-libvirt-hook: {domain}: released {released}, but cannot tell tandem which DRBD resource backs \
         {disks}; it was not demoted"
    )]
    PartlyReleased {
        domain: DomainName,
        released: String,
        disks: String,
    },
    /// The plan needs nothing from the daemon (the binary does not call it then).
    #[error("tandem-libvirt-hook: internal error: this plan needs no call to tandem")]
    NoRequest,
}

/// Asks tandemd to carry out `plan`, within [`timeout_from_env`].
pub fn call_daemon(plan: &HookPlan) -> Result<(), CallError> {
    call_daemon_until(plan, Instant::now() + timeout_from_env())
}

/// Asks tandemd to carry out `plan`; gives up at `deadline`.
pub fn call_daemon_until(plan: &HookPlan, deadline: Instant) -> Result<(), CallError> {
    let (action, req) = Action::of(plan).ok_or(CallError::NoRequest)?;
    let unresolved = describe_unresolved(req);
    if let Some(disks) = &unresolved {
        if action != Action::Release {
            return Err(CallError::Unresolved {
                domain: req.domain.clone(),
                disks: disks.clone(),
                consequence: action.consequence(),
            });
        }
    }
    let domain = req.domain.0.clone();
    let resources: Vec<String> = req.resources.iter().map(|r| r.0.clone()).collect();
    let request = match action {
        Action::IncomingMigration => Request::PrepareIncoming { domain, resources },
        Action::Start => Request::PrepareStart { domain, resources },
        // With no resource named, the call still closes any migration window
        // the daemon holds for the domain.
        Action::Release => Request::Release { domain, resources },
    };
    match client::ask(&request, deadline, Retry::Never) {
        Ok(_) => {}
        Err(cause) => {
            return Err(match cause.tandem_reason() {
                Some(reason) => CallError::Refused { reason },
                None => CallError::Unreachable {
                    subject: action.subject(&req.domain),
                    cause,
                    consequence: action.consequence(),
                },
            })
        }
    }
    match unresolved {
        None => Ok(()),
        Some(disks) => Err(CallError::PartlyReleased {
            domain: req.domain.clone(),
            released: released_list(req),
            disks,
        }),
    }
}

/// The unresolved disks, as `disk vdb (/dev/drbd9: ...)`, or `None`.
fn describe_unresolved(req: &HookRequest) -> Option<String> {
    let items: Vec<String> = req
        .unresolved()
        .map(|d| {
            let disk = d
                .target
                .as_deref()
                .map_or_else(|| "a disk".to_owned(), |t| format!("disk {t}"));
            let why = match (d.minor, &d.lower_disk) {
                (Some(m), _) => format!("no configured resource has minor {m}"),
                (None, Some(l)) => format!("no configured resource has backing disk {l}"),
                (None, None) => "not in the DRBD configuration".to_owned(),
            };
            format!("{disk} ({}: {why})", d.source)
        })
        .collect();
    (!items.is_empty()).then(|| items.join(", "))
}

fn released_list(req: &HookRequest) -> String {
    if req.resources.is_empty() {
        return "no resource".to_owned();
    }
    req.resources
        .iter()
        .map(|r| r.0.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drbd::DrbdDisk;
    use crate::plan::plan;
    use crate::ResourceName;

    fn disk(resource: Option<&str>, minor: Option<u32>, source: &str, target: &str) -> DrbdDisk {
        DrbdDisk {
            resource: resource.map(ResourceName::from),
            volume: None,
            minor,
            lower_disk: None,
            source: source.into(),
            target: Some(target.into()),
        }
    }

    fn args(op: &str, subop: &str) -> Vec<String> {
        vec!["vm1".into(), op.into(), subop.into(), "-".into()]
    }

    #[test]
    fn a_prepare_with_an_unresolved_disk_is_refused_without_asking() {
        let disks = [
            disk(Some("r0"), None, "/dev/drbd/by-res/r0/0", "vda"),
            disk(None, Some(9), "/dev/drbd9", "vdb"),
        ];
        for (op, what) in [("prepare", "start"), ("migrate", "migration")] {
            let p = plan(&args(op, "begin"), &disks).unwrap();
            // A deadline already past: the refusal comes before any connection.
            let e = call_daemon_until(&p, Instant::now()).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "tandem-libvirt-hook: vm1: cannot tell tandem which DRBD resource backs disk vdb \
                     (/dev/drbd9: no configured resource has minor 9); the {what} is refused for safety"
                )
            );
        }
    }

    #[test]
    fn lines_name_the_operation_and_its_consequence() {
        let cause = ClientError::Timeout {
            after: Duration::from_secs(60),
        };
        let e = CallError::Unreachable {
            subject: Action::Start.subject(&DomainName::from("vm1")),
            cause,
            consequence: Action::Start.consequence(),
        };
        assert_eq!(
            e.to_string(),
            "tandem-libvirt-hook: could not reach tandem about the start of vm1: tandemd did not answer within \
             60 s; the start is refused for safety"
        );
        let e = CallError::Refused {
            reason: "tandem refuses to start vm1: it runs on the peer".into(),
        };
        assert_eq!(
            e.to_string(),
            "tandem: tandem refuses to start vm1: it runs on the peer"
        );
    }

    #[test]
    fn plans_without_a_request_are_not_sent() {
        let p = plan(&args("started", "begin"), &[]).unwrap();
        assert!(matches!(
            call_daemon_until(&p, Instant::now()),
            Err(CallError::NoRequest)
        ));
    }
}
