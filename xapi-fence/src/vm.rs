//! Fencing a VM: find it (UUID, or a name label that exactly one VM has),
//! refuse templates and control domains, change its power and confirm the new
//! state by reading it back. Every operation is one session, logged out at the
//! end whatever happened.

use crate::client::{Client, Session};
use crate::error::{Error, Result};
use crate::xmlrpc::Value;
use std::fmt;
use std::time::{Duration, Instant};

/// A VM's `power_state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerState {
    Halted,
    Paused,
    Running,
    Suspended,
    /// Anything else the server says.
    Other(String),
}

impl PowerState {
    pub fn parse(s: &str) -> PowerState {
        match s.to_ascii_lowercase().as_str() {
            "halted" => PowerState::Halted,
            "paused" => PowerState::Paused,
            "running" => PowerState::Running,
            "suspended" => PowerState::Suspended,
            _ => PowerState::Other(s.chars().take(40).collect()),
        }
    }

    /// Off, for fencing: only Halted. A paused or suspended VM still holds its
    /// disks and could come back, so it is not "off".
    pub fn is_off(&self) -> bool {
        *self == PowerState::Halted
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PowerState::Halted => f.write_str("Halted"),
            PowerState::Paused => f.write_str("Paused"),
            PowerState::Running => f.write_str("Running"),
            PowerState::Suspended => f.write_str("Suspended"),
            PowerState::Other(s) => write!(f, "{s:?}"),
        }
    }
}

/// A VM, as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmInfo {
    pub reference: String,
    pub uuid: String,
    pub name_label: String,
    pub power_state: PowerState,
}

/// Whether `s` has a UUID's shape (8-4-4-4-12 hex digits).
pub fn looks_like_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn malformed(method: &str, detail: impl Into<String>) -> Error {
    Error::Malformed {
        method: method.to_string(),
        detail: detail.into(),
    }
}

fn string(method: &str, v: Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(malformed(method, format!("expected a string, got a {}", other.kind()))),
    }
}

fn field_bool(method: &str, record: &Value, name: &str) -> Result<bool> {
    match record.get(name) {
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(malformed(
            method,
            format!("{name} is a {}, not a boolean", other.kind()),
        )),
        None => Err(malformed(method, format!("the record has no {name}"))),
    }
}

fn field_str<'v>(method: &str, record: &'v Value, name: &str) -> Result<&'v str> {
    match record.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(malformed(method, format!("{name} is a {}, not a string", other.kind()))),
        None => Err(malformed(method, format!("the record has no {name}"))),
    }
}

/// The VM an operation works on.
struct Target {
    reference: String,
    label: String,
}

impl Session<'_> {
    async fn find_vm(&mut self, vm: &str) -> Result<Target> {
        let mut reference = None;
        if looks_like_uuid(vm) {
            match self
                .call("VM.get_by_uuid", &[Value::str(vm.to_ascii_lowercase())])
                .await
            {
                Ok(v) => reference = Some(string("VM.get_by_uuid", v)?),
                // A name label may look like a UUID too.
                Err(Error::Api { code, .. }) if code == "UUID_INVALID" => {}
                Err(e) => return Err(e),
            }
        }
        let reference = match reference {
            Some(r) => r,
            None => {
                let method = "VM.get_by_name_label";
                let found = self.call(method, &[Value::str(vm)]).await?;
                let Value::Array(items) = found else {
                    return Err(malformed(method, format!("expected an array, got a {}", found.kind())));
                };
                match items.len() {
                    0 => return Err(Error::NoSuchVm { vm: vm.to_string() }),
                    1 => {}
                    count => {
                        return Err(Error::AmbiguousVm {
                            vm: vm.to_string(),
                            count,
                        })
                    }
                }
                let mut items = items;
                string(method, items.remove(0))?
            }
        };
        let method = "VM.get_record";
        let record = self.call(method, &[Value::str(reference.clone())]).await?;
        if field_bool(method, &record, "is_a_template")? {
            return Err(Error::Template { vm: vm.to_string() });
        }
        if field_bool(method, &record, "is_control_domain")? {
            return Err(Error::ControlDomain { vm: vm.to_string() });
        }
        Ok(Target {
            reference,
            label: vm.to_string(),
        })
    }

    async fn power_state(&mut self, target: &Target) -> Result<PowerState> {
        let method = "VM.get_power_state";
        let v = self.call(method, &[Value::str(target.reference.clone())]).await?;
        Ok(PowerState::parse(&string(method, v)?))
    }

    /// Reads the power state until `wanted`, or the power timeout.
    async fn confirm(&mut self, target: &Target, action: &'static str, wanted: PowerState) -> Result<()> {
        let cfg = &self.client().config;
        let (limit, every) = (cfg.power_timeout, cfg.poll_interval.max(Duration::from_millis(10)));
        let started = Instant::now();
        loop {
            let seen = self.power_state(target).await?;
            if seen == wanted {
                return Ok(());
            }
            if started.elapsed() + every > limit {
                return Err(Error::NotConfirmed {
                    vm: target.label.clone(),
                    action,
                    wanted,
                    seen,
                    ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                });
            }
            tokio::time::sleep(every).await;
        }
    }

    /// A power call bounded by the power timeout rather than the call timeout:
    /// xapi answers `VM.hard_shutdown` and `VM.start` when they are done.
    async fn power_call(&mut self, method: &str, params: &[Value]) -> Result<Value> {
        let cfg = &self.client().config;
        let t = cfg.power_timeout.max(cfg.call_timeout);
        self.call_with_timeout(method, params, t).await
    }

    /// Whether it had to do anything.
    async fn off(&mut self, target: &Target) -> Result<bool> {
        if self.power_state(target).await?.is_off() {
            return Ok(false);
        }
        match self
            .power_call("VM.hard_shutdown", &[Value::str(target.reference.clone())])
            .await
        {
            Ok(_) => {}
            // Already halted (by someone else, or between the read and the call).
            Err(e @ Error::Api { .. }) if e.api_code() == Some("VM_BAD_POWER_STATE") => {
                let now = self.power_state(target).await?;
                if !now.is_off() {
                    return Err(e);
                }
                tracing::info!(vm = %target.label, "VM_BAD_POWER_STATE on hard_shutdown: already Halted");
            }
            Err(e) => return Err(e),
        }
        self.settle().await;
        self.confirm(target, "VM.hard_shutdown", PowerState::Halted).await?;
        Ok(true)
    }

    async fn settle(&self) {
        let wait = self.client().config.power_wait;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    async fn on(&mut self, target: &Target) -> Result<bool> {
        match self.power_state(target).await? {
            PowerState::Running => return Ok(false),
            PowerState::Halted => {}
            state => {
                return Err(Error::WrongState {
                    vm: target.label.clone(),
                    state,
                    detail: "not resuming it (it would carry on from old memory); power it off first".into(),
                })
            }
        }
        // start_paused = false, force = false.
        let params = [
            Value::str(target.reference.clone()),
            Value::Bool(false),
            Value::Bool(false),
        ];
        match self.power_call("VM.start", &params).await {
            Ok(_) => {}
            Err(e @ Error::Api { .. }) if e.api_code() == Some("VM_BAD_POWER_STATE") => {
                if self.power_state(target).await? != PowerState::Running {
                    return Err(e);
                }
                tracing::info!(vm = %target.label, "VM_BAD_POWER_STATE on start: already Running");
            }
            Err(e) => return Err(e),
        }
        self.settle().await;
        self.confirm(target, "VM.start", PowerState::Running).await?;
        Ok(true)
    }
}

