//! Reading the daemon's status file and waiting for conditions on it.
//!
//! The status file is JSON, rewritten atomically by `tandemd` (see the daemon's
//! `--status-file`). These helpers read the fields the tests check and never
//! panic on a file that lacks them: a missing field reads as `None`.

use crate::lab::Node;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The names of the drop counters in `links[i].drops`.
pub const DROP_KINDS: [&str; 9] = [
    "truncated",
    "oversized",
    "garbage",
    "bad_version",
    "bad_auth",
    "replayed",
    "wrong_sender",
    "wrong_link",
    "overflow",
];

/// Reads and parses a status file.
pub fn read_status(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read status file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("status file {} is not JSON: {text:?}", path.display()))
}

/// Calls `condition` every `poll` until it returns true; how long that took.
/// Fails once `timeout` passed without it holding.
pub fn wait_for<F: FnMut() -> bool>(timeout: Duration, poll: Duration, mut condition: F) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if condition() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            bail!("condition not met within {timeout:?}");
        }
        std::thread::sleep(poll);
    }
}

/// Milliseconds since the Unix epoch, as the status file's `unix_ms`.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `peer.state`: "unknown", "online", "lost" or "fenced".
pub fn peer_state(v: &Value) -> Option<&str> {
    v.pointer("/peer/state")?.as_str()
}

/// `peer.since_unix_ms`.
pub fn peer_since(v: &Value) -> Option<u64> {
    v.pointer("/peer/since_unix_ms")?.as_u64()
}

/// `links[link]`.
pub fn link(v: &Value, link: usize) -> Option<&Value> {
    v.get("links")?.as_array()?.get(link)
}

/// Number of entries in `links`.
pub fn link_count(v: &Value) -> usize {
    v.get("links").and_then(Value::as_array).map_or(0, Vec::len)
}

/// `links[link].up`.
pub fn link_up(v: &Value, link_id: usize) -> Option<bool> {
    link(v, link_id)?.get("up")?.as_bool()
}

/// Every link listed and up.
pub fn all_links_up(v: &Value, expected: usize) -> bool {
    link_count(v) == expected && (0..expected).all(|i| link_up(v, i) == Some(true))
}

/// `links[link].drops`, every counter present as a number.
pub fn drops(v: &Value, link_id: usize) -> Option<BTreeMap<String, u64>> {
    let obj = link(v, link_id)?.get("drops")?.as_object()?;
    obj.iter().map(|(k, n)| Some((k.clone(), n.as_u64()?))).collect()
}

/// One drop counter of a link (0 when the status lacks it).
pub fn drop_count(v: &Value, link_id: usize, kind: &str) -> u64 {
    link(v, link_id)
        .and_then(|l| l.pointer(&format!("/drops/{kind}")))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// `control.connected`.
pub fn control_connected(v: &Value) -> Option<bool> {
    v.pointer("/control/connected")?.as_bool()
}

/// `control.link`, when connected.
pub fn control_link(v: &Value) -> Option<u64> {
    v.pointer("/control/link")?.as_u64()
}

/// One entry of `events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub unix_ms: u64,
    pub event: String,
}

/// `events`, in file order.
pub fn events(v: &Value) -> Vec<Event> {
    let Some(list) = v.get("events").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            Some(Event {
                unix_ms: e.get("unix_ms")?.as_u64()?,
                event: e.get("event")?.as_str()?.to_owned(),
            })
        })
        .collect()
}

impl Event {
    /// The event's kind: its leading name, without any details
    /// (`PeerOnline { boot: 5 }` is of kind `PeerOnline`).
    pub fn kind(&self) -> &str {
        let end = self
            .event
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.event.len());
        &self.event[..end]
    }
}

/// Events of kind `kind` (e.g. "PeerLost"), at or after `since_unix_ms`.
pub fn events_named(v: &Value, kind: &str, since_unix_ms: u64) -> Vec<Event> {
    events(v)
        .into_iter()
        .filter(|e| e.kind() == kind && e.unix_ms >= since_unix_ms)
        .collect()
}

/// What a [`PeerWatch`] saw in one status file at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub node: Node,
    /// When it was read (this process's clock).
    pub unix_ms: u64,
    /// `peer.state`, or why the file could not be read.
    pub peer_state: Result<String, String>,
    pub links_up: Vec<Option<bool>>,
}

/// Reads status files on a background thread at a fixed pace and keeps every
/// sample, so a test can check a property held *throughout* (say, the peer
/// never showed lost), not just at the end.
#[derive(Debug)]
pub struct PeerWatch {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Sample>>>,
}

impl PeerWatch {
    /// Starts reading `files` every `every`.
    pub fn start(files: Vec<(Node, PathBuf)>, every: Duration) -> PeerWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                for (node, path) in &files {
                    let (peer_state, links_up) = match read_status(path) {
                        Ok(v) => (
                            peer_state(&v)
                                .map(str::to_owned)
                                .ok_or_else(|| "no peer.state".to_owned()),
                            (0..link_count(&v)).map(|i| link_up(&v, i)).collect(),
                        ),
                        Err(e) => (Err(format!("{e:#}")), Vec::new()),
                    };
                    samples.push(Sample {
                        node: *node,
                        unix_ms: unix_ms_now(),
                        peer_state,
                        links_up,
                    });
                }
                std::thread::sleep(every);
            }
            samples
        });
        PeerWatch {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the thread; every sample taken.
    pub fn stop(mut self) -> Vec<Sample> {
        self.finish()
    }

    fn finish(&mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

impl Drop for PeerWatch {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A one-line summary of a status, for logs and failure messages.
pub fn summary(v: &Value) -> String {
    let mut s = format!("peer={} links=[", peer_state(v).unwrap_or("?"),);
    for i in 0..link_count(v) {
        let up = match link_up(v, i) {
            Some(true) => "up",
            Some(false) => "down",
            None => "?",
        };
        let seen = link(v, i)
            .and_then(|l| l.get("last_seen_ms_ago"))
            .map_or_else(|| "-".to_owned(), Value::to_string);
        s.push_str(&format!("{}{i}:{up}({seen}ms)", if i > 0 { " " } else { "" }));
    }
    s.push_str(&format!(
        "] control={}/{} arbiter={}",
        control_connected(v).map_or("?", |c| if c { "connected" } else { "down" }),
        control_link(v).map_or_else(|| "-".to_owned(), |l| l.to_string()),
        v.get("arbiter").and_then(Value::as_str).unwrap_or("?")
    ));
    s
}
