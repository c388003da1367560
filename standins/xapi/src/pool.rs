//! The pool the stand-in pretends to be: hosts (one master), users, sessions
//! with expiry and a cap, VMs with power states and xapi's transitions, and
//! the XenAPI errors a client meets (HOST_IS_SLAVE, SESSION_INVALID,
//! HANDLE_INVALID, UUID_INVALID, VM_BAD_POWER_STATE, ...).

use crate::config::{PoolConfig, VmSpec};
use crate::xml::{failure, success, Val};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A XenAPI failure: code and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail(pub String, pub Vec<String>);

fn fail(code: &str, params: &[&str]) -> Fail {
    Fail(code.to_string(), params.iter().map(|p| p.to_string()).collect())
}

#[derive(Debug, Clone)]
pub struct Vm {
    pub reference: String,
    pub uuid: String,
    pub name_label: String,
    pub power_state: String,
    pub is_a_template: bool,
    pub is_control_domain: bool,
    pub resident_on: Option<usize>,
    pub domid: i64,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub reference: String,
    pub uuid: String,
    pub name_label: String,
    /// `127.0.0.1:PORT`, known once listening.
    pub address: String,
}

#[derive(Debug, Clone)]
struct Session {
    user: String,
    last_active: Instant,
    created: u64,
}

/// What clients did, for tests to check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub logins: u64,
    pub logouts: u64,
    pub failed_logins: u64,
    pub host_is_slave: u64,
    pub evicted: u64,
    pub expired: u64,
    /// Sessions open now.
    pub open: usize,
    /// Every call by method name (login included).
    pub calls: BTreeMap<String, u64>,
    /// (version, originator) of the last login that gave them.
    pub last_login: Option<(String, String)>,
}

#[derive(Debug)]
pub struct Pool {
    pub hosts: Vec<Host>,
    pub master: usize,
    users: BTreeMap<String, String>,
    pub vms: Vec<Vm>,
    sessions: BTreeMap<String, Session>,
    pub session_ttl: Duration,
    pub max_sessions: usize,
    pub delays: BTreeMap<String, u64>,
    pub stats: Stats,
    counter: u64,
}

fn power_lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

impl Pool {
    pub fn new(config: &PoolConfig) -> Pool {
        let mut pool = Pool {
            hosts: Vec::new(),
            master: 0,
            users: config
                .users
                .iter()
                .map(|u| (u.name.clone(), u.password.clone()))
                .collect(),
            vms: Vec::new(),
            sessions: BTreeMap::new(),
            session_ttl: Duration::from_millis(config.session_ttl_ms),
            max_sessions: config.max_sessions.max(1),
            delays: config.delays.clone(),
            stats: Stats::default(),
            counter: 0,
        };
        for i in 0..config.hosts.max(1) {
            let reference = pool.new_ref();
            let uuid = pool.new_uuid();
            pool.hosts.push(Host {
                reference,
                uuid,
                name_label: format!("host{i}"),
                address: String::new(),
            });
            // Every host runs its control domain.
            let spec = VmSpec {
                name_label: format!("Control domain on host: host{i}"),
                uuid: None,
                power_state: "Running".into(),
                is_a_template: false,
                is_control_domain: true,
                host: Some(i),
            };
            pool.add_vm(&spec);
        }
        for spec in &config.vms {
            pool.add_vm(spec);
        }
        pool
    }

    fn new_ref(&mut self) -> String {
        self.counter += 1;
        format!("OpaqueRef:{}", self.uuid_from(self.counter ^ 0x5eed_0000_0000))
    }

    fn new_uuid(&mut self) -> String {
        self.counter += 1;
        self.uuid_from(self.counter)
    }

