//! Which of a domain's disks are DRBD devices, and which resource each belongs to.
//!
//! A disk is recognised by its source path, in the forms DRBD's udev rules and
//! Xen's block-drbd script use:
//!
//! | source | resource | volume |
//! |---|---|---|
//! | `/dev/drbd/by-res/R` | R | none (the path does not say) |
//! | `/dev/drbd/by-res/R/V` | R | V |
//! | `/dev/drbdN` | from [`DrbdMap`] (minor N) | from the map; unresolved: reported with `minor: N` |
//! | `/dev/drbd/by-disk/P` | from the map (backing disk `/dev/P`) | from the map; unresolved: reported with the disk |
//! | `drbd:R` (Xen), or a bare `R` with `<driver name='drbd'/>` | R | none |
//! | another `/dev/drbd...` path the map names as a `device` | from the map | from the map |
//!
//! Paths are compared as written: a disk reached through some other symlink, or
//! LVM on top of DRBD, is not recognised.

use crate::xml::{locate, DomainInfo};
use crate::ResourceName;
use quick_xml::events::Event;
use quick_xml::Reader;

/// A disk of the domain that lives on DRBD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrbdDisk {
    /// `None` when the path names a minor or backing disk the map does not know.
    pub resource: Option<ResourceName>,
    /// `None` when neither the path nor the map says.
    pub volume: Option<u32>,
    /// The minor, when the path is `/dev/drbdN`.
    pub minor: Option<u32>,
    /// The backing disk, when the path is `/dev/drbd/by-disk/...`.
    pub lower_disk: Option<String>,
    /// The source path as the XML gives it.
    pub source: String,
    /// The disk's `<target dev=>`.
    pub target: Option<String>,
}

/// What a source path says by its form alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePath {
    /// `/dev/drbdN`
    Minor(u32),
    /// `/dev/drbd/by-res/R` (`volume` `None`) or `/dev/drbd/by-res/R/V`.
    ByRes { resource: String, volume: Option<u32> },
    /// `/dev/drbd/by-disk/vg/lv`, holding the backing disk `/dev/vg/lv`.
    ByDisk(String),
    /// `drbd:R`, Xen's block-drbd form.
    Xen(String),
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Reads a source path's form; `None` if it is not one of DRBD's forms.
pub fn parse_device_path(path: &str) -> Option<DevicePath> {
    if let Some(num) = path.strip_prefix("/dev/drbd") {
        if all_digits(num) {
            return num.parse().ok().map(DevicePath::Minor);
        }
    }
    if let Some(rest) = path.strip_prefix("/dev/drbd/by-res/") {
        let (resource, volume) = match rest.split_once('/') {
            None => (rest, None),
            Some((r, v)) if all_digits(v) => (r, Some(v.parse().ok()?)),
            Some(_) => return None,
        };
        if resource.is_empty() {
            return None;
        }
        return Some(DevicePath::ByRes {
            resource: resource.to_owned(),
            volume,
        });
    }
    if let Some(rest) = path.strip_prefix("/dev/drbd/by-disk/") {
        if rest.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
            return None;
        }
        return Some(DevicePath::ByDisk(format!("/dev/{rest}")));
    }
    if let Some(resource) = path.strip_prefix("drbd:") {
        if !resource.is_empty() && !resource.contains('/') {
            return Some(DevicePath::Xen(resource.to_owned()));
        }
    }
    None
}

/// One volume of a resource, as `drbdadm dump-xml` gives it for one `<host>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapVolume {
    pub resource: ResourceName,
    pub volume: u32,
    pub minor: Option<u32>,
    /// The device path when the configuration names one (`device /dev/drbd3` or a
    /// custom name); empty `<device>` elements give `None`.
    pub device: Option<String>,
    /// The backing disk; `None` for diskless (`disk none`) or stacked volumes.
    pub disk: Option<String>,
    /// The host names of the `<host name="a b">` section; empty for `floating` sections.
    pub hosts: Vec<String>,
}

