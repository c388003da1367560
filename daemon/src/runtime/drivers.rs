//! The drivers the core's actions reach: fence devices and DRBD. Each action
//! runs in a task of its own and its result comes back to the event loop as an
//! input, so a slow BMC or a demote retried for seconds never blocks the loop.

use crate::config::Config;
use crate::core::{ActionId, DrbdOp, Input, NodeId};
use crate::drbd::{DrbdDriver, DrbdOptions};
use crate::fence::{FenceAction, FenceHistory, FenceLevels, PowerState};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::{info, warn};

#[derive(Debug)]
pub struct Drivers {
    /// The peer's fence levels (this node only ever fences its peer).
    fence: Arc<FenceLevels>,
    history: FenceHistory,
    drbd: Arc<DrbdDriver>,
    results: mpsc::Sender<Input>,
}

impl Drivers {
    pub fn new(cfg: &Config, me: NodeId, results: mpsc::Sender<Input>) -> Self {
        let peer = cfg.node(me.other());
        let history = FenceHistory::default();
        let fence = Arc::new(FenceLevels::new(peer.name.clone(), &peer.fence).with_history(history.clone()));
        let drbd = Arc::new(DrbdDriver::new(&cfg.drbd, DrbdOptions::default()));
        Drivers {
            fence,
            history,
            drbd,
            results,
        }
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
        let levels = self.fence.clone();
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
