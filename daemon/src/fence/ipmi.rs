//! IPMI v2.0 over LAN (RMCP+, "lanplus") through the crate ipmi-rs 0.6.
//!
//! off = Chassis Control "power down", then Get Chassis Status until it reads off;
//! on likewise; reboot = off, confirmed, then on, confirmed (never "power cycle").
//! One session per BMC is opened on first use, raised to the configured privilege
//! with Set Session Privilege Level, and reused: ipmi-rs cannot close a session,
//! and a BMC has few slots (ipmi_sim: 63, freed 30 s after a session's last use).
//! A lost answer or a broken session is retried on a fresh session until the
//! device's `timeout_ms`; a wrong password or missing privilege is not retried.
//! ipmi-rs blocks, so each operation runs on a blocking thread, and every call
//! into it sits in `catch_unwind`.
//!
//! # What ipmi-rs 0.6.0 lacks, and what tandem does about it
//!
//! Read in its source (`~/.cargo/registry/src/*/ipmi-rs-0.6.0/src`); those
//! marked *(tested)* are exercised against ipmi_sim (OpenIPMI 2.0.33) by
//! `daemon/tests/fence_ipmi.rs`:
//!
//! - **Cipher suite 3 only.** `rmcp/v2_0/mod.rs`, `State::activate` hard-codes
//!   RAKP-HMAC-SHA1 / HMAC-SHA1-96 / AES-CBC-128 in the Open Session request; the
//!   SHA-256 suites (17) and the MD5 ones hit `todo!()` in
//!   `rmcp/v2_0/crypto/{state,sub_state}.rs`. A device configured with another
//!   suite fails with a clear error before anything is sent; fence such a BMC
//!   through `kind = "agent"` and `fence_ipmilan --cipher=17`. *(tested)*
//! - **No Close Session.** Nothing in `rmcp/` sends App 0x3C, and the BMC's
//!   session id it would need sits in a private field (`v2_0::State::session_id`).
//!   So sessions are reused instead of opened per call, and replaced (leaving the
//!   old one to the BMC's idle timeout) only after an error or 15 s unused.
//!   Measured: opening one per call, ipmi_sim refuses the 64th within 30 s (Open
//!   Session status "insufficient resources"); reusing one, 100 calls pass.
//!   *(tested)*
//! - **RAKP 2 status read from the wrong byte.** `rmcp/v2_0/messages/rakp_2.rs`,
//!   `RakpMessage2::from_data` takes `data[2]` (reserved) for the status, which
//!   is `data[1]` (IPMI v2.0 table 13-12; `rakp_4.rs` and `open_session.rs` use
//!   `data[1]`). An unknown user or a user below administrator is then reported
//!   as `ServerAuthenticationFailed`, like a wrong password. tandem then runs a
//!   password-free probe of its own (`ipmi/probe.rs`) to say which it was.
//!   *(tested: wrong password, user-privilege user, operator user, no such user)*
//! - **Administrator only, by privilege lookup.** `State::activate` sends RAKP 1
//!   with `PrivilegeLevel::Administrator` and the name-only lookup bit clear, and
//!   `internal.rs` asks Get Channel Authentication Capabilities at administrator
//!   too. A BMC that matches users by name *and* privilege (ipmi_sim does) lets
//!   no operator-limited account in, whatever `privilege` says; `privilege =
//!   "operator"` only chooses the level the session is raised to afterwards.
//!   *(tested)*
//! - **IPMI 1.5 is broken.** `activate(true, ..)` (`rmcp/internal.rs`) silently
//!   falls back to v1.5 when the BMC does not offer v2.0, and those sessions fail
//!   their auth codes. tandem builds ipmi-rs without its `md5` feature, reports a
//!   failed v1.5 login as "unsupported: enable RMCP+", and a v1.5 session that
//!   does open fails on its first command. (Seen when REAL-PARTS.md was
//!   written; ipmi_sim always offers v2.0, so the tests cannot reach it.)
//! - **Panics.** `v2_0::State::send` `unwrap()`s the socket send (a pending ICMP
//!   error makes it panic), `activate` `unwrap()`s the RAKP 4 decode, and
//!   sequence number wrap is `todo!()`. Caught; the attempt fails with
//!   [`DeviceErrorKind::LibraryPanic`]. (The release profile must keep
//!   `panic = "unwind"` for this to work.)
//! - **Other edges.** No retransmission and no sequence-number check on answers
//!   (so tandem retries on a fresh socket, never the same one); the read timeout
//!   is fixed when the socket is made, so one try can overrun the deadline by up
//!   to a try's length (the async side still answers on time); a user name that
//!   is not ASCII or holds a NUL becomes the null user and a longer one is cut
//!   at 16 characters (`rmcp/internal.rs`, `Username::new`; tandem refuses
//!   both); an ASF ping is required before login (BMCs that ignore pings cannot
//!   be used); the socket binds `[::]:0`, so IPv6 must be enabled; the password
//!   is copied into an unzeroized `Vec`; the Open Session status type is private
//!   (`OpenSessionResponseErrorStatusCode`), so "no free session slot" can only
//!   be shown, not matched.

