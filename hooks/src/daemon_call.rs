//! The hook's call into tandemd, for the plans that need the daemon
//! ([`HookPlan::PrepareIncoming`], [`HookPlan::PrepareStart`], [`HookPlan::Release`]).
//!
//! Placeholder: the D-Bus client (`org.tandem.Tandem1.Hooks`) is wired in by
//! replacing this module. Until then every such call fails, so the hook refuses
//! starts and migrations of DRBD-backed domains, which is the safe answer when
//! tandem cannot be asked.
//!
//! Contract for the replacement: return `Ok(())` when the daemon agreed (or
//! the release is done); `Err(line)` with one human-readable line (no newline),
//! beginning `tandem-libvirt-hook: `, which the binary prints on stderr before
//! exiting 1 (virsh shows it to the user). Never write to stdout (on
//! `migrate begin` libvirt would take it as replacement XML), never call
//! libvirt, bound every wait with a timeout, and start no child that keeps
//! the hook's stdout/stderr open. [`crate::HookRequest::unresolved`] lists disks
//! whose resource the hook could not name; the daemon must resolve them or refuse.

use crate::plan::HookPlan;

/// Asks tandemd to carry out `plan`.
pub fn call_daemon(plan: &HookPlan) -> Result<(), String> {
    let _ = plan;
    Err("tandem-libvirt-hook: the D-Bus client is not built into this version".to_owned())
}
