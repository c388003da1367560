//! XenAPI fencing (a node that is itself a VM on a XenServer / XCP-ng pool),
//! through the `xapi-fence` crate.
//!
//! Each action is one XenAPI session (login, find the VM, act, read the power
//! state back until it is what was asked, logout). off = `VM.hard_shutdown`,
//! confirmed Halted; on = `VM.start` (not paused), confirmed Running; reboot =
//! off, confirmed, then on, confirmed; status: Halted is off, anything else
//! (Running, Paused, Suspended) is on, since only a halted VM has let go of
//! its disks. The client is kept for the daemon's lifetime so that the pool
//! master a HOST_IS_SLAVE answer pointed to is remembered; the password is
//! read again before every action, so a rotated one needs no reload.
//!
//! The whole action is bounded by the device's `timeout_ms`: each XenAPI call
//! by the smaller of 5 s and that, the power change and its confirmation by
//! `timeout_ms`. If the deadline cuts an action short, the session is logged
//! out in the background.

use super::{DeviceError, DeviceErrorKind, DeviceId, FenceAction, Fencer, PowerState};
use crate::config::{SecretString, XapiDevice, XapiTls};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use xapi_fence::{Action, Client, Config, Error as XapiError, Password, TlsMode};

/// The longest one XenAPI call may take, within the device's budget.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The async side waits this much past the budget for the client's own error,
/// which says more than "timed out".
const ANSWER_GRACE: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub struct XapiFencer {
    id: DeviceId,
    config: XapiDevice,
    /// Built on first use; one action at a time. Boxed: a client is large,
    /// and `Device` holds every kind of fencer by value.
    client: Mutex<Option<Box<Client>>>,
}

impl XapiFencer {
    pub fn new(config: XapiDevice) -> Self {
        XapiFencer {
            id: DeviceId {
                kind: "xapi",
                target: format!("{} (VM {})", config.url, config.vm),
            },
            config,
            client: Mutex::new(None),
        }
    }

    fn err(&self, action: FenceAction, kind: DeviceErrorKind) -> DeviceError {
        DeviceError {
            device: self.id.clone(),
            action,
            kind,
        }
    }

    fn budget(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    fn client_config(&self, password: &SecretString) -> Config {
        let budget = self.budget();
        let mut c = Config::new(
            self.config.url.clone(),
            self.config.username.clone(),
            Password::new(password.expose()),
        );
        c.tls = match &self.config.tls {
            XapiTls::SystemRoots => TlsMode::SystemRoots,
            XapiTls::CaFile(p) => TlsMode::CaFile(p.clone()),
            XapiTls::Fingerprint(f) => TlsMode::Fingerprint(*f),
            XapiTls::Insecure => TlsMode::Insecure,
        };
        c.call_timeout = CALL_TIMEOUT.min(budget);
        c.power_timeout = budget;
        c.poll_interval = Duration::from_millis(200);
        c
    }

    async fn password(&self, deadline: Instant) -> Result<SecretString, DeviceErrorKind> {
        let secret = self.config.password.clone();
        // A password script must not run on the runtime's threads.
        let read = tokio::task::spawn_blocking(move || secret.read());
        match tokio::time::timeout_at(deadline.into(), read).await {
            Err(_) => Err(DeviceErrorKind::Timeout {
                ms: self.config.timeout_ms,
                detail: "reading the password took the whole time".into(),
            }),
            Ok(Ok(Ok(p))) => Ok(p),
            Ok(Ok(Err(e))) => Err(DeviceErrorKind::Secret(e)),
            Ok(Err(e)) => Err(DeviceErrorKind::Spawn {
                detail: format!("reading the password failed: {e}"),
            }),
        }
    }

    async fn act(&self, action: FenceAction) -> Result<PowerState, DeviceErrorKind> {
        let budget = self.budget();
        let deadline = Instant::now() + budget;
        let password = self.password(deadline).await?;
        let mut slot = self.client.lock().await;
        let client = match slot.as_mut() {
            Some(c) => {
                c.set_password(Password::new(password.expose()));
                c
            }
            None => {
                let c = Client::new(self.client_config(&password)).map_err(|e| kind(e, budget))?;
                slot.insert(Box::new(c))
            }
        };
        let vm = self.config.vm.as_str();
        let (xapi_action, wanted) = match action {
            FenceAction::Status => (Action::Status, None),
            FenceAction::Off => (Action::Off, Some(PowerState::Off)),
            FenceAction::On => (Action::On, Some(PowerState::On)),
            FenceAction::Reboot => (Action::Reboot, Some(PowerState::On)),
        };
        let state = client.run(xapi_action, vm).await.map_err(|e| kind(e, budget))?;
        let state = if state.is_off() {
            PowerState::Off
        } else {
            PowerState::On
        };
        match wanted {
            Some(w) if w != state => Err(DeviceErrorKind::NotConfirmed {
                wanted: w,
                seen: state,
                ms: super::ms(budget),
            }),
            _ => Ok(state),
        }
    }
}

/// What went wrong, in the daemon's terms.
fn kind(e: XapiError, budget: Duration) -> DeviceErrorKind {
    let detail = e.to_string();
    match e {
        e if e.is_auth_failure() => DeviceErrorKind::WrongPassword {
            user: match &e {
                XapiError::Api { params, .. } => params.first().cloned().unwrap_or_default(),
                _ => String::new(),
            },
            detail,
        },
        e if e.is_permission_denied() => DeviceErrorKind::Privilege { detail },
        XapiError::Connect { .. } => DeviceErrorKind::Unreachable { detail },
        XapiError::Timeout { .. } => DeviceErrorKind::Timeout {
            ms: super::ms(budget),
            detail,
        },
        XapiError::NotConfirmed { wanted, seen, ms, .. } => DeviceErrorKind::NotConfirmed {
            wanted: if wanted.is_off() {
                PowerState::Off
            } else {
                PowerState::On
            },
            seen: if seen.is_off() { PowerState::Off } else { PowerState::On },
            ms,
        },
        e if e.is_protocol() => DeviceErrorKind::Protocol { detail },
        XapiError::TlsSetup { .. } | XapiError::Url { .. } => DeviceErrorKind::Unsupported { detail },
        _ => DeviceErrorKind::Refused { detail },
    }
}

impl Fencer for XapiFencer {
    fn id(&self) -> &DeviceId {
        &self.id
    }

    async fn run(&self, action: FenceAction) -> Result<PowerState, DeviceError> {
        let budget = self.budget();
        match tokio::time::timeout(budget + ANSWER_GRACE, self.act(action)).await {
            Ok(result) => result.map_err(|k| self.err(action, k)),
            Err(_) => Err(self.err(
                action,
                DeviceErrorKind::Timeout {
                    ms: super::ms(budget),
                    detail: "the pool did not finish in time (or an earlier action on this device still runs)".into(),
                },
            )),
        }
    }
}
