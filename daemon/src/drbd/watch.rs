//! Keeping the observations current: one long-running `drbdsetup events2 all`
//! child (modelled on drbd-reactor's `events.rs`), or a /proc/drbd poll for 8.4.
//!
//! events2 first dumps the current state (`exists ...` lines, ended by `exists
//! -`) and then prints each change, so a restarted child is also a full
//! refresh: when the child dies the fold forgets DRBD's objects, keeps what it
//! reported, and after the new child's dump reports only what really changed
//! meanwhile. The child runs in its own process group and is killed when the
//! task is dropped (the driver was dropped).

use super::driver::{DrbdOptions, StateSource};
use super::fold::{Events2Fold, ObservationChange};
use super::proc_drbd::parse_proc_drbd;
use super::runner::{self, GroupGuard};
use super::{events2::parse_events2_line, fold};
use crate::core::{ResourceName, ResourceObservation};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// What the driver and its watcher task share.
#[derive(Debug)]
pub struct Shared {
    pub drbdadm: PathBuf,
    pub drbdsetup: PathBuf,
    pub resources: Vec<ResourceName>,
    pub opts: DrbdOptions,
    pub observed: watch::Sender<BTreeMap<ResourceName, ResourceObservation>>,
}

/// A child that lived this long was working; its death restarts the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(5);

pub async fn run(shared: Arc<Shared>) {
    match shared.opts.source.clone() {
        StateSource::Events2 => run_events2(&shared).await,
        StateSource::ProcDrbd { path, interval } => run_proc(&shared, path, interval).await,
    }
}

fn publish(shared: &Shared, changes: Vec<ObservationChange>) {
    if changes.is_empty() {
        return;
    }
    for c in &changes {
        info!(resource = %c.resource, old = ?c.old, new = ?c.new, "drbd state changed");
    }
    shared.observed.send_modify(|m| {
        for c in changes {
            m.insert(c.resource, c.new);
        }
    });
}

async fn run_events2(shared: &Shared) {
    let mut fold = Events2Fold::with_resources(shared.resources.iter().cloned());
    let mut delay = shared.opts.restart_delay;
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        let outcome = events2_once(shared, &mut fold).await;
        fold.restart();
        if started.elapsed() >= HEALTHY_RUN {
            delay = shared.opts.restart_delay;
            failures = 0;
        }
        failures += 1;
        // The first failure in a row is news; a host without DRBD would
        // otherwise log the same line every few seconds forever.
        if failures == 1 {
            warn!(drbdsetup = %shared.drbdsetup.display(), outcome = %outcome, retry_ms = delay.as_millis() as u64,
                "drbdsetup events2 ended; restarting for a full refresh");
        } else {
            debug!(outcome = %outcome, failures, "drbdsetup events2 ended again");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RESTART_DELAY);
    }
}

/// Runs one events2 child to its end; returns how it ended, for the log.
async fn events2_once(shared: &Shared, fold: &mut Events2Fold) -> String {
    let args = ["events2".to_owned(), "all".to_owned()];
    let spawned = Command::new(&shared.drbdsetup)
        .args(&args)
        .envs(shared.opts.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return format!("cannot run {}: {e}", runner::display(&shared.drbdsetup, &args)),
    };
    let _group = GroupGuard::new(child.id());
    let stderr = child.stderr.take().map(|e| {
        tokio::spawn(async move {
            let mut lines = BufReader::new(e).lines();
            let mut last = String::new();
            while let Ok(Some(l)) = lines.next_line().await {
                if !l.trim().is_empty() {
                    last = l;
                }
            }
            last
        })
    });
    let Some(stdout) = child.stdout.take() else {
        return "no stdout pipe".to_owned();
    };
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                if line.trim().is_empty() {
                    continue;
                }
                match parse_events2_line(&line) {
                    Ok(ev) => publish(shared, fold.apply(&ev)),
                    // A line we cannot read is logged and skipped: the next
                    // restart's full dump repairs whatever it would have said.
                    Err(e) => warn!(error = %e, "unreadable events2 line"),
                }
            }
            Ok(None) => break,
            Err(e) => {
                warn!(error = %e, "reading events2 output failed");
                break;
            }
        }
    }
    let status = child.wait().await;
    let said = match stderr {
        Some(h) => tokio::time::timeout(Duration::from_millis(200), h)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
        None => String::new(),
    };
    match status {
        Ok(s) => format!(
            "{s}{}",
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        ),
        Err(e) => format!("wait failed: {e}"),
    }
}

/// How often resources whose minors are unknown are looked up again.
const RESOLVE_AGAIN: Duration = Duration::from_secs(5);

async fn run_proc(shared: &Shared, path: PathBuf, interval: Duration) {
    let mut minors: BTreeMap<u32, ResourceName> = BTreeMap::new();
    let mut unresolved: Vec<ResourceName> = shared.resources.clone();
    let mut next_resolve = Instant::now();
    let mut published: BTreeMap<ResourceName, ResourceObservation> = BTreeMap::new();
    let mut complained = false;
    loop {
        if !unresolved.is_empty() && Instant::now() >= next_resolve {
            let mut still = Vec::new();
            for r in unresolved.drain(..) {
                match sh_minor(shared, &r).await {
                    Some(ms) => minors.extend(ms.into_iter().map(|m| (m, r.clone()))),
                    None => still.push(r),
                }
            }
            unresolved = still;
            next_resolve = Instant::now() + RESOLVE_AGAIN;
        }
        match std::fs::read_to_string(&path).map(|t| parse_proc_drbd(&t)) {
            Ok(Ok(proc_drbd)) => {
                complained = false;
                let mut now = proc_drbd.observations(&minors);
                // Not in drbdadm's config (yet): nothing DRBD would let us use.
                now.extend(unresolved.iter().map(|r| (r.clone(), super::types::DOWN)));
                let changes: Vec<ObservationChange> = now
                    .into_iter()
                    .filter_map(|(resource, new)| {
                        let old = published.insert(resource.clone(), new);
                        (old != Some(new)).then_some(fold::ObservationChange { resource, old, new })
                    })
                    .collect();
                publish(shared, changes);
            }
            Ok(Err(e)) if !complained => {
                complained = true;
                warn!(path = %path.display(), error = %e, "unreadable /proc/drbd");
            }
            Err(e) if !complained => {
                complained = true;
                warn!(path = %path.display(), error = %e, "cannot read /proc/drbd");
            }
            _ => {}
        }
        tokio::time::sleep(interval).await;
    }
}

/// A resource's minors from `drbdadm sh-minor R` (one per volume, one per line).
async fn sh_minor(shared: &Shared, r: &ResourceName) -> Option<Vec<u32>> {
    let mut args = Vec::new();
    if let Some(cfg) = &shared.opts.config_file {
        args.push("-c".to_owned());
        args.push(cfg.display().to_string());
    }
    args.push("sh-minor".to_owned());
    args.push(r.0.clone());
    match runner::run(&shared.drbdadm, &args, &shared.opts.env, shared.opts.command_timeout).await {
        Ok(o) if o.success() => Some(o.stdout.split_whitespace().filter_map(|w| w.parse().ok()).collect()),
        Ok(o) => {
            warn!(resource = %r, status = %o.status_text(), stderr = %o.stderr.trim(), "drbdadm sh-minor failed");
            None
        }
        Err(e) => {
            warn!(resource = %r, error = ?e, "drbdadm sh-minor did not run");
            None
        }
    }
}