mod probe;
mod session;

use super::{DeviceError, DeviceErrorKind, DeviceId, FenceAction, Fencer, PowerState};
use crate::config::IpmiDevice;
use session::{Link, Session};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The one cipher suite ipmi-rs speaks.
const SUPPORTED_CIPHER_SUITE: u8 = 3;
/// The async side waits this much past the device's timeout for the blocking
/// side's own error, which says more than "timed out".
const ANSWER_GRACE: Duration = Duration::from_millis(50);

/// A BMC. Cloning the configuration is cheap; the session is shared by every
/// operation on this device, one operation at a time.
#[derive(Debug)]
pub struct IpmiFencer {
    id: DeviceId,
    config: Arc<IpmiDevice>,
    session: Arc<Mutex<Option<Session>>>,
}

impl IpmiFencer {
    pub fn new(config: IpmiDevice) -> Self {
        let host = if config.address.contains(':') {
            format!("[{}]", config.address)
        } else {
            config.address.clone()
        };
        IpmiFencer {
            id: DeviceId {
                kind: "ipmi",
                target: format!("{host}:{}", config.port),
            },
            config: Arc::new(config),
            session: Arc::new(Mutex::new(None)),
        }
    }

    fn err(&self, action: FenceAction, kind: DeviceErrorKind) -> DeviceError {
        DeviceError {
            device: self.id.clone(),
            action,
            kind,
        }
    }

    async fn act(&self, action: FenceAction) -> Result<PowerState, DeviceError> {
        if self.config.cipher_suite != SUPPORTED_CIPHER_SUITE {
            return Err(self.err(
                action,
                DeviceErrorKind::Unsupported {
                    detail: format!(
                        "cipher suite {} is not available (the IPMI library, ipmi-rs 0.6, speaks only suite 3); \
                         set cipher_suite = 3, or use kind = \"agent\" with /usr/sbin/fence_ipmilan and \
                         options {{ lanplus = true, cipher = {} }}",
                        self.config.cipher_suite, self.config.cipher_suite
                    ),
                },
            ));
        }
        let budget = Duration::from_millis(self.config.timeout_ms);
        let deadline = Instant::now() + budget;
        let slot = self.session.clone();
        let config = self.config.clone();
        let work = async move {
            // Owned, and moved into the blocking thread: if the caller gives up,
            // the lock is still held until that thread is done with the session.
            let mut slot = slot.lock_owned().await;
            let job = tokio::task::spawn_blocking(move || {
                session::guarded("the IPMI operation", || {
                    Link::new(&config, &mut slot, deadline, budget).perform(action)
                })
                .and_then(|r| r)
            });
            match job.await {
                Ok(result) => result,
                Err(e) => Err(DeviceErrorKind::LibraryPanic {
                    message: if e.is_panic() {
                        session::panic_message(e.into_panic().as_ref())
                    } else {
                        "the blocking task was cancelled".to_string()
                    },
                }),
            }
        };
        match tokio::time::timeout(budget + ANSWER_GRACE, work).await {
            Ok(result) => result.map_err(|k| self.err(action, k)),
            Err(_) => Err(self.err(
                action,
                DeviceErrorKind::Timeout {
                    ms: super::ms(budget),
                    detail: "the BMC stopped answering (or an earlier operation on it still runs)".into(),
                },
            )),
        }
    }
}

impl Fencer for IpmiFencer {
    fn id(&self) -> &DeviceId {
        &self.id
    }

    async fn run(&self, action: FenceAction) -> Result<PowerState, DeviceError> {
        self.act(action).await
    }
}
