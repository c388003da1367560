//! tandem's D-Bus API, shared by `tandemd` (the service) and its clients: the
//! libvirt hook, the DRBD fence-peer handler and `tandemctl`.
//!
//! On the system bus (or the bus `DBUS_SYSTEM_BUS_ADDRESS` names, which is how
//! tests use a private one), `tandemd` owns [`BUS_NAME`] and serves:
//!
//! | path | interfaces |
//! |---|---|
//! | [`ROOT_PATH`] `/org/tandem/Tandem1` | `org.tandem.Tandem1.Cluster`, `org.tandem.Tandem1.Hooks`, `org.freedesktop.DBus.ObjectManager` |
//! | `/org/tandem/Tandem1/domain/<escaped name>` | `org.tandem.Tandem1.Domain` |
//! | `/org/tandem/Tandem1/resource/<escaped name>` | `org.tandem.Tandem1.Resource` |
//!
//! Object path elements are escaped as systemd escapes them (see [`escape_path_element`]).
//! State is exposed as properties with `PropertiesChanged` signals, actions as
//! methods, cluster events as signals; failures are the named errors of [`Error`].
//! The `1` in the names is bumped only on a breaking change.

mod error;
mod path;
mod proxy;
mod types;
mod validate;

pub use error::Error;
pub use path::{domain_path, escape_path_element, resource_path, unescape_path_element};
pub use proxy::{ClusterProxy, DomainProxy, HooksProxy, ResourceProxy};
pub use types::{FenceRecord, Link, Window};
pub use validate::{
    validate_domain, validate_resource, validate_resources, InvalidArg, MAX_DOMAIN_LEN, MAX_RESOURCES, MAX_RESOURCE_LEN,
};

/// Re-exported so that clients use the very zbus this crate was built with.
pub use zbus;

use std::time::Duration;

/// The well-known name `tandemd` owns.
pub const BUS_NAME: &str = "org.tandem.Tandem1";
/// The cluster object; also the ObjectManager of every tandem object.
pub const ROOT_PATH: &str = "/org/tandem/Tandem1";
/// Parent of the domain objects.
pub const DOMAIN_PATH_PREFIX: &str = "/org/tandem/Tandem1/domain";
/// Parent of the resource objects.
pub const RESOURCE_PATH_PREFIX: &str = "/org/tandem/Tandem1/resource";

/// Interface names.
pub mod interface {
    /// Cluster state, operator actions and event signals (on [`ROOT_PATH`](crate::ROOT_PATH)).
    pub const CLUSTER: &str = "org.tandem.Tandem1.Cluster";
    /// Hook and DRBD handler calls, root only (on [`ROOT_PATH`](crate::ROOT_PATH)).
    pub const HOOKS: &str = "org.tandem.Tandem1.Hooks";
    /// One hypervisor domain.
    pub const DOMAIN: &str = "org.tandem.Tandem1.Domain";
    /// One DRBD resource.
    pub const RESOURCE: &str = "org.tandem.Tandem1.Resource";
}

/// Names of the errors tandem replies with (all `org.tandem.Tandem1.Error.*`).
/// Access control is the bus's: a caller the policy does not allow gets
/// `org.freedesktop.DBus.Error.AccessDenied` from dbus-daemon itself.
pub mod error_name {
    /// The prefix of every tandem error name.
    pub const PREFIX: &str = "org.tandem.Tandem1.Error";
    /// The core said no (the one-line reason is the error message).
    pub const REFUSED: &str = "org.tandem.Tandem1.Error.Refused";
    /// No such domain or resource.
    pub const NOT_FOUND: &str = "org.tandem.Tandem1.Error.NotFound";
    /// An argument tandem does not accept (empty or odd names, too many resources).
    pub const INVALID_ARGS: &str = "org.tandem.Tandem1.Error.InvalidArgs";
    /// tandemd is stopping and will not answer.
    pub const SHUTTING_DOWN: &str = "org.tandem.Tandem1.Error.ShuttingDown";
}

/// Words of the `PeerState` property.
pub mod peer_state {
    /// Not seen since tandemd started (wait-for-all holds).
    pub const UNKNOWN: &str = "unknown";
    pub const ONLINE: &str = "online";
    pub const LOST: &str = "lost";
    pub const FENCED: &str = "fenced";
}

/// `Hooks.FencePeer` results, as DRBD reads a fence-peer handler's exit code.
pub mod fence_peer_exit {
    /// The peer's disk was outdated.
    pub const PEER_OUTDATED: i32 = 4;
    /// A fence device confirmed the peer powered off.
    pub const PEER_FENCED: i32 = 7;
}

/// A connection to the system bus, or to `DBUS_SYSTEM_BUS_ADDRESS` when it is set.
///
/// Method calls on it time out after `method_timeout` (hooks must never hang
/// libvirt); `None` keeps zbus's default of 25 s.
///
/// It must be called inside a Tokio runtime (or `zbus::block_on`).
pub async fn connect(method_timeout: Option<Duration>) -> zbus::Result<zbus::Connection> {
    let mut builder = zbus::connection::Builder::system();
    if let Some(t) = method_timeout {
        builder = builder.method_timeout(t);
    }
    builder.build().await
}
