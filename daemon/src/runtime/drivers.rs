//! The drivers the core's actions reach: fence devices, DRBD and the hypervisor. Each action
//! runs in a task of its own and its result comes back to the event loop as an
//! input, so a slow BMC or a demote retried for seconds never blocks the loop.

use crate::config::{self, Config};
use crate::core::{ActionId, DomainName, DrbdOp, Input, NodeId};
use crate::drbd::{DrbdDriver, DrbdOptions};
use crate::fence::{FenceAction, FenceHistory, FenceLevels, PowerState};
use crate::hypervisor::{
    Hypervisor, HypervisorError, Libvirt, MigrationBoard, PeerLibvirt, WatchConfig, Watcher, XenstoreWatch, Xl, XlPeer,
};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// How often the xl watcher lists the domains when xenstore says nothing.
const XL_RESYNC: std::time::Duration = std::time::Duration::from_secs(5);
/// From xenstore-utils, on the PATH of a dom0.
const XENSTORE_WATCH: &str = "xenstore-watch";

#[derive(Debug)]
pub struct Drivers {
    /// The peer's fence levels (this node only ever fences its peer); a
    /// reload replaces them, a fence under way keeps the ones it started with.
    fence: Mutex<Arc<FenceLevels>>,
    history: FenceHistory,
    drbd: Arc<DrbdDriver>,
    /// The hypervisor driver, or why this configuration has none.
    hypervisor: Result<Arc<dyn Hypervisor>, &'static str>,
    /// How far the migrations tandem started have got (empty without libvirt).
    migrations: MigrationBoard,
    results: mpsc::Sender<Input>,
}

