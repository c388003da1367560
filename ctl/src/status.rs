//! `tandemctl status`: the daemon's status document (docs/status-json.md) as
//! one screen. Pure: a document in, text out; a field a daemon does not send
//! shows as "?" rather than failing, so an older or newer daemon still gives
//! a screen.

use serde_json::Value;
use std::fmt::Write;

/// How many of the most recent events the screen shows.
const EVENTS_SHOWN: usize = 8;

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("?")
}

fn n(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    }
}

/// `HH:MM:SS` (UTC) of a unix time in milliseconds.
pub fn clock(unix_ms: u64) -> String {
    let secs = unix_ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// A duration in words a person reads at a glance.
fn ago(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1000..=119_999 => format!("{} s", ms / 1000),
        120_000..=7_199_999 => format!("{} min", ms / 60_000),
        _ => format!("{} h", ms / 3_600_000),
    }
}

/// Left-aligned columns, two spaces apart, under a header.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut line = |cells: Vec<String>| {
        let mut l = String::from("  ");
        for (i, c) in cells.iter().enumerate() {
            let w = width.get(i).copied().unwrap_or(0);
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn dropped(link: &Value) -> u64 {
    link.get("drops")
        .and_then(Value::as_object)
        .map_or(0, |d| d.values().filter_map(Value::as_u64).sum())
}

/// The status screen of document `v`.
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    let now = n(v, "unix_ms").unwrap_or(0);
    let standby = |key: &str| match v.get(key).and_then(Value::as_bool) {
        Some(true) => " · STANDBY (draining)",
        _ => "",
    };
    let _ = writeln!(
        out,
        "Node    {} (this host, boot {}){}",
        s(v, "node"),
        s(v, "boot"),
        standby("standby")
    );
    let peer = v.get("peer").unwrap_or(&Value::Null);
    let since = n(peer, "since_unix_ms")
        .map(|t| format!(" since {} ({} ago)", clock(t), ago(now.saturating_sub(t))))
        .unwrap_or_default();
    let peer_note = match s(peer, "state") {
        "unknown" => " · not seen since tandemd started: nothing that may run there starts here (wait-for-all)",
        "lost" => " · silent on every link: being fenced before anything is taken over",
        "fenced" => " · powered off by a fence device; its domains run here",
        _ => "",
    };
    let _ = writeln!(
        out,
        "Peer    {}: {}{since}{}{peer_note}",
        s(peer, "name"),
        s(peer, "state"),
        standby("peer_standby")
    );

    out.push_str("\nLinks\n");
    let links: Vec<Vec<String>> = list(v, "links")
        .iter()
        .map(|l| {
            vec![
                n(l, "id").map_or("?".into(), |i| i.to_string()),
                format!("{} -> {}", s(l, "local"), s(l, "peer")),
                if l.get("up").and_then(Value::as_bool) == Some(true) {
                    "up"
                } else {
                    "DOWN"
                }
                .into(),
                l.get("rtt_ms")
                    .and_then(Value::as_f64)
                    .map_or("-".into(), |r| format!("{r:.2} ms")),
                n(l, "last_seen_ms_ago").map_or("never".into(), ago),
                format!("{}/{}", n(l, "sent").unwrap_or(0), n(l, "received").unwrap_or(0)),
                dropped(l).to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "ID",
            "ADDRESSES",
            "STATE",
            "RTT",
            "LAST HEARD",
            "SENT/RECEIVED",
            "DROPPED",
        ],
        &links,
    );
    let control = v.get("control").unwrap_or(&Value::Null);
    let _ = writeln!(
        out,
        "  control channel: {}",
        match (control.get("connected").and_then(Value::as_bool), n(control, "link")) {
            (Some(true), Some(l)) => format!("connected over link {l}, {} queued", n(control, "queued").unwrap_or(0)),
            (Some(true), None) => "connected".into(),
            _ => "not connected".into(),
        }
    );

    let arbiter = s(v, "arbiter");
    let fencing = match arbiter {
        "idle" => "idle".to_owned(),
        "fence-delay" => "waiting this node's fence delay before fencing the peer".to_owned(),
        "fencing" => "FENCING the peer now".to_owned(),
        "fence-backoff" => "fencing FAILED, retrying (no takeover until a device confirms power off)".to_owned(),
        "fenced" => "peer confirmed off".to_owned(),
        other => other.to_owned(),
    };
    let _ = writeln!(out, "\nFencing {fencing}");
    let history = list(v, "fence_history");
    if let Some(last) = history.last() {
        let _ = writeln!(
            out,
            "  last attempt: {} {} {} via level {} {} {} at {} ({} ms)",
            s(last, "action"),
            s(last, "node"),
            s(last, "result"),
            n(last, "level").unwrap_or(0),
            s(last, "kind"),
            s(last, "device"),
            n(last, "unix_ms").map_or("?".into(), clock),
            n(last, "duration_ms").unwrap_or(0)
        );
        let failed = history.iter().filter(|r| s(r, "result").starts_with("error")).count();
        if failed > 0 {
            let _ = writeln!(
                out,
                "  failed attempts on record: {failed} (`tandemctl cleanup` forgets them)"
            );
        }
    }

    out.push_str("\nResources\n");
    let resources: Vec<Vec<String>> = list(v, "resources")
        .iter()
        .map(|r| {
            vec![
                s(r, "name").into(),
                s(r, "role").into(),
                s(r, "disk").into(),
                s(r, "peer_role").into(),
                s(r, "peer_disk").into(),
                yes_no(r.get("connected").and_then(Value::as_bool)).into(),
            ]
        })
        .collect();
    if resources.is_empty() {
        out.push_str("  none\n");
    } else {
        table(
            &mut out,
            &["NAME", "ROLE", "DISK", "PEER ROLE", "PEER DISK", "CONNECTED"],
            &resources,
        );
    }

    out.push_str("\nDomains\n");
    let me = s(v, "node");
    let peer_name = s(peer, "name");
    let domains: Vec<Vec<String>> = list(v, "domains")
        .iter()
        .map(|d| {
            let here = s(d, "here");
            let on_peer = d.get("on_peer").and_then(Value::as_bool);
            let runs_on = match (here, on_peer) {
                ("running", Some(true)) => format!("{me} and {peer_name}?"),
                ("running", _) => me.to_owned(),
                ("paused", Some(true)) => format!("{peer_name} (incoming here)"),
                ("paused", _) => format!("{me} (paused)"),
                (_, Some(true)) => peer_name.to_owned(),
                (_, Some(false)) => "-".to_owned(),
                (_, None) => "- (peer not online)".to_owned(),
            };
            let mut note = Vec::new();
            match crate::progress::of(v, s(d, "name")) {
                Some((done, left)) => note.push(format!("migrating, {}%", crate::progress::percent(done, left))),
                None if d.get("migrating").and_then(Value::as_bool) == Some(true) => note.push("migrating".to_owned()),
                None => {}
            }
            if let Some(t) = d.get("takeover").filter(|t| !t.is_null()) {
                let mut w = format!("taking over: {}", s(t, "stage"));
                if let Some(e) = t.get("last_error").and_then(Value::as_str) {
                    let _ = write!(w, ", last error: {e}");
                }
                note.push(w);
            }
            let resources: Vec<&str> = list(d, "resources").iter().filter_map(Value::as_str).collect();
            vec![s(d, "name").into(), runs_on, resources.join(","), note.join("; ")]
        })
        .collect();
    if domains.is_empty() {
        out.push_str("  none\n");
    } else {
        table(&mut out, &["NAME", "RUNS ON", "RESOURCES", "NOTE"], &domains);
    }

    let windows = list(v, "windows");
    if windows.is_empty() {
        out.push_str("\nMigration windows: none open\n");
    } else {
        out.push_str("\nMigration windows (DRBD dual-primary)\n");
        for w in windows {
            let _ = writeln!(out, "  {} for {}", s(w, "id"), s(w, "domain"));
        }
    }

    let failures = list(v, "failures");
    if !failures.is_empty() {
        out.push_str("\nFailures (`tandemctl cleanup` forgets them and retries)\n");
        for f in failures {
            let _ = writeln!(out, "  {}: {}", s(f, "domain"), s(f, "reason"));
        }
    }

    let events = list(v, "events");
    if !events.is_empty() {
        out.push_str("\nRecent events\n");
        for e in &events[events.len().saturating_sub(EVENTS_SHOWN)..] {
            let _ = writeln!(
                out,
                "  {}  {}",
                n(e, "unix_ms").map_or("?".into(), clock),
                s(e, "event")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "version": 1,
            "unix_ms": 1_795_324_985_436_u64,
            "node": "alpha",
            "boot": "c93b1dadc0267c1b",
            "peer": {"name": "beta", "state": "online", "since_unix_ms": 1_795_324_980_436_u64},
            "standby": false,
            "peer_standby": true,
            "links": [
                {"id": 0, "local": "192.0.2.1:5405", "peer": "192.0.2.2:5405", "up": true,
                 "last_seen_ms_ago": 120, "rtt_ms": 0.41, "sent": 50, "received": 49,
                 "drops": {"garbage": 2, "replayed": 1}},
                {"id": 1, "local": "198.51.100.1:5405", "peer": "198.51.100.2:5405", "up": false,
                 "last_seen_ms_ago": null, "rtt_ms": null, "sent": 50, "received": 0, "drops": {}}
            ],
            "control": {"connected": true, "link": 0, "queued": 0},
            "arbiter": "idle",
            "resources": [{"name": "r0", "role": "Primary", "disk": "UpToDate", "connected": true,
                           "peer_role": "Secondary", "peer_disk": "UpToDate"}],
            "domains": [
                {"name": "vm1", "here": "running", "on_peer": false, "resources": ["r0"], "migrating": false, "takeover": null},
                {"name": "vm2", "here": "stopped", "on_peer": true, "resources": ["r1"], "migrating": false,
                 "takeover": null}
            ],
            "failures": [{"domain": "vm3", "reason": "resource r2 is Outdated here"}],
            "windows": [{"id": "1-beef-1", "domain": "vm2"}],
            "events": [{"unix_ms": 1_795_324_980_436_u64, "event": "PeerOnline { rejoined_after_fence: false }"}],
            "fence_history": [{"unix_ms": 1_795_324_970_000_u64, "node": "beta", "level": 1, "kind": "ipmi",
                               "device": "127.0.0.1:6231", "action": "off", "duration_ms": 64,
                               "result": "error: no answer within 1000 ms"}]
        })
    }

    #[test]
    fn the_screen_shows_what_an_operator_looks_for() {
        let text = render(&sample());
        for expected in [
            "Node    alpha (this host, boot c93b1dadc0267c1b)",
            "Peer    beta: online since 05:23:00 (5 s ago) · STANDBY (draining)",
            "192.0.2.1:5405 -> 192.0.2.2:5405",
            "0.41 ms",
            "DOWN",
            "connected over link 0",
            "Fencing idle",
            "last attempt: off beta error: no answer within 1000 ms via level 1 ipmi 127.0.0.1:6231",
            "failed attempts on record: 1",
            "r0    Primary  UpToDate  Secondary  UpToDate   yes",
            "vm1   alpha",
            "vm2   beta",
            "1-beef-1 for vm2",
            "vm3: resource r2 is Outdated here",
            "05:23:00  PeerOnline",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        // Link 0 dropped three packets.
        let link0 = text.lines().find(|l| l.contains("192.0.2.1:5405")).unwrap();
        assert!(link0.trim_end().ends_with('3'), "{link0}");
    }

    #[test]
    fn an_empty_or_foreign_document_still_renders() {
        let text = render(&json!({}));
        assert!(text.contains("Peer    ?: ?"), "{text}");
        assert!(text.contains("Resources\n  none"), "{text}");
        let text = render(&json!({"links": "nonsense", "domains": [42]}));
        assert!(text.contains("Domains"), "{text}");
    }

    #[test]
    fn a_lost_peer_says_what_happens_next() {
        let mut v = sample();
        v["peer"]["state"] = json!("lost");
        v["arbiter"] = json!("fence-backoff");
        let text = render(&v);
        assert!(text.contains("being fenced before anything is taken over"), "{text}");
        assert!(text.contains("fencing FAILED, retrying"), "{text}");
    }

    #[test]
    fn clock_and_ages() {
        assert_eq!(clock(0), "00:00:00");
        assert_eq!(clock(86_399_999), "23:59:59");
        assert_eq!(ago(999), "999 ms");
        assert_eq!(ago(61_000), "61 s");
        assert_eq!(ago(3_600_000), "60 min");
    }
}
