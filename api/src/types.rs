//! Structured property values (D-Bus structs).

use serde::{Deserialize, Serialize};
use zbus::Type;

/// One heartbeat link, an element of `Cluster.Links`, signature `(ussb)`.
///
/// Only what changes rarely is here, so `PropertiesChanged` fires when a link
/// goes up or down, not on every heartbeat; counters, round-trip times and ages
/// are in `Cluster.StatusJson`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct Link {
    /// The link's index in the configuration.
    pub id: u32,
    /// This node's address and port.
    pub local: String,
    /// The peer's address and port.
    pub peer: String,
    /// Heartbeats arrive on it.
    pub up: bool,
}

/// One open migration window, an element of `Cluster.Windows`, signature `(ss)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct Window {
    pub id: String,
    pub domain: String,
}

/// One fence attempt, an element of `Cluster.FenceHistory`, signature `(tsusssts)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct FenceRecord {
    /// When the attempt ended, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The node that was fenced.
    pub node: String,
    /// Fence level, counted from 1.
    pub level: u32,
    /// `ipmi`, `agent` or `xapi`.
    pub kind: String,
    pub device: String,
    /// `off`, `on`, `reboot` or `status`.
    pub action: String,
    pub duration_ms: u64,
    /// The confirmed power state (`off`, `on`) or `error: ...`.
    pub result: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        assert_eq!(Link::SIGNATURE.to_string(), "(ussb)");
        assert_eq!(Window::SIGNATURE.to_string(), "(ss)");
        assert_eq!(FenceRecord::SIGNATURE.to_string(), "(tsusssts)");
    }
}
