//! tandem: two virtualization hosts with DRBD-replicated VM disks as one machine.
//!
//! [`core`] holds every safety decision as pure state machines; the drivers around
//! it (peer link, DRBD, hypervisor, fencing, D-Bus) talk to the outside world.

pub mod config;
pub mod core;
pub mod dbus;
pub mod drbd;
pub mod fence;
pub mod hypervisor;
pub mod net;
pub mod runtime;
pub mod state;
pub mod systemd;
