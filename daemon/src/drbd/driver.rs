//! [`DrbdDriver`]: the daemon's one handle on DRBD. It carries out the core's
//! [`DrbdOp`]s with drbdadm and reports each managed resource's state as
//! [`ResourceObservation`]s.
//!
//! Command lines (what `drbdadm -d` shows they become is checked in the tests):
//! - promote: `drbdadm [-c FILE] primary R` (operator force: `primary --force R`)
//! - demote: `drbdadm secondary R`, repeated every `demote_retry` while DRBD
//!   answers `(-12) Device is held open by someone` (the hypervisor closes the
//!   device a little after the domain is gone), until `demote_deadline`; then
//!   `secondary --force R` only if `force_demote` allows it (DRBD 9.1+: the
//!   openers get I/O errors).
//! - dual-primary: `drbdadm net-options --protocol=C --allow-two-primaries=yes|no R`.
//!   A runtime change of the net options: DRBD keeps the connection and, when
//!   connected, sends the peer the new setting (its `P_PROTOCOL_UPDATE`), so no
//!   disconnect/reconnect ever happens here.
//! - outdate: `drbdadm outdate R`.

use super::devices::{DeviceMap, Resolved};
use super::error::{parse_failure, DrbdError, OpKind, Refusal, SeenState};
use super::runner::{self, RunError};
use super::status_json::{parse_status_json, StatusResource};
use super::watch::{self, Shared};
use crate::config;
use crate::core::{DrbdOp, ResourceName, ResourceObservation};
use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch as tokio_watch;
use tracing::{debug, info, warn};

/// Where resource state comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSource {
    /// One long-running `drbdsetup events2 all` (DRBD 9, and 8.4.x's
    /// drbdsetup-84 which speaks it too).
    Events2,
    /// Poll an 8.4 `/proc/drbd`-format file; minors are mapped to resources
    /// with `drbdadm sh-minor`.
    ProcDrbd { path: PathBuf, interval: Duration },
}

#[derive(Debug, Clone)]
pub struct DrbdOptions {
    /// Passed to drbdadm as `-c FILE`; `None` uses drbdadm's default.
    pub config_file: Option<PathBuf>,
    /// Any single drbdadm/drbdsetup call is killed after this long.
    pub command_timeout: Duration,
    /// How long a demote keeps retrying while the device is held open.
    pub demote_deadline: Duration,
    pub demote_retry: Duration,
    /// After the deadline, `secondary --force` instead of failing.
    pub force_demote: bool,
    /// Added to every child's environment (tests: `TANDEM_DRBD_NODE`; a real
    /// second host on one machine: `__DRBD_NODE__`).
    pub env: Vec<(OsString, OsString)>,
    pub source: StateSource,
    /// First delay before restarting a dead events2 child (doubles up to 5 s
    /// while it keeps dying at once).
    pub restart_delay: Duration,
}

impl Default for DrbdOptions {
    fn default() -> Self {
        DrbdOptions {
            config_file: None,
            // drbdadm primary waits for the peer's two-phase commit (DRBD 9) and
            // for the fence-peer handler when disconnected: allow it time.
            command_timeout: Duration::from_secs(30),
            demote_deadline: Duration::from_secs(10),
            demote_retry: Duration::from_millis(200),
            force_demote: false,
            env: Vec::new(),
            source: StateSource::Events2,
            restart_delay: Duration::from_millis(250),
        }
    }
}

