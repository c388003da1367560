//! A stand-in for Xen's xenstore command-line clients (`xenstore-read`,
//! `xenstore-write`, `xenstore-exists`, `xenstore-rm`, `xenstore-list`) for
//! machines without Xen: the tree lives in a file (`TANDEM_XENSTORE_FILE`), and
//! the arguments, output and exit codes are those of Xen's `xenstore_client.c`.
//! See README.md for what it does not model.
//!
//! - [`store`]: the tree, path and value rules, the locked file.
//! - [`cli`]: the command line and the five modes.

pub mod cli;
pub mod store;

pub use cli::{run, Outcome};
pub use store::{canonical, sanitise, unsanitise, Node, OpError, Store, StoreError};

/// The environment variable naming the tree file.
pub const FILE_ENV: &str = "TANDEM_XENSTORE_FILE";
