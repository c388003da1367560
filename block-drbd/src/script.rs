//! `block-drbd add` and `block-drbd remove`: what each reads, asks and writes.
//!
//! **add** (the domain's disk is being connected): exits 0 at once when
//! `physical-device` is already written (hotplug may run it twice). Otherwise,
//! under the hotplug lock: reads `params`, `mode`, `frontend-id` and the
//! frontend's name, resolves the device from `drbdadm dump-xml`, and asks
//! tandemd for every DRBD resource of the domain's disks (its sibling backends
//! included, so one call covers a multi-disk domain, as a migration window
//! must): `PrepareIncoming` for the first disk of a domain named
//! `NAME--incoming`, `PrepareStart` otherwise (a later disk of an incoming
//! domain finds the window open). Then writes `physical-device`,
//! `physical-device-path`, `node` and `hotplug-status` `connected` in one
//! transaction. Any failure writes `hotplug-error` and `hotplug-status` `error`
//! instead; one that comes before tandemd is asked changes nothing else.
//!
//! Before asking, add records `tandem-domain` (the domain as tandem knows it):
//! from then on tandem may hold the resources for this disk, so **remove**
//! releases them. A refusal clears it again (tandem promotes nothing when it
//! refuses); no answer leaves it, as tandemd may still have promoted.
//!
//! **remove** (the disk is gone from the domain): does nothing for a backend
//! that is gone or that add never got to ask tandem for. Otherwise marks it
//! `tandem-released` and asks `Release` for its resource, unless another
//! attached DRBD disk of the same domain still uses it (two volumes of one
//! resource): the last disk to go releases it. A second remove releases again,
//! which tandem answers at once.

use crate::device::{physical_device, resolve, DeviceError};
use crate::params::{domain_of, parse_domid, parse_params, valid_mode, Action, Arrival, Backend, Target};
use crate::xs::{Xenstore, XsError};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tandem_hooks::client::{self, ClientError, Request, Retry};
use tandem_hooks::loader::{Drbdadm, LoadError};
use tandem_hooks::DrbdMap;

/// Overrides [`DEFAULT_TIMEOUT_SECS`].
pub const TIMEOUT_ENV: &str = "TANDEM_BLOCK_DRBD_TIMEOUT_SECS";
/// The whole run: libxl kills a hotplug script after 40 s
/// (`LIBXL_HOTPLUG_TIMEOUT`), so block-drbd gives up first and says why.
pub const DEFAULT_TIMEOUT_SECS: u64 = 35;
/// Overrides [`DEFAULT_LOCK`].
pub const LOCK_ENV: &str = "TANDEM_BLOCK_DRBD_LOCK";
/// Serializes block-drbd runs on a host, as Xen's `claim_lock "block"` does.
pub const DEFAULT_LOCK: &str = "/run/tandem-block-drbd.lock";
/// Kept for the xenstore writes after tandemd answers.
const WRITE_MARGIN: Duration = Duration::from_millis(500);

/// The run's settings, from the environment libxl (or udev) gives the script.
#[derive(Debug, Clone)]
pub struct Settings {
    pub xenbus_path: Option<String>,
    pub deadline: Instant,
    pub lock: PathBuf,
}

impl Settings {
    pub fn from_env() -> Settings {
        let secs = std::env::var(TIMEOUT_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_TIMEOUT_SECS);
        Settings {
            xenbus_path: std::env::var("XENBUS_PATH").ok().filter(|p| !p.is_empty()),
            deadline: Instant::now() + Duration::from_secs(secs),
            lock: std::env::var_os(LOCK_ENV)
                .filter(|p| !p.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_LOCK), PathBuf::from),
        }
    }
}