#[derive(Debug)]
pub struct DrbdDriver {
    shared: Arc<Shared>,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl DrbdDriver {
    /// Nothing runs until [`DrbdDriver::observations`] is first called.
    pub fn new(cfg: &config::Drbd, opts: DrbdOptions) -> Self {
        let (tx, _) = tokio_watch::channel(BTreeMap::new());
        DrbdDriver {
            shared: Arc::new(Shared {
                drbdadm: cfg.drbdadm.clone(),
                drbdsetup: cfg.drbdsetup.clone(),
                resources: cfg.resources.clone(),
                opts,
                observed: tx,
            }),
            watcher: Mutex::new(None),
        }
    }

    /// Carries out one of the core's operations.
    pub async fn execute(&self, op: &DrbdOp) -> Result<(), DrbdError> {
        match op {
            DrbdOp::Promote { resource } => self.promote(resource, false).await,
            DrbdOp::Demote { resource } => self.demote(resource).await,
            DrbdOp::DualPrimary { resource, allow } => self.dual_primary(resource, *allow).await,
            DrbdOp::Outdate { resource } => self.outdate(resource).await,
        }
    }

    /// `primary R`; `force` is for an operator's explicit override only.
    pub async fn promote(&self, resource: &ResourceName, force: bool) -> Result<(), DrbdError> {
        let mut args = vec!["primary".to_owned()];
        if force {
            args.push("--force".to_owned());
        }
        self.drbdadm(OpKind::Promote, resource, args).await
    }

    pub async fn demote(&self, resource: &ResourceName) -> Result<(), DrbdError> {
        let started = Instant::now();
        let deadline = started + self.shared.opts.demote_deadline;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let failure = match self.drbdadm(OpKind::Demote, resource, vec!["secondary".into()]).await {
                Ok(()) => {
                    if attempts > 1 {
                        info!(resource = %resource, attempts, waited_ms = started.elapsed().as_millis() as u64,
                            "demoted once the device was closed");
                    }
                    return Ok(());
                }
                Err(DrbdError::Refused { failure, .. }) if failure.refusal == Refusal::DeviceInUse => failure,
                Err(e) => return Err(e),
            };
            if Instant::now() + self.shared.opts.demote_retry > deadline {
                if self.shared.opts.force_demote {
                    warn!(resource = %resource, attempts, holders = ?failure.info,
                        "device still held open at the demote deadline: forcing secondary");
                    let args = vec!["secondary".into(), "--force".into()];
                    return self.drbdadm(OpKind::Demote, resource, args).await;
                }
                warn!(resource = %resource, attempts, holders = ?failure.info, "device still held open at the demote deadline");
                return Err(DrbdError::StillHeldOpen {
                    resource: resource.clone(),
                    waited: started.elapsed(),
                    attempts,
                    failure,
                    state: SeenState(self.observation(resource)),
                });
            }
            debug!(resource = %resource, attempts, "device held open; retrying demote");
            tokio::time::sleep(self.shared.opts.demote_retry).await;
        }
    }

    pub async fn dual_primary(&self, resource: &ResourceName, allow: bool) -> Result<(), DrbdError> {
        self.drbdadm(OpKind::DualPrimary { allow }, resource, dual_primary_args(allow))
            .await
    }

    /// `outdate R`. The real drbdadm hides drbdsetup's refusal here and falls
    /// back to drbdmeta, which refuses an attached device: the error then reads
    /// `Device 'N' is configured!` (exit 20), and the cause is DRBD refusing to
    /// outdate a connected or Primary disk.
    pub async fn outdate(&self, resource: &ResourceName) -> Result<(), DrbdError> {
        self.drbdadm(OpKind::Outdate, resource, vec!["outdate".into()]).await
    }

    /// The drbdadm arguments `op`'s (first) command runs with: what the tests
    /// check against the real `drbdadm -d`.
    pub fn command_for(&self, op: &DrbdOp) -> Vec<String> {
        let (args, resource): (Vec<String>, &ResourceName) = match op {
            DrbdOp::Promote { resource } => (vec!["primary".into()], resource),
            DrbdOp::Demote { resource } => (vec!["secondary".into()], resource),
            DrbdOp::DualPrimary { resource, allow } => (dual_primary_args(*allow), resource),
            DrbdOp::Outdate { resource } => (vec!["outdate".into()], resource),
        };
        self.drbdadm_args(&args, resource)
    }