    fn uuid_from(&self, n: u64) -> String {
        // Deterministic, well-formed, distinct per number.
        let x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (x >> 32) as u32,
            (x >> 16) as u16,
            (x & 0xfff) as u16,
            (n & 0xfff) as u16,
            n & 0xffff_ffff_ffff
        )
    }

    pub fn add_vm(&mut self, spec: &VmSpec) {
        let reference = self.new_ref();
        let uuid = match &spec.uuid {
            Some(u) => u.to_ascii_lowercase(),
            None => self.new_uuid(),
        };
        let running = spec.power_state != "Halted";
        self.vms.push(Vm {
            reference,
            uuid,
            name_label: spec.name_label.clone(),
            power_state: spec.power_state.clone(),
            is_a_template: spec.is_a_template,
            is_control_domain: spec.is_control_domain,
            resident_on: if running { Some(spec.host.unwrap_or(0)) } else { None },
            domid: if spec.is_control_domain { 0 } else { -1 },
        });
    }

    pub fn vm_by_name(&self, name: &str) -> Option<&Vm> {
        self.vms.iter().find(|v| v.name_label == name)
    }

    pub fn vm_by_name_mut(&mut self, name: &str) -> Option<&mut Vm> {
        self.vms.iter_mut().find(|v| v.name_label == name)
    }

    pub fn expire_all_sessions(&mut self) {
        let n = self.sessions.len();
        self.sessions.clear();
        self.stats.expired += n as u64;
        self.stats.open = 0;
    }

    pub fn delay_for(&self, method: &str) -> Option<Duration> {
        self.delays
            .get(method)
            .or_else(|| self.delays.get("*"))
            .map(|ms| Duration::from_millis(*ms))
    }

    /// Handles one call made to host `host`; returns the XenAPI envelope.
    pub fn handle(&mut self, host: usize, method: &str, params: &[Val]) -> Val {
        *self.stats.calls.entry(method.to_string()).or_default() += 1;
        match self.dispatch(host, method, params) {
            Ok(v) => success(v),
            Err(Fail(code, params)) => failure(&code, &params),
        }
    }

    fn dispatch(&mut self, host: usize, method: &str, params: &[Val]) -> Result<Val, Fail> {
        if method == "session.login_with_password" {
            return self.login(host, params);
        }
        let Some((class, _)) = method.split_once('.') else {
            return Err(fail("MESSAGE_METHOD_UNKNOWN", &[method]));
        };
        if !matches!(class, "session" | "VM" | "pool" | "host") {
            return Err(fail("MESSAGE_METHOD_UNKNOWN", &[method]));
        }
        let expected = arity(method).ok_or_else(|| fail("MESSAGE_METHOD_UNKNOWN", &[method]))?;
        if params.len() != expected {
            return Err(fail(
                "MESSAGE_PARAMETER_COUNT_MISMATCH",
                &[method, &expected.to_string(), &params.len().to_string()],
            ));
        }
        let session = str_param(params, 0)?;
        self.check_session(&session)?;
        match method {
            "session.logout" => {
                self.sessions.remove(&session);
                self.stats.logouts += 1;
                self.stats.open = self.sessions.len();
                Ok(Val::s(""))
            }
            "session.get_this_host" => Ok(Val::s(
                self.hosts.get(host).map(|h| h.reference.clone()).unwrap_or_default(),
            )),
            "pool.get_all" => Ok(Val::Array(vec![Val::s("OpaqueRef:pool-0")])),
            "pool.get_master" => {
                self.pool_ref(params)?;
                Ok(Val::s(
                    self.hosts
                        .get(self.master)
                        .map(|h| h.reference.clone())
                        .unwrap_or_default(),
                ))
            }
            "host.get_all" => Ok(Val::Array(
                self.hosts.iter().map(|h| Val::s(h.reference.clone())).collect(),
            )),
            "host.get_API_version_major" => self.host_ref(params).map(|_| Val::s("2")),
            "host.get_API_version_minor" => self.host_ref(params).map(|_| Val::s("21")),
            "host.get_address" => self.host_ref(params).map(|h| Val::s(self.hosts[h].address.clone())),
            "host.get_name_label" => self.host_ref(params).map(|h| Val::s(self.hosts[h].name_label.clone())),
            "VM.get_all" => Ok(Val::Array(
                self.vms.iter().map(|v| Val::s(v.reference.clone())).collect(),
            )),
            "VM.get_all_records" => Ok(Val::Struct(
                self.vms.iter().map(|v| (v.reference.clone(), self.record(v))).collect(),
            )),
            "VM.get_by_uuid" => {
                let uuid = str_param(params, 1)?.to_ascii_lowercase();
                self.vms
                    .iter()
                    .find(|v| v.uuid == uuid)
                    .map(|v| Val::s(v.reference.clone()))
                    .ok_or_else(|| fail("UUID_INVALID", &["VM", &uuid]))
            }
            "VM.get_by_name_label" => {
                let label = str_param(params, 1)?;
                Ok(Val::Array(
                    self.vms
                        .iter()
                        .filter(|v| v.name_label == label)
                        .map(|v| Val::s(v.reference.clone()))
                        .collect(),
                ))
            }
            "VM.get_record" => self.vm(params).map(|i| self.record(&self.vms[i])),
            "VM.get_power_state" => self.vm(params).map(|i| Val::s(self.vms[i].power_state.clone())),
            "VM.get_name_label" => self.vm(params).map(|i| Val::s(self.vms[i].name_label.clone())),
            "VM.get_uuid" => self.vm(params).map(|i| Val::s(self.vms[i].uuid.clone())),
            "VM.get_is_a_template" => self.vm(params).map(|i| Val::Bool(self.vms[i].is_a_template)),
            "VM.get_is_control_domain" => self.vm(params).map(|i| Val::Bool(self.vms[i].is_control_domain)),
            "VM.get_resident_on" => self.vm(params).map(|i| Val::s(self.resident(&self.vms[i]))),
            _ => self.power(method, params),
        }
    }

    fn login(&mut self, host: usize, params: &[Val]) -> Result<Val, Fail> {
        let method = "session.login_with_password";
        if !(2..=4).contains(&params.len()) {
            return Err(fail(
                "MESSAGE_PARAMETER_COUNT_MISMATCH",
                &[method, "4", &params.len().to_string()],
            ));
        }
        if host != self.master {
            self.stats.host_is_slave += 1;
            let address = self
                .hosts
                .get(self.master)
                .map(|h| h.address.clone())
                .unwrap_or_default();
            return Err(fail("HOST_IS_SLAVE", &[&address]));
        }
        let user = str_param(params, 0)?;
        let password = str_param(params, 1)?;
        if self.users.get(&user) != Some(&password) {
            self.stats.failed_logins += 1;
            return Err(fail(
                "SESSION_AUTHENTICATION_FAILED",
                &[&user, "Authentication failure"],
            ));
        }
        let version = params.get(2).and_then(Val::as_str).unwrap_or_default().to_string();
        let originator = params.get(3).and_then(Val::as_str).unwrap_or_default().to_string();
        self.stats.last_login = Some((version, originator));
        self.expire();
        if self.sessions.len() >= self.max_sessions {
            // xapi evicts the least recently used session, whoever's it is.
            if let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| (s.last_active, s.created))
                .map(|(k, _)| k.clone())
            {
                self.sessions.remove(&oldest);
                self.stats.evicted += 1;
            }
        }
        let reference = self.new_ref();
        let created = self.counter;
        self.sessions.insert(
            reference.clone(),
            Session {
                user,
                last_active: Instant::now(),
                created,
            },
        );
        self.stats.logins += 1;
        self.stats.open = self.sessions.len();
        Ok(Val::s(reference))
    }

    fn expire(&mut self) {
        let ttl = self.session_ttl;
        let before = self.sessions.len();
        self.sessions.retain(|_, s| s.last_active.elapsed() <= ttl);
        self.stats.expired += (before - self.sessions.len()) as u64;
        self.stats.open = self.sessions.len();
    }

    fn check_session(&mut self, session: &str) -> Result<(), Fail> {
        self.expire();
        match self.sessions.get_mut(session) {
            Some(s) if !s.user.is_empty() => {
                s.last_active = Instant::now();
                Ok(())
            }
            _ => Err(fail("SESSION_INVALID", &[session])),
        }
    }

    fn vm(&self, params: &[Val]) -> Result<usize, Fail> {
        let r = str_param(params, 1)?;
        self.vms
            .iter()
            .position(|v| v.reference == r)
            .ok_or_else(|| fail("HANDLE_INVALID", &["VM", &r]))
    }

    fn host_ref(&self, params: &[Val]) -> Result<usize, Fail> {
        let r = str_param(params, 1)?;
        self.hosts
            .iter()
            .position(|h| h.reference == r)
            .ok_or_else(|| fail("HANDLE_INVALID", &["host", &r]))
    }

    fn pool_ref(&self, params: &[Val]) -> Result<(), Fail> {
        let r = str_param(params, 1)?;
        if r == "OpaqueRef:pool-0" {
            Ok(())
        } else {
            Err(fail("HANDLE_INVALID", &["pool", &r]))
        }
    }

    fn resident(&self, v: &Vm) -> String {
        v.resident_on
            .and_then(|h| self.hosts.get(h))
            .map(|h| h.reference.clone())
            .unwrap_or_else(|| "OpaqueRef:NULL".to_string())
    }

    fn record(&self, v: &Vm) -> Val {
        let s = |k: &str, x: &str| (k.to_string(), Val::s(x));
        Val::Struct(vec![
            s("uuid", &v.uuid),
            s("name_label", &v.name_label),
            s("name_description", ""),
            s("power_state", &v.power_state),
            ("is_a_template".into(), Val::Bool(v.is_a_template)),
            ("is_default_template".into(), Val::Bool(false)),
            ("is_a_snapshot".into(), Val::Bool(false)),
            ("is_control_domain".into(), Val::Bool(v.is_control_domain)),
            s("resident_on", &self.resident(v)),
            s("affinity", "OpaqueRef:NULL"),
            s("domid", &v.domid.to_string()),
            s("memory_static_max", "1073741824"),
            s("VCPUs_max", "2"),
            (
                "allowed_operations".into(),
                Val::Array(vec![Val::s("hard_shutdown"), Val::s("start")]),
            ),
            ("current_operations".into(), Val::Struct(Vec::new())),
            (
                "other_config".into(),
                Val::Struct(vec![("tandem".into(), Val::s("standin"))]),
            ),
            ("VBDs".into(), Val::Array(Vec::new())),
            ("VIFs".into(), Val::Array(Vec::new())),
            ("ha_always_run".into(), Val::Bool(false)),
        ])
    }

    /// The power methods and their transitions.
    fn power(&mut self, method: &str, params: &[Val]) -> Result<Val, Fail> {
        let i = self.vm(params)?;
        let (reference, state, template, dom0) = {
            let v = &self.vms[i];
            (
                v.reference.clone(),
                v.power_state.clone(),
                v.is_a_template,
                v.is_control_domain,
            )
        };
        let op = method.trim_start_matches("VM.");
        if template {
            return Err(fail("VM_IS_TEMPLATE", &[&reference, op]));
        }
        if dom0 {
            return Err(fail(
                "OPERATION_NOT_ALLOWED",
                &["This operation is not allowed on dom0"],
            ));
        }
        let (from, to): (&[&str], &str) = match method {
            "VM.hard_shutdown" => (&["Running", "Paused", "Suspended"], "Halted"),
            "VM.clean_shutdown" => (&["Running"], "Halted"),
            "VM.start" => {
                let paused = bool_param(params, 2)?;
                bool_param(params, 3)?;
                (&["Halted"], if paused { "Paused" } else { "Running" })
            }
            "VM.hard_reboot" | "VM.clean_reboot" => (&["Running"], "Running"),
            "VM.pause" => (&["Running"], "Paused"),
            "VM.unpause" => (&["Paused"], "Running"),
            "VM.suspend" => (&["Running"], "Suspended"),
            "VM.resume" => {
                bool_param(params, 2)?;
                bool_param(params, 3)?;
                (&["Suspended"], "Running")
            }
            _ => return Err(fail("MESSAGE_METHOD_UNKNOWN", &[method])),
        };
        if !from.contains(&state.as_str()) {
            let expected = power_lower(from.first().copied().unwrap_or("halted"));
            return Err(fail(
                "VM_BAD_POWER_STATE",
                &[&reference, &expected, &power_lower(&state)],
            ));
        }
        let master = self.master;
        let v = &mut self.vms[i];
        v.power_state = to.to_string();
        match to {
            "Halted" => {
                v.resident_on = None;
                v.domid = -1;
            }
            _ => {
                v.resident_on = Some(v.resident_on.unwrap_or(master));
                v.domid = v.domid.max(0) + 1;
            }
        }
        Ok(Val::s(""))
    }
}

