//! What a reload (`systemctl reload tandemd`, SIGHUP) may change in a running
//! daemon: the difference between the running configuration and the one just
//! read, field by field. Pure: the runtime applies the result.
//!
//! Applied live:
//! - every `[timing]` key but `heartbeat_interval_ms`: the core takes the new
//!   values for the deadlines it sets from then on (a fence delay, fence level
//!   or migration window already running keeps its deadline);
//! - `cluster.preferred` (it only sets this node's fence delay);
//! - each node's fence levels and devices (`[[node.NAME.fence]]`): the peer's
//!   are rebuilt for the next fence level run (one that runs keeps its
//!   device); this node's own are used only by the peer and by `tandemctl
//!   fence --direct`, so there is nothing to do here. Passwords are read
//!   when a device is used, so a changed password file needs no reload.
//!
//! Refused, with the field named (restart tandemd to change them):
//! - `cluster.name`, `cluster.authkey` (the key is read at start; the peer
//!   link's sessions are keyed with it), `cluster.heartbeat_port`,
//!   `cluster.control_port`, node names, `addresses` (the sockets are bound
//!   at start, and the peer must change at the same time);
//! - `timing.heartbeat_interval_ms` (the heartbeat task's pace, and the peer's
//!   `dead_after_ms` is checked against it);
//! - `node.NAME.libvirt_uri`, `node.NAME.migration_uri` (the libvirt driver
//!   and its watcher hold one connection made from them), `node.NAME.migration_host`
//!   (the xl driver is made with it);
//! - `[drbd]` (the DRBD driver and its `events2` watcher run with these paths
//!   and resources, and the D-Bus objects are one per resource);
//! - `[hypervisor]` (the hypervisor driver and its watcher).
//!
//! A reload with any refused change is refused whole: the running
//! configuration stays, nothing is half applied.

use super::{Config, Node, Timing};

/// One changed field, as the file names it (`timing.dead_after_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub field: String,
    /// Old and new value, for the log; `None` where the value is not worth
    /// printing (fence levels: many lines, and they name secret files).
    pub values: Option<(String, String)>,
}

/// A changed field that cannot take effect without a restart, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: String,
    pub reason: &'static str,
}

/// What a reload would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Fields that change and can change now.
    pub live: Vec<Change>,
    /// Fields that change but need a restart. Non-empty: refuse the reload.
    pub refused: Vec<Refusal>,
    /// The peer's fence levels changed: rebuild its fence devices.
    pub peer_fence_changed: bool,
    /// Something the core holds changed (timings, preferred, the peer's
    /// number of fence levels): give it the new core configuration.
    pub core_changed: bool,
}

