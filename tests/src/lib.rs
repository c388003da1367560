//! Test harness of tandem's integration tests.
//!
//! - [`netns`]: network namespaces ([`NetNs`]) and veth pairs ([`VethLink`]), removed on drop.
//! - [`lab`]: [`Lab2`], the two hosts `alpha` and `beta` joined by two links, and
//!   link faults (cut, loss, heal) made with iptables on the receiving side.
//! - [`daemon`]: [`Daemon`], a `tandemd` process guard, and [`Pair`], a lab with a
//!   daemon on each node, a fresh cluster key and configuration.
//! - [`status`]: reading the daemons' status files, [`wait_for`].
//! - [`inject`]: what an attacker on a link can send (used by `tandem-inject`).
//! - [`env`]: the checks every test makes first ([`preflight`]) and where
//!   `tandemd` is ([`tandemd_bin`]).
//!
//! Everything is cleaned up by `Drop` guards, also when a test panics; a test
//! run killed outright leaves namespaces behind that the next run sweeps
//! ([`netns::sweep_leftovers`]).

pub mod cmd;
pub mod daemon;
pub mod env;
pub mod inject;
pub mod lab;
pub mod netns;
pub mod status;

pub use daemon::{Daemon, Pair, Timing};
pub use env::{preflight, tandemd_bin};
pub use lab::{Direction, Lab2, Node};
pub use netns::{NetNs, VethLink};
pub use status::{read_status, wait_for};
