//! The checked configuration, as the rest of the daemon sees it.

use super::secret::Secret;
use crate::core::{ArbiterTimings, CoreConfig, NodeId, ResourceName};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

/// A loaded and checked configuration. Both nodes load the same file; which of the
/// two is "this" node is decided by the caller with [`Config::local`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub cluster: Cluster,
    pub timing: Timing,
    /// Sorted by name, so `nodes[i]` has `NodeId(i)` on both hosts.
    pub nodes: [Node; 2],
    pub drbd: Drbd,
    pub hypervisor: Hypervisor,
    /// The files read, main file first.
    pub sources: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub name: String,
    pub authkey: PathBuf,
    /// Fences without delay when the nodes lose each other.
    pub preferred: NodeId,
    /// UDP, on every link.
    pub heartbeat_port: u16,
    /// TCP, on every link.
    pub control_port: u16,
}

impl Cluster {
    pub const DEFAULT_AUTHKEY: &'static str = "/etc/tandem/authkey";
    pub const DEFAULT_HEARTBEAT_PORT: u16 = 5405;
    pub const DEFAULT_CONTROL_PORT: u16 = 5406;
}

/// The `[timing]` section; see docs/configuration.md for what each one does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat_interval_ms: u64,
    pub dead_after_ms: u64,
    pub fence_delay_ms: u64,
    pub fence_timeout_ms: u64,
    pub fence_backoff_initial_ms: u64,
    pub fence_backoff_max_ms: u64,
    pub migration_window_s: u64,
    pub request_timeout_ms: u64,
    pub retry_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat_interval_ms: 200,
            dead_after_ms: 1000,
            fence_delay_ms: 2000,
            fence_timeout_ms: 30_000,
            fence_backoff_initial_ms: 1000,
            fence_backoff_max_ms: 30_000,
            migration_window_s: 600,
            request_timeout_ms: 10_000,
            retry_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    /// One per link; link `i` of one node talks to link `i` of the other.
    pub addresses: Vec<IpAddr>,
    /// Tried in order; empty only when the file says `fence = []`.
    pub fence: Vec<FenceLevel>,
    /// How the *other* node's tandemd reaches this node's libvirtd to migrate a
    /// domain here (`tandemctl migrate`, standby); see [`Node::libvirt_uri`].
    pub libvirt_uri: Option<String>,
    /// Where QEMU sends a migration's data to this node; see [`Node::migration_uri`].
    pub migration_uri: Option<String>,
    /// Where `xl migrate` sends a domain to this node; see [`Node::migration_host`].
    pub migration_host: Option<String>,
}

impl Node {
    /// `libvirt_uri`, or `qemu+ssh://root@ADDRESS/system` over the first link,
    /// what an admin would type for `virsh migrate`.
    pub fn libvirt_uri(&self) -> String {
        match (&self.libvirt_uri, self.addresses.first()) {
            (Some(u), _) => u.clone(),
            (None, Some(a)) => format!("qemu+ssh://root@{}/system", uri_host(a)),
            (None, None) => "qemu:///system".into(),
        }
    }

    /// `migration_host`, or the address of the first link: the host `xl migrate` names.
    pub fn migration_host(&self) -> String {
        match (&self.migration_host, self.addresses.first()) {
            (Some(h), _) => h.clone(),
            (None, Some(a)) => a.to_string(),
            (None, None) => self.name.clone(),
        }
    }

    /// `migration_uri`, or `tcp://ADDRESS` of the first link (libvirt picks the port).
    pub fn migration_uri(&self) -> Option<String> {
        match (&self.migration_uri, self.addresses.first()) {
            (Some(u), _) => Some(u.clone()),
            (None, Some(a)) => Some(format!("tcp://{}", uri_host(a))),
            (None, None) => None,
        }
    }
}

