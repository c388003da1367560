//! `drbdsetup status --json` (DRBD 9; drbdsetup-84 has no `--json`).
//!
//! The layout is `status_cmd()`/`resource_status_json()` in drbd-utils'
//! drbdsetup.c: an array of resources, each with `devices` and `connections`,
//! each connection with `peer_devices` (sic: underscore). Unused keys are
//! ignored so statistics and newer fields do not break the parse.

use super::error::ParseError;
use super::types::{reduce, ConnState, DrbdDisk, DrbdRole};
use crate::core::{ResourceName, ResourceObservation};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StatusResource {
    pub name: String,
    #[serde(rename = "node-id", default)]
    pub node_id: Option<i64>,
    pub role: String,
    #[serde(default)]
    pub suspended: bool,
    #[serde(rename = "suspended-fencing", default)]
    pub suspended_fencing: bool,
    #[serde(default)]
    pub devices: Vec<StatusDevice>,
    #[serde(default)]
    pub connections: Vec<StatusConnection>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StatusDevice {
    pub volume: u32,
    pub minor: u32,
    #[serde(rename = "disk-state")]
    pub disk_state: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StatusConnection {
    #[serde(rename = "peer-node-id")]
    pub peer_node_id: u32,
    pub name: String,
    #[serde(rename = "connection-state")]
    pub connection_state: String,
    #[serde(rename = "peer-role")]
    pub peer_role: String,
    #[serde(rename = "peer_devices", default)]
    pub peer_devices: Vec<StatusPeerDevice>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StatusPeerDevice {
    pub volume: u32,
    #[serde(rename = "replication-state")]
    pub replication_state: String,
    #[serde(rename = "peer-disk-state")]
    pub peer_disk_state: String,
}

pub fn parse_status_json(text: &str) -> Result<Vec<StatusResource>, ParseError> {
    let resources: Vec<StatusResource> =
        serde_json::from_str(text).map_err(|e| ParseError::new("drbdsetup status --json", e.to_string(), text))?;
    // Check the state names now, so `observation()` cannot meet an unknown one.
    for r in &resources {
        let bad = |e: super::types::UnknownName| ParseError::new("drbdsetup status --json", e.to_string(), &r.name);
        r.role.parse::<DrbdRole>().map_err(bad)?;
        for d in &r.devices {
            d.disk_state.parse::<DrbdDisk>().map_err(bad)?;
        }
        for c in &r.connections {
            c.peer_role.parse::<DrbdRole>().map_err(bad)?;
            for p in &c.peer_devices {
                p.peer_disk_state.parse::<DrbdDisk>().map_err(bad)?;
            }
        }
    }
    Ok(resources)
}

impl StatusResource {
    pub fn resource(&self) -> ResourceName {
        ResourceName(self.name.clone())
    }

    /// The same reduction as the events2 fold ([`super::types::reduce`]).
    pub fn observation(&self) -> ResourceObservation {
        let role = self.role.parse::<DrbdRole>().ok();
        let disks = self
            .devices
            .iter()
            .map(|d| d.disk_state.parse::<DrbdDisk>().unwrap_or(DrbdDisk::Diskless));
        let Some(conn) = self.connections.iter().min_by_key(|c| c.peer_node_id) else {
            return reduce(role, disks, None);
        };
        let connected = conn
            .connection_state
            .parse::<ConnState>()
            .is_ok_and(|c| c.is_connected());
        let peer_role = conn.peer_role.parse::<DrbdRole>().ok();
        let mut peer_disks = conn
            .peer_devices
            .iter()
            .map(|p| p.peer_disk_state.parse::<DrbdDisk>().unwrap_or(DrbdDisk::DUnknown));
        reduce(role, disks, Some((connected, peer_role, &mut peer_disks)))
    }
}
