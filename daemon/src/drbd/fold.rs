//! From a stream of events2 lines to one [`ResourceObservation`] per resource.
//!
//! Pure: [`Events2Fold::apply`] takes one parsed line and returns the
//! observations that changed because of it, old and new. It keeps DRBD's
//! objects (resource, devices, connections, peer devices) and merges each line
//! into them field by field, because drbdsetup prints only the fields that
//! changed. Nothing is reported during the initial dump: the first report
//! comes with `exists -`, when the picture is whole.
//!
//! The reduction itself is [`super::types::reduce`]; the peer is the connection
//! with the lowest peer node id (tandem is a two-node cluster; further
//! connections of a DRBD 9 multi-peer resource are ignored).

use super::events2::{Action, ConnectionEv, DeviceEv, Event2, PeerDeviceEv, ResourceEv};
use super::types::{reduce, ConnState, DrbdDisk, DrbdRole, DOWN};
use crate::core::{ResourceName, ResourceObservation};
use std::collections::{BTreeMap, BTreeSet};

/// An observation that changed: `old` is `None` the first time a resource is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservationChange {
    pub resource: ResourceName,
    pub old: Option<ResourceObservation>,
    pub new: ResourceObservation,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Res {
    role: Option<DrbdRole>,
    suspended: Option<String>,
    devices: BTreeMap<u32, Dev>,
    /// By peer node id.
    conns: BTreeMap<u32, Conn>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Dev {
    minor: Option<u32>,
    disk: Option<DrbdDisk>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Conn {
    cstate: Option<ConnState>,
    peer_role: Option<DrbdRole>,
    /// By volume.
    peer_disks: BTreeMap<u32, Option<DrbdDisk>>,
}

/// The fold. `expected` resources that DRBD does not report after a full dump
/// are reported as down ([`DOWN`]), so a resource that was never brought up is
/// visible rather than silently missing.
#[derive(Debug, Clone, Default)]
pub struct Events2Fold {
    objects: BTreeMap<String, Res>,
    initial_done: bool,
    published: BTreeMap<ResourceName, ResourceObservation>,
    expected: BTreeSet<ResourceName>,
}

impl Events2Fold {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fold that reports only these resources, and reports them as down when
    /// DRBD does not have them.
    pub fn with_resources(resources: impl IntoIterator<Item = ResourceName>) -> Self {
        Events2Fold {
            expected: resources.into_iter().collect(),
            ..Self::default()
        }
    }

    /// The events2 child died; the next one starts with a full dump. DRBD's
    /// objects are forgotten (the dump rebuilds them) but what was reported is
    /// kept, so after the dump only what really changed meanwhile is reported.
    pub fn restart(&mut self) {
        self.objects.clear();
        self.initial_done = false;
    }

    /// The last reported observation of a resource.
    pub fn observation(&self, resource: &ResourceName) -> Option<ResourceObservation> {
        self.published.get(resource).copied()
    }

    /// Every reported observation.
    pub fn observations(&self) -> &BTreeMap<ResourceName, ResourceObservation> {
        &self.published
    }

    /// DRBD's `suspended:` of a resource ("no", "fencing", "user,no-data"...):
    /// "fencing" is I/O frozen until the fence-peer handler answers.
    pub fn suspended(&self, resource: &str) -> Option<&str> {
        self.objects.get(resource)?.suspended.as_deref()
    }

    /// `(volume, minor)` of a resource's devices, as DRBD reported them.
    pub fn minors(&self, resource: &str) -> Vec<(u32, u32)> {
        self.objects.get(resource).map_or_else(Vec::new, |r| {
            r.devices.iter().filter_map(|(v, d)| Some((*v, d.minor?))).collect()
        })
    }

    /// Whether the initial dump (`exists -`) has been seen since the last (re)start.
    pub fn is_initialized(&self) -> bool {
        self.initial_done
    }

    pub fn apply(&mut self, ev: &Event2) -> Vec<ObservationChange> {
        let touched = match ev {
            Event2::InitialStateDone => {
                self.initial_done = true;
                return self.report_all();
            }
            Event2::Resource(action, r) => self.resource(*action, r),
            Event2::Device(action, d) => self.device(*action, d),
            Event2::Connection(action, c) => self.connection(*action, c),
            Event2::PeerDevice(action, p) => self.peer_device(*action, p),
            // Paths and helper calls carry nothing the observation holds; the
            // helper's outcome shows up as the state changes it causes.
            Event2::Path(..) | Event2::Helper(..) => Vec::new(),
        };
        if !self.initial_done {
            return Vec::new();
        }
        touched.into_iter().filter_map(|name| self.report(&name)).collect()
    }

    fn resource(&mut self, action: Action, ev: &ResourceEv) -> Vec<String> {
        if action == Action::Destroy {
            self.objects.remove(&ev.name);
            return vec![ev.name.clone()];
        }
        if action == Action::Rename {
            let Some(new_name) = &ev.new_name else {
                return Vec::new();
            };
            let res = self.objects.remove(&ev.name).unwrap_or_default();
            self.objects.insert(new_name.clone(), res);
            return vec![ev.name.clone(), new_name.clone()];
        }
        let res = self.objects.entry(ev.name.clone()).or_default();
        if let Some(role) = ev.role {
            res.role = Some(role);
        }
        if let Some(s) = &ev.suspended {
            res.suspended = Some(s.clone());
        }
        vec![ev.name.clone()]
    }

    fn device(&mut self, action: Action, ev: &DeviceEv) -> Vec<String> {
        let res = self.objects.entry(ev.name.clone()).or_default();
        if action == Action::Destroy {
            res.devices.remove(&ev.volume);
        } else {
            let dev = res.devices.entry(ev.volume).or_default();
            if ev.minor.is_some() {
                dev.minor = ev.minor;
            }
            if ev.disk.is_some() {
                dev.disk = ev.disk;
            }
        }
        vec![ev.name.clone()]
    }

    fn connection(&mut self, action: Action, ev: &ConnectionEv) -> Vec<String> {
        let res = self.objects.entry(ev.name.clone()).or_default();
        let id = ev.peer_node_id.unwrap_or(u32::MAX);
        if action == Action::Destroy {
            res.conns.remove(&id);
        } else {
            let conn = res.conns.entry(id).or_default();
            if let Some(c) = &ev.connection {
                conn.cstate = Some(c.clone());
            }
            if ev.peer_role.is_some() {
                conn.peer_role = ev.peer_role;
            }
        }
        vec![ev.name.clone()]
    }

    fn peer_device(&mut self, action: Action, ev: &PeerDeviceEv) -> Vec<String> {
        let res = self.objects.entry(ev.name.clone()).or_default();
        let id = ev.peer_node_id.unwrap_or(u32::MAX);
        let conn = res.conns.entry(id).or_default();
        if action == Action::Destroy {
            conn.peer_disks.remove(&ev.volume);
        } else {
            let slot = conn.peer_disks.entry(ev.volume).or_default();
            if ev.peer_disk.is_some() {
                *slot = ev.peer_disk;
            }
        }
        vec![ev.name.clone()]
    }

    fn wanted(&self, name: &ResourceName) -> bool {
        self.expected.is_empty() || self.expected.contains(name)
    }

    fn report(&mut self, name: &str) -> Option<ObservationChange> {
        let resource = ResourceName(name.to_owned());
        if !self.wanted(&resource) {
            return None;
        }
        let new = self.objects.get(name).map_or(DOWN, observe);
        let old = self.published.insert(resource.clone(), new);
        (old != Some(new)).then_some(ObservationChange { resource, old, new })
    }

    fn report_all(&mut self) -> Vec<ObservationChange> {
        let mut names: BTreeSet<String> = self.objects.keys().cloned().collect();
        names.extend(self.published.keys().map(|r| r.0.clone()));
        names.extend(self.expected.iter().map(|r| r.0.clone()));
        names.iter().filter_map(|n| self.report(n)).collect()
    }
}

/// The core's view of one resource's DRBD objects.
fn observe(res: &Res) -> ResourceObservation {
    let disks = res.devices.values().map(|d| d.disk.unwrap_or(DrbdDisk::Diskless));
    let Some(conn) = res.conns.values().next() else {
        return reduce(res.role, disks, None);
    };
    let connected = conn.cstate.as_ref().is_some_and(ConnState::is_connected);
    let mut peer_disks = conn.peer_disks.values().map(|d| d.unwrap_or(DrbdDisk::DUnknown));
    reduce(res.role, disks, Some((connected, conn.peer_role, &mut peer_disks)))
}
