//! Fencing: powering a node off (and on) through its BMC or any fence agent, and
//! confirming that it happened, before the survivor takes over its domains.
//!
//! A node has an ordered list of fence levels ([`FenceLevels`], from the
//! configuration's `[[node.NAME.fence]]`). A level succeeds only when every one of
//! its devices succeeds, run in the order listed; the daemon's arbiter walks the
//! levels itself, one [`FenceLevels::run_level`] per `Action::Fence { level }`, and
//! `tandemctl fence NODE --direct` walks them all with [`fence_direct`].
//!
//! Every device reports success only after it has seen the final power state
//! itself (a fresh status after the off/on); nothing here takes "command accepted"
//! for "done", because taking over a node that still runs would corrupt disks.
//!
//! A failed off is "unknown", never "still on": a BMC that stopped answering may
//! carry out the queued command when it recovers (ipmi_sim does, after SIGCONT).
//!
//! Numbering: `run_level` takes the 0-based *index* the core uses; everything meant
//! for people (logs, errors, [`FenceHistory`], [`FenceOutcome::level`]) counts
//! levels from 1, as `tandemctl config check` does (`fence[1]`).

mod agent;
mod error;
mod history;
mod ipmi;
mod xapi;

pub use agent::{interpret_exit, AgentFencer, AgentInput};
pub use error::{DeviceError, DeviceErrorKind, FenceError};
pub use history::{FenceHistory, FenceRecord};
pub use ipmi::IpmiFencer;
pub use xapi::XapiFencer;

use crate::config::{FenceDevice, FenceLevel};
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// What to do to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FenceAction {
    Off,
    On,
    /// Off, confirmed off, then on (never a BMC's "power cycle", which some
    /// BMCs accept and then skip when the node is already off).
    Reboot,
    Status,
}

impl FenceAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FenceAction::Off => "off",
            FenceAction::On => "on",
            FenceAction::Reboot => "reboot",
            FenceAction::Status => "status",
        }
    }
}

impl fmt::Display for FenceAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A power state a device has confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    On,
    Off,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerState::On => "on",
            PowerState::Off => "off",
        })
    }
}

/// A fence level (or a whole `--direct` walk) that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceOutcome {
    pub node: String,
    /// The level that did it, counted from 1.
    pub level: usize,
    pub action: FenceAction,
    /// Confirmed by the devices after the action: off after `Off`, on after `On`
    /// and `Reboot`; for `Status`, off only when every device of the level says
    /// off.
    pub state: PowerState,
    pub duration: Duration,
}

/// How one device is named in logs and errors: its kind and where it points,
/// never a password.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceId {
    pub kind: &'static str,
    /// `address:port` for a BMC, the program and its target for an agent.
    pub target: String,
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.target)
    }
}

/// One fence device. Each method returns only after the device has confirmed
/// the resulting power state, within the device's configured timeout; dropping
/// the future gives up on the answer (whatever the device is doing finishes in
/// the background within the same bound).
pub trait Fencer: Send + Sync {
    fn id(&self) -> &DeviceId;

    /// Carries out `action` and returns the power state the device confirmed
    /// afterwards (off after `Off`, on after `On` and `Reboot`).
    fn run(&self, action: FenceAction) -> impl Future<Output = Result<PowerState, DeviceError>> + Send;

    fn status(&self) -> impl Future<Output = Result<PowerState, DeviceError>> + Send {
        self.run(FenceAction::Status)
    }
    /// Power off and confirm off.
    fn off(&self) -> impl Future<Output = Result<PowerState, DeviceError>> + Send {
        self.run(FenceAction::Off)
    }
    /// Power on and confirm on.
    fn on(&self) -> impl Future<Output = Result<PowerState, DeviceError>> + Send {
        self.run(FenceAction::On)
    }
    /// Off, confirmed, then on, confirmed.
    fn reboot(&self) -> impl Future<Output = Result<PowerState, DeviceError>> + Send {
        self.run(FenceAction::Reboot)
    }
}

/// A configured device of any kind.
#[derive(Debug)]
pub enum Device {
    Ipmi(IpmiFencer),
    Agent(AgentFencer),
    Xapi(XapiFencer),
}

impl Device {
    pub fn from_config(device: &FenceDevice) -> Self {
        match device {
            FenceDevice::Ipmi(d) => Device::Ipmi(IpmiFencer::new(d.clone())),
            FenceDevice::Agent(d) => Device::Agent(AgentFencer::new(d.clone())),
            FenceDevice::Xapi(d) => Device::Xapi(XapiFencer::new(d.clone())),
        }
    }
}

impl Fencer for Device {
    fn id(&self) -> &DeviceId {
        match self {
            Device::Ipmi(d) => d.id(),
            Device::Agent(d) => d.id(),
            Device::Xapi(d) => d.id(),
        }
    }

    async fn run(&self, action: FenceAction) -> Result<PowerState, DeviceError> {
        match self {
            Device::Ipmi(d) => d.run(action).await,
            Device::Agent(d) => d.run(action).await,
            Device::Xapi(d) => d.run(action).await,
        }
    }
}

