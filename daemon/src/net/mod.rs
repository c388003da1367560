//! Peer link: heartbeats over every link and the encrypted control channel.
//!
//! - [`keyfile`]: the cluster key file and the subkeys derived from it.
//! - [`wire`]: byte encodings (heartbeat datagrams, control frames).
//! - [`replay`]: the per-link replay window for heartbeats.
//! - [`heartbeat`]: UDP heartbeats on every link, with per-link statistics.
//! - [`control`]: the Noise-encrypted TCP control channel.
//!
//! The daemon's event loop owns the wiring: it loads the key with
//! [`keyfile::load_key`], starts [`heartbeat::spawn_heartbeats`] and
//! [`control::spawn_control`], feeds what they deliver to the core as
//! `Input::Heartbeat` / `Input::Peer`, and hands the core's `Action::Send`
//! messages to [`control::ControlHandle::send`].

pub mod control;
pub mod heartbeat;
pub mod keyfile;
pub mod noise;
pub mod replay;
mod session;
pub mod wire;

#[cfg(test)]
mod tests;

pub use control::{
    spawn_control, ControlConfig, ControlCounters, ControlError, ControlHandle, ControlLink, ControlRole, ControlStatus,
};
pub use heartbeat::{
    spawn_heartbeats, DropCounters, HeartbeatConfig, HeartbeatError, HeartbeatHandle, LinkAddrs, LinkStats,
};
pub use keyfile::{load_key, write_new_key, ClusterKey, HeartbeatKey, KeyFileError, NoisePsk};
pub use replay::{ReplayVerdict, ReplayWindow};
pub use wire::WireError;
