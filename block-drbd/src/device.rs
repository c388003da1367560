//! The DRBD device behind a disk: its minor and path from `drbdadm dump-xml`
//! (the hooks crate's [`DrbdMap`]), and the `physical-device` blkback opens.
//!
//! `physical-device` is `MAJOR:MINOR` in hex, as Xen's `block-common.sh` writes
//! it (`stat -L -c %t:%T`). When the device node exists it is read from the
//! node; when it does not (udev has not made it yet, or no DRBD runs here, as in
//! the tests), from DRBD's block major, 147, and the configured minor: blkback
//! opens the device by number, not by path.

use crate::params::Target;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use tandem_hooks::DrbdMap;

/// The block major the DRBD module registers (`DRBD_MAJOR`).
pub const DRBD_MAJOR: u32 = 147;

/// A disk's DRBD device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub resource: String,
    pub volume: u32,
    pub minor: u32,
    /// The configured device path, else `/dev/drbdMINOR`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("no configured DRBD resource has minor {0}")]
    UnknownMinor(u32),
    #[error("resource {0} is not in this host's DRBD configuration (drbdadm dump-xml)")]
    UnknownResource(String),
    #[error("resource {resource} has no volume {volume} in this host's DRBD configuration")]
    UnknownVolume { resource: String, volume: u32 },
    #[error("resource {resource} has volumes {volumes}: name one, as target={resource}/VOLUME")]
    WhichVolume { resource: String, volumes: String },
    #[error("the DRBD configuration gives resource {resource} volume {volume} no minor")]
    NoMinor { resource: String, volume: u32 },
    #[error("the DRBD configuration gives resource {resource} volume {volume} different minors on different hosts")]
    Ambiguous { resource: String, volume: u32 },
    #[error("{path} is not a block device")]
    NotBlock { path: String },
    #[error("cannot stat {path}: {reason}")]
    Stat { path: String, reason: String },
}

/// Finds `target`'s device in `map`, preferring this host's entries (an
/// incoming migration may only find the source's, which then count).
pub fn resolve(target: &Target, map: &DrbdMap) -> Result<Device, DeviceError> {
    let (resource, volume) = match (&target.resource, target.minor) {
        (Some(r), _) => (r.clone(), target.volume),
        (None, Some(m)) => {
            let (r, v) = map.resolve_minor(m).ok_or(DeviceError::UnknownMinor(m))?;
            (r.0, Some(v))
        }
        (None, None) => return Err(DeviceError::UnknownResource(String::new())),
    };
    let all: Vec<_> = map.volumes.iter().filter(|v| v.resource.0 == resource).collect();
    if all.is_empty() {
        return Err(DeviceError::UnknownResource(resource));
    }
    let local: Vec<_> = match &map.local_host {
        Some(h) => all.iter().copied().filter(|v| v.hosts.contains(h)).collect(),
        None => Vec::new(),
    };
    let entries = if local.is_empty() { all } else { local };
    let volume = match volume {
        Some(v) => v,
        None => {
            let mut numbers: Vec<u32> = entries.iter().map(|e| e.volume).collect();
            numbers.sort_unstable();
            numbers.dedup();
            match numbers.as_slice() {
                [only] => *only,
                _ => {
                    let volumes = numbers.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
                    return Err(DeviceError::WhichVolume { resource, volumes });
                }
            }
        }
    };
    let chosen: Vec<_> = entries.into_iter().filter(|e| e.volume == volume).collect();
    let Some(first) = chosen.first() else {
        return Err(DeviceError::UnknownVolume { resource, volume });
    };
    if chosen
        .iter()
        .any(|e| e.minor != first.minor || e.device != first.device)
    {
        return Err(DeviceError::Ambiguous { resource, volume });
    }
    let minor = first.minor.ok_or_else(|| DeviceError::NoMinor {
        resource: resource.clone(),
        volume,
    })?;
    if target.minor.is_some_and(|m| m != minor) {
        return Err(DeviceError::Ambiguous { resource, volume });
    }
    let path = first.device.clone().unwrap_or_else(|| format!("/dev/drbd{minor}"));
    Ok(Device {
        resource,
        volume,
        minor,
        path,
    })
}