/// Why a run fails; the display is the line for stderr and `hotplug-error`.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("block-drbd: usage: block-drbd add|remove (with XENBUS_PATH set, as libxl and xend run it)")]
    Usage,
    #[error("block-drbd: XENBUS_PATH is not set")]
    NoXenbusPath,
    #[error("block-drbd: XENBUS_PATH {0:?} is not a vbd backend (backend/vbd/DOMID/DEVID)")]
    BadXenbusPath(String),
    #[error("block-drbd: {key} is missing")]
    Missing { key: String },
    #[error("block-drbd: {key} is {value:?}: {why}")]
    Malformed { key: String, value: String, why: String },
    #[error("block-drbd: {0}")]
    Device(#[from] DeviceError),
    #[error("block-drbd: cannot read the DRBD configuration: {0}")]
    Drbd(#[from] LoadError),
    #[error("block-drbd: xenstore: {0}")]
    Xenstore(#[from] XsError),
    #[error("block-drbd: the hotplug lock {path}: {why}")]
    Lock { path: String, why: String },
    #[error("tandem: {0}")]
    Refused(String),
    #[error("block-drbd: could not reach tandem about {subject}: {cause}; {consequence}")]
    Unreachable {
        subject: String,
        cause: ClientError,
        consequence: &'static str,
    },
}

/// Runs `action`; on a failed add, writes the failure to the backend. The
/// error is what the binary prints before exiting 1.
pub fn run(action: Action, settings: &Settings, xs: &Xenstore, drbdadm: &Drbdadm) -> Result<(), Failure> {
    let path = settings.xenbus_path.as_deref().ok_or(Failure::NoXenbusPath)?;
    let backend = Backend::parse(path);
    let result = match (action, &backend) {
        (_, None) => Err(Failure::BadXenbusPath(path.to_owned())),
        (Action::Add, Some(b)) => add(b, settings, xs, drbdadm),
        (Action::Remove, Some(b)) => remove(b, settings, xs, drbdadm),
    };
    if let (Action::Add, Err(failure)) = (action, &result) {
        let line = tandem_hooks::one_line(&failure.to_string(), 1000);
        let pairs = [
            (format!("{path}/hotplug-error"), line),
            (format!("{path}/hotplug-status"), "error".to_owned()),
        ];
        // Best effort: the line on stderr says it all when this fails too.
        let _ = xs.write(&pairs);
    }
    result
}

/// A sibling disk of the same frontend that block-drbd handles.
#[derive(Debug)]
struct Sibling {
    devid: u32,
    target: Option<Target>,
    /// add asked tandem for it (`tandem-domain` set) and remove has not run.
    attached: bool,
}

fn add(b: &Backend, settings: &Settings, xs: &Xenstore, drbdadm: &Drbdadm) -> Result<(), Failure> {
    if xs.read(&b.key("physical-device"))?.is_some() {
        return Ok(());
    }
    let _lock = lock(settings)?;
    let params = required(xs, b, "params")?;
    let target = parse_params(&params).ok_or_else(|| bad_params(b, &params))?;
    let mode = required(xs, b, "mode")?;
    if !valid_mode(&mode) {
        return Err(malformed(b.key("mode"), &mode, "not r or w (Xen's disk access modes)"));
    }
    let (domain, arrival) = frontend(xs, b)?;
    let map = drbdadm.load()?;
    let device = resolve(&target, &map)?;
    let physical = physical_device(&device)?;

    let siblings = siblings(xs, b)?;
    // Every DRBD resource of the domain's disks, in device order, each once.
    let mut by_devid: Vec<(u32, String)> = siblings
        .iter()
        .filter_map(|s| Some((s.devid, resource_of(s.target.as_ref()?, &map)?)))
        .collect();
    by_devid.push((b.devid, device.resource.clone()));
    by_devid.sort();
    let mut resources: Vec<String> = Vec::new();
    for (_, r) in by_devid {
        if !resources.contains(&r) {
            resources.push(r);
        }
    }
    let incoming = arrival == Arrival::Incoming && !siblings.iter().any(|s| s.attached);
    let (request, subject, consequence) = if incoming {
        (
            Request::PrepareIncoming {
                domain: domain.clone(),
                resources,
            },
            format!("the incoming migration of {domain}"),
            "the migration is refused for safety",
        )
    } else {
        (
            Request::PrepareStart {
                domain: domain.clone(),
                resources,
            },
            format!("the start of {domain}"),
            "the start is refused for safety",
        )
    };
    xs.write(&[(b.key("tandem-domain"), domain)])?;
    let deadline = settings.deadline.checked_sub(WRITE_MARGIN).unwrap_or(settings.deadline);
    if let Err(cause) = client::ask(&request, deadline, Retry::Never) {
        return Err(match cause.tandem_reason() {
            Some(reason) => {
                // Refused: nothing was promoted for this disk, nothing to release.
                xs.write(&[(b.key("tandem-domain"), String::new())])?;
                Failure::Refused(reason)
            }
            None => Failure::Unreachable {
                subject,
                cause,
                consequence,
            },
        });
    }
    xs.write(&[
        (b.key("physical-device"), physical),
        (b.key("physical-device-path"), device.path.clone()),
        (b.key("node"), device.path),
        (b.key("hotplug-status"), "connected".to_owned()),
    ])?;
    Ok(())
}

fn remove(b: &Backend, settings: &Settings, xs: &Xenstore, drbdadm: &Drbdadm) -> Result<(), Failure> {
    let _lock = lock(settings)?;
    if !xs.exists(&b.path)? {
        return Ok(());
    }
    let domain = match xs.read(&b.key("tandem-domain"))? {
        Some(d) if !d.is_empty() => d,
        _ => return Ok(()),
    };
    xs.write(&[(b.key("tandem-released"), "1".to_owned())])?;
    let params = required(xs, b, "params")?;
    let target = parse_params(&params).ok_or_else(|| bad_params(b, &params))?;
    let siblings = siblings(xs, b)?;
    let needs_map = target.resource.is_none() || siblings.iter().any(|s| s.attached && s.target_needs_map());
    let map = if needs_map { drbdadm.load()? } else { DrbdMap::empty() };
    let own = match resource_of(&target, &map) {
        Some(r) => r,
        None => resolve(&target, &map)?.resource,
    };
    let in_use = siblings
        .iter()
        .filter(|s| s.attached)
        .filter_map(|s| s.target.as_ref().and_then(|t| resource_of(t, &map)))
        .any(|r| r == own);
    let resources = if in_use { Vec::new() } else { vec![own] };
    let request = Request::Release {
        domain: domain.clone(),
        resources,
    };
    client::ask(&request, settings.deadline, Retry::Never).map_err(|cause| match cause.tandem_reason() {
        Some(reason) => Failure::Refused(reason),
        None => Failure::Unreachable {
            subject: format!("the release of {domain}"),
            cause,
            consequence: "its DRBD resources may still be Primary here",
        },
    })?;
    Ok(())
}

impl Sibling {
    fn target_needs_map(&self) -> bool {
        self.target.as_ref().is_some_and(|t| t.resource.is_none())
    }
}

/// The resource a target names, by its path or from the configuration.
fn resource_of(target: &Target, map: &DrbdMap) -> Option<String> {
    match (&target.resource, target.minor) {
        (Some(r), _) => Some(r.clone()),
        (None, Some(m)) => map.resolve_minor(m).map(|(r, _)| r.0),
        (None, None) => None,
    }
}

/// The frontend domain's name, as tandem knows it, and how it arrives.
fn frontend(xs: &Xenstore, b: &Backend) -> Result<(String, Arrival), Failure> {
    let text = required(xs, b, "frontend-id")?;
    let id = parse_domid(&text).ok_or_else(|| malformed(b.key("frontend-id"), &text, "not a domain id"))?;
    if id != b.frontend_id {
        let why = format!("XENBUS_PATH names domain {}", b.frontend_id);
        return Err(malformed(b.key("frontend-id"), &text, &why));
    }
    let key = format!("/local/domain/{id}/name");
    let name = xs.read(&key)?.ok_or(Failure::Missing { key: key.clone() })?;
    let (domain, arrival) = domain_of(&name);
    tandem_api::validate_domain(&domain).map_err(|e| malformed(key, &name, &e.to_string()))?;
    Ok((domain, arrival))
}

/// The other DRBD disks of the same frontend (by `script` block-drbd, or xend's
/// `type` drbd), in device order.
fn siblings(xs: &Xenstore, b: &Backend) -> Result<Vec<Sibling>, Failure> {
    let mut devids: Vec<u32> = xs
        .list(&b.parent)?
        .unwrap_or_default()
        .iter()
        .filter_map(|d| d.parse().ok())
        .filter(|&d| d != b.devid)
        .collect();
    devids.sort_unstable();
    let mut out = Vec::new();
    for devid in devids {
        let d = devid.to_string();
        let ours = match xs.read(&b.sibling_key(&d, "script"))? {
            Some(script) => script.rsplit('/').next() == Some("block-drbd"),
            None => xs.read(&b.sibling_key(&d, "type"))?.as_deref() == Some("drbd"),
        };
        if !ours {
            continue;
        }
        let target = xs.read(&b.sibling_key(&d, "params"))?.and_then(|p| parse_params(&p));
        let prepared = xs
            .read(&b.sibling_key(&d, "tandem-domain"))?
            .is_some_and(|v| !v.is_empty());
        let attached = prepared && !xs.exists(&b.sibling_key(&d, "tandem-released"))?;
        out.push(Sibling {
            devid,
            target,
            attached,
        });
    }
    Ok(out)
}

fn required(xs: &Xenstore, b: &Backend, key: &str) -> Result<String, Failure> {
    let key = b.key(key);
    match xs.read(&key)? {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(v) => Err(malformed(key, &v, "empty")),
        None => Err(Failure::Missing { key }),
    }
}

fn malformed(key: String, value: &str, why: &str) -> Failure {
    Failure::Malformed {
        key,
        value: tandem_hooks::one_line(value, 200),
        why: why.to_owned(),
    }
}

fn bad_params(b: &Backend, params: &str) -> Failure {
    malformed(
        b.key("params"),
        params,
        "not a DRBD resource (RES, drbd:RES, RES/VOLUME, /dev/drbd/by-res/RES[/VOLUME] or /dev/drbdMINOR)",
    )
}

/// The hotplug lock, waited for until the deadline.
fn lock(settings: &Settings) -> Result<Flock<File>, Failure> {
    let shown = settings.lock.display().to_string();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&settings.lock)
        .map_err(|e| Failure::Lock {
            path: shown.clone(),
            why: e.to_string(),
        })?;
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < settings.deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((_, errno)) => {
                let why = if errno == nix::errno::Errno::EWOULDBLOCK {
                    "another block-drbd held it until the deadline".to_owned()
                } else {
                    errno.to_string()
                };
                return Err(Failure::Lock { path: shown, why });
            }
        }
    }
}

impl Action {
    /// `"add"` or `"remove"`.
    pub fn word(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Remove => "remove",
        }
    }
}
