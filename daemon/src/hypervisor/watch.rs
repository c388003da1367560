//! Turns the hypervisor's domain list into the core's inputs.
//!
//! Every `interval` the watcher lists the domains in a blocking task and
//! reports what changed, and at once (after a short settle) when the driver's
//! events say something happened (`wake`). libvirt: a poll every 500 ms, not
//! libvirt's event loop, which would need a thread of its own and a resync
//! after every reconnect anyway. xl: xenstore's watches wake it, and a resync
//! every few seconds catches what xenstore does not tell (a pause).
//!
//! Only domains with DRBD-backed disks concern the core: a domain is reported
//! with `DomainDefined` (its resources) before any `DomainObserved`, since the
//! core refuses observations of domains it does not know. A domain whose disks
//! name a resource outside `[drbd] resources`, or a DRBD device tandem cannot
//! resolve, is not reported at all (warned about once): the core would refuse
//! the first, and reporting a subset of its resources would let a failover
//! start it with a disk left Secondary.

use super::{Hypervisor, HypervisorError};
use crate::core::{DomainName, DomainRun, Input, ResourceName};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tandem_hooks::loader::{Drbdadm, DEFAULT_TIMEOUT};
use tandem_hooks::{DomainInfo, DrbdMap};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// The largest definition copied to the peer: one control-channel frame holds
/// 64 KiB, and real domain XML is a few KiB.
pub const MAX_DEFINITION: usize = 32 * 1024;

/// What the watcher needs besides the hypervisor.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub interval: Duration,
    /// `[drbd] resources`: domains using others are not reported.
    pub resources: Vec<ResourceName>,
    /// drbdadm, to resolve `/dev/drbdN` and by-disk paths through `dump-xml`.
    /// `None`: only paths that name their resource (`/dev/drbd/by-res/R`) count.
    pub drbdadm: Option<PathBuf>,
    /// Notified when the hypervisor says something changed: a poll follows
    /// at once, without waiting for the interval.
    pub wake: Option<Arc<tokio::sync::Notify>>,
    /// Every this many polls the document of every domain is read again, to see
    /// redefinitions (`virsh define`) of domains whose state did not change.
    pub rescan_every: u32,
}

impl WatchConfig {
    pub fn new(resources: Vec<ResourceName>) -> Self {
        WatchConfig {
            interval: Duration::from_millis(500),
            resources,
            drbdadm: None,
            wake: None,
            rescan_every: 20,
        }
    }
}

/// The DRBD resources a domain's disks use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainResources {
    /// Every DRBD disk resolved to a configured resource (empty: no DRBD disk).
    Resources(Vec<ResourceName>),
    /// The domain cannot be reported; the reason, for the log.
    Unusable(String),
}

/// Finds the DRBD resources of a domain's disks with the hooks' own rules, so
/// the daemon and the hooks agree on what a DRBD disk is.
pub fn resources_in(info: &DomainInfo, map: &DrbdMap, configured: &[ResourceName]) -> DomainResources {
    let mut out: Vec<ResourceName> = Vec::new();
    for disk in tandem_hooks::drbd_disks(info, map) {
        let Some(r) = disk.resource else {
            return DomainResources::Unusable(format!(
                "disk {} is a DRBD device tandem cannot map to a resource (is drbdadm dump-xml working?)",
                disk.source
            ));
        };
        let r = ResourceName(r.0);
        if !configured.contains(&r) {
            return DomainResources::Unusable(format!(
                "disk {} uses DRBD resource {r}, which is not in [drbd] resources",
                disk.source
            ));
        }
        if !out.contains(&r) {
            out.push(r);
        }
    }
    DomainResources::Resources(out)
}

/// The watcher's memory between polls; moved into each blocking poll and back.
#[derive(Debug)]
struct Tracker {
    cfg: WatchConfig,
    /// Loaded the first time a domain needs it.
    map: Option<DrbdMap>,
    polls_since_rescan: u32,
    /// The state of every domain at the last poll.
    runs: BTreeMap<DomainName, DomainRun>,
    /// Domains the core was told of, with the resources last reported.
    defined: BTreeMap<DomainName, Vec<ResourceName>>,
    /// The state last reported to the core.
    told: BTreeMap<DomainName, DomainRun>,
    /// The persistent definition last reported to the core.
    definitions: BTreeMap<DomainName, String>,
    /// Listed domains whose document could not be read: read again next poll.
    document_pending: BTreeSet<DomainName>,
    /// Per-domain warnings already given, so a bad domain warns once.
    warned: BTreeSet<(DomainName, String)>,
}

