//! What the hotplug environment and the backend's xenstore entries say, checked.
//!
//! - `XENBUS_PATH`: `backend/vbd/DOMID/DEVID` (libxl; xend's udev events give
//!   the same relative form), or the absolute `/local/domain/0/backend/vbd/...`.
//! - `params`: the resource. libxl writes the disk's target as it is, for both
//!   `drbd:r0` (xl's deprecated prefix becomes `script=block-drbd`, the rest the
//!   target) and `script=block-drbd,target=r0`: `r0`. xend writes what follows
//!   `drbd:` with `type` `drbd`. Accepted: `R`, `R/VOLUME`,
//!   `/dev/drbd/by-res/R[/VOLUME]`, `/dev/drbdMINOR`, each optionally after `drbd:`.
//! - `mode`: `r` or `w` (`ro`, `rw`, and `!` after them, as Xen's scripts accept).
//! - the frontend's name: xl names a domain being received by `xl migrate`
//!   `NAME--incoming` until the migration completes, and the source
//!   `NAME--migratedaway` once it has; both stand for `NAME`.

use tandem_hooks::drbd::{parse_device_path, DevicePath};

/// The suffix of a domain xl is receiving.
pub const INCOMING_SUFFIX: &str = "--incoming";
/// The suffix xl gives the source domain of a finished migration.
pub const MIGRATED_AWAY_SUFFIX: &str = "--migratedaway";

/// `block-drbd add` or `block-drbd remove`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Add,
    Remove,
}

impl Action {
    /// The first argument; xend's `block` passes more after it, which are ignored.
    pub fn from_args(args: &[String]) -> Option<Action> {
        match args.first().map(String::as_str) {
            Some("add") => Some(Action::Add),
            Some("remove") => Some(Action::Remove),
            _ => None,
        }
    }
}

/// A vbd backend directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// As given: every key is read and written under it.
    pub path: String,
    /// The frontend domain's backends (`.../vbd/DOMID`), where sibling disks are.
    pub parent: String,
    pub frontend_id: u32,
    pub devid: u32,
}

impl Backend {
    pub fn parse(path: &str) -> Option<Backend> {
        let parts: Vec<&str> = path.split('/').collect();
        let n = parts.len();
        if n < 4 || parts[n - 4] != "backend" || parts[n - 3] != "vbd" {
            return None;
        }
        let frontend_id = number(parts[n - 2])?;
        let devid = number(parts[n - 1])?;
        let parent = path.rsplit_once('/')?.0.to_owned();
        Some(Backend {
            path: path.to_owned(),
            parent,
            frontend_id,
            devid,
        })
    }

    /// `KEY` of this backend.
    pub fn key(&self, key: &str) -> String {
        format!("{}/{key}", self.path)
    }

    /// `KEY` of the sibling backend `devid`.
    pub fn sibling_key(&self, devid: &str, key: &str) -> String {
        format!("{}/{devid}/{key}", self.parent)
    }
}

/// Decimal digits only, as xenstore ids are written.
fn number(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A Xen domain id from xenstore (`frontend-id`): below `DOMID_FIRST_RESERVED` (0x7ff0).
pub fn parse_domid(s: &str) -> Option<u32> {
    number(s).filter(|&d| d < 0x7ff0)
}

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

/// Whether `mode` is one Xen's block scripts accept.
pub fn valid_mode(mode: &str) -> bool {
    let m = mode.strip_suffix('!').unwrap_or(mode);
    matches!(m, "r" | "ro" | "w" | "rw")
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
    fn backend_paths_give_the_frontend_and_its_siblings() {
        let b = Backend::parse("backend/vbd/7/51712").unwrap();
        assert_eq!((b.frontend_id, b.devid, b.parent.as_str()), (7, 51712, "backend/vbd/7"));
        assert_eq!(b.sibling_key("51728", "params"), "backend/vbd/7/51728/params");
        assert!(Backend::parse("/local/domain/0/backend/vbd/7/768").is_some());
        for bad in [
            "",
            "backend/vif/7/0",
            "backend/vbd/x/1",
            "backend/vbd/7",
            "vbd/7/1",
            "backend/vbd/7/1/",
        ] {
            assert_eq!(Backend::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn xl_migration_names_map_to_the_domain() {
        assert_eq!(domain_of("vm1--incoming"), ("vm1".into(), Arrival::Incoming));
        assert_eq!(domain_of("vm1--migratedaway"), ("vm1".into(), Arrival::Start));
        assert_eq!(domain_of("vm1"), ("vm1".into(), Arrival::Start));
        assert_eq!(domain_of("--incoming"), ("--incoming".into(), Arrival::Start));
        assert!(valid_mode("w") && valid_mode("r") && valid_mode("w!") && valid_mode("rw"));
        assert!(!valid_mode("") && !valid_mode("x") && !valid_mode("!"));
        assert_eq!(parse_domid("0"), Some(0));
        assert_eq!(parse_domid("32752"), None);
        assert_eq!(parse_domid("+1"), None);
    }
}
