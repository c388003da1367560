//! The local hypervisor: which domains exist here and in which state, which DRBD
//! resources they use, and starting them.
//!
//! [`Hypervisor`] is a small blocking trait: libvirt's API (crate virt) blocks, so
//! callers on the async runtime go through `spawn_blocking` ([`Watcher`] and the
//! runtime's drivers do). Nothing here is ever called from a hook's path: hooks run
//! inside libvirt's own calls, and calling back into libvirt from there deadlocks.
//!
//! - [`libvirt::Libvirt`]: the libvirt implementation, reconnecting on demand.
//! - [`xl::Xl`]: Xen's `xl` toolstack, run as a command.
//! - [`Watcher`]: polls [`Hypervisor::domains`] and turns changes into
//!   `Input::DomainObserved` / `Input::DomainDefined` for the core.

pub mod libvirt;
mod progress;
mod watch;
pub mod xl;

pub use libvirt::{Libvirt, PeerLibvirt};
pub use progress::{MigrationBoard, MigrationProgress};
pub use watch::{resources_in, DomainResources, WatchConfig, Watcher};
pub use xl::{XenstoreWatch, Xl, XlPeer};

use crate::core::{DomainName, DomainRun};
use tandem_hooks::DomainInfo;

/// Why a hypervisor call failed. Messages are one line: they end up in the
/// core's `ActionDone` results, which operators read in events and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HypervisorError {
    #[error("cannot connect to libvirt at {uri}: {message}")]
    Connect { uri: String, message: String, code: String },
    #[error("domain \"{domain}\" is not defined on this host")]
    NoSuchDomain { domain: DomainName },
    #[error("cannot list the domains: {message}")]
    List { message: String, code: String },
    #[error("cannot read domain \"{domain}\": {message}")]
    Domain {
        domain: DomainName,
        message: String,
        code: String,
    },
    #[error("cannot start domain \"{domain}\": {message}")]
    Start { domain: DomainName, message: String },
    #[error("cannot stop domain \"{domain}\": {message}")]
    Stop { domain: DomainName, message: String },
    #[error("cannot define domain \"{domain}\": {message}")]
    Define { domain: DomainName, message: String },
    #[error("live migration by tandem needs the peer's libvirt URI ([node.PEER] libvirt_uri)")]
    MigrationNotConfigured,
    #[error("cannot migrate domain \"{domain}\" to {peer}: {message}")]
    Migrate {
        domain: DomainName,
        peer: String,
        message: String,
    },
}

impl HypervisorError {
    /// What kind of failure this is, without the details that vary from one
    /// attempt to the next: the watcher warns once per kind, not once per poll.
    pub fn kind(&self) -> String {
        match self {
            HypervisorError::Connect { code, .. } => format!("connect/{code}"),
            HypervisorError::NoSuchDomain { .. } => "no-such-domain".into(),
            HypervisorError::List { code, .. } => format!("list/{code}"),
            HypervisorError::Domain { code, .. } => format!("domain/{code}"),
            HypervisorError::Start { .. } => "start".into(),
            HypervisorError::Stop { .. } => "stop".into(),
            HypervisorError::Define { .. } => "define".into(),
            HypervisorError::MigrationNotConfigured => "migration-not-configured".into(),
            HypervisorError::Migrate { .. } => "migrate".into(),
        }
    }
}

/// The local hypervisor, as the daemon uses it. Every method blocks.
pub trait Hypervisor: Send + Sync + std::fmt::Debug + 'static {
    /// Every domain defined or running here, with its state.
    fn domains(&self) -> Result<Vec<(DomainName, DomainRun)>, HypervisorError>;
    /// The domain's document as the hypervisor has it now: libvirt's domain XML
    /// (live when running), xl's config file. Opaque outside its driver: only
    /// [`Hypervisor::read_document`] looks inside.
    fn document(&self, domain: &DomainName) -> Result<String, HypervisorError>;
    /// The name and disks a document of this driver describes (one line of
    /// error when it is malformed).
    fn read_document(&self, document: &str) -> Result<DomainInfo, String>;
    /// Starts a defined domain; a domain that already runs is success.
    fn start(&self, domain: &DomainName) -> Result<(), HypervisorError>;
    /// Live-migrates a domain that runs here to the peer.
    fn migrate(&self, domain: &DomainName) -> Result<(), HypervisorError>;
    /// Stops a running domain: `force` at once (`virsh destroy`), else asks the
    /// guest to shut down and returns (`virsh shutdown`). A stopped one is success.
    fn stop(&self, domain: &DomainName, force: bool) -> Result<(), HypervisorError>;
    /// The domain's persistent definition, the document the peer needs to
    /// start it (libvirt's inactive XML, xl's config file); `None` for a domain
    /// that has none to share (transient, or created from a file elsewhere).
    fn definition(&self, domain: &DomainName) -> Result<Option<String>, HypervisorError>;
    /// Defines a domain from a definition of this driver, or replaces the
    /// definition of the domain of that name; it must name `domain`.
    fn define(&self, domain: &DomainName, definition: &str) -> Result<(), HypervisorError>;
}