impl Tracker {
    fn new(cfg: WatchConfig) -> Self {
        Tracker {
            cfg,
            map: None,
            polls_since_rescan: 0,
            runs: BTreeMap::new(),
            defined: BTreeMap::new(),
            told: BTreeMap::new(),
            definitions: BTreeMap::new(),
            document_pending: BTreeSet::new(),
            warned: BTreeSet::new(),
        }
    }

    fn map_for(&mut self, info: &DomainInfo) -> &DrbdMap {
        let needs = tandem_hooks::drbd::needs_drbd_map(info);
        if self.map.is_none() && needs {
            let map = match &self.cfg.drbdadm {
                Some(path) => {
                    let (map, err) = Drbdadm {
                        programs: vec![path.clone().into_os_string()],
                        timeout: DEFAULT_TIMEOUT,
                    }
                    .load_or_empty();
                    if let Some(e) = err {
                        warn!(error = %e, "cannot read the DRBD configuration; /dev/drbdN disks stay unresolved");
                    }
                    map
                }
                None => DrbdMap::empty(),
            };
            self.map = Some(map);
        }
        static EMPTY: std::sync::OnceLock<DrbdMap> = std::sync::OnceLock::new();
        match &self.map {
            Some(m) => m,
            None => EMPTY.get_or_init(DrbdMap::empty),
        }
    }

    fn warn_once(&mut self, domain: &DomainName, reason: String) {
        if self.warned.len() > 1000 {
            // Bounded: domains come and go; forgetting means at most a repeat.
            self.warned.clear();
        }
        if self.warned.insert((domain.clone(), reason.clone())) {
            warn!(%domain, %reason, "domain not reported to the core");
        }
    }

    /// Reports `domain`'s persistent definition when it is new or changed, for
    /// the peer (a failover starts the domain from it).
    fn definition(&mut self, hv: &dyn Hypervisor, domain: &DomainName, out: &mut Vec<Input>) {
        match hv.definition(domain) {
            Ok(Some(definition)) if definition.len() > MAX_DEFINITION => self.warn_once(
                domain,
                format!(
                    "its definition ({} bytes) is larger than the {MAX_DEFINITION} bytes tandem copies to the peer; \
                     define it on the peer by hand",
                    definition.len()
                ),
            ),
            Ok(Some(definition)) => {
                if self.definitions.get(domain) != Some(&definition) {
                    self.definitions.insert(domain.clone(), definition.clone());
                    out.push(Input::DomainDefinition {
                        domain: domain.clone(),
                        definition,
                    });
                }
            }
            // Nothing to copy (transient, or not from the configured directory).
            Ok(None) => {}
            Err(e) => self.warn_once(domain, e.to_string()),
        }
    }