    /// The argument list drbdadm gets for `args` on `resource` (`-c FILE` first).
    pub fn drbdadm_args(&self, args: &[String], resource: &ResourceName) -> Vec<String> {
        let mut full = Vec::with_capacity(args.len() + 3);
        if let Some(cfg) = &self.shared.opts.config_file {
            full.push("-c".to_owned());
            full.push(cfg.display().to_string());
        }
        full.extend(args.iter().cloned());
        full.push(resource.0.clone());
        full
    }

    async fn drbdadm(&self, op: OpKind, resource: &ResourceName, args: Vec<String>) -> Result<(), DrbdError> {
        if !self.shared.resources.contains(resource) {
            return Err(DrbdError::NotManaged {
                resource: resource.clone(),
            });
        }
        let args = self.drbdadm_args(&args, resource);
        let program = &self.shared.drbdadm;
        let command = runner::display(program, &args);
        let out = self.run(op, resource, program, &args).await?;
        if out.success() {
            info!(resource = %resource, op = %op, ms = out.elapsed.as_millis() as u64, "drbd command done");
            return Ok(());
        }
        let exit_code = out.code.unwrap_or(-1);
        match parse_failure(&out.stderr) {
            Some(failure) => {
                // A held device during demote is expected for a moment (the
                // hypervisor closes it late); demote() reports if it lasts.
                if op == OpKind::Demote && failure.refusal == Refusal::DeviceInUse {
                    debug!(resource = %resource, reason = %failure, "device still held open");
                } else {
                    warn!(resource = %resource, op = %op, code = failure.code, exit_code, reason = %failure,
                        "DRBD refused");
                }
                Err(DrbdError::Refused {
                    op,
                    resource: resource.clone(),
                    failure,
                    exit_code,
                    command,
                    state: SeenState(self.observation(resource)),
                })
            }
            None => Err(DrbdError::Failed {
                op,
                resource: resource.clone(),
                command,
                status: out.status_text(),
                stderr: last_lines(&out.stderr),
            }),
        }
    }

    async fn run(
        &self,
        op: OpKind,
        resource: &ResourceName,
        program: &std::path::Path,
        args: &[String],
    ) -> Result<runner::Output, DrbdError> {
        let timeout = self.shared.opts.command_timeout;
        runner::run(program, args, &self.shared.opts.env, timeout)
            .await
            .map_err(|e| match e {
                RunError::Spawn(source) | RunError::Wait(source) => DrbdError::Spawn {
                    op,
                    resource: resource.clone(),
                    program: program.to_path_buf(),
                    source,
                },
                RunError::Timeout => DrbdError::Timeout {
                    op,
                    resource: resource.clone(),
                    command: runner::display(program, args),
                    timeout,
                },
            })
    }

    /// Runs a read-only command; a non-zero exit is an error naming the command.
    async fn query(
        &self,
        resource: &ResourceName,
        program: &std::path::Path,
        args: &[String],
    ) -> Result<runner::Output, DrbdError> {
        let out = self.run(OpKind::Query, resource, program, args).await?;
        if !out.success() {
            return Err(DrbdError::Failed {
                op: OpKind::Query,
                resource: resource.clone(),
                command: runner::display(program, args),
                status: out.status_text(),
                stderr: last_lines(&out.stderr),
            });
        }
        Ok(out)
    }

    /// `drbdsetup status --json all`, once (DRBD 9 only).
    pub async fn status(&self) -> Result<Vec<StatusResource>, DrbdError> {
        let all = ResourceName("all".into());
        let args = vec!["status".to_owned(), "--json".to_owned(), "all".to_owned()];
        let program = self.shared.drbdsetup.clone();
        let out = self.query(&all, &program, &args).await?;
        parse_status_json(&out.stdout).map_err(|source| DrbdError::Parse {
            op: OpKind::Query,
            resource: all,
            source,
        })
    }

