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

pub use tandem_hooks::xen::{domain_of, parse_params, Arrival, Target, INCOMING_SUFFIX, MIGRATED_AWAY_SUFFIX};

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

/// Whether `mode` is one Xen's block scripts accept.
pub fn valid_mode(mode: &str) -> bool {
    let m = mode.strip_suffix('!').unwrap_or(mode);
    matches!(m, "r" | "ro" | "w" | "rw")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn modes_and_domain_ids() {
        assert!(valid_mode("w") && valid_mode("r") && valid_mode("w!") && valid_mode("rw"));
        assert!(!valid_mode("") && !valid_mode("x") && !valid_mode("!"));
        assert_eq!(parse_domid("0"), Some(0));
        assert_eq!(parse_domid("32752"), None);
        assert_eq!(parse_domid("+1"), None);
    }
}