/// Parameters each method takes, the session included.
fn arity(method: &str) -> Option<usize> {
    Some(match method {
        "session.logout" | "pool.get_all" | "host.get_all" | "VM.get_all" | "VM.get_all_records" => 1,
        "session.get_this_host" | "pool.get_master" => 2,
        m if m.starts_with("host.get_") => 2,
        "VM.get_by_uuid" | "VM.get_by_name_label" => 2,
        m if m.starts_with("VM.get_") => 2,
        "VM.hard_shutdown" | "VM.clean_shutdown" | "VM.hard_reboot" | "VM.clean_reboot" | "VM.pause" | "VM.unpause"
        | "VM.suspend" => 2,
        "VM.start" | "VM.resume" => 4,
        _ => return None,
    })
}

fn str_param(params: &[Val], i: usize) -> Result<String, Fail> {
    match params.get(i) {
        Some(Val::Str(s)) => Ok(s.clone()),
        _ => Err(fail("FIELD_TYPE_ERROR", &[&format!("parameter {}", i + 1)])),
    }
}

fn bool_param(params: &[Val], i: usize) -> Result<bool, Fail> {
    params
        .get(i)
        .and_then(Val::as_bool)
        .ok_or_else(|| fail("FIELD_TYPE_ERROR", &[&format!("parameter {}", i + 1)]))
}
