//! Which DRBD resource (and volume) a block device path names.
//!
//! Domain XML and Xen configs name DRBD devices in the forms DRBD's udev rules
//! create: `/dev/drbdN` (the minor), `/dev/drbd/by-res/R` (single-volume 8.4
//! resources) and `/dev/drbd/by-res/R/V`, and `/dev/drbd/by-disk/<backing
//! path relative to /dev>`. [`parse_device_path`] reads the form;
//! [`DeviceMap`] (from `drbdadm dump-xml`) answers what a minor or a backing
//! disk belongs to on this host.

use super::error::ParseError;
use crate::core::ResourceName;
use quick_xml::events::Event;
use quick_xml::Reader;

/// What a device path says by its form alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRef {
    /// `/dev/drbdN`
    Minor(u32),
    /// `/dev/drbd/by-res/R` (volume `None`) or `/dev/drbd/by-res/R/V`.
    ByRes { resource: String, volume: Option<u32> },
    /// `/dev/drbd/by-disk/vg/lv` → the backing disk `/dev/vg/lv`.
    ByDisk(String),
}

/// Reads a device path's form; `None` if it is not a DRBD device path.
pub fn parse_device_path(path: &str) -> Option<DeviceRef> {
    if let Some(num) = path.strip_prefix("/dev/drbd") {
        if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) {
            return num.parse().ok().map(DeviceRef::Minor);
        }
    }
    if let Some(rest) = path.strip_prefix("/dev/drbd/by-res/") {
        let mut parts = rest.split('/');
        let resource = parts.next().filter(|r| !r.is_empty())?.to_owned();
        let volume = match parts.next() {
            None => None,
            Some(v) => Some(v.parse().ok()?),
        };
        if parts.next().is_some() {
            return None;
        }
        return Some(DeviceRef::ByRes { resource, volume });
    }
    if let Some(rest) = path.strip_prefix("/dev/drbd/by-disk/") {
        if rest.is_empty() || rest.split('/').any(|p| p.is_empty() || p == "..") {
            return None;
        }
        return Some(DeviceRef::ByDisk(format!("/dev/{rest}")));
    }
    None
}

/// One volume of a resource as configured for this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeEntry {
    pub resource: ResourceName,
    pub volume: u32,
    pub minor: u32,
    /// The backing disk, `None` for diskless volumes.
    pub disk: Option<String>,
}

/// A device path resolved to a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub resource: ResourceName,
    /// `None` when the path names the whole resource (`/dev/drbd/by-res/R` of a
    /// multi-volume resource).
    pub volume: Option<u32>,
}

/// This host's volumes, from `drbdadm dump-xml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceMap {
    pub volumes: Vec<VolumeEntry>,
}