fn uri_host(a: &IpAddr) -> String {
    match a {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// A fence level succeeds when all its devices succeed, run in the order listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceLevel {
    pub devices: Vec<FenceDevice>,
}

impl FenceLevel {
    /// The longest the level can take when every device uses its full timeout.
    pub fn worst_case_ms(&self) -> u64 {
        self.devices.iter().map(FenceDevice::timeout_ms).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceDevice {
    Ipmi(IpmiDevice),
    Agent(AgentDevice),
    Xapi(XapiDevice),
}

impl FenceDevice {
    pub fn timeout_ms(&self) -> u64 {
        match self {
            FenceDevice::Ipmi(d) => d.timeout_ms,
            FenceDevice::Agent(d) => d.timeout_ms,
            FenceDevice::Xapi(d) => d.timeout_ms,
        }
    }

    /// `ipmi`, `agent` or `xapi`, as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            FenceDevice::Ipmi(_) => "ipmi",
            FenceDevice::Agent(_) => "agent",
            FenceDevice::Xapi(_) => "xapi",
        }
    }
}

/// A BMC reached over IPMI v2.0 (RMCP+, "lanplus").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiDevice {
    /// IP address or host name of the BMC.
    pub address: String,
    pub port: u16,
    pub username: String,
    pub password: Secret,
    pub cipher_suite: u8,
    pub privilege: IpmiPrivilege,
    pub timeout_ms: u64,
}

impl IpmiDevice {
    pub const DEFAULT_PORT: u16 = 623;
    pub const DEFAULT_CIPHER_SUITE: u8 = 3;
    pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpmiPrivilege {
    Admin,
    Operator,
}

/// Any fence-agents compatible program, driven through key=value lines on stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentDevice {
    pub agent: PathBuf,
    /// Already rendered as the strings the agent reads; never holds `action` or a
    /// password.
    pub options: BTreeMap<String, String>,
    /// Passed as `password=...` on stdin.
    pub password: Option<Secret>,
    pub timeout_ms: u64,
}

impl AgentDevice {
    pub const DEFAULT_TIMEOUT_MS: u64 = 20_000;
}

/// A VM on a XenServer / XCP-ng pool, fenced through XenAPI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XapiDevice {
    pub url: String,
    pub username: String,
    pub password: Secret,
    /// UUID or name label.
    pub vm: String,
    pub tls: XapiTls,
    pub timeout_ms: u64,
}

impl XapiDevice {
    pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
}

/// How the XenAPI server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XapiTls {
    /// The system's trusted roots.
    SystemRoots,
    CaFile(PathBuf),
    /// SHA-256 of the server certificate (DER).
    Fingerprint([u8; 32]),
    /// No check at all; also what a plain `http://` URL needs.
    Insecure,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drbd {
    pub drbdadm: PathBuf,
    pub drbdsetup: PathBuf,
    pub resources: Vec<ResourceName>,
}

impl Drbd {
    pub const DEFAULT_DRBDADM: &'static str = "/usr/sbin/drbdadm";
    pub const DEFAULT_DRBDSETUP: &'static str = "/usr/sbin/drbdsetup";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hypervisor {
    Libvirt {
        uri: String,
        /// Cap of a live migration tandem starts, MiB/s (0: libvirt's default,
        /// unlimited), so a migration leaves room for DRBD's replication.
        migration_bandwidth_mib: u64,
    },
    Xl {
        xl: PathBuf,
        /// Where the domains' xl configuration files are (`NAME.cfg`).
        config_dir: PathBuf,
        /// How `xl migrate` reaches the peer's `xl migrate-receive`.
        transport: XlTransport,
    },
    /// DRBD only: tandem manages the resources, something else runs the guests.
    None,
}

impl Hypervisor {
    pub const DEFAULT_LIBVIRT_URI: &'static str = "qemu:///system";
    pub const DEFAULT_XL: &'static str = "/usr/sbin/xl";
    pub const DEFAULT_XL_CONFIG_DIR: &'static str = "/etc/xen";
}

/// How tandem's `xl migrate` reaches the receiving host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XlTransport {
    /// `xl migrate DOMAIN HOST`: xl runs `ssh HOST xl migrate-receive`, as by hand.
    Ssh,
    /// `xl migrate -s "" DOMAIN "socat - TCP:HOST:PORT"`: the receiving host
    /// runs a listener that starts `xl migrate-receive` per connection.
    /// Unauthenticated and unencrypted: a trusted, dedicated link only.
    Tcp { port: u16 },
}

