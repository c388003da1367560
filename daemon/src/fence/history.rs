//! The recent fence attempts, for `status`: a bounded ring, oldest dropped first,
//! so a device failing in a retry loop for days cannot grow the daemon.

use super::{DeviceId, FenceAction, PowerState};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One device attempt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FenceRecord {
    /// When the attempt ended, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    pub node: String,
    /// Counted from 1.
    pub level: usize,
    /// `ipmi`, `agent` or `xapi`.
    pub kind: &'static str,
    pub device: String,
    pub action: FenceAction,
    pub duration_ms: u64,
    /// The confirmed power state, or the error as text.
    pub result: Result<PowerState, String>,
}

impl FenceRecord {
    pub fn new(
        node: &str,
        level: usize,
        device: &DeviceId,
        action: FenceAction,
        duration: Duration,
        result: Result<PowerState, String>,
    ) -> Self {
        FenceRecord {
            at_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, super::ms),
            node: node.to_string(),
            level,
            kind: device.kind,
            device: device.target.clone(),
            action,
            duration_ms: super::ms(duration),
            result,
        }
    }
}

/// Shared, bounded history; clones see the same records.
#[derive(Debug, Clone)]
pub struct FenceHistory {
    inner: Arc<Mutex<VecDeque<FenceRecord>>>,
    capacity: usize,
}

impl Default for FenceHistory {
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

impl FenceHistory {
    pub const DEFAULT_CAPACITY: usize = 100;

    /// Keeps the last `capacity` records (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        FenceHistory {
            inner: Arc::new(Mutex::new(VecDeque::with_capacity(capacity))),
            capacity,
        }
    }

    pub fn push(&self, record: FenceRecord) {
        // A panic elsewhere while holding the lock leaves a consistent queue;
        // losing the history over it would hide what happened.
        let mut q = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        while q.len() >= self.capacity {
            q.pop_front();
        }
        q.push_back(record);
    }

    /// The records, oldest first.
    pub fn records(&self) -> Vec<FenceRecord> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    pub fn last(&self) -> Option<FenceRecord> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .back()
            .cloned()
    }

    /// Drops the failed attempts (`tandemctl cleanup`); confirmed ones stay.
    pub fn forget_failures(&self) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|r| r.result.is_ok());
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> FenceRecord {
        let id = DeviceId {
            kind: "ipmi",
            target: "127.0.0.1:623".into(),
        };
        FenceRecord::new(
            "b",
            n,
            &id,
            FenceAction::Off,
            Duration::from_millis(5),
            Ok(PowerState::Off),
        )
    }

    #[test]
    fn keeps_the_newest_records_up_to_its_capacity() {
        let h = FenceHistory::with_capacity(3);
        for n in 1..=5 {
            h.push(record(n));
        }
        let levels: Vec<usize> = h.records().iter().map(|r| r.level).collect();
        assert_eq!(levels, vec![3, 4, 5]);
        assert_eq!(h.last().map(|r| r.level), Some(5));
        assert_eq!(h.clone().len(), 3, "clones share the records");
    }

    #[test]
    fn records_serialize_for_status() {
        let json = serde_json::to_value(record(1)).unwrap();
        assert_eq!(json["action"], "off");
        assert_eq!(json["result"]["Ok"], "off");
        assert_eq!(json["duration_ms"], 5);
    }
}
