//! The blocking side of the IPMI device: one RMCP+ session per BMC, kept open
//! between operations, with every call into ipmi-rs bounded by the operation's
//! deadline and guarded against panics. Runs only on a blocking thread.

use super::probe::{self, Diagnosis};
use crate::config::{IpmiDevice, IpmiPrivilege};
use crate::fence::{DeviceErrorKind, FenceAction, PowerState};
use ipmi_rs::connection::{CompletionErrorCode, IpmiCommand, Message, NetFn};
use ipmi_rs::rmcp::{
    ActivationError, RmcpIpmiError, RmcpIpmiReceiveError, RmcpIpmiSendError, V2_0ActivationError, V2_0WriteError,
};
use ipmi_rs::{Ipmi, IpmiError};
use std::any::Any;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// A session unused this long is replaced before use, not tried: BMCs drop idle
/// sessions (ipmi_sim after 30 s, most BMCs after 60 s) without telling, and a
/// request on a dropped session costs a whole receive timeout.
const IDLE_LIMIT: Duration = Duration::from_secs(15);
/// Between two Get Chassis Status while waiting for the power to change.
const POLL: Duration = Duration::from_millis(100);
/// Between retries after "node busy".
const BUSY_PAUSE: Duration = Duration::from_millis(100);
/// Between retries after a failure that came back at once (a garbled answer),
/// so a confused BMC is not flooded until the deadline.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

// IPMI v2.0 commands tandem sends; ipmi-rs 0.6 has none of them as types.
const CMD_GET_CHASSIS_STATUS: u8 = 0x01;
const CMD_CHASSIS_CONTROL: u8 = 0x02;
const CMD_SET_SESSION_PRIVILEGE: u8 = 0x3B;
const CHASSIS_POWER_DOWN: u8 = 0x00;
const CHASSIS_POWER_UP: u8 = 0x01;

/// An open session and when it was last used.
pub(super) struct Session {
    ipmi: Ipmi<ipmi_rs::rmcp::Rmcp>,
    last_used: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("idle", &self.last_used.elapsed())
            .finish_non_exhaustive()
    }
}

/// One request, sent as is: the response data (after the completion code) is
/// returned raw and parsed by the caller.
#[derive(Clone)]
struct Raw {
    netfn: NetFn,
    cmd: u8,
    data: Vec<u8>,
}

impl From<Raw> for Message {
    fn from(r: Raw) -> Message {
        Message::new_request(r.netfn, r.cmd, r.data)
    }
}

impl IpmiCommand for Raw {
    type Output = Vec<u8>;
    type Error = ();

    fn parse_success_response(data: &[u8]) -> Result<Vec<u8>, ()> {
        Ok(data.to_vec())
    }
}

/// Runs `f`, turning a panic inside ipmi-rs into an error: the library
/// `unwrap()`s some socket errors, and a fence attempt must fail, not the daemon.
pub(super) fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, DeviceErrorKind> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| DeviceErrorKind::LibraryPanic {
        message: format!("{what}: {}", panic_message(payload.as_ref())),
    })
}

pub(super) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// One operation against one BMC.
pub(super) struct Link<'a> {
    cfg: &'a IpmiDevice,
    slot: &'a mut Option<Session>,
    deadline: Instant,
    budget: Duration,
    /// How long one request waits for its answer before it is sent again.
    per_try: Duration,
}

impl<'a> Link<'a> {
    pub(super) fn new(cfg: &'a IpmiDevice, slot: &'a mut Option<Session>, deadline: Instant, budget: Duration) -> Self {
        Link {
            cfg,
            slot,
            deadline,
            budget,
            per_try: per_try(budget),
        }
    }

    pub(super) fn perform(&mut self, action: FenceAction) -> Result<PowerState, DeviceErrorKind> {
        match action {
            FenceAction::Status => self.power_status(),
            FenceAction::Off => self.switch(PowerState::Off),
            FenceAction::On => self.switch(PowerState::On),
            FenceAction::Reboot => {
                // Never "power cycle": some BMCs refuse it when the node is off,
                // others report success before anything happened.
                self.switch(PowerState::Off)?;
                self.switch(PowerState::On)
            }
        }
    }

    fn power_status(&mut self) -> Result<PowerState, DeviceErrorKind> {
        let data = self.call("Get Chassis Status", NetFn::Chassis, CMD_GET_CHASSIS_STATUS, vec![])?;
        match data.first() {
            Some(b) if b & 1 == 1 => Ok(PowerState::On),
            Some(_) => Ok(PowerState::Off),
            None => Err(DeviceErrorKind::Protocol {
                detail: "Get Chassis Status answered without data".into(),
            }),
        }
    }

