//! Client proxies. Each holds the interface's full D-Bus description; tandemd
//! implements exactly these (daemon/src/dbus/, checked by daemon/tests/dbus.rs).

use crate::types::{FenceRecord, Link, Window};
use crate::Error;
use zbus::{proxy, OwnedObjectPath};

/// `org.tandem.Tandem1.Cluster` at `/org/tandem/Tandem1`: the pair as this node
/// sees it, the operator's actions and the event signals.
///
/// Readable by root and group `tandem`; the methods are root only.
#[proxy(
    interface = "org.tandem.Tandem1.Cluster",
    default_service = "org.tandem.Tandem1",
    default_path = "/org/tandem/Tandem1"
)]
pub trait Cluster {
    /// Live-migrates `domain` to the peer. Answered once the migration ended
    /// (an error says why it was refused or failed); `MigrationFinished` follows too.
    /// Callers set a method timeout long enough for a migration.
    async fn migrate(&self, domain: &str) -> Result<(), Error>;

    /// Starts `domain` on this host: tandem checks as the hook does (not running
    /// on the peer, data UpToDate, peer known), then libvirt starts it and the
    /// hook promotes. Answered once it started, or with the reason it did not.
    async fn start(&self, domain: &str) -> Result<(), Error>;

    /// Stops `domain`, which runs here: `force` at once (`virsh destroy`), else
    /// the guest is asked to shut down (answered once asked). The hook demotes.
    async fn stop(&self, domain: &str, force: bool) -> Result<(), Error>;

    /// Drains this host (`true`) or ends the drain (`false`).
    async fn standby(&self, on: bool) -> Result<(), Error>;

    /// Fences the peer now, whatever the arbiter thinks (an operator's decision,
    /// which also lifts wait-for-all). Answered at once; the outcome follows as
    /// `Fenced` or `Event` signals.
    async fn fence(&self) -> Result<(), Error>;

    /// Forgets failure records: domains a failover gave up on (tried again
    /// while the peer stays fenced) and failed fence attempts.
    async fn cleanup(&self) -> Result<(), Error>;

    /// This node's name.
    #[zbus(property)]
    fn node(&self) -> zbus::Result<String>;

    /// The peer's name.
    #[zbus(property)]
    fn peer(&self) -> zbus::Result<String>;

    /// This daemon's boot id (hex), new on every start.
    #[zbus(property)]
    fn boot(&self) -> zbus::Result<String>;

    /// `unknown`, `online`, `lost` or `fenced` (see [`crate::peer_state`]).
    #[zbus(property)]
    fn peer_state(&self) -> zbus::Result<String>;

    /// Since when (ms since the Unix epoch) the peer is in that state.
    #[zbus(property)]
    fn peer_since(&self) -> zbus::Result<u64>;

    /// `idle`, `fence-delay`, `fencing`, `fence-backoff` or `fenced`.
    #[zbus(property)]
    fn arbiter(&self) -> zbus::Result<String>;

    /// The control channel to the peer is up.
    #[zbus(property)]
    fn control_connected(&self) -> zbus::Result<bool>;

    /// The heartbeat links.
    #[zbus(property)]
    fn links(&self) -> zbus::Result<Vec<Link>>;

    /// The open migration windows.
    #[zbus(property)]
    fn windows(&self) -> zbus::Result<Vec<Window>>;

    /// Fence attempts, oldest first.
    #[zbus(property)]
    fn fence_history(&self) -> zbus::Result<Vec<FenceRecord>>;

    /// The domain objects.
    #[zbus(property)]
    fn domains(&self) -> zbus::Result<Vec<OwnedObjectPath>>;

    /// The resource objects.
    #[zbus(property)]
    fn resources(&self) -> zbus::Result<Vec<OwnedObjectPath>>;

    /// The whole status (the status file's JSON), for `tandemctl status --json`.
    /// It changes on every tick, so it sends no change signal: read it when needed.
    #[zbus(property(emits_changed_signal = "false"))]
    fn status_json(&self) -> zbus::Result<String>;

    /// Every cluster event, as JSON: `{"unix_ms": .., "kind": "FenceConfirmed", "event": ".."}`.
    #[zbus(signal)]
    fn event(&self, json: String) -> zbus::Result<()>;

    /// A fence device confirmed the peer off (the `FenceConfirmed` event, as JSON).
    #[zbus(signal)]
    fn fenced(&self, json: String) -> zbus::Result<()>;

    /// This node takes over the peer's domains (the `FailoverPlanned` event, as JSON).
    #[zbus(signal)]
    fn failover_started(&self, json: String) -> zbus::Result<()>;

    /// A migration ended (the `MigrationFinished` event, as JSON).
    #[zbus(signal)]
    fn migration_finished(&self, json: String) -> zbus::Result<()>;
}

/// `org.tandem.Tandem1.Hooks` at `/org/tandem/Tandem1`: what the libvirt hook,
/// the Xen block script and DRBD's fence-peer handler ask. Root only.
///
/// Each call waits until the core has an answer (DRBD promoted or demoted, the
/// peer agreed or fenced); callers set their own timeout (see [`crate::connect`]).
/// A refusal is [`Error::Refused`] with the one line for the user.
#[proxy(
    interface = "org.tandem.Tandem1.Hooks",
    default_service = "org.tandem.Tandem1",
    default_path = "/org/tandem/Tandem1"
)]
pub trait Hooks {
    /// Migration destination, `migrate begin`: opens a migration window
    /// (dual-primary) for `domain`'s `resources`.
    async fn prepare_incoming(&self, domain: &str, resources: &[&str]) -> Result<(), Error>;

    /// `prepare begin`: admits a start here (or the destination half of an open
    /// migration) and promotes the resources.
    async fn prepare_start(&self, domain: &str, resources: &[&str]) -> Result<(), Error>;

    /// `release end` / block script `remove`: the domain no longer runs here;
    /// demotes its resources and closes any window.
    async fn release(&self, domain: &str, resources: &[&str]) -> Result<(), Error>;

    /// DRBD's fence-peer handler for `resource`: the exit code for DRBD, 4 (peer
    /// outdated) or 7 (peer fenced). Undecided is [`Error::Refused`] with the
    /// reason; the handler then exits with another code and I/O stays frozen.
    async fn fence_peer(&self, resource: &str) -> Result<i32, Error>;
}

/// `org.tandem.Tandem1.Domain` at `/org/tandem/Tandem1/domain/<escaped name>`
/// (see [`crate::domain_path`]).
#[proxy(interface = "org.tandem.Tandem1.Domain", default_service = "org.tandem.Tandem1")]
pub trait Domain {
    /// Live-migrates this domain to the peer (as `Cluster.Migrate`).
    async fn migrate(&self) -> Result<(), Error>;

    /// Starts this domain here (as `Cluster.Start`).
    async fn start(&self) -> Result<(), Error>;

    /// Stops this domain (as `Cluster.Stop`).
    async fn stop(&self, force: bool) -> Result<(), Error>;

    /// The domain's name.
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;

    /// The id of its open migration window, or the empty string.
    #[zbus(property)]
    fn window(&self) -> zbus::Result<String>;
}

/// `org.tandem.Tandem1.Resource` at `/org/tandem/Tandem1/resource/<escaped name>`
/// (see [`crate::resource_path`]): one managed DRBD resource.
#[proxy(interface = "org.tandem.Tandem1.Resource", default_service = "org.tandem.Tandem1")]
pub trait Resource {
    /// The resource's name.
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
}
