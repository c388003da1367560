//! The real-DRBD tier: Debian's kernel with its in-tree DRBD 8.4 module in two
//! QEMU guests (TCG), built and booted at test time (docs/real-drbd.md).
//!
//! - [`image`]: the guest image from Debian packages (kernel cached between
//!   runs, initrd and tools disk rebuilt every run).
//! - [`guest`]: [`GuestPair`], the two guests in a namespace of their own,
//!   two links between them that a test can cut, and the command runner.
//! - [`conformance`]: one set of DRBD scenarios run against the real module
//!   and against the stand-in (`standins/drbd`), and the comparison.
//! - [`tandem`]: `tandemd` in both guests on the real module, with BMCs
//!   (`ipmi_sim`) on the host side whose power-off kills a guest.

pub mod conformance;
pub mod guest;
pub mod image;
pub mod tandem;

pub use guest::{BootOptions, Guest, GuestPair};
pub use image::GuestImage;

/// Where a test binary of this tier keeps its journal and logs:
/// `target/real-drbd/NAME` (replaced at every run).
pub fn out_dir(name: &str) -> std::path::PathBuf {
    crate::env::target_dir().join("real-drbd").join(name)
}
