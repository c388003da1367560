//! The DRBD driver: runs `drbdadm`/`drbdsetup`, reads DRBD's state, and turns
//! both into the core's vocabulary ([`DrbdOp`](crate::core::DrbdOp) in,
//! [`ResourceObservation`](crate::core::ResourceObservation) out).
//!
//! - [`DrbdDriver`]: `execute(&DrbdOp)` and `observations()`; the only part
//!   that does I/O, through the command paths in the configuration, so a
//!   stand-in (`standins/drbd`) or the real tools can sit behind it unchanged.
//! - Pure readers, tested on captured and documented outputs
//!   (`daemon/tests/data/drbd/`): [`parse_events2_line`], [`parse_status_json`],
//!   [`parse_proc_drbd`], [`parse_failure`] (DRBD's `State change failed: (-N)`),
//!   [`parse_device_path`] and [`DeviceMap`] (`drbdadm dump-xml`).
//! - [`Events2Fold`]: events2 lines → one observation per resource, with the
//!   old and new value of each change.
//!
//! Scope: two-node resources. A DRBD 9 resource with more connections is
//! reduced to its lowest-numbered peer.

mod devices;
mod driver;
mod error;
mod events2;
mod fold;
mod proc_drbd;
mod runner;
mod status_json;
mod types;
mod watch;

#[cfg(test)]
mod tests;

pub use devices::{parse_device_path, DeviceMap, DeviceRef, Resolved, VolumeEntry};
pub use driver::{DrbdDriver, DrbdOptions, Observations, StateSource};
pub use error::{parse_failure, DrbdError, DrbdFailure, OpKind, ParseError, Refusal, SeenState};
pub use events2::{
    parse_events2_line, Action as EventAction, ConnectionEv, DeviceEv, Event2, HelperEv, PathEv, PeerDeviceEv,
    ResourceEv,
};
pub use fold::{Events2Fold, ObservationChange};
pub use proc_drbd::{parse_proc_drbd, MinorState, ProcDrbd, ProcMinor};
pub use status_json::{parse_status_json, StatusConnection, StatusDevice, StatusPeerDevice, StatusResource};
pub use types::{ConnState, DrbdDisk, DrbdRole, ReplState, UnknownName, DOWN};