/// This host's DRBD configuration, enough to resolve device paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrbdMap {
    pub volumes: Vec<MapVolume>,
    /// DRBD's name for this host (`uname -n`). Entries of this host win over the
    /// peer's; entries of other hosts still count when this host has none, since
    /// an incoming migration carries the source host's paths.
    pub local_host: Option<String>,
}

/// `drbdadm dump-xml` output that is not well-formed XML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("drbdadm dump-xml output, line {line}, column {column}: {message}")]
pub struct DumpXmlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl DrbdMap {
    /// The map that resolves nothing: what the hook uses when drbdadm is missing.
    pub fn empty() -> Self {
        DrbdMap::default()
    }

    pub fn with_local_host(mut self, host: Option<String>) -> Self {
        self.local_host = host;
        self
    }

    /// Reads `drbdadm dump-xml` (drbd-utils 8.4 and 9 print the same shape):
    ///
    /// ```text
    /// <config file="/etc/drbd.conf">
    ///   <common> ... </common>
    ///   <resource name="r0" conf-file-line="...">
    ///     <host name="alpha">                 (name="a b" for `on a b`; floating="1" for `floating`)
    ///       <volume vnr="0">
    ///         <device minor="3">/dev/drbd3</device>     (text empty unless a path was configured)
    ///         <disk>/dev/vg0/lv7</disk>                 (`none` when diskless; empty when stacked)
    ///         <meta-disk>internal</meta-disk>
    ///       </volume>
    ///       <address family="ipv4" port="7789">10.0.0.1</address>
    ///     </host>
    ///     <connection> <host name="alpha"><address .../></host> ... </connection>
    ///     <section name="net"> <option name="protocol" value="C"/> </section>
    ///   </resource>
    /// </config>
    /// ```
    ///
    /// Text is XML-escaped by drbdadm (`&amp;`, `&lt;`). Only `volume` elements
    /// inside a resource's `host` (or directly inside the resource) count; the
    /// `host`s of a `connection` carry no volumes.
    pub fn from_dump_xml(xml: &str) -> Result<DrbdMap, DumpXmlError> {
        let err = |offset: u64, message: String| {
            let (line, column) = locate(xml.as_bytes(), usize::try_from(offset).unwrap_or(usize::MAX));
            DumpXmlError {
                line,
                column,
                message: crate::one_line(&message, 300),
            }
        };
        let mut reader = Reader::from_str(xml);
        let decoder = reader.decoder();
        let mut map = DrbdMap::default();
        let mut path: Vec<Vec<u8>> = Vec::new();
        let mut resource: Option<String> = None;
        let mut hosts: Vec<String> = Vec::new();
        let mut current: Option<MapVolume> = None;
        let mut text = String::new();
        loop {
            let pos = reader.buffer_position();
            let ev = reader
                .read_event()
                .map_err(|e| err(reader.error_position(), e.to_string()))?;
            let (start, empty) = match &ev {
                Event::Start(e) => (Some(e), false),
                Event::Empty(e) => (Some(e), true),
                _ => (None, false),
            };
            if let Some(e) = start {
                let attr = |name: &str| -> Result<Option<String>, DumpXmlError> {
                    let Some(a) = e.try_get_attribute(name).map_err(|x| err(pos, x.to_string()))? else {
                        return Ok(None);
                    };
                    let v = a
                        .decode_and_unescape_value(decoder)
                        .map_err(|x| err(pos, x.to_string()))?;
                    Ok(Some(v.into_owned()))
                };
                let parent = path.last().map(Vec::as_slice);
                match (parent, e.name().as_ref()) {
                    (_, b"resource") => resource = attr("name")?,
                    (Some(b"resource"), b"host") => {
                        hosts = attr("name")?
                            .map(|n| n.split_whitespace().map(str::to_owned).collect())
                            .unwrap_or_default();
                    }
                    (Some(b"host" | b"resource"), b"volume") => {
                        current = match (&resource, attr("vnr")?.and_then(|v| v.trim().parse().ok())) {
                            (Some(r), Some(vnr)) => Some(MapVolume {
                                resource: ResourceName(r.clone()),
                                volume: vnr,
                                minor: None,
                                device: None,
                                disk: None,
                                hosts: if parent == Some(b"host") {
                                    hosts.clone()
                                } else {
                                    Vec::new()
                                },
                            }),
                            _ => None,
                        };
                    }
                    (Some(b"volume"), b"device") => {
                        if let Some(v) = current.as_mut() {
                            v.minor = attr("minor")?.and_then(|m| m.trim().parse().ok());
                        }
                    }
                    _ => {}
                }
                text.clear();
                if !empty {
                    path.push(e.name().as_ref().to_vec());
                }
            }
            match ev {
                Event::Text(t) => text.push_str(&t.decode().map_err(|e| err(pos, e.to_string()))?),
                Event::CData(t) => text.push_str(&t.decode().map_err(|e| err(pos, e.to_string()))?),
                Event::GeneralRef(r) => {
                    let name = r.decode().map_err(|e| err(pos, e.to_string()))?;
                    match r.resolve_char_ref().map_err(|e| err(pos, e.to_string()))? {
                        Some(c) => text.push(c),
                        None => match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(s) => text.push_str(s),
                            None => return Err(err(pos, format!("unknown entity &{name};"))),
                        },
                    }
                }
                Event::End(_) => {
                    let closed = path.pop().unwrap_or_default();
                    let in_volume = path.last().map(Vec::as_slice) == Some(b"volume");
                    let value = text.trim();
                    match (closed.as_slice(), current.as_mut()) {
                        (b"device", Some(v)) if in_volume && !value.is_empty() => {
                            v.device = Some(value.to_owned());
                            if v.minor.is_none() {
                                if let Some(DevicePath::Minor(m)) = parse_device_path(value) {
                                    v.minor = Some(m);
                                }
                            }
                        }
                        (b"disk", Some(v)) if in_volume && !value.is_empty() && value != "none" => {
                            v.disk = Some(value.to_owned());
                        }
                        (b"volume", _) => map.volumes.extend(current.take()),
                        (b"resource", _) => resource = None,
                        _ => {}
                    }
                    text.clear();
                }
                Event::Eof => break,
                _ => {}
            }
        }
        // quick-xml ends quietly inside open elements; a cut-off dump could
        // otherwise pass for a configuration without its last resources.
        if let Some(open) = path.last() {
            let name = String::from_utf8_lossy(open);
            return Err(err(xml.len() as u64, format!("the output ends inside <{name}>")));
        }
        Ok(map)
    }

    /// The single (resource, volume) the matching entries agree on, preferring
    /// this host's entries; `None` if nothing matches or the entries disagree.
    fn pick(&self, matches: impl Fn(&MapVolume) -> bool) -> Option<(ResourceName, u32)> {
        let found: Vec<&MapVolume> = self.volumes.iter().filter(|v| matches(v)).collect();
        let local: Vec<&MapVolume> = match &self.local_host {
            Some(h) => found
                .iter()
                .copied()
                .filter(|v| v.hosts.iter().any(|x| x == h))
                .collect(),
            None => Vec::new(),
        };
        let chosen = if local.is_empty() { found } else { local };
        let (first, rest) = chosen.split_first()?;
        if rest
            .iter()
            .any(|v| v.resource != first.resource || v.volume != first.volume)
        {
            return None;
        }
        Some((first.resource.clone(), first.volume))
    }

    /// The resource and volume of minor `minor`.
    pub fn resolve_minor(&self, minor: u32) -> Option<(ResourceName, u32)> {
        self.pick(|v| v.minor == Some(minor))
    }

    /// The resource and volume whose backing disk is `lower` (a `/dev/...` path).
    /// The by-disk link is the configured disk path without its `/dev/` (DRBD's
    /// `sh-udev`), so both sides are compared without it.
    pub fn resolve_lower_disk(&self, lower: &str) -> Option<(ResourceName, u32)> {
        let want = lower.strip_prefix("/dev/").unwrap_or(lower);
        self.pick(|v| v.disk.as_deref().map(|d| d.strip_prefix("/dev/").unwrap_or(d)) == Some(want))
    }

    /// The resource and volume whose configured device path is `path`.
    pub fn resolve_device(&self, path: &str) -> Option<(ResourceName, u32)> {
        self.pick(|v| v.device.as_deref() == Some(path))
    }
}

