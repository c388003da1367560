//! How far the live migrations tandem started have got: the driver writes
//! libvirt's job statistics here while a migration runs, the status document
//! shows them (`domains[].migration`), and `tandemctl migrate` draws its bar
//! from that.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Bytes moved and still to move, as libvirt estimates them now (the estimate
/// grows while the guest dirties memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MigrationProgress {
    pub processed_bytes: u64,
    pub remaining_bytes: u64,
}

/// Shared by the driver and the status; clones see the same board.
#[derive(Debug, Clone, Default)]
pub struct MigrationBoard(Arc<Mutex<BTreeMap<String, MigrationProgress>>>);

impl MigrationBoard {
    pub fn set(&self, domain: &str, progress: MigrationProgress) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(domain.to_owned(), progress);
    }

    pub fn clear(&self, domain: &str) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(domain);
    }

    pub fn get(&self, domain: &str) -> Option<MigrationProgress> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(domain)
            .copied()
    }
}
