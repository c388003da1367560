//! The status file: what this daemon knows, as versioned JSON, rewritten
//! atomically on every change and at least every 200 ms. `tandemctl status`
//! and the tests read it; the D-Bus API will carry the same data.

use crate::config::Config;
use crate::core::{ArbiterPhase, Core, Event, NodeId, PeerState};
use crate::fence::FenceHistory;
use crate::hypervisor::MigrationBoard;
use crate::net::{ControlStatus, LinkStats};
use crate::state::write_atomic;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Events kept for `status`.
const EVENTS_KEPT: usize = 100;

#[derive(Debug)]
pub struct StatusFile {
    /// Where the JSON is written, if anywhere (`--status-file`).
    path: Option<PathBuf>,
    node: String,
    peer: String,
    boot: u64,
    events: VecDeque<(u64, String)>,
    peer_since: u64,
    /// The running configuration's files and timings, and the last reload.
    config: Value,
    /// How far tandem's migrations have got (`domains[].migration`).
    migrations: MigrationBoard,
}

pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn peer_word(s: PeerState) -> &'static str {
    match s {
        PeerState::Unknown => "unknown",
        PeerState::Online => "online",
        PeerState::Lost { .. } => "lost",
        PeerState::Fenced { .. } => "fenced",
    }
}

fn arbiter_word(p: ArbiterPhase) -> &'static str {
    match p {
        ArbiterPhase::Idle => "idle",
        ArbiterPhase::Delay { .. } => "fence-delay",
        ArbiterPhase::Fencing { .. } => "fencing",
        ArbiterPhase::Backoff { .. } => "fence-backoff",
        ArbiterPhase::Fenced { .. } => "fenced",
    }
}

impl StatusFile {
    pub fn new(path: Option<PathBuf>, cfg: &Config, me: NodeId, boot: u64) -> Self {
        StatusFile {
            path,
            node: cfg.node(me).name.clone(),
            peer: cfg.node(me.other()).name.clone(),
            boot,
            events: VecDeque::new(),
            peer_since: unix_ms(),
            config: config_json(cfg, me, 0, Value::Null),
            migrations: MigrationBoard::default(),
        }
    }

    /// Shows the progress of the migrations the driver reports on `board`.
    pub fn with_migrations(mut self, board: MigrationBoard) -> Self {
        self.migrations = board;
        self
    }