/// `MAJOR:MINOR` in hex for `physical-device` (see the module documentation).
pub fn physical_device(device: &Device) -> Result<String, DeviceError> {
    match std::fs::metadata(&device.path) {
        Ok(meta) if meta.file_type().is_block_device() => {
            let (major, minor) = split_dev(meta.rdev());
            Ok(format!("{major:x}:{minor:x}"))
        }
        Ok(_) => Err(DeviceError::NotBlock {
            path: device.path.clone(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(format!("{DRBD_MAJOR:x}:{:x}", device.minor)),
        Err(e) => Err(DeviceError::Stat {
            path: device.path.clone(),
            reason: e.to_string(),
        }),
    }
}

/// Linux's `dev_t` encoding (glibc's `major()`/`minor()`).
fn split_dev(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_hooks::{MapVolume, ResourceName};

    fn vol(r: &str, v: u32, minor: u32, hosts: &[&str]) -> MapVolume {
        MapVolume {
            resource: ResourceName::from(r),
            volume: v,
            minor: Some(minor),
            device: Some(format!("/dev/drbd{minor}")),
            disk: None,
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        }
    }

    fn target(r: Option<&str>, v: Option<u32>, m: Option<u32>) -> Target {
        Target {
            resource: r.map(str::to_owned),
            volume: v,
            minor: m,
        }
    }

    #[test]
    fn volumes_and_minors_resolve_from_the_configuration() {
        let map = DrbdMap {
            volumes: vec![
                vol("r0", 0, 0, &["alpha"]),
                vol("r0", 0, 0, &["beta"]),
                vol("r1", 0, 1, &["alpha"]),
                vol("r1", 1, 2, &["alpha"]),
                vol("r2", 0, 5, &["alpha"]),
                vol("r2", 0, 6, &["beta"]),
            ],
            local_host: Some("alpha".into()),
        };
        let d = resolve(&target(Some("r0"), None, None), &map).unwrap();
        assert_eq!((d.minor, d.path.as_str()), (0, "/dev/drbd0"));
        assert_eq!(resolve(&target(Some("r1"), Some(1), None), &map).unwrap().minor, 2);
        assert_eq!(resolve(&target(None, None, Some(2)), &map).unwrap().resource, "r1");
        // Per-host minors: this host's wins.
        assert_eq!(resolve(&target(Some("r2"), None, None), &map).unwrap().minor, 5);
        assert_eq!(
            resolve(&target(Some("r1"), None, None), &map).unwrap_err().to_string(),
            "resource r1 has volumes 0, 1: name one, as target=r1/VOLUME"
        );
        assert!(matches!(
            resolve(&target(Some("r9"), None, None), &map),
            Err(DeviceError::UnknownResource(_))
        ));
        assert!(matches!(
            resolve(&target(Some("r0"), Some(3), None), &map),
            Err(DeviceError::UnknownVolume { .. })
        ));
        assert_eq!(
            resolve(&target(None, None, Some(9)), &map),
            Err(DeviceError::UnknownMinor(9))
        );
        // Without this host in the configuration, the entries must agree.
        let elsewhere = DrbdMap {
            local_host: Some("gamma".into()),
            ..map
        };
        assert!(matches!(
            resolve(&target(Some("r2"), None, None), &elsewhere),
            Err(DeviceError::Ambiguous { .. })
        ));
        assert_eq!(resolve(&target(Some("r0"), None, None), &elsewhere).unwrap().minor, 0);
    }

    #[test]
    fn physical_device_is_hex_major_minor() {
        let d = Device {
            resource: "r0".into(),
            volume: 0,
            minor: 26,
            path: "/nonexistent/drbd26".into(),
        };
        assert_eq!(physical_device(&d).unwrap(), "93:1a");
        let null = Device {
            path: "/dev/null".into(),
            ..d.clone()
        };
        assert_eq!(
            physical_device(&null),
            Err(DeviceError::NotBlock {
                path: "/dev/null".into()
            })
        );
        assert_eq!(split_dev((147 << 8) | 3), (147, 3));
        assert_eq!(split_dev(0x0010_0000 | (8 << 8)), (8, 256));
    }
}
