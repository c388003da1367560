//! The shared state of the two test hosts' DRBD, in `$TANDEM_DRBD_STATE`:
//!
//! - `state.json`: every resource's configuration and both nodes' state;
//!   replaced atomically (write + rename) so readers without the lock never see
//!   half a file;
//! - `lock`: `flock(2)`ed around every read-modify-write, so invocations from
//!   the two hosts serialize the way DRBD's cluster-wide state changes do;
//! - `history.jsonl`: one JSON object per line for every role, connection,
//!   disk, net-option, handler and refusal event, with both nodes' state after
//!   it, for checking invariants afterwards;
//! - `proc-drbd-0`, `proc-drbd-1`: each node's /proc/drbd (8.4 format), kept
//!   current after every change.

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("TANDEM_DRBD_STATE is not set: the stand-in needs its state directory")]
    NoStateDir,
    #[error("TANDEM_DRBD_NODE must be 0 or 1 (got {0:?})")]
    BadNode(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a stand-in state file: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: cannot lock: {errno}")]
    Lock { path: PathBuf, errno: nix::errno::Errno },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How DRBD reacts to losing the peer (`net { fencing ...; }` in DRBD 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fencing {
    DontCare,
    ResourceOnly,
    ResourceAndStonith,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResConfig {
    /// Minor of volume 0; volume v has minor + v.
    pub minor: u32,
    pub volumes: u32,
    /// Host names of node 0 and node 1 (`on NAME { node-id N; }`).
    pub hosts: [String; 2],
    /// `ip:port` of node 0 and node 1.
    pub addresses: [String; 2],
    pub fencing: Fencing,
    /// The fence-peer handler of each node (`handlers { fence-peer "..."; }`).
    pub fence_peer: [Option<String>; 2],
}

/// Something holding the device open (a hypervisor's qemu): demote is
/// refused with `(-12) Device is held open by someone` while one is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub name: String,
    /// Held while this process lives; `None`: until `unhold`.
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub role: String,
    pub disk: String,
    /// What this node knows of the peer's disk: the peer's real disk while
    /// connected, `DUnknown` after the connection broke, `Outdated` or
    /// `Inconsistent` once a fence-peer handler said so.
    pub peer_disk: String,
    /// StandAlone, Connecting or Connected.
    pub cstate: String,
    /// False after `disconnect` (or a refused handshake): StandAlone until `connect`.
    pub want_connect: bool,
    pub protocol: String,
    pub allow_two_primaries: bool,
    /// I/O frozen by `fencing resource-and-stonith` until the handler answers.
    pub suspended_fencing: bool,
    pub holders: Vec<Holder>,
    /// Data generation (DRBD's current UUID): changes when this node writes
    /// without its peer. Both changed since the last connection = split brain.
    pub generation: u64,
    pub generation_at_connect: u64,
}

impl NodeState {
    pub fn fresh() -> Self {
        NodeState {
            role: "Secondary".into(),
            disk: "UpToDate".into(),
            peer_disk: "UpToDate".into(),
            cstate: "Connected".into(),
            want_connect: true,
            protocol: "C".into(),
            allow_two_primaries: false,
            suspended_fencing: false,
            holders: Vec::new(),
            generation: 1,
            generation_at_connect: 1,
        }
    }

    pub fn connected(&self) -> bool {
        self.cstate == "Connected"
    }

    pub fn primary(&self) -> bool {
        self.role == "Primary"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub config: ResConfig,
    /// The replication link (`net-cut`/`net-heal`).
    pub link_up: bool,
    /// Bumped at every connect and disconnect: a fence-peer answer that arrives
    /// after the connection came back (and maybe went again) is ignored, as
    /// DRBD ignores it (`last_reconnect_jif`).
    pub conn_epoch: u64,
    pub nodes: [NodeState; 2],
}

/// A user-mode helper call, kept for `events2` (`call helper`/`response helper`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperRecord {
    pub seq: u64,
    pub node: usize,
    pub resource: String,
    pub helper: String,
    /// The wait status (exit code << 8) once it returned.
    pub status: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Bumped by every change; followers compare it.
    pub seq: u64,
    pub resources: BTreeMap<String, Resource>,
    #[serde(default)]
    pub helpers: Vec<HelperRecord>,
}

/// How many helper records events2 followers can still catch up on.
const HELPERS_KEPT: usize = 64;

impl State {
    pub fn helper(&mut self, node: usize, resource: &str, helper: &str, status: Option<i32>) {
        self.seq += 1;
        self.helpers.push(HelperRecord {
            seq: self.seq,
            node,
            resource: resource.to_owned(),
            helper: helper.to_owned(),
            status,
        });
        let excess = self.helpers.len().saturating_sub(HELPERS_KEPT);
        self.helpers.drain(..excess);
    }
}

/// The state directory, from `TANDEM_DRBD_STATE`.
pub fn state_dir() -> Result<PathBuf, StateError> {
    std::env::var_os("TANDEM_DRBD_STATE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .ok_or(StateError::NoStateDir)
}

/// This invocation's node, from `TANDEM_DRBD_NODE`.
pub fn node_from_env() -> Result<usize, StateError> {
    let v = std::env::var("TANDEM_DRBD_NODE").unwrap_or_default();
    match v.as_str() {
        "0" => Ok(0),
        "1" => Ok(1),
        _ => Err(StateError::BadNode(v)),
    }
}

/// The locked state: changes are written back by [`Locked::commit`]; dropping
/// without commit discards them. The lock is released on drop.
#[derive(Debug)]
pub struct Locked {
    dir: PathBuf,
    _lock: Flock<File>,
    pub state: State,
    history: Vec<serde_json::Value>,
}

pub fn lock(dir: &Path) -> Result<Locked, StateError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let lock_path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| StateError::Lock {
        path: lock_path.clone(),
        errno,
    })?;
    let state = read(dir)?.unwrap_or_default();
    Ok(Locked {
        dir: dir.to_path_buf(),
        _lock: lock,
        state,
        history: Vec::new(),
    })
}

/// Reads `state.json` without the lock (it is only ever replaced whole).
pub fn read(dir: &Path) -> Result<Option<State>, StateError> {
    let path = dir.join("state.json");
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StateError::Json { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::Io { path, source: e }),
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Locked {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues a history line: `event` plus `fields`, with the resource's state
    /// after the change, written at commit.
    pub fn record(&mut self, resource: &str, node: Option<usize>, event: &str, fields: serde_json::Value) {
        let mut line = serde_json::json!({
            "t_ms": now_ms(),
            "resource": resource,
            "node": node,
            "event": event,
        });
        if let (Some(obj), serde_json::Value::Object(extra)) = (line.as_object_mut(), fields) {
            obj.extend(extra);
        }
        if let (Some(obj), Some(res)) = (line.as_object_mut(), self.state.resources.get(resource)) {
            obj.insert("after".into(), snapshot(res));
        }
        self.history.push(line);
    }

    /// Writes state, history and the /proc/drbd files.
    pub fn commit(mut self) -> Result<(), StateError> {
        self.state.seq += 1;
        let path = self.dir.join("state.json");
        let tmp = self.dir.join("state.json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(|source| StateError::Json {
            path: path.clone(),
            source,
        })?;
        fs::write(&tmp, bytes).map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        if !self.history.is_empty() {
            let hpath = self.dir.join("history.jsonl");
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&hpath)
                .map_err(io(&hpath))?;
            let mut text = String::new();
            for h in self.history.drain(..) {
                text.push_str(&h.to_string());
                text.push('\n');
            }
            f.write_all(text.as_bytes()).map_err(io(&hpath))?;
        }
        for node in 0..2 {
            let p = self.dir.join(format!("proc-drbd-{node}"));
            let text = crate::render::proc_drbd(&self.state, node);
            // Most changes leave /proc/drbd as it was; a rename costs a journal commit.
            if fs::read_to_string(&p).is_ok_and(|old| old == text) {
                continue;
            }
            let t = self.dir.join(format!("proc-drbd-{node}.tmp"));
            fs::write(&t, text).map_err(io(&t))?;
            fs::rename(&t, &p).map_err(io(&p))?;
        }
        Ok(())
    }
}

/// Both nodes' state as one JSON object, for history lines.
pub fn snapshot(res: &Resource) -> serde_json::Value {
    let n = &res.nodes;
    serde_json::json!({
        "roles": [n[0].role, n[1].role],
        "disks": [n[0].disk, n[1].disk],
        "cstates": [n[0].cstate, n[1].cstate],
        "connected": n[0].connected() && n[1].connected(),
        "allow_two_primaries": [n[0].allow_two_primaries, n[1].allow_two_primaries],
        "protocol": [n[0].protocol, n[1].protocol],
        "suspended": [n[0].suspended_fencing, n[1].suspended_fencing],
        "link_up": res.link_up,
    })
}

/// Whether a process still runs (holders with a pid are released when it
/// exits). A zombie has closed its files already, so it counts as gone.
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "PID (comm) S ...": the state letter follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}
