//! Xen's names for DRBD disks and for domains in migration, shared by the
//! block script (`block-drbd`) and tandemd's `xl` driver, so that both read a
//! disk's target and a domain's name the same way.
//!
//! - a disk's target (`params` in xenstore, or the target of an xl disk line
//!   run through `script=block-drbd` or the deprecated `drbd:` prefix):
//!   `R`, `R/VOLUME`, `/dev/drbd/by-res/R[/VOLUME]`, `/dev/drbdMINOR`, each
//!   optionally after `drbd:`;
//! - a domain's name: xl names a domain being received by `xl migrate`
//!   `NAME--incoming` until the migration completes, and the source
//!   `NAME--migratedaway` once it has; both stand for `NAME`.

use crate::drbd::{parse_device_path, DevicePath};

/// The suffix of a domain xl is receiving.
pub const INCOMING_SUFFIX: &str = "--incoming";
/// The suffix xl gives the source domain of a finished migration.
pub const MIGRATED_AWAY_SUFFIX: &str = "--migratedaway";

/// The disk's DRBD device, as `params` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `None` for `/dev/drbdN` until the configuration names it.
    pub resource: Option<String>,
    pub volume: Option<u32>,
    pub minor: Option<u32>,
}

/// Reads `params`; `None` if it names no DRBD device.
pub fn parse_params(params: &str) -> Option<Target> {
    let p = params.trim();
    let p = p.strip_prefix("drbd:").unwrap_or(p);
    let target = match parse_device_path(p) {
        Some(DevicePath::Minor(m)) => Target {
            resource: None,
            volume: None,
            minor: Some(m),
        },
        Some(DevicePath::ByRes { resource, volume }) => Target {
            resource: Some(resource),
            volume,
            minor: None,
        },
        Some(DevicePath::ByDisk(_) | DevicePath::Xen(_)) => return None,
        None if p.starts_with('/') => return None,
        None => {
            let (resource, volume) = match p.split_once('/') {
                Some((r, v)) => (r, Some(number(v)?)),
                None => (p, None),
            };
            Target {
                resource: Some(resource.to_owned()),
                volume,
                minor: None,
            }
        }
    };
    match &target.resource {
        Some(r) if tandem_api::validate_resource(r).is_err() => None,
        _ => Some(target),
    }
}

/// Decimal digits only, at most 9 of them.
fn number(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// How the frontend's name says the domain arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A plain start (`xl create`, restore, `xl migrate`'s source side).
    Start,
    /// The receiving end of `xl migrate`.
    Incoming,
}

/// The domain tandem knows (without xl's migration suffixes) and how it arrives.
pub fn domain_of(frontend_name: &str) -> (String, Arrival) {
    if let Some(base) = frontend_name.strip_suffix(INCOMING_SUFFIX).filter(|b| !b.is_empty()) {
        return (base.to_owned(), Arrival::Incoming);
    }
    let base = frontend_name
        .strip_suffix(MIGRATED_AWAY_SUFFIX)
        .filter(|b| !b.is_empty())
        .unwrap_or(frontend_name);
    (base.to_owned(), Arrival::Start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(r: &str, v: Option<u32>) -> Option<Target> {
        Some(Target {
            resource: Some(r.into()),
            volume: v,
            minor: None,
        })
    }

    #[test]
    fn params_in_every_form_libxl_and_xend_write() {
        assert_eq!(parse_params("r0"), res("r0", None));
        assert_eq!(parse_params("drbd:r0"), res("r0", None));
        assert_eq!(parse_params("vm-web.disk_1/1"), res("vm-web.disk_1", Some(1)));
        assert_eq!(parse_params("/dev/drbd/by-res/r0/0"), res("r0", Some(0)));
        assert_eq!(parse_params("drbd:/dev/drbd/by-res/r0"), res("r0", None));
        assert_eq!(
            parse_params("/dev/drbd7"),
            Some(Target {
                resource: None,
                volume: None,
                minor: Some(7)
            })
        );
        for bad in [
            "",
            "drbd:",
            "/dev/sda",
            "r0/x",
            "r0/1/2",
            "-r0",
            ".r0",
            "r 0",
            "all;rm",
            "/dev/drbd/by-disk/vg/lv",
        ] {
            assert_eq!(parse_params(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn xl_migration_names_map_to_the_domain() {
        assert_eq!(domain_of("vm1--incoming"), ("vm1".into(), Arrival::Incoming));
        assert_eq!(domain_of("vm1--migratedaway"), ("vm1".into(), Arrival::Start));
        assert_eq!(domain_of("vm1"), ("vm1".into(), Arrival::Start));
        assert_eq!(domain_of("--incoming"), ("--incoming".into(), Arrival::Start));
    }
}