/// Whether finding `info`'s DRBD disks needs the DRBD configuration: only
/// `/dev/drbdN`, by-disk and other `/dev/drbd...` paths do, so a domain without
/// such paths never costs a `drbdadm` run.
pub fn needs_drbd_map(info: &DomainInfo) -> bool {
    local_paths(info).any(|(path, _, _)| {
        path.starts_with("/dev/drbd")
            && !matches!(
                parse_device_path(path),
                Some(DevicePath::ByRes { .. } | DevicePath::Xen(_))
            )
    })
}

/// Every (path, target, driver) of a disk's own source and its backing chain.
fn local_paths(info: &DomainInfo) -> impl Iterator<Item = (&str, Option<&str>, Option<&str>)> {
    info.disks.iter().flat_map(|disk| {
        disk.source.iter().chain(disk.backing.iter()).flat_map(move |src| {
            // `dev` and `file` can both name a device (type='file' pointing at a
            // block device works in qemu); the same path twice counts once.
            let file = src.file.as_deref().filter(|f| Some(*f) != src.dev.as_deref());
            src.dev
                .as_deref()
                .into_iter()
                .chain(file)
                .map(move |p| (p, disk.target.as_deref(), disk.driver.as_deref()))
        })
    })
}

/// The DRBD-backed disks of a domain, in document order (backing images after
/// their disk), one entry per source path.
pub fn drbd_disks(info: &DomainInfo, map: &DrbdMap) -> Vec<DrbdDisk> {
    let mut out = Vec::new();
    for (path, target, driver) in local_paths(info) {
        let disk = |resource: Option<(ResourceName, u32)>| DrbdDisk {
            volume: resource.as_ref().map(|r| r.1),
            resource: resource.map(|r| r.0),
            minor: None,
            lower_disk: None,
            source: path.to_owned(),
            target: target.map(str::to_owned),
        };
        let found = match parse_device_path(path) {
            Some(DevicePath::ByRes { resource, volume }) => Some(DrbdDisk {
                volume,
                ..disk(Some((ResourceName(resource), 0)))
            }),
            Some(DevicePath::Xen(resource)) => Some(DrbdDisk {
                volume: None,
                ..disk(Some((ResourceName(resource), 0)))
            }),
            Some(DevicePath::Minor(m)) => Some(DrbdDisk {
                minor: Some(m),
                ..disk(map.resolve_minor(m))
            }),
            Some(DevicePath::ByDisk(lower)) => Some(DrbdDisk {
                ..disk(map.resolve_lower_disk(&lower)).with_lower(lower)
            }),
            // Xen configs converted by libvirt keep `drbd:` as the driver name
            // and the bare resource as the path.
            None if driver == Some("drbd") && !path.is_empty() && !path.contains('/') => Some(DrbdDisk {
                volume: None,
                ..disk(Some((ResourceName(path.to_owned()), 0)))
            }),
            None if path.starts_with("/dev/drbd") => map.resolve_device(path).map(|r| disk(Some(r))),
            None => None,
        };
        out.extend(found);
    }
    out
}

impl DrbdDisk {
    fn with_lower(mut self, lower: String) -> Self {
        self.lower_disk = Some(lower);
        self
    }

    /// Whether the disk's resource is known.
    pub fn is_resolved(&self) -> bool {
        self.resource.is_some()
    }
}