impl Drivers {
    pub fn new(cfg: &Config, me: NodeId, results: mpsc::Sender<Input>) -> Self {
        let peer = cfg.node(me.other());
        let history = FenceHistory::default();
        let fence = Mutex::new(Arc::new(
            FenceLevels::new(peer.name.clone(), &peer.fence).with_history(history.clone()),
        ));
        let drbd = Arc::new(DrbdDriver::new(&cfg.drbd, DrbdOptions::default()));
        let mut migrations = MigrationBoard::default();
        let hypervisor: Result<Arc<dyn Hypervisor>, &'static str> = match &cfg.hypervisor {
            // Connects on first use and again after libvirtd restarts, so a
            // libvirtd that is not up yet is only a warning from the watcher.
            config::Hypervisor::Libvirt {
                uri,
                migration_bandwidth_mib,
            } => {
                let lv = Libvirt::new(uri.clone()).with_peer(PeerLibvirt {
                    uri: peer.libvirt_uri(),
                    migration_uri: peer.migration_uri(),
                    bandwidth_mib: *migration_bandwidth_mib,
                });
                migrations = lv.migration_board();
                Ok(Arc::new(lv))
            }
            config::Hypervisor::Xl {
                xl,
                config_dir,
                transport,
            } => Ok(Arc::new(Xl::new(
                xl.clone(),
                config_dir.clone(),
                XlPeer {
                    host: peer.migration_host(),
                    transport: transport.clone(),
                },
            ))),
            config::Hypervisor::None => Err("[hypervisor] kind = \"none\": tandem manages no domains on this host"),
        };
        Drivers {
            fence,
            history,
            drbd,
            hypervisor,
            migrations,
            results,
        }
    }

    pub fn migration_board(&self) -> MigrationBoard {
        self.migrations.clone()
    }

    /// Reports the hypervisor's domains to the core while the returned watcher
    /// lives; `None` without a hypervisor driver.
    pub fn watch_hypervisor(&self, cfg: &Config) -> Option<Watcher> {
        let hv = self.hypervisor.as_ref().ok()?.clone();
        let mut watch = WatchConfig {
            drbdadm: Some(cfg.drbd.drbdadm.clone()),
            ..WatchConfig::new(cfg.drbd.resources.clone())
        };
        if let config::Hypervisor::Xl { .. } = &cfg.hypervisor {
            // xenstore says when domains come and go; the resync is for
            // what it does not say, and costs an `xl list` each time.
            let wake = Arc::new(tokio::sync::Notify::new());
            watch.wake = Some(wake.clone());
            watch.interval = XL_RESYNC;
            watch.rescan_every = 6;
            let events = XenstoreWatch::spawn(XENSTORE_WATCH.into(), wake);
            return Some(Watcher::spawn(hv, watch, self.results.clone()).with_events(events));
        }
        Some(Watcher::spawn(hv, watch, self.results.clone()))
    }

    pub fn start_domain(&self, action: ActionId, domain: DomainName) {
        self.hypervisor_action(action, domain, "start", |hv, d| hv.start(d));
    }

    pub fn migrate_domain(&self, action: ActionId, domain: DomainName) {
        self.hypervisor_action(action, domain, "migrate", |hv, d| hv.migrate(d));
    }

    pub fn stop_domain(&self, action: ActionId, domain: DomainName, force: bool) {
        if force {
            self.hypervisor_action(action, domain, "destroy", |hv, d| hv.stop(d, true));
        } else {
            self.hypervisor_action(action, domain, "shutdown", |hv, d| hv.stop(d, false));
        }
    }

    /// Defines the peer's copy of a domain here; the outcome is only logged (the
    /// next change of the definition on the peer sends it again).
    pub fn define_domain(&self, domain: DomainName, definition: String) {
        let Ok(hv) = self.hypervisor.as_ref().map(Arc::clone) else {
            return;
        };
        tokio::spawn(async move {
            let d = domain.clone();
            match tokio::task::spawn_blocking(move || hv.define(&d, &definition)).await {
                Ok(Ok(())) => info!(domain = %domain, "defined the domain from the peer's definition"),
                Ok(Err(e)) => warn!(domain = %domain, error = %e, "cannot define the peer's domain here"),
                Err(e) => warn!(domain = %domain, error = %e, "the libvirt call failed"),
            }
        });
    }

    /// Runs a blocking hypervisor call off the runtime's threads and answers
    /// the core with its result.
    fn hypervisor_action(
        &self,
        action: ActionId,
        domain: DomainName,
        what: &'static str,
        call: fn(&dyn Hypervisor, &DomainName) -> Result<(), HypervisorError>,
    ) {
        let hv = match &self.hypervisor {
            Ok(hv) => hv.clone(),
            Err(why) => return self.unsupported(action, format!("cannot {what} domain \"{domain}\": {why}")),
        };
        let tx = self.results.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let d = domain.clone();
            let result = match tokio::task::spawn_blocking(move || call(hv.as_ref(), &d)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(format!(
                    "cannot {what} domain \"{domain}\": the libvirt call failed: {e}"
                )),
            };
            match &result {
                Ok(()) => info!(%domain, duration_ms = started.elapsed().as_millis() as u64, "domain {what} done"),
                Err(e) => warn!(%domain, error = %e, "domain {what} failed"),
            }
            let _ = tx.send(Input::ActionDone { action, result }).await;
        });
    }

    /// Rebuilds the peer's fence devices from a reloaded configuration.
    pub fn replace_peer_fence(&self, cfg: &Config, me: NodeId) {
        let peer = cfg.node(me.other());
        let levels = Arc::new(FenceLevels::new(peer.name.clone(), &peer.fence).with_history(self.history.clone()));
        *self.fence.lock().unwrap_or_else(PoisonError::into_inner) = levels;
    }

    pub fn fence_history(&self) -> &FenceHistory {
        &self.history
    }

    /// Forwards DRBD's state changes to the core for the daemon's lifetime.
    pub fn watch_drbd(&self) -> tokio::task::JoinHandle<()> {
        let mut stream = self.drbd.observations();
        let tx = self.results.clone();
        tokio::spawn(async move {
            while let Some((resource, observation)) = stream.next().await {
                if tx
                    .send(Input::ResourceObserved { resource, observation })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    }

    /// Powers the peer off through fence level `level` and confirms it.
    pub fn fence(&self, action: ActionId, level: usize) {
        let levels = self.fence.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let tx = self.results.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = match levels.run_level(level, FenceAction::Off).await {
                Ok(o) if o.state == PowerState::Off => {
                    info!(
                        node = levels.node(),
                        level = level + 1,
                        duration_ms = started.elapsed().as_millis() as u64,
                        "fence confirmed: peer powered off"
                    );
                    Ok(())
                }
                Ok(o) => Err(format!(
                    "fence level {} did not confirm power off ({:?})",
                    level + 1,
                    o.state
                )),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = &result {
                warn!(node = levels.node(), level = level + 1, error = %e, "fence failed");
            }
            let _ = tx.send(Input::FenceDone { action, result }).await;
        });
    }

    pub fn drbd(&self, action: ActionId, op: DrbdOp) {
        let drbd = self.drbd.clone();
        let tx = self.results.clone();
        tokio::spawn(async move {
            let result = drbd.execute(&op).await.map_err(|e| e.to_string());
            if let Err(e) = &result {
                warn!(?op, error = %e, "DRBD action failed");
            }
            let _ = tx.send(Input::ActionDone { action, result }).await;
        });
    }

    /// An action no driver of this build carries out: answered with an error so
    /// the core never waits on it.
    pub fn unsupported(&self, action: ActionId, what: String) {
        let tx = self.results.clone();
        tokio::spawn(async move {
            let _ = tx
                .send(Input::ActionDone {
                    action,
                    result: Err(what),
                })
                .await;
        });
    }
}