    /// One poll: the inputs for the core, in the order they must be handled.
    fn poll(&mut self, hv: &dyn Hypervisor) -> Result<Vec<Input>, HypervisorError> {
        let list = hv.domains()?;
        self.polls_since_rescan += 1;
        let rescan = self.cfg.rescan_every > 0 && self.polls_since_rescan >= self.cfg.rescan_every;
        if rescan {
            self.polls_since_rescan = 0;
            // Tell every state again: the core may have assumed one (a start or
            // an incoming migration it admitted) that the hypervisor never
            // reached, and only a change would otherwise correct it.
            self.told.clear();
        }
        let mut out = Vec::new();
        let mut listed = BTreeMap::new();
        for (domain, run) in list {
            let changed = self.runs.get(&domain) != Some(&run);
            if changed || rescan || self.document_pending.contains(&domain) {
                match hv.document(&domain) {
                    Ok(document) => {
                        self.document_pending.remove(&domain);
                        let info = match hv.read_document(&document) {
                            Ok(info) => info,
                            Err(reason) => {
                                self.warn_once(&domain, reason);
                                listed.insert(domain, run);
                                continue;
                            }
                        };
                        let configured = self.cfg.resources.clone();
                        match resources_in(&info, self.map_for(&info), &configured) {
                            DomainResources::Resources(res) => {
                                // A domain without DRBD disks is none of the core's
                                // business, unless it had some before: then the
                                // core must learn they are gone.
                                let known = self.defined.get(&domain);
                                let drbd_backed = !res.is_empty();
                                if known != Some(&res) && (!res.is_empty() || known.is_some()) {
                                    out.push(Input::DomainDefined {
                                        domain: domain.clone(),
                                        resources: res.clone(),
                                    });
                                    self.defined.insert(domain.clone(), res);
                                }
                                if drbd_backed {
                                    self.definition(hv, &domain, &mut out);
                                }
                            }
                            DomainResources::Unusable(reason) => self.warn_once(&domain, reason),
                        }
                    }
                    // Gone between the list and now: not here any more.
                    Err(HypervisorError::NoSuchDomain { .. }) => continue,
                    Err(e) => {
                        // Read it again next poll; its state is still reported,
                        // since it was listed.
                        self.warn_once(&domain, e.to_string());
                        self.document_pending.insert(domain.clone());
                    }
                }
            }
            listed.insert(domain, run);
        }
        // Undefined domains (and transient ones gone) no longer run here.
        let mut observed = listed.clone();
        for domain in self.told.keys() {
            observed.entry(domain.clone()).or_insert(DomainRun::Stopped);
        }
        for (domain, run) in observed {
            if self.defined.contains_key(&domain) && self.told.get(&domain) != Some(&run) {
                out.push(Input::DomainObserved {
                    domain: domain.clone(),
                    run,
                });
                self.told.insert(domain, run);
            }
        }
        self.document_pending.retain(|d| listed.contains_key(d));
        self.runs = listed;
        Ok(out)
    }
}

/// Polls the hypervisor and sends the changes to the core until dropped.
#[derive(Debug)]
pub struct Watcher {
    task: JoinHandle<()>,
    /// The driver's event source, if any, which lives as long as the watcher.
    events: Option<super::XenstoreWatch>,
}

/// Notices come in bursts (a domain's creation writes dozens of xenstore
/// keys): one poll after the burst settles.
const SETTLE: Duration = Duration::from_millis(150);

impl Watcher {
    /// Starts polling at once. Must be called inside a Tokio runtime.
    pub fn spawn(hv: Arc<dyn Hypervisor>, cfg: WatchConfig, tx: mpsc::Sender<Input>) -> Self {
        let interval = cfg.interval;
        let wake = cfg.wake.clone();
        let task = tokio::spawn(async move {
            let mut tracker = Tracker::new(cfg);
            let mut failing: Option<String> = None;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                match &wake {
                    Some(wake) => {
                        tokio::select! {
                            _ = tick.tick() => {}
                            _ = wake.notified() => {
                                tokio::time::sleep(SETTLE).await;
                                tick.reset();
                            }
                        }
                    }
                    None => {
                        tick.tick().await;
                    }
                }
                let hv = hv.clone();
                let polled = tokio::task::spawn_blocking(move || {
                    let r = tracker.poll(hv.as_ref());
                    (tracker, r)
                })
                .await;
                let result = match polled {
                    Ok((t, r)) => {
                        tracker = t;
                        r
                    }
                    // The poll panicked: nothing sane to go on with.
                    Err(e) => {
                        warn!(error = %e, "hypervisor watcher stopped");
                        return;
                    }
                };
                match result {
                    Ok(inputs) => {
                        if let Some(kind) = failing.take() {
                            info!(was = %kind, "hypervisor reachable again");
                        }
                        for input in inputs {
                            if tx.send(input).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        // Once per kind of failure: libvirtd down is one line,
                        // not two a second.
                        let kind = e.kind();
                        if failing.as_deref() != Some(kind.as_str()) {
                            warn!(error = %e, "cannot list the hypervisor's domains; retrying");
                            failing = Some(kind);
                        }
                    }
                }
            }
        });
        Watcher { task, events: None }
    }

    /// Keeps the driver's event source (which notifies `cfg.wake`) alive
    /// with the watcher.
    pub fn with_events(mut self, events: super::XenstoreWatch) -> Self {
        self.events = Some(events);
        self
    }

    /// Whether the watcher stopped (the core's channel closed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
        self.events.take();
    }
}
