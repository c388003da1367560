//! tandem: two virtualization hosts with DRBD-replicated VM disks as one machine.
//!
//! [`core`] holds every safety decision as pure state machines; the drivers around
//! it (peer link, DRBD, hypervisor, fencing, D-Bus) arrive with their issues.

pub mod core;