    /// This host's DRBD volumes, from `drbdadm dump-xml`.
    pub async fn device_map(&self) -> Result<DeviceMap, DrbdError> {
        let all = ResourceName("all".into());
        let mut args = Vec::new();
        if let Some(cfg) = &self.shared.opts.config_file {
            args.push("-c".to_owned());
            args.push(cfg.display().to_string());
        }
        args.push("dump-xml".to_owned());
        let program = self.shared.drbdadm.clone();
        let out = self.query(&all, &program, &args).await?;
        let host = self.node_name();
        DeviceMap::from_dump_xml(&out.stdout, &host).map_err(|source| DrbdError::Parse {
            op: OpKind::Query,
            resource: all,
            source,
        })
    }

    /// Resolves block device paths (from domain XML) to resources. A path that
    /// is not a DRBD path as written is tried again through its symlinks.
    pub async fn resolve_devices(&self, paths: &[String]) -> Result<Vec<(String, Option<Resolved>)>, DrbdError> {
        let map = self.device_map().await?;
        Ok(paths
            .iter()
            .map(|p| {
                let found = map.resolve(p).or_else(|| {
                    let real = std::fs::canonicalize(p).ok()?;
                    map.resolve(real.to_str()?)
                });
                (p.clone(), found)
            })
            .collect())
    }

    /// The node name drbdadm uses to pick this host's section: `__DRBD_NODE__`
    /// when the driver's environment sets it, else the kernel's host name.
    fn node_name(&self) -> String {
        let from_env = self
            .shared
            .opts
            .env
            .iter()
            .find(|(k, _)| k == "__DRBD_NODE__")
            .and_then(|(_, v)| v.to_str().map(str::to_owned));
        from_env.unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default()
        })
    }

    /// The last state reported for a resource.
    pub fn observation(&self, resource: &ResourceName) -> Option<ResourceObservation> {
        self.shared.observed.borrow().get(resource).copied()
    }

    /// Changes of the managed resources' state. The first call starts the
    /// state source (the events2 child) on the current tokio runtime (so it
    /// must be called from within one); it stops when the driver is dropped.
    /// Each stream first yields every known state, then each change; states a
    /// slow reader missed are coalesced into the latest one per resource.
    pub fn observations(&self) -> Observations {
        if let Ok(mut w) = self.watcher.lock() {
            if w.is_none() {
                *w = Some(tokio::spawn(watch::run(self.shared.clone())));
            }
        }
        Observations {
            rx: self.shared.observed.subscribe(),
            seen: BTreeMap::new(),
            pending: VecDeque::new(),
        }
    }
}

impl Drop for DrbdDriver {
    fn drop(&mut self) {
        // Aborting the task drops its events2 child, which is killed on drop.
        if let Ok(mut w) = self.watcher.lock() {
            if let Some(task) = w.take() {
                task.abort();
            }
        }
    }
}

/// A stream of `(resource, observation)`; see [`DrbdDriver::observations`].
#[derive(Debug)]
pub struct Observations {
    rx: tokio_watch::Receiver<BTreeMap<ResourceName, ResourceObservation>>,
    seen: BTreeMap<ResourceName, ResourceObservation>,
    pending: VecDeque<(ResourceName, ResourceObservation)>,
}

impl Observations {
    /// The next change; `None` once the driver is gone.
    pub async fn next(&mut self) -> Option<(ResourceName, ResourceObservation)> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            {
                let current = self.rx.borrow_and_update();
                for (name, obs) in current.iter() {
                    if self.seen.get(name) != Some(obs) {
                        self.seen.insert(name.clone(), *obs);
                        self.pending.push_back((name.clone(), *obs));
                    }
                }
            }
            if self.pending.is_empty() && self.rx.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Everything reported so far.
    pub fn current(&self) -> BTreeMap<ResourceName, ResourceObservation> {
        self.rx.borrow().clone()
    }
}

fn dual_primary_args(allow: bool) -> Vec<String> {
    vec![
        "net-options".to_owned(),
        "--protocol=C".to_owned(),
        format!("--allow-two-primaries={}", if allow { "yes" } else { "no" }),
    ]
}

fn last_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    tail.join(" | ").chars().take(500).collect()
}
