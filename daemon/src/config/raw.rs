//! The file's shape, section by section, as written: every value keeps its place
//! so the checks in `validate.rs` can point at it. Defaults are applied there, not
//! here, so that "not set" stays visible.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::fmt;

pub(crate) type S<T> = Spanned<T>;

/// Top-level sections, in the order the docs present them.
pub(crate) const SECTIONS: &[&str] = &["cluster", "timing", "node", "drbd", "hypervisor"];
/// The keys of one `[node.NAME]` table.
pub(crate) const NODE_KEYS: &[&str] = &["addresses", "fence", "libvirt_uri", "migration_uri", "migration_host"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub name: S<String>,
    pub authkey: Option<S<String>>,
    pub preferred: Option<S<String>>,
    pub heartbeat_port: Option<S<u16>>,
    pub control_port: Option<S<u16>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTiming {
    pub heartbeat_interval_ms: Option<S<u64>>,
    pub dead_after_ms: Option<S<u64>>,
    pub fence_delay_ms: Option<S<u64>>,
    pub fence_timeout_ms: Option<S<u64>>,
    pub fence_backoff_initial_ms: Option<S<u64>>,
    pub fence_backoff_max_ms: Option<S<u64>>,
    pub migration_window_s: Option<S<u64>>,
    pub request_timeout_ms: Option<S<u64>>,
    pub retry_ms: Option<S<u64>>,
}

/// One `[[node.NAME.fence]]`: a fence level.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLevel {
    pub device: S<Vec<S<RawDevice>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DeviceKind {
    Ipmi,
    Agent,
    Xapi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawPrivilege {
    Admin,
    Operator,
}

/// One `[[node.NAME.fence.device]]`. The keys of all kinds share one struct so a
/// key of the wrong kind gets a message naming the kind it belongs to, rather than
/// a bare "unknown key".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDevice {
    pub kind: S<DeviceKind>,
    pub timeout_ms: Option<S<u64>>,
    pub username: Option<S<String>>,
    pub password_file: Option<S<String>>,
    pub password_script: Option<S<String>>,
    // ipmi
    pub address: Option<S<String>>,
    pub port: Option<S<u16>>,
    pub cipher_suite: Option<S<u8>>,
    pub privilege: Option<S<RawPrivilege>>,
    // agent
    pub agent: Option<S<String>>,
    pub options: Option<S<BTreeMap<S<String>, S<OptionValue>>>>,
    // xapi
    pub url: Option<S<String>>,
    pub vm: Option<S<String>>,
    pub ca_file: Option<S<String>>,
    pub fingerprint: Option<S<String>>,
    pub insecure: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDrbd {
    pub drbdadm: Option<S<String>>,
    pub drbdsetup: Option<S<String>>,
    pub resources: S<Vec<S<String>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HypervisorKind {
    Libvirt,
    Xl,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum XlTransportKind {
    Ssh,
    Tcp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHypervisor {
    pub kind: Option<S<HypervisorKind>>,
    pub uri: Option<S<String>>,
    pub xl: Option<S<String>>,
    pub config_dir: Option<S<String>>,
    pub migration_transport: Option<S<XlTransportKind>>,
    pub migration_port: Option<S<u16>>,
    pub migration_bandwidth_mib: Option<S<u64>>,
}

/// A fence agent option's value. Agents read strings; integers and booleans are
/// accepted because `lanplus = 1` and `lanplus = true` are what people write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OptionValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl<'de> Deserialize<'de> for OptionValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = OptionValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, an integer or a boolean")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<OptionValue, E> {
                Ok(OptionValue::Str(s.to_owned()))
            }

            fn visit_i64<E: de::Error>(self, i: i64) -> Result<OptionValue, E> {
                Ok(OptionValue::Int(i))
            }

            fn visit_bool<E: de::Error>(self, b: bool) -> Result<OptionValue, E> {
                Ok(OptionValue::Bool(b))
            }
        }
        d.deserialize_any(V)
    }
}