    fn domains(&self, core: &Core) -> Vec<Value> {
        core.domain_views()
            .into_iter()
            .map(|d| {
                let progress = self.migrations.get(&d.name);
                let mut v = json!(d);
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("migration".into(), json!(progress));
                }
                v
            })
            .collect()
    }

    /// The configuration now running, after reload number `reloads` that
    /// ended as `last_reload` says.
    pub fn set_config(&mut self, cfg: &Config, me: NodeId, reloads: u64, last_reload: Value) {
        self.config = config_json(cfg, me, reloads, last_reload);
    }

    /// Records an event; returns it as status shows it.
    pub fn event(&mut self, e: &Event) -> Value {
        let now = unix_ms();
        if matches!(e, Event::PeerOnline { .. } | Event::PeerLost | Event::FenceConfirmed) {
            self.peer_since = now;
        }
        let name = format!("{e:?}");
        let record = json!({"unix_ms": now, "event": name});
        self.events.push_back((now, name));
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
        record
    }

    fn render(&self, core: &Core, links: &[LinkStats], control: &ControlStatus, fences: &FenceHistory) -> Value {
        let core_links = core.membership().links();
        let links: Vec<Value> = links
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let d = &l.drops;
                json!({
                    "id": i,
                    "local": l.local.to_string(),
                    "peer": l.peer.to_string(),
                    "up": core_links.get(i).is_some_and(|c| c.up),
                    "last_seen_ms_ago": l.last_seen.map(|t| t.elapsed().as_millis() as u64),
                    "rtt_ms": l.rtt_ms,
                    "sent": l.sent,
                    "received": l.received,
                    "drops": {
                        "truncated": d.truncated, "oversized": d.oversized, "garbage": d.garbage,
                        "bad_version": d.bad_version, "bad_auth": d.bad_auth, "replayed": d.replayed,
                        "wrong_sender": d.wrong_sender, "wrong_link": d.wrong_link, "overflow": d.overflow,
                        "unproven": d.unproven,
                    },
                })
            })
            .collect();
        let events: Vec<Value> = self
            .events
            .iter()
            .map(|(t, e)| json!({"unix_ms": t, "event": e}))
            .collect();
        let fences: Vec<Value> = fences
            .records()
            .iter()
            .map(|r| {
                json!({
                    "unix_ms": r.at_unix_ms,
                    "node": r.node,
                    "level": r.level,
                    "kind": r.kind,
                    "device": r.device,
                    "action": r.action.as_str(),
                    "duration_ms": r.duration_ms,
                    "result": match &r.result {
                        Ok(state) => format!("{state:?}").to_lowercase(),
                        Err(e) => format!("error: {e}"),
                    },
                })
            })
            .collect();
        json!({
            "version": 1,
            "node": self.node,
            "boot": format!("{:x}", self.boot),
            "peer": {
                "name": self.peer,
                "state": peer_word(core.peer_state()),
                "since_unix_ms": self.peer_since,
            },
            "links": links,
            "control": {
                "connected": control.connected,
                "link": control.link.map(|l| l.0),
                "queued": control.queued,
                "handshake_failures": control.counters.handshake_failures,
                "refused": control.counters.refused,
            },
            "arbiter": arbiter_word(core.arbiter_phase()),
            "standby": core.standby(),
            "peer_standby": core.peer_standby(),
            "resources": core.resource_views(),
            "domains": self.domains(core),
            "failures": core.failure_views(),
            "windows": core.open_windows().map(|(id, d)| json!({"id": id.to_string(), "domain": d.0})).collect::<Vec<_>>(),
            "events": events,
            "fence_history": fences,
            "config": self.config,
        })
    }

    /// Renders the status and rewrites the file, if there is one.
    pub fn update(
        &mut self,
        core: &Core,
        links: &[LinkStats],
        control: &ControlStatus,
        fences: &FenceHistory,
    ) -> Value {
        let mut v = self.render(core, links, control, fences);
        // last_seen_ms_ago changes on every call; the file is rewritten anyway
        // every tick so readers see fresh ages.
        if let Some(obj) = v.as_object_mut() {
            obj.insert("unix_ms".into(), json!(unix_ms()));
        }
        if let Some(path) = &self.path {
            match serde_json::to_vec_pretty(&v) {
                Ok(bytes) => {
                    if let Err(e) = write_atomic(path, &bytes) {
                        tracing::warn!(path = %path.display(), error = %e, "cannot write status file");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot render status"),
            }
        }
        v
    }
}

/// The status file's `config`: what runs, so an operator (and the tests) can
/// see that a reload took effect.
fn config_json(cfg: &Config, me: NodeId, reloads: u64, last_reload: Value) -> Value {
    let t = &cfg.timing;
    json!({
        "files": cfg.sources.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "preferred": cfg.node(cfg.cluster.preferred).name,
        "peer_fence_levels": cfg.node(me.other()).fence.len(),
        "timing": {
            "heartbeat_interval_ms": t.heartbeat_interval_ms,
            "dead_after_ms": t.dead_after_ms,
            "fence_delay_ms": t.fence_delay_ms,
            "fence_timeout_ms": t.fence_timeout_ms,
            "fence_backoff_initial_ms": t.fence_backoff_initial_ms,
            "fence_backoff_max_ms": t.fence_backoff_max_ms,
            "migration_window_s": t.migration_window_s,
            "request_timeout_ms": t.request_timeout_ms,
            "retry_ms": t.retry_ms,
        },
        "reloads": reloads,
        "last_reload": last_reload,
    })
}