/// What [`Client::run`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Status,
    Off,
    On,
    /// Off, confirmed Halted, then start, confirmed Running (never
    /// `VM.hard_reboot`, which leaves no moment where the VM is known off).
    Reboot,
}

impl Client {
    /// Runs `action` on `vm` (a UUID or a name label) in one session, and
    /// returns the power state read at the end.
    pub async fn run(&self, action: Action, vm: &str) -> Result<PowerState> {
        self.run_reporting(action, vm).await.map(|(state, _)| state)
    }

    /// [`Client::run`], also saying whether the power had to change (false:
    /// it already was as asked).
    pub async fn run_reporting(&self, action: Action, vm: &str) -> Result<(PowerState, bool)> {
        let mut session = self.login().await?;
        let result = async {
            let target = session.find_vm(vm).await?;
            let changed = match action {
                Action::Status => false,
                Action::Off => session.off(&target).await?,
                Action::On => session.on(&target).await?,
                Action::Reboot => {
                    session.off(&target).await?;
                    session.on(&target).await?;
                    true
                }
            };
            Ok((session.power_state(&target).await?, changed))
        }
        .await;
        session.logout().await;
        result
    }

    pub async fn status(&self, vm: &str) -> Result<PowerState> {
        self.run(Action::Status, vm).await
    }

    /// Hard shutdown, confirmed Halted.
    pub async fn power_off(&self, vm: &str) -> Result<PowerState> {
        self.run(Action::Off, vm).await
    }

    /// Start (not paused), confirmed Running.
    pub async fn power_on(&self, vm: &str) -> Result<PowerState> {
        self.run(Action::On, vm).await
    }

    pub async fn reboot(&self, vm: &str) -> Result<PowerState> {
        self.run(Action::Reboot, vm).await
    }

    /// Logs in and out: the credentials work and the pool answers.
    pub async fn check(&self) -> Result<()> {
        self.login().await?.logout().await;
        Ok(())
    }

    /// Every VM that is not a template or a control domain.
    pub async fn list(&self) -> Result<Vec<VmInfo>> {
        let mut session = self.login().await?;
        let result = session.call("VM.get_all_records", &[]).await;
        session.logout().await;
        let method = "VM.get_all_records";
        let Value::Struct(records) = result? else {
            return Err(malformed(method, "expected a struct of records"));
        };
        let mut out = Vec::new();
        for (reference, record) in records {
            if field_bool(method, &record, "is_a_template")? || field_bool(method, &record, "is_control_domain")? {
                continue;
            }
            out.push(VmInfo {
                reference,
                uuid: field_str(method, &record, "uuid")?.to_string(),
                name_label: field_str(method, &record, "name_label")?.to_string(),
                power_state: PowerState::parse(field_str(method, &record, "power_state")?),
            });
        }
        out.sort_by(|a, b| a.name_label.cmp(&b.name_label).then(a.uuid.cmp(&b.uuid)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_and_power_states() {
        assert!(looks_like_uuid("0e2f6b1c-8a8d-4bfc-9c6e-2d1f0a9b7c31"));
        assert!(!looks_like_uuid("node-b"));
        assert!(!looks_like_uuid("0e2f6b1c-8a8d-4bfc-9c6e-2d1f0a9b7c3"));
        assert_eq!(PowerState::parse("halted"), PowerState::Halted);
        assert!(PowerState::parse("Halted").is_off());
        assert!(!PowerState::parse("Suspended").is_off());
    }
}
