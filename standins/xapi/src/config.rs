//! The stand-in's pool, from a TOML file or built in code:
//!
//! ```toml
//! hosts = 2                 # host0 is the master; the others answer HOST_IS_SLAVE
//! session_ttl_ms = 86400000 # idle sessions expire (SESSION_INVALID)
//! max_sessions = 500        # past it, the least recently used session is evicted
//! tls = false               # true: https with a fresh self-signed certificate
//! [[users]]
//! name = "root"
//! password = "secret"
//! [[vms]]
//! name_label = "node-b"
//! power_state = "Running"   # Halted, Running, Paused, Suspended
//! uuid = "..."              # optional
//! is_a_template = false
//! host = 1                  # where it runs
//! [delays]                  # answer late, in ms ("*" = every method)
//! "VM.hard_shutdown" = 500
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    #[serde(default = "one")]
    pub hosts: usize,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub vms: Vec<VmSpec>,
    #[serde(default = "day_ms")]
    pub session_ttl_ms: u64,
    #[serde(default = "five_hundred")]
    pub max_sessions: usize,
    #[serde(default)]
    pub delays: BTreeMap<String, u64>,
    #[serde(default)]
    pub tls: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    pub name_label: String,
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default = "running")]
    pub power_state: String,
    #[serde(default)]
    pub is_a_template: bool,
    #[serde(default)]
    pub is_control_domain: bool,
    #[serde(default)]
    pub host: Option<usize>,
}

fn one() -> usize {
    1
}
fn day_ms() -> u64 {
    24 * 3600 * 1000
}
fn five_hundred() -> usize {
    500
}
fn running() -> String {
    "Running".into()
}

const POWER_STATES: &[&str] = &["Halted", "Running", "Paused", "Suspended"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            hosts: 1,
            users: Vec::new(),
            vms: Vec::new(),
            session_ttl_ms: day_ms(),
            max_sessions: five_hundred(),
            delays: BTreeMap::new(),
            tls: false,
        }
    }
}

impl PoolConfig {
    pub fn load(path: &Path) -> Result<PoolConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let c: PoolConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        c.validate()?;
        Ok(c)
    }

    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push(User {
            name: name.into(),
            password: password.into(),
        });
        self
    }

    pub fn vm(mut self, name: &str, power_state: &str) -> Self {
        self.vms.push(VmSpec {
            name_label: name.into(),
            uuid: None,
            power_state: power_state.into(),
            is_a_template: false,
            is_control_domain: false,
            host: None,
        });
        self
    }

    pub fn vm_spec(mut self, spec: VmSpec) -> Self {
        self.vms.push(spec);
        self
    }

    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = n;
        self
    }

    pub fn delay(mut self, method: &str, ms: u64) -> Self {
        self.delays.insert(method.into(), ms);
        self
    }

    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.hosts == 0 || self.hosts > 64 {
            return Err(ConfigError::Invalid(format!("hosts is {}; 1 to 64", self.hosts)));
        }
        for v in &self.vms {
            if !POWER_STATES.contains(&v.power_state.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "VM {:?}: power_state {:?} is not one of {}",
                    v.name_label,
                    v.power_state,
                    POWER_STATES.join(", ")
                )));
            }
            if v.host.is_some_and(|h| h >= self.hosts) {
                return Err(ConfigError::Invalid(format!(
                    "VM {:?}: no host {:?}",
                    v.name_label, v.host
                )));
            }
        }
        Ok(())
    }
}