    /// Chassis Control, then Get Chassis Status until the power is `want`.
    fn switch(&mut self, want: PowerState) -> Result<PowerState, DeviceErrorKind> {
        let (op, name) = match want {
            PowerState::Off => (CHASSIS_POWER_DOWN, "Chassis Control (power down)"),
            PowerState::On => (CHASSIS_POWER_UP, "Chassis Control (power up)"),
        };
        if let Err(e) = self.call(name, NetFn::Chassis, CMD_CHASSIS_CONTROL, vec![op]) {
            // Some BMCs refuse to power down what is already off ("not supported
            // in present state"): that is fine if the status says so.
            if !matches!(e, DeviceErrorKind::Refused { .. }) || self.power_status().ok() != Some(want) {
                return Err(e);
            }
        }
        loop {
            let seen = self.power_status()?;
            if seen == want {
                return Ok(seen);
            }
            if Instant::now() + POLL >= self.deadline {
                return Err(DeviceErrorKind::NotConfirmed {
                    wanted: want,
                    seen,
                    ms: crate::fence::ms(self.budget),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    fn pause(&self) {
        std::thread::sleep(RETRY_PAUSE.min(self.remaining()));
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn timed_out(&self, detail: String) -> DeviceErrorKind {
        DeviceErrorKind::Timeout {
            ms: crate::fence::ms(self.budget),
            detail,
        }
    }

    /// Sends one request on the session (opening one when needed), and sends it
    /// again on a fresh session after a lost answer or a broken session, until
    /// the deadline. A fresh session also means a fresh socket, so a late answer
    /// to an earlier try cannot be taken for the answer to this one (ipmi-rs does
    /// not check sequence numbers).
    fn call(&mut self, what: &str, netfn: NetFn, cmd: u8, data: Vec<u8>) -> Result<Vec<u8>, DeviceErrorKind> {
        let mut last: Option<DeviceErrorKind> = None;
        loop {
            // A try that cannot finish before the deadline is not started, so
            // the caller gets this error rather than a bare timeout.
            let room = if last.is_some() {
                self.per_try
            } else {
                Duration::from_millis(10)
            };
            if self.remaining() < room {
                return Err(last
                    .map(|e| match e {
                        DeviceErrorKind::Timeout { detail, .. } => self.timed_out(detail),
                        other => other,
                    })
                    .unwrap_or_else(|| self.timed_out(format!("no time left for {what}"))));
            }
            if self.slot.as_ref().is_some_and(|s| s.last_used.elapsed() > IDLE_LIMIT) {
                *self.slot = None;
            }
            if self.slot.is_none() {
                match self.open() {
                    Ok(session) => *self.slot = Some(session),
                    Err(e) if e.is_transient() => {
                        last = Some(e);
                        self.pause();
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(session) = self.slot.as_mut() else {
                continue;
            };
            let request = Raw {
                netfn,
                cmd,
                data: data.clone(),
            };
            let answer = guarded(what, || session.ipmi.send_recv(request));
            match answer {
                Ok(Ok(data)) => {
                    session.last_used = Instant::now();
                    return Ok(data);
                }
                Ok(Err(IpmiError::Failed {
                    completion_code: CompletionErrorCode::NodeBusy,
                    ..
                })) => {
                    session.last_used = Instant::now();
                    last = Some(DeviceErrorKind::Protocol {
                        detail: format!("the BMC stayed busy (completion code 0xC0) for {what}"),
                    });
                    std::thread::sleep(BUSY_PAUSE.min(self.remaining()));
                }
                Ok(Err(e)) => {
                    let kind = self.command_error(what, e);
                    // The session may be out of step or gone: start over on a new one.
                    *self.slot = None;
                    if !kind.is_transient() {
                        return Err(kind);
                    }
                    last = Some(kind);
                    self.pause();
                }
                Err(panic) => {
                    *self.slot = None;
                    return Err(panic);
                }
            }
        }
    }

    fn command_error(&self, what: &str, e: IpmiError<RmcpIpmiError, ()>) -> DeviceErrorKind {
        match e {
            IpmiError::Failed {
                completion_code: CompletionErrorCode::InsufficientPrivilege,
                ..
            } => DeviceErrorKind::Privilege {
                detail: format!(
                    "the BMC refused {what} to user \"{}\" (completion code 0xD4); it needs at least operator privilege",
                    self.cfg.username
                ),
            },
            IpmiError::Failed {
                completion_code, data, ..
            } => DeviceErrorKind::Refused {
                detail: format!("the BMC refused {what}: {completion_code:?}{}", hex_suffix(&data)),
            },
            IpmiError::Connection(RmcpIpmiError::Receive(RmcpIpmiReceiveError::Io(io))) => {
                self.io_error(what, &io)
            }
            IpmiError::Connection(RmcpIpmiError::Send(RmcpIpmiSendError::V2_0(V2_0WriteError::Io(io)))) => {
                self.io_error(what, &io)
            }
            other => DeviceErrorKind::Protocol {
                detail: format!("unexpected answer to {what}: {other:?}"),
            },
        }
    }

    /// A socket error while sending `what` or waiting for its answer.
    fn io_error(&self, what: &str, e: &io::Error) -> DeviceErrorKind {
        let at = format!("{}:{}", self.cfg.address, self.cfg.port);
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.timed_out(format!(
                "the BMC does not answer: no reply to {what} ({} ms per try, tried until the deadline)",
                self.per_try.as_millis()
            )),
            io::ErrorKind::ConnectionRefused => DeviceErrorKind::Unreachable {
                detail: format!("nothing listens on UDP {at} (ICMP port unreachable after {what})"),
            },
            _ => DeviceErrorKind::Unreachable {
                detail: format!("{what} to {at}: {e}"),
            },
        }
    }

    /// Opens an RMCP+ session and raises it to the configured privilege.
    fn open(&mut self) -> Result<Session, DeviceErrorKind> {
        let cfg = self.cfg;
        check_username(&cfg.username)?;
        let password = cfg.password.read().map_err(DeviceErrorKind::Secret)?;
        if password.expose().len() > 20 {
            return Err(DeviceErrorKind::Unsupported {
                detail: "the password is longer than 20 bytes, the most IPMI v2.0 allows".into(),
            });
        }
        let target = (cfg.address.as_str(), cfg.port);
        let mut rmcp =
            guarded("opening the socket", || ipmi_rs::rmcp::Rmcp::new(target, self.per_try))?.map_err(|e| {
                DeviceErrorKind::Unreachable {
                    detail: format!("cannot resolve {}: {e}", cfg.address),
                }
            })?;
        let activated = guarded("opening the session", || {
            rmcp.activate(true, Some(&cfg.username), Some(password.expose().as_bytes()))
        })?;
        if let Err(e) = activated {
            return Err(self.activation_error(e));
        }
        let mut session = Session {
            ipmi: Ipmi::new(rmcp),
            last_used: Instant::now(),
        };
        // Sessions start at user privilege, at which Chassis Control is refused.
        let level = match cfg.privilege {
            IpmiPrivilege::Admin => 4,
            IpmiPrivilege::Operator => 3,
        };
        let raise = Raw {
            netfn: NetFn::App,
            cmd: CMD_SET_SESSION_PRIVILEGE,
            data: vec![level],
        };
        match guarded("Set Session Privilege Level", || session.ipmi.send_recv(raise))? {
            Ok(_) => Ok(session),
            Err(IpmiError::Failed { completion_code, .. }) => Err(DeviceErrorKind::Privilege {
                detail: format!(
                    "user \"{}\" may not raise its session to {} privilege ({completion_code:?}); \
                     give the user that privilege on the BMC or set privilege = \"operator\"",
                    cfg.username,
                    privilege_word(cfg.privilege)
                ),
            }),
            Err(e) => Err(self.command_error("Set Session Privilege Level", e)),
        }
    }

    fn activation_error(&self, e: ActivationError) -> DeviceErrorKind {
        use V2_0ActivationError as V2;
        match e {
            ActivationError::BindSocket(e) => DeviceErrorKind::Unreachable {
                detail: format!("cannot open a UDP socket (ipmi-rs binds [::]:0, so IPv6 must be enabled): {e}"),
            },
            ActivationError::PingSend(e) => self.io_error("the RMCP ping", &e),
            ActivationError::PongReceive(e) => self.io_error("the RMCP ping", &e),
            ActivationError::IpmiNotSupported => DeviceErrorKind::Unsupported {
                detail: "the device answers RMCP pings but says it does not speak IPMI".into(),
            },
            ActivationError::V1_5(e) => DeviceErrorKind::Unsupported {
                detail: format!(
                    "the BMC offered only IPMI v1.5, which tandem does not use (ipmi-rs 0.6's v1.5 \
                     sessions fail their auth codes); enable IPMI v2.0 / RMCP+ on the BMC ({e:?})"
                ),
            },
            ActivationError::GetChannelAuthenticationCapabilities(IpmiError::Connection(RmcpIpmiError::Receive(
                RmcpIpmiReceiveError::Io(e),
            ))) => self.io_error("Get Channel Authentication Capabilities", &e),
            ActivationError::GetChannelAuthenticationCapabilities(IpmiError::Failed { completion_code, .. }) => {
                DeviceErrorKind::Privilege {
                    detail: format!(
                        "the BMC's LAN channel refused an administrator login ({completion_code:?}); \
                         ipmi-rs always asks for administrator"
                    ),
                }
            }
            ActivationError::V2_0(V2::ServerAuthenticationFailed) => self.diagnose_login(),
            ActivationError::V2_0(V2::RakpMessage4Parse(e)) => DeviceErrorKind::WrongPassword {
                user: self.cfg.username.clone(),
                detail: format!("the BMC rejected tandem's RAKP message 3: {e:?}"),
            },
            ActivationError::V2_0(
                V2::OpenSessionResponseReceive(RmcpIpmiReceiveError::Io(e))
                | V2::RakpMessage2Receive(RmcpIpmiReceiveError::Io(e))
                | V2::RakpMessage4Receive(RmcpIpmiReceiveError::Io(e)),
            ) => self.io_error("the RMCP+ session setup", &e),
            ActivationError::V2_0(V2::OpenSessionResponseParse(e)) => DeviceErrorKind::Refused {
                detail: format!(
                    "the BMC refused to open an RMCP+ session with cipher suite 3: {e:?} \
                     (a BMC with no free session slots answers this too)"
                ),
            },
            other => DeviceErrorKind::Protocol {
                detail: format!("RMCP+ session setup failed: {other:?}"),
            },
        }
    }

    /// ipmi-rs reports every refused login as a failed RAKP 2 check (it reads
    /// the RAKP 2 status from the wrong byte), so a wrong password, an unknown
    /// user and a user without the privilege look alike. A probe of our own,
    /// which stops before any password is involved, tells them apart.
    fn diagnose_login(&self) -> DeviceErrorKind {
        let user = self.cfg.username.clone();
        let timeout = self.per_try.min(self.remaining()).max(Duration::from_millis(50));
        match probe::diagnose(&self.cfg.address, self.cfg.port, &user, timeout) {
            Diagnosis::NoSuchUser => DeviceErrorKind::UnknownUser {
                user,
                detail: "RAKP 2 status: unauthorized name".into(),
            },
            Diagnosis::BelowAdministrator => DeviceErrorKind::Privilege {
                detail: format!(
                    "user \"{user}\" exists but may not log in as administrator, which ipmi-rs always \
                     requests; raise the user's privilege limit on the BMC to administrator, or fence \
                     through kind = \"agent\" with fence_ipmilan (option privlvl)"
                ),
            },
            Diagnosis::UserAccepted => DeviceErrorKind::WrongPassword {
                user,
                detail: "RAKP 2 proved a different password".into(),
            },
            Diagnosis::Unknown(why) => DeviceErrorKind::WrongPassword {
                user,
                detail: format!("or the user lacks administrator privilege; the BMC's key exchange failed ({why})"),
            },
        }
    }
}

/// How long one request waits for an answer: a quarter of the budget, so a
/// lost packet still leaves time for three more tries, but at most a second
/// (what ipmitool waits) and at least 100 ms.
pub(super) fn per_try(budget: Duration) -> Duration {
    (budget / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// ipmi-rs silently logs in as the null user when a name is not plain ASCII or
/// holds a NUL, and cuts names at 16 characters: refuse those instead.
fn check_username(user: &str) -> Result<(), DeviceErrorKind> {
    if user.len() > 16 || !user.bytes().all(|b| b.is_ascii() && b != 0) {
        return Err(DeviceErrorKind::Unsupported {
            detail: format!("user name \"{user}\" must be at most 16 ASCII characters for IPMI"),
        });
    }
    Ok(())
}

fn privilege_word(p: IpmiPrivilege) -> &'static str {
    match p {
        IpmiPrivilege::Admin => "administrator",
        IpmiPrivilege::Operator => "operator",
    }
}

fn hex_suffix(data: &[u8]) -> String {
    if data.is_empty() {
        String::new()
    } else {
        let hex: Vec<String> = data.iter().map(|b| format!("{b:02x}")).collect();
        format!(" (data {})", hex.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error() {
        let r: Result<(), _> = guarded("Chassis Control", || panic!("socket said no"));
        match r {
            Err(DeviceErrorKind::LibraryPanic { message }) => {
                assert_eq!(message, "Chassis Control: socket said no")
            }
            other => panic!("unexpected {other:?}"),
        }
        let owned: Result<(), _> = guarded("x", || std::panic::panic_any(String::from("owned")));
        assert!(matches!(owned, Err(DeviceErrorKind::LibraryPanic { message }) if message == "x: owned"));
    }

    #[test]
    fn tries_are_bounded() {
        assert_eq!(per_try(Duration::from_millis(200)), Duration::from_millis(100));
        assert_eq!(per_try(Duration::from_millis(2000)), Duration::from_millis(500));
        assert_eq!(per_try(Duration::from_secs(30)), Duration::from_secs(1));
    }

    #[test]
    fn user_names_ipmi_rs_would_mangle_are_refused() {
        assert!(check_username("admin").is_ok());
        assert!(check_username("").is_ok(), "the null user is a real IPMI user");
        assert!(check_username("seventeen-chars-x").is_err());
        assert!(check_username("usér").is_err());
    }
}