impl ReloadPlan {
    /// Nothing differs (a reload of an unchanged file).
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.refused.is_empty()
    }

    /// Whether the reload may be applied.
    pub fn accepted(&self) -> bool {
        self.refused.is_empty()
    }

    /// The changed fields, comma-separated, for a log line.
    pub fn live_fields(&self) -> String {
        self.live
            .iter()
            .map(|c| c.field.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every refusal, `field: reason`, separated by "; ".
    pub fn refusals(&self) -> String {
        self.refused
            .iter()
            .map(|r| format!("{}: {}", r.field, r.reason))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

const RESTART_LINK: &str = "the peer link is set up at start; restart tandemd on both nodes to change it";
const RESTART_IDENTITY: &str = "it identifies the cluster or a node; restart tandemd on both nodes to change it";
const RESTART_HEARTBEAT: &str =
    "the heartbeat pace is set when the peer link starts, and the peer's dead_after_ms is checked against it; \
     restart tandemd to change it";
const RESTART_LIBVIRT: &str = "the libvirt driver connects with it at start; restart tandemd to change it";
const RESTART_DRBD: &str = "the DRBD driver, its events2 watcher and the D-Bus resource objects are set up \
                            at start; restart tandemd to change it";
const RESTART_HYPERVISOR: &str =
    "the hypervisor driver and its watcher are set up at start; restart tandemd to change it";

/// Compares the running configuration with a newly read one, for the node
/// with id `me` (whose peer's fence levels this daemon uses).
pub fn plan(old: &Config, new: &Config, me: crate::core::NodeId) -> ReloadPlan {
    let mut p = ReloadPlan::default();

    let (oc, nc) = (&old.cluster, &new.cluster);
    refuse_if(&mut p, oc.name != nc.name, "cluster.name", RESTART_IDENTITY);
    refuse_if(&mut p, oc.authkey != nc.authkey, "cluster.authkey", RESTART_LINK);
    refuse_if(
        &mut p,
        oc.heartbeat_port != nc.heartbeat_port,
        "cluster.heartbeat_port",
        RESTART_LINK,
    );
    refuse_if(
        &mut p,
        oc.control_port != nc.control_port,
        "cluster.control_port",
        RESTART_LINK,
    );
    if oc.preferred != nc.preferred {
        let name = |c: &Config| c.node(c.cluster.preferred).name.clone();
        p.live.push(Change {
            field: "cluster.preferred".into(),
            values: Some((name(old), name(new))),
        });
        p.core_changed = true;
    }

    timing(&mut p, &old.timing, &new.timing);

    for (o, n) in old.nodes.iter().zip(new.nodes.iter()) {
        node(&mut p, o, n, n.id != me);
    }

    refuse_if(
        &mut p,
        old.drbd.drbdadm != new.drbd.drbdadm,
        "drbd.drbdadm",
        RESTART_DRBD,
    );
    refuse_if(
        &mut p,
        old.drbd.drbdsetup != new.drbd.drbdsetup,
        "drbd.drbdsetup",
        RESTART_DRBD,
    );
    refuse_if(
        &mut p,
        old.drbd.resources != new.drbd.resources,
        "drbd.resources",
        RESTART_DRBD,
    );
    refuse_if(
        &mut p,
        old.hypervisor != new.hypervisor,
        "hypervisor",
        RESTART_HYPERVISOR,
    );
    p
}

fn refuse_if(p: &mut ReloadPlan, changed: bool, field: &str, reason: &'static str) {
    if changed {
        p.refused.push(Refusal {
            field: field.into(),
            reason,
        });
    }
}

fn timing(p: &mut ReloadPlan, old: &Timing, new: &Timing) {
    refuse_if(
        p,
        old.heartbeat_interval_ms != new.heartbeat_interval_ms,
        "timing.heartbeat_interval_ms",
        RESTART_HEARTBEAT,
    );
    let live: [(&str, u64, u64); 8] = [
        ("dead_after_ms", old.dead_after_ms, new.dead_after_ms),
        ("fence_delay_ms", old.fence_delay_ms, new.fence_delay_ms),
        ("fence_timeout_ms", old.fence_timeout_ms, new.fence_timeout_ms),
        (
            "fence_backoff_initial_ms",
            old.fence_backoff_initial_ms,
            new.fence_backoff_initial_ms,
        ),
        (
            "fence_backoff_max_ms",
            old.fence_backoff_max_ms,
            new.fence_backoff_max_ms,
        ),
        ("migration_window_s", old.migration_window_s, new.migration_window_s),
        ("request_timeout_ms", old.request_timeout_ms, new.request_timeout_ms),
        ("retry_ms", old.retry_ms, new.retry_ms),
    ];
    for (key, o, n) in live {
        if o != n {
            p.live.push(Change {
                field: format!("timing.{key}"),
                values: Some((o.to_string(), n.to_string())),
            });
            p.core_changed = true;
        }
    }
}

/// Nodes are sorted by name in both configurations, so `old` and `new` are
/// the same node unless a name changed.
fn node(p: &mut ReloadPlan, old: &Node, new: &Node, is_peer: bool) {
    if old.name != new.name {
        p.refused.push(Refusal {
            field: format!("node.{} (now node.{})", old.name, new.name),
            reason: RESTART_IDENTITY,
        });
        // The rest of the node is not compared: it is another node.
        return;
    }
    let field = |key: &str| format!("node.{}.{key}", old.name);
    refuse_if(p, old.addresses != new.addresses, &field("addresses"), RESTART_LINK);
    refuse_if(
        p,
        old.libvirt_uri != new.libvirt_uri,
        &field("libvirt_uri"),
        RESTART_LIBVIRT,
    );
    refuse_if(
        p,
        old.migration_uri != new.migration_uri,
        &field("migration_uri"),
        RESTART_LIBVIRT,
    );
    refuse_if(
        p,
        old.migration_host != new.migration_host,
        &field("migration_host"),
        RESTART_HYPERVISOR,
    );
    if old.fence != new.fence {
        p.live.push(Change {
            field: field("fence"),
            values: None,
        });
        if is_peer {
            p.peer_fence_changed = true;
            if old.fence.len() != new.fence.len() {
                p.core_changed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::check_str;
    use crate::core::NodeId;

    /// The configuration tests' file, with a preferred node and a timing.
    fn base() -> String {
        super::super::tests::BASE.replacen(
            "name = \"pair1\"\n\n",
            "name = \"pair1\"\npreferred = \"alpha\"\n\n[timing]\ndead_after_ms = 1000\n\n",
            1,
        )
    }

    const ALPHA: NodeId = NodeId(0);
    const BETA: NodeId = NodeId(1);

    fn cfg(text: &str) -> Config {
        check_str("/etc/tandem/tandem.toml", text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn changed(from: &str, to: &str) -> Config {
        assert!(base().contains(from), "{from:?} not in the base file");
        cfg(&base().replacen(from, to, 1))
    }

    fn fields(p: &ReloadPlan) -> (Vec<&str>, Vec<&str>) {
        (
            p.live.iter().map(|c| c.field.as_str()).collect(),
            p.refused.iter().map(|r| r.field.as_str()).collect(),
        )
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let p = plan(&cfg(&base()), &cfg(&base()), ALPHA);
        assert!(p.is_empty() && p.accepted());
        assert!(!p.core_changed && !p.peer_fence_changed);
    }

    #[test]
    fn timings_apply_live_with_their_values() {
        let new = changed("dead_after_ms = 1000", "dead_after_ms = 1500\nretry_ms = 250");
        let p = plan(&cfg(&base()), &new, ALPHA);
        assert!(p.accepted());
        assert!(p.core_changed);
        assert_eq!(fields(&p).0, ["timing.dead_after_ms", "timing.retry_ms"]);
        assert_eq!(p.live[0].values, Some(("1000".into(), "1500".into())));
        assert_eq!(p.live[1].values, Some(("1000".into(), "250".into())));
        assert_eq!(p.live_fields(), "timing.dead_after_ms, timing.retry_ms");
    }

    #[test]
    fn the_heartbeat_interval_needs_a_restart() {
        let new = changed(
            "dead_after_ms = 1000",
            "dead_after_ms = 1000\nheartbeat_interval_ms = 100",
        );
        let p = plan(&cfg(&base()), &new, ALPHA);
        assert!(!p.accepted());
        assert_eq!(fields(&p).1, ["timing.heartbeat_interval_ms"]);
        assert!(p.refusals().contains("restart tandemd"), "{}", p.refusals());
    }

    #[test]
    fn a_changed_address_is_refused_and_named() {
        let new = changed("\"192.0.2.2\"", "\"192.0.2.3\"");
        let p = plan(&cfg(&base()), &new, ALPHA);
        assert!(!p.accepted());
        assert_eq!(fields(&p).1, ["node.beta.addresses"]);
        assert!(
            p.refusals().starts_with("node.beta.addresses: the peer link"),
            "{}",
            p.refusals()
        );
    }

    #[test]
    fn a_refused_change_refuses_the_live_ones_too() {
        let mut new = changed("dead_after_ms = 1000", "dead_after_ms = 1500");
        new.cluster.control_port = 5999;
        let p = plan(&cfg(&base()), &new, ALPHA);
        assert!(!p.accepted());
        let (live, refused) = fields(&p);
        assert_eq!(live, ["timing.dead_after_ms"]);
        assert_eq!(refused, ["cluster.control_port"]);
    }

    #[test]
    fn identity_link_drbd_and_hypervisor_changes_are_refused() {
        let cases: [(&str, &str, &str); 6] = [
            ("name = \"pair1\"", "name = \"pair2\"", "cluster.name"),
            (
                "name = \"pair1\"",
                "name = \"pair1\"\nauthkey = \"/etc/tandem/other.key\"",
                "cluster.authkey",
            ),
            (
                "name = \"pair1\"",
                "name = \"pair1\"\nheartbeat_port = 6000",
                "cluster.heartbeat_port",
            ),
            ("resources = [\"r0\"]", "resources = [\"r0\", \"r1\"]", "drbd.resources"),
            (
                "resources = [\"r0\"]",
                "resources = [\"r0\"]\ndrbdadm = \"/opt/drbd/drbdadm\"",
                "drbd.drbdadm",
            ),
            (
                "resources = [\"r0\"]",
                "resources = [\"r0\"]\n[hypervisor]\nkind = \"none\"",
                "hypervisor",
            ),
        ];
        for (from, to, field) in cases {
            let p = plan(&cfg(&base()), &changed(from, to), ALPHA);
            assert_eq!(fields(&p).1, [field], "{to}");
            assert!(fields(&p).0.is_empty(), "{to}");
        }
    }

    #[test]
    fn a_renamed_node_is_refused_once() {
        let text = base().replace("node.beta", "node.gamma");
        let p = plan(&cfg(&base()), &cfg(&text), ALPHA);
        assert_eq!(fields(&p).1, ["node.beta (now node.gamma)"]);
    }

    #[test]
    fn libvirt_uris_need_a_restart() {
        let new = changed(
            "addresses = [\"192.0.2.2\", \"198.51.100.2\"]",
            "addresses = [\"192.0.2.2\", \"198.51.100.2\"]\nlibvirt_uri = \"qemu+tls://beta/system\"",
        );
        let p = plan(&cfg(&base()), &new, ALPHA);
        assert_eq!(fields(&p).1, ["node.beta.libvirt_uri"]);
    }

    #[test]
    fn the_peers_fence_devices_apply_live_and_are_rebuilt() {
        let new = changed(
            "username = \"admin\"\npassword_file = \"/etc/tandem/bmc-beta.pass\"",
            "username = \"fencer\"\npassword_file = \"/etc/tandem/bmc-beta2.pass\"",
        );
        let p = plan(&cfg(&base()), &new, ALPHA);
        assert!(p.accepted());
        assert_eq!(fields(&p).0, ["node.beta.fence"]);
        assert!(p.peer_fence_changed);
        // Same number of levels: nothing for the core.
        assert!(!p.core_changed);
        // The fence change is not printed (it names secret files).
        assert_eq!(p.live[0].values, None);
        // On beta, alpha's devices are the peer's; beta's own are not.
        let p = plan(&cfg(&base()), &new, BETA);
        assert!(p.accepted() && !p.peer_fence_changed);
    }

    #[test]
    fn another_fence_level_tells_the_core() {
        let level = "\n[[node.beta.fence]]\n[[node.beta.fence.device]]\nkind = \"agent\"\n\
                     agent = \"/usr/sbin/fence_ipmilan\"\noptions = { ip = \"10.0.0.12\" }\n";
        let new = changed(
            "password_file = \"/etc/tandem/bmc-beta.pass\"\n",
            &format!("password_file = \"/etc/tandem/bmc-beta.pass\"\n{level}"),
        );
        let p = plan(&cfg(&base()), &new, ALPHA);
        assert!(p.accepted() && p.peer_fence_changed && p.core_changed);
    }

    #[test]
    fn preferred_applies_live() {
        let new = changed("preferred = \"alpha\"", "preferred = \"beta\"");
        let p = plan(&cfg(&base()), &new, BETA);
        assert!(p.accepted() && p.core_changed);
        assert_eq!(p.live[0].values, Some(("alpha".into(), "beta".into())));
        // And the core configuration it leads to gives beta no fence delay.
        assert_eq!(new.core_config(BETA).arbiter.fence_delay_ms, 0);
        assert_eq!(cfg(&base()).core_config(BETA).arbiter.fence_delay_ms, 2000);
    }
}
