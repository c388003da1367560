//! Test harness of tandem's integration tests.
//!
//! - [`netns`]: network namespaces ([`NetNs`]) and veth pairs ([`VethLink`]), removed on drop.
//! - [`lab`]: [`Lab2`], the two hosts `alpha` and `beta` joined by two links, and
//!   link faults (cut, loss, heal) made with iptables on the receiving side.
//! - [`daemon`]: [`Daemon`], a `tandemd` process guard, and [`Pair`], a lab with a
//!   daemon on each node, a fresh cluster key and configuration.
//! - [`status`]: reading the daemons' status files, [`wait_for`].
//! - [`bmc`]: [`Bmc`], an `ipmi_sim` BMC whose power off kills a host's `tandemd`.
//! - [`fenced`]: [`FencedPair`], a [`Pair`] whose nodes have BMCs and fence
//!   levels, and the fencing parts of the status file.
//! - [`inject`]: what an attacker on a link can send (used by `tandem-inject`).
//! - [`bus`], [`libvirt`], [`drbd`], [`virt_pair`]: a host's own system bus, a
//!   real libvirtd with QEMU per host, the DRBD stand-in, and [`VirtPair`], two
//!   complete hosts (bus, libvirtd with tandem's hook, tandemd, shared stand-in).
//! - [`domain_events`]: libvirt's lifecycle events of both hosts on one clock,
//!   checked for a domain running on both.
//! - [`env`]: the checks every test makes first ([`preflight`]) and where
//!   `tandemd` is ([`tandemd_bin`]).
//!
//! Everything is cleaned up by `Drop` guards, also when a test panics; a test
//! run killed outright leaves namespaces behind that the next run sweeps
//! ([`netns::sweep_leftovers`]).

pub mod bench;
pub mod bmc;
pub mod bus;
pub mod cmd;
pub mod daemon;
pub mod domain_events;
pub mod drbd;
pub mod env;
pub mod fenced;
pub mod inject;
pub mod lab;
pub mod libvirt;
pub mod netns;
pub mod real_drbd;
pub mod status;
pub mod virt_pair;
pub mod xen_tier;

pub use bmc::Bmc;
pub use daemon::{Daemon, Pair, Timing};
pub use env::{preflight, tandemd_bin};
pub use fenced::{FenceSetup, FencedPair};
pub use lab::{Direction, Lab2, Node};
pub use netns::{NetNs, VethLink};
pub use status::{read_status, wait_for};
pub use virt_pair::{VirtPair, VirtSetup};
