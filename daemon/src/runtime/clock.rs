//! The daemon's clock for the core: milliseconds since the host booted, so the
//! deadlines a daemon persists still mean the same after it restarts.

use crate::core::Millis;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    base_ms: u64,
}

impl Clock {
    pub fn start() -> Self {
        Clock {
            start: Instant::now(),
            base_ms: uptime_ms().unwrap_or(0),
        }
    }

    pub fn now(&self) -> Millis {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Millis(self.base_ms.saturating_add(elapsed))
    }

    /// The runtime instant of a core time (never in the past by more than now).
    pub fn instant_of(&self, t: Millis) -> Instant {
        self.start + Duration::from_millis(t.0.saturating_sub(self.base_ms))
    }
}

/// `/proc/uptime`'s first field in milliseconds.
fn uptime_ms() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

/// The kernel's id of this boot of the host.
pub fn host_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
