//! `/proc/drbd` of DRBD 8.4 (DRBD 9 prints only its version there).
//!
//! Layout (drbd 8.4 `drbd_proc.c`, as captured from a real 8.4.11 in
//! tests/data/drbd/proc-drbd-*.txt):
//! ```text
//! version: 8.4.11 (api:1/proto:86-101)
//! srcversion: F73C670A7EC572DB9CF3E5B
//!  0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----
//!     ns:0 nr:0 dw:0 dr:0 al:8 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:65496
//!         [>...................] sync'ed:  6.3% (65496/65496)K
//!  1: cs:Unconfigured
//! ```
//! The letter after the disk states is the wire protocol (blank when there is no
//! connection config); the first flag is `s` while I/O is suspended (frozen by
//! fencing, or by `suspend-io`), `r` otherwise. /proc/drbd knows minors, not
//! resources: the caller maps minors to resources (`drbdadm sh-minor`).

use super::error::ParseError;
use super::types::{reduce, DrbdDisk, DrbdRole};
use crate::core::{ResourceName, ResourceObservation};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct ProcDrbd {
    /// "8.4.11"
    pub version: Option<String>,
    pub minors: Vec<ProcMinor>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcMinor {
    pub minor: u32,
    /// `cs:` as printed: WFConnection, Connected, SyncSource, StandAlone, Unconfigured...
    pub cs: String,
    /// None for an unconfigured minor.
    pub state: Option<MinorState>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MinorState {
    pub role: DrbdRole,
    pub peer_role: DrbdRole,
    pub disk: DrbdDisk,
    pub peer_disk: DrbdDisk,
    pub protocol: Option<char>,
    /// I/O suspended (the first flag is `s`).
    pub suspended: bool,
    /// Out of sync, KiB (`oos:`).
    pub out_of_sync_kib: Option<u64>,
    /// Resync progress, when syncing (`sync'ed: 6.3%`).
    pub synced_percent: Option<f64>,
}

/// Connection states at or past `C_CONNECTED` in 8.4's `enum drbd_conns`: the
/// replication link is up, whatever it is doing.
const CONNECTED: &[&str] = &[
    "Connected",
    "StartingSyncS",
    "StartingSyncT",
    "WFBitMapS",
    "WFBitMapT",
    "WFSyncUUID",
    "SyncSource",
    "SyncTarget",
    "VerifyS",
    "VerifyT",
    "PausedSyncS",
    "PausedSyncT",
    "Ahead",
    "Behind",
];

pub fn parse_proc_drbd(text: &str) -> Result<ProcDrbd, ParseError> {
    let mut out = ProcDrbd {
        version: None,
        minors: Vec::new(),
    };
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("version:") {
            out.version = rest.split_whitespace().next().map(str::to_owned);
            continue;
        }
        if let Some(minor) = minor_line(trimmed) {
            out.minors.push(parse_minor(minor.0, minor.1, line)?);
            continue;
        }
        let Some(last) = out.minors.last_mut().and_then(|m| m.state.as_mut()) else {
            continue;
        };
        if let Some(oos) = trimmed
            .split_whitespace()
            .find_map(|w| w.strip_prefix("oos:"))
            .and_then(|v| v.parse().ok())
        {
            last.out_of_sync_kib = Some(oos);
        }
        if let Some((_, rest)) = trimmed.split_once("sync'ed:") {
            last.synced_percent = rest
                .split_whitespace()
                .next()
                .and_then(|p| p.trim_end_matches('%').parse().ok());
        }
    }
    if out.version.is_none() {
        return Err(ParseError::new("/proc/drbd", "no version: line", text));
    }
    Ok(out)
}

/// `" 0: cs:..."` → (0, "cs:...").
fn minor_line(trimmed: &str) -> Option<(u32, &str)> {
    let (num, rest) = trimmed.split_once(':')?;
    let minor = num.parse().ok()?;
    let rest = rest.trim_start();
    rest.starts_with("cs:").then_some((minor, rest))
}

fn parse_minor(minor: u32, rest: &str, line: &str) -> Result<ProcMinor, ParseError> {
    let err = |reason: &str| ParseError::new("/proc/drbd minor line", reason, line);
    let mut words = rest.split_whitespace();
    let cs = words
        .next()
        .and_then(|w| w.strip_prefix("cs:"))
        .ok_or_else(|| err("no cs:"))?
        .to_owned();
    let Some(ro) = words.next() else {
        // `cs:Unconfigured` stands alone.
        return Ok(ProcMinor { minor, cs, state: None });
    };
    // 8.3 printed `st:` where 8.4 prints `ro:`.
    let ro = ro
        .strip_prefix("ro:")
        .or_else(|| ro.strip_prefix("st:"))
        .ok_or_else(|| err("no ro:"))?;
    let ds = words
        .next()
        .and_then(|w| w.strip_prefix("ds:"))
        .ok_or_else(|| err("no ds:"))?;
    let (role, peer_role) = pair(ro).ok_or_else(|| err("ro: is not A/B"))?;
    let (disk, peer_disk) = pair(ds).ok_or_else(|| err("ds: is not A/B"))?;
    let role: DrbdRole = role
        .parse()
        .map_err(|e: super::types::UnknownName| err(&e.to_string()))?;
    let peer_role: DrbdRole = peer_role
        .parse()
        .map_err(|e: super::types::UnknownName| err(&e.to_string()))?;
    let disk: DrbdDisk = disk
        .parse()
        .map_err(|e: super::types::UnknownName| err(&e.to_string()))?;
    let peer_disk: DrbdDisk = peer_disk
        .parse()
        .map_err(|e: super::types::UnknownName| err(&e.to_string()))?;
    // Then the protocol letter, absent without a net config, then the flags.
    let rest: Vec<&str> = words.collect();
    let (protocol, flags) = match rest.as_slice() {
        [p, flags, ..] if p.len() == 1 => (p.chars().next(), *flags),
        [flags, ..] => (None, *flags),
        [] => (None, ""),
    };
    Ok(ProcMinor {
        minor,
        cs,
        state: Some(MinorState {
            role,
            peer_role,
            disk,
            peer_disk,
            protocol,
            suspended: flags.starts_with('s'),
            out_of_sync_kib: None,
            synced_percent: None,
        }),
    })
}

fn pair(s: &str) -> Option<(&str, &str)> {
    s.split_once('/')
}

impl ProcMinor {
    pub fn connected(&self) -> bool {
        CONNECTED.contains(&self.cs.as_str())
    }
}

impl ProcDrbd {
    /// One observation per resource, from the minors `minors` maps to it. A
    /// resource whose minors are all unconfigured or absent is reported down.
    pub fn observations(&self, minors: &BTreeMap<u32, ResourceName>) -> BTreeMap<ResourceName, ResourceObservation> {
        let mut by_res: BTreeMap<&ResourceName, Vec<&ProcMinor>> = BTreeMap::new();
        for (minor, res) in minors {
            let entry = by_res.entry(res).or_default();
            if let Some(m) = self.minors.iter().find(|m| m.minor == *minor && m.state.is_some()) {
                entry.push(m);
            }
        }
        by_res
            .into_iter()
            .map(|(res, ms)| {
                let obs = if ms.is_empty() {
                    super::types::DOWN
                } else {
                    let states: Vec<&MinorState> = ms.iter().filter_map(|m| m.state.as_ref()).collect();
                    let role = states.first().map(|s| s.role);
                    let peer_role = states.first().map(|s| s.peer_role);
                    // All minors of an 8.4 resource share one connection; count it
                    // up only when every one of them says so.
                    let connected = ms.iter().all(|m| m.connected());
                    let mut peer_disks = states.iter().map(|s| s.peer_disk);
                    reduce(
                        role,
                        states.iter().map(|s| s.disk),
                        Some((connected, peer_role, &mut peer_disks)),
                    )
                };
                (res.clone(), obs)
            })
            .collect()
    }
}
