//! A XenAPI (XenServer / XCP-ng) client for fencing a VM, over XML-RPC.
//!
//! ```no_run
//! # async fn f() -> Result<(), xapi_fence::Error> {
//! use xapi_fence::{Client, Config, Password, TlsMode};
//! let mut config = Config::new("https://pool.example", "root", Password::new("secret"));
//! config.tls = TlsMode::Fingerprint([0xab; 32]);
//! let client = Client::new(config)?;
//! let state = client.power_off("node-b").await?; // Halted, confirmed
//! # Ok(()) }
//! ```
//!
//! - One session per operation: `session.login_with_password` (version
//!   [`API_VERSION`], originator [`ORIGINATOR`]), the calls, `session.logout`,
//!   always (in the background if the caller drops the future).
//! - SESSION_INVALID: logs in again once and repeats the call.
//! - HOST_IS_SLAVE: goes to the master the answer names, and remembers it for
//!   the next operation (falling back to the configured URL when it stops
//!   answering).
//! - The VM is named by UUID or by a name label exactly one VM has; templates
//!   and control domains are refused.
//! - off = `VM.hard_shutdown`, then `VM.get_power_state` until Halted; on =
//!   `VM.start` (not paused), then until Running; reboot = off, confirmed, on,
//!   confirmed. VM_BAD_POWER_STATE means "already there" only when a fresh read
//!   of the power state says so.
//! - Every call is bounded in time ([`Config::call_timeout`], and
//!   [`Config::power_timeout`] for power changes) and in size
//!   ([`Config::max_reply`]); the XML-RPC parser refuses nesting deeper than
//!   [`xmlrpc::MAX_DEPTH`].
//! - Errors keep the XenAPI code and parameters ([`Error::Api`]); the password
//!   appears in none, nor in any log line or `Debug` output.

mod client;
mod error;
pub mod http;
pub mod tls;
mod vm;
pub mod xmlrpc;

pub use client::{Client, Config, Password, Session, API_VERSION, DEFAULT_MAX_REPLY, ORIGINATOR};
pub use error::{Error, Result};
pub use tls::{format_fingerprint, parse_fingerprint, TlsMode};
pub use vm::{looks_like_uuid, Action, PowerState, VmInfo};
