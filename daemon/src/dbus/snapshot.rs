//! The status JSON (runtime/status.rs) read into the typed values the D-Bus
//! properties carry. The adapter reads only the status, never the core, so the
//! bus shows exactly what the status file shows.

use serde_json::Value;
use std::collections::BTreeSet;
use tandem_api::{FenceRecord, Link, Window};

/// What the properties show, from one status value. Missing or mistyped fields
/// read as empty: a status from a newer or older daemon never breaks the bus side.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) node: String,
    pub(crate) peer: String,
    pub(crate) boot: String,
    pub(crate) peer_state: String,
    pub(crate) peer_since: u64,
    pub(crate) arbiter: String,
    pub(crate) control_connected: bool,
    pub(crate) links: Vec<Link>,
    pub(crate) windows: Vec<Window>,
    pub(crate) fence_history: Vec<FenceRecord>,
    /// The whole status as text (`Cluster.StatusJson`).
    pub(crate) json: String,
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn number(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or_default()
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn small(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Snapshot {
    pub(crate) fn from_status(v: &Value) -> Snapshot {
        let peer = v.get("peer").unwrap_or(&Value::Null);
        let links = list(v, "links")
            .map(|l| Link {
                id: small(number(l, "id")),
                local: text(l, "local"),
                peer: text(l, "peer"),
                up: l.get("up").and_then(Value::as_bool).unwrap_or(false),
            })
            .collect();
        let windows = list(v, "windows")
            .map(|w| Window {
                id: text(w, "id"),
                domain: text(w, "domain"),
            })
            .collect();
        let fence_history = list(v, "fence_history")
            .map(|r| FenceRecord {
                unix_ms: number(r, "unix_ms"),
                node: text(r, "node"),
                level: small(number(r, "level")),
                kind: text(r, "kind"),
                device: text(r, "device"),
                action: text(r, "action"),
                duration_ms: number(r, "duration_ms"),
                result: text(r, "result"),
            })
            .collect();
        Snapshot {
            node: text(v, "node"),
            peer: text(peer, "name"),
            boot: text(v, "boot"),
            peer_state: text(peer, "state"),
            peer_since: number(peer, "since_unix_ms"),
            arbiter: text(v, "arbiter"),
            control_connected: v
                .get("control")
                .and_then(|c| c.get("connected"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            links,
            windows,
            fence_history,
            json: v.to_string(),
        }
    }

    /// The domains that get an object: today those with an open migration window,
    /// the only domains the status names.
    // TODO(core): once the status lists every domain the core knows (with where it
    // runs and its resources), publish all of them here.
    pub(crate) fn domains(&self) -> BTreeSet<String> {
        self.windows
            .iter()
            .filter(|w| !w.domain.is_empty())
            .map(|w| w.domain.clone())
            .collect()
    }

    /// The id of `domain`'s open window, or "".
    pub(crate) fn window_of(&self, domain: &str) -> String {
        self.windows
            .iter()
            .find(|w| w.domain == domain)
            .map(|w| w.id.clone())
            .unwrap_or_default()
    }
}

/// The event's kind: the name of the core's `Event` variant that starts the
/// status record's `event` text (`FenceRoundFailed { round: 1, .. }`).
pub(crate) fn event_kind(record: &Value) -> &str {
    let e = record.get("event").and_then(Value::as_str).unwrap_or_default();
    let end = e
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(e.len());
    &e[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_status_file_format() {
        let v = json!({
            "version": 1, "node": "alpha", "boot": "1f",
            "peer": {"name": "beta", "state": "unknown", "since_unix_ms": 5},
            "links": [{"id": 0, "local": "127.0.0.1:5405", "peer": "127.0.0.2:5405", "up": false, "rtt_ms": null}],
            "control": {"connected": false},
            "arbiter": "idle",
            "windows": [{"id": "w1", "domain": "vm-1"}],
            "fence_history": [{"unix_ms": 9, "node": "beta", "level": 1, "kind": "ipmi", "device": "bmc",
                               "action": "off", "duration_ms": 30, "result": "off"}],
        });
        let s = Snapshot::from_status(&v);
        assert_eq!(
            (s.node.as_str(), s.peer.as_str(), s.boot.as_str()),
            ("alpha", "beta", "1f")
        );
        assert_eq!((s.peer_state.as_str(), s.peer_since), ("unknown", 5));
        assert_eq!(s.links[0].peer, "127.0.0.2:5405");
        assert_eq!(s.fence_history[0].level, 1);
        assert_eq!(s.domains().into_iter().collect::<Vec<_>>(), ["vm-1"]);
        assert_eq!(s.window_of("vm-1"), "w1");
        assert_eq!(s.window_of("other"), "");
    }

    #[test]
    fn odd_status_reads_as_empty() {
        for v in [
            json!(null),
            json!([]),
            json!({"peer": 3, "links": {"x": 1}, "windows": [7]}),
        ] {
            let s = Snapshot::from_status(&v);
            assert_eq!(s.node, "");
            assert!(s.links.is_empty());
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(
            event_kind(&json!({"event": "FenceRoundFailed { round: 1 }"})),
            "FenceRoundFailed"
        );
        assert_eq!(event_kind(&json!({"event": "PeerLost"})), "PeerLost");
        assert_eq!(event_kind(&json!({})), "");
    }
}