/// The fence levels of one target node, with the devices (and their open BMC
/// sessions) kept for the daemon's lifetime.
#[derive(Debug)]
pub struct FenceLevels {
    node: String,
    levels: Vec<Vec<Device>>,
    history: FenceHistory,
}

impl FenceLevels {
    /// The levels of `node`, from its configuration. Nothing is contacted yet;
    /// a device that cannot work (an unsupported setting, say) fails when used,
    /// so the other levels still can.
    pub fn new(node: impl Into<String>, levels: &[FenceLevel]) -> Self {
        FenceLevels {
            node: node.into(),
            levels: levels
                .iter()
                .map(|l| l.devices.iter().map(Device::from_config).collect())
                .collect(),
            history: FenceHistory::default(),
        }
    }

    /// Records into `history` (shared with status) instead of a history of its own.
    pub fn with_history(mut self, history: FenceHistory) -> Self {
        self.history = history;
        self
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    pub fn history(&self) -> &FenceHistory {
        &self.history
    }

    /// The devices of the level at `index` (0-based), in order.
    pub fn devices(&self, index: usize) -> Option<&[Device]> {
        self.levels.get(index).map(Vec::as_slice)
    }

    /// Runs the level at `index` (0-based, as the core's `Action::Fence { level }`):
    /// its devices in order, stopping at the first that fails. A reboot on a level
    /// of several devices (say, two power feeds) turns them all off before any is
    /// turned on again; rebooting them one by one would never cut the power.
    pub async fn run_level(&self, index: usize, action: FenceAction) -> Result<FenceOutcome, FenceError> {
        let level = index + 1;
        let Some(devices) = self.levels.get(index) else {
            return Err(FenceError::NoSuchLevel {
                node: self.node.clone(),
                level,
                count: self.levels.len(),
            });
        };
        if devices.is_empty() {
            // The configuration refuses empty levels; a hand-built one must not
            // "succeed" at fencing without touching anything.
            return Err(FenceError::EmptyLevel {
                node: self.node.clone(),
                level,
            });
        }
        let started = Instant::now();
        let steps: Vec<FenceAction> = match action {
            FenceAction::Reboot if devices.len() > 1 => vec![FenceAction::Off, FenceAction::On],
            other => vec![other],
        };
        let mut state = PowerState::Off;
        for step in steps {
            let mut any_on = false;
            for (i, device) in devices.iter().enumerate() {
                let got = self.run_device(level, i + 1, devices.len(), device, step).await?;
                any_on |= got == PowerState::On;
            }
            state = if any_on { PowerState::On } else { PowerState::Off };
        }
        let duration = started.elapsed();
        tracing::info!(
            node = %self.node,
            level,
            action = %action,
            state = %state,
            duration_ms = ms(duration),
            result = "ok",
            "fence level succeeded"
        );
        Ok(FenceOutcome {
            node: self.node.clone(),
            level,
            action,
            state,
            duration,
        })
    }

    async fn run_device(
        &self,
        level: usize,
        position: usize,
        count: usize,
        device: &Device,
        action: FenceAction,
    ) -> Result<PowerState, FenceError> {
        let id = device.id();
        tracing::info!(node = %self.node, level, device = id.kind, target = %id.target, action = %action, "fence attempt");
        let started = Instant::now();
        let result = device.run(action).await;
        let duration = started.elapsed();
        self.history.push(FenceRecord::new(
            &self.node,
            level,
            id,
            action,
            duration,
            result.as_ref().map(|s| *s).map_err(ToString::to_string),
        ));
        match result {
            Ok(state) => {
                tracing::info!(
                    node = %self.node, level, device = id.kind, target = %id.target, action = %action,
                    duration_ms = ms(duration), result = "ok", state = %state, "fence device confirmed"
                );
                Ok(state)
            }
            Err(e) => {
                tracing::warn!(
                    node = %self.node, level, device = id.kind, target = %id.target, action = %action,
                    duration_ms = ms(duration), result = "failed", error = %e, "fence device failed"
                );
                Err(FenceError::Device {
                    node: self.node.clone(),
                    level,
                    position,
                    count,
                    source: e,
                })
            }
        }
    }
}

/// Tries every level in order until one succeeds: what `tandemctl fence NODE
/// --direct` does, outside the arbiter.
pub async fn fence_direct(levels: &FenceLevels, action: FenceAction) -> Result<FenceOutcome, FenceError> {
    if levels.is_empty() {
        return Err(FenceError::NoLevels {
            node: levels.node().to_string(),
        });
    }
    let mut failures = Vec::new();
    for index in 0..levels.len() {
        match levels.run_level(index, action).await {
            Ok(outcome) => return Ok(outcome),
            Err(e) => failures.push(e),
        }
    }
    Err(FenceError::AllLevelsFailed {
        node: levels.node().to_string(),
        action,
        failures,
    })
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
