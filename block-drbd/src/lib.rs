//! tandem's Xen block script, `block-drbd`, as a library.
//!
//! libxl (for `drbd:RES` or `script=block-drbd,target=RES` disks) and xend's
//! `block` script run `/etc/xen/scripts/block-drbd add|remove` with
//! `XENBUS_PATH` naming the disk's backend in xenstore. `add` asks tandemd to
//! admit the domain's start (or its incoming migration) and promote the DRBD
//! resource, then tells blkback which device to open; `remove` asks tandemd to
//! release (demote) it. See docs/xen.md.
//!
//! - [`params`]: the environment and the backend's entries, checked.
//! - [`device`]: the DRBD device from `drbdadm dump-xml`, and `physical-device`.
//! - [`xs`]: xenstore through the `xenstore-*` commands.
//! - [`script`]: `add` and `remove`.
//!
//! The D-Bus call, the `drbdadm dump-xml` runner and its map are the libvirt
//! hook's ([`tandem_hooks`]).

pub mod device;
pub mod params;
pub mod script;
pub mod xs;

pub use params::Action;
pub use script::{run, Failure, Settings};