/// Why this host could not be matched to a node.
#[derive(Debug, thiserror::Error)]
pub enum LocalNodeError {
    #[error("cannot read this host's name from {path}: {source}")]
    Hostname {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("this host is \"{name}\", but the configuration's nodes are \"{}\" and \"{}\"; name the node explicitly or fix [node.*]", .nodes[0], .nodes[1])]
    NoSuchNode { name: String, nodes: [String; 2] },
}

const HOSTNAME_PATH: &str = "/proc/sys/kernel/hostname";

/// This host's name, as the kernel has it (`uname -n`).
pub fn hostname() -> Result<String, LocalNodeError> {
    std::fs::read_to_string(HOSTNAME_PATH)
        .map(|s| s.trim().to_string())
        .map_err(|source| LocalNodeError::Hostname {
            path: HOSTNAME_PATH,
            source,
        })
}

impl Config {
    /// The node with this id. Ids come from this configuration, so only 0 and 1
    /// exist; like [`NodeId::other`], any other value is taken modulo 2.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[usize::from(id.0 & 1)]
    }

    pub fn node_by_name(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// How many links (addresses per node) there are.
    pub fn links(&self) -> usize {
        self.nodes[0].addresses.len()
    }

    /// Which node this host is. `name` is what the operator passed (for example
    /// `tandemd --node`); without it the kernel's host name is used. A name
    /// matches a node exactly, or by its first label (`alpha.example.org` is
    /// node `alpha`, and host `alpha` is node `alpha.example.org`) when that is
    /// unambiguous.
    pub fn local(&self, name: Option<&str>) -> Result<NodeId, LocalNodeError> {
        let name = match name {
            Some(n) => n.to_string(),
            None => hostname()?,
        };
        if let Some(n) = self.node_by_name(&name) {
            return Ok(n.id);
        }
        let short = |s: &str| s.split('.').next().unwrap_or(s).to_string();
        let matches: Vec<&Node> = self.nodes.iter().filter(|n| short(&n.name) == short(&name)).collect();
        match matches.as_slice() {
            [one] => Ok(one.id),
            _ => Err(LocalNodeError::NoSuchNode {
                name,
                nodes: [self.nodes[0].name.clone(), self.nodes[1].name.clone()],
            }),
        }
    }

    /// What the core needs, for the node `local`.
    pub fn core_config(&self, local: NodeId) -> CoreConfig {
        let t = &self.timing;
        CoreConfig {
            me: local,
            links: self.links(),
            dead_after_ms: t.dead_after_ms,
            arbiter: ArbiterTimings {
                fence_delay_ms: if local == self.cluster.preferred {
                    0
                } else {
                    t.fence_delay_ms
                },
                fence_timeout_ms: t.fence_timeout_ms,
                backoff_initial_ms: t.fence_backoff_initial_ms,
                backoff_max_ms: t.fence_backoff_max_ms,
            },
            peer_fence_levels: self.node(local.other()).fence.len(),
            resources: self.drbd.resources.clone(),
            window_deadline_ms: t.migration_window_s.saturating_mul(1000),
            request_timeout_ms: t.request_timeout_ms,
            retry_ms: t.retry_ms,
        }
    }

    /// The paths of every secret the configuration names, for a check that they
    /// are readable before they are needed in a failure.
    pub fn secrets(&self) -> Vec<(&str, &Secret)> {
        let mut out = Vec::new();
        for node in &self.nodes {
            for level in &node.fence {
                for d in &level.devices {
                    let s = match d {
                        FenceDevice::Ipmi(d) => Some(&d.password),
                        FenceDevice::Agent(d) => d.password.as_ref(),
                        FenceDevice::Xapi(d) => Some(&d.password),
                    };
                    if let Some(s) = s {
                        out.push((node.name.as_str(), s));
                    }
                }
            }
        }
        out
    }
}