impl DeviceMap {
    /// Reads `drbdadm dump-xml` output. `host` picks the `<host name=...>`
    /// section (DRBD's own choice is the node name, `uname -n`); a resource
    /// without that host contributes every host's minors but no disks, since
    /// minors are what 2-node setups keep equal and disks are not.
    pub fn from_dump_xml(xml: &str, host: &str) -> Result<Self, ParseError> {
        let err = |reason: String| ParseError::new("drbdadm dump-xml", reason, xml);
        let mut reader = Reader::from_str(xml);
        reader.config_mut().trim_text(true);
        let mut map = DeviceMap::default();
        // Where we are: resource, host (outside <connection>), volume, element.
        let mut resource: Option<String> = None;
        let mut host_name: Option<String> = None;
        let mut in_connection = false;
        let mut volume: Option<u32> = None;
        let mut minor: Option<u32> = None;
        let mut disk: Option<String> = None;
        let mut text_of: Option<&'static str> = None;
        // Per resource: volumes seen on this host, and on any host.
        let mut mine: Vec<VolumeEntry> = Vec::new();
        let mut any: Vec<VolumeEntry> = Vec::new();
        loop {
            let ev = reader.read_event().map_err(|e| err(e.to_string()))?;
            match ev {
                Event::Start(e) | Event::Empty(e) => {
                    let attr = |name: &str| -> Result<Option<String>, ParseError> {
                        e.try_get_attribute(name)
                            .map_err(|x| err(x.to_string()))?
                            .map(|a| a.unescape_value().map(|v| v.into_owned()))
                            .transpose()
                            .map_err(|x| err(x.to_string()))
                    };
                    match e.name().as_ref() {
                        b"resource" => {
                            resource = attr("name")?;
                            mine.clear();
                            any.clear();
                        }
                        b"connection" => in_connection = true,
                        b"host" if !in_connection => host_name = attr("name")?,
                        b"volume" if host_name.is_some() => {
                            volume = attr("vnr")?.and_then(|v| v.parse().ok());
                            minor = None;
                            disk = None;
                        }
                        b"device" if volume.is_some() => {
                            minor = attr("minor")?.and_then(|v| v.parse().ok());
                            text_of = Some("device");
                        }
                        b"disk" if volume.is_some() => text_of = Some("disk"),
                        _ => text_of = None,
                    }
                }
                Event::Text(t) => {
                    let text = t.decode().map_err(|e| err(e.to_string()))?.trim().to_owned();
                    match text_of {
                        // `<device minor="0">/dev/drbd0</device>`: the minor
                        // attribute is authoritative; the path is its name.
                        Some("device") if minor.is_none() => {
                            if let Some(DeviceRef::Minor(m)) = parse_device_path(&text) {
                                minor = Some(m);
                            }
                        }
                        Some("disk") if !text.is_empty() && text != "none" => disk = Some(text),
                        _ => {}
                    }
                }
                Event::End(e) => {
                    text_of = None;
                    match e.name().as_ref() {
                        b"volume" => {
                            if let (Some(r), Some(v), Some(m)) = (&resource, volume, minor) {
                                let entry = VolumeEntry {
                                    resource: ResourceName(r.clone()),
                                    volume: v,
                                    minor: m,
                                    disk: disk.take(),
                                };
                                if host_name.as_deref() == Some(host) {
                                    mine.push(entry.clone());
                                }
                                any.push(entry);
                            }
                            volume = None;
                        }
                        b"host" if !in_connection => host_name = None,
                        b"connection" => in_connection = false,
                        b"resource" => {
                            if mine.is_empty() {
                                for mut e in any.drain(..) {
                                    e.disk = None;
                                    if !map.volumes.contains(&e) {
                                        map.volumes.push(e);
                                    }
                                }
                            } else {
                                map.volumes.append(&mut mine);
                            }
                            resource = None;
                        }
                        _ => {}
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        Ok(map)
    }

    /// What `path` names, if it is one of this host's DRBD devices.
    pub fn resolve(&self, path: &str) -> Option<Resolved> {
        match parse_device_path(path)? {
            DeviceRef::Minor(m) => self.volumes.iter().find(|v| v.minor == m).map(|v| Resolved {
                resource: v.resource.clone(),
                volume: Some(v.volume),
            }),
            DeviceRef::ByRes { resource, volume } => {
                let vols: Vec<&VolumeEntry> = self.volumes.iter().filter(|v| v.resource.0 == resource).collect();
                match volume {
                    Some(n) => vols.iter().find(|v| v.volume == n).map(|v| Resolved {
                        resource: v.resource.clone(),
                        volume: Some(n),
                    }),
                    None => match vols.as_slice() {
                        [] => None,
                        [only] => Some(Resolved {
                            resource: only.resource.clone(),
                            volume: Some(only.volume),
                        }),
                        [first, ..] => Some(Resolved {
                            resource: first.resource.clone(),
                            volume: None,
                        }),
                    },
                }
            }
            DeviceRef::ByDisk(disk) => self
                .volumes
                .iter()
                .find(|v| v.disk.as_deref() == Some(disk.as_str()))
                .map(|v| Resolved {
                    resource: v.resource.clone(),
                    volume: Some(v.volume),
                }),
        }
    }

    /// The minors of each resource, for reading /proc/drbd.
    pub fn minors(&self) -> std::collections::BTreeMap<u32, ResourceName> {
        self.volumes.iter().map(|v| (v.minor, v.resource.clone())).collect()
    }
}
