//! What the real tools print, from the stand-in's state, seen from one node:
//! `drbdsetup events2` objects (drbd-utils 9.22 `drbdsetup_events2.c`),
//! `drbdsetup status` text and `--json` (`drbdsetup.c` `status_cmd()`), the
//! 8.4 `/proc/drbd` (as captured from a real 8.4.11, see
//! daemon/tests/data/drbd/) and `drbdadm dump-xml`.

use crate::state::{NodeState, Resource, State};
use std::fmt::Write;

/// One events2 object: its kind, identifying fields, and groups of state
/// fields. drbdsetup prints a group on a `change` line only when one of its
/// fields changed (`--full`: always), so the groups mirror its print code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub kind: &'static str,
    pub ids: Vec<(&'static str, String)>,
    pub groups: Vec<Vec<(&'static str, String)>>,
}

impl Object {
    pub fn key(&self) -> String {
        let mut k = self.kind.to_owned();
        for (_, v) in &self.ids {
            k.push(' ');
            k.push_str(v);
        }
        k
    }

    /// `ACTION kind ids [groups]`; `only_changed` against `old` unless `full`.
    pub fn line(&self, action: &str, old: Option<&Object>, full: bool, stats: bool) -> Option<String> {
        let mut out = format!("{action} {}", self.kind);
        for (k, v) in &self.ids {
            let _ = write!(out, " {k}:{v}");
        }
        let mut any = false;
        for (i, g) in self.groups.iter().enumerate() {
            let changed = !matches!(old, Some(o) if o.groups.get(i) == Some(g));
            if changed || full {
                any |= changed;
                for (k, v) in g {
                    let _ = write!(out, " {k}:{v}");
                }
            }
        }
        if old.is_some() && !any {
            return None;
        }
        if stats {
            out.push_str(self.stats());
        }
        Some(out)
    }

    fn stats(&self) -> &'static str {
        match self.kind {
            "device" => {
                " size:0 read:0 written:0 al-writes:0 bm-writes:0 upper-pending:0 lower-pending:0 \
                 al-suspended:no blocked:no"
            }
            "connection" => " congested:no ap-in-flight:0 rs-in-flight:0",
            "peer-device" => " received:0 sent:0 out-of-sync:0 pending:0 unacked:0",
            _ => "",
        }
    }
}

fn peer_view(res: &Resource, node: usize) -> (&NodeState, &NodeState) {
    (&res.nodes[node], &res.nodes[1 - node])
}

/// The peer's role as this node sees it.
fn peer_role(res: &Resource, node: usize) -> &str {
    let (me, peer) = peer_view(res, node);
    if me.connected() {
        &peer.role
    } else {
        "Unknown"
    }
}

pub fn backing_dev(name: &str, volume: u32) -> String {
    format!("/dev/standin/{name}/{volume}")
}

/// The events2 objects of one node, in drbdsetup's print order.
pub fn objects(state: &State, node: usize, only: Option<&str>) -> Vec<Object> {
    let mut out = Vec::new();
    for (name, res) in &state.resources {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let (me, _) = peer_view(res, node);
        let peer_id = (1 - node).to_string();
        let conn_name = res.config.hosts[1 - node].clone();
        let may_promote = me.disk == "UpToDate" && !me.primary() && peer_role(res, node) != "Primary";
        out.push(Object {
            kind: "resource",
            ids: vec![("name", name.clone())],
            groups: vec![
                vec![("role", me.role.clone())],
                vec![(
                    "suspended",
                    if me.suspended_fencing { "fencing" } else { "no" }.to_owned(),
                )],
                vec![("force-io-failures", "no".to_owned())],
                vec![
                    ("may_promote", if may_promote { "yes" } else { "no" }.to_owned()),
                    (
                        "promotion_score",
                        if me.disk == "UpToDate" { "10101" } else { "0" }.to_owned(),
                    ),
                ],
            ],
        });
        out.push(Object {
            kind: "connection",
            ids: vec![
                ("name", name.clone()),
                ("peer-node-id", peer_id.clone()),
                ("conn-name", conn_name.clone()),
            ],
            groups: vec![
                vec![("connection", me.cstate.clone())],
                vec![("role", peer_role(res, node).to_owned())],
            ],
        });
        for v in 0..res.config.volumes {
            out.push(Object {
                kind: "device",
                ids: vec![
                    ("name", name.clone()),
                    ("volume", v.to_string()),
                    ("minor", (res.config.minor + v).to_string()),
                ],
                groups: vec![vec![
                    ("backing_dev", backing_dev(name, v)),
                    ("disk", me.disk.clone()),
                    ("client", "no".to_owned()),
                    ("quorum", "yes".to_owned()),
                ]],
            });
        }
        for v in 0..res.config.volumes {
            let repl = if me.connected() { "Established" } else { "Off" };
            out.push(Object {
                kind: "peer-device",
                ids: vec![
                    ("name", name.clone()),
                    ("peer-node-id", peer_id.clone()),
                    ("conn-name", conn_name.clone()),
                    ("volume", v.to_string()),
                ],
                groups: vec![
                    vec![("replication", repl.to_owned())],
                    vec![("peer-disk", me.peer_disk.clone()), ("peer-client", "no".to_owned())],
                    vec![("resync-suspended", "no".to_owned())],
                ],
            });
        }
    }
    out
}

/// `drbdsetup status [R]` text, as drbd-utils prints it to a pipe.
pub fn status_text(state: &State, node: usize, only: Option<&str>, verbose: bool) -> String {
    let mut s = String::new();
    for (name, res) in &state.resources {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let (me, _) = peer_view(res, node);
        let single = res.config.volumes == 1;
        let _ = write!(s, "{name}");
        if verbose {
            let _ = write!(s, " node-id:{node}");
        }
        let _ = write!(s, " role:{}", me.role);
        if verbose || me.suspended_fencing {
            let _ = write!(s, " suspended:{}", if me.suspended_fencing { "fencing" } else { "no" });
        }
        s.push('\n');
        for v in 0..res.config.volumes {
            if verbose || !single {
                let _ = write!(s, "  volume:{v}");
                if verbose {
                    let _ = write!(s, " minor:{}", res.config.minor + v);
                }
                let _ = writeln!(s, " disk:{}", me.disk);
            } else {
                let _ = writeln!(s, "  disk:{}", me.disk);
            }
        }
        let _ = write!(s, "  {}", res.config.hosts[1 - node]);
        if verbose {
            let _ = write!(s, " node-id:{}", 1 - node);
        }
        if verbose || !me.connected() {
            let _ = write!(s, " connection:{}", me.cstate);
        }
        if verbose || me.connected() {
            let _ = write!(s, " role:{}", peer_role(res, node));
        }
        s.push('\n');
        if verbose || me.connected() {
            for v in 0..res.config.volumes {
                let indent = if verbose || !single {
                    let _ = write!(s, "    volume:{v}");
                    ""
                } else {
                    "   "
                };
                if verbose {
                    let repl = if me.connected() { "Established" } else { "Off" };
                    let _ = write!(s, " replication:{repl}");
                }
                let _ = writeln!(s, "{indent} peer-disk:{}", me.peer_disk);
            }
        }
        s.push('\n');
    }
    s
}

/// `drbdsetup status --json`, laid out as drbdsetup's printf calls lay it out.
pub fn status_json(state: &State, node: usize, only: Option<&str>) -> String {
    let b = |v: bool| if v { "true" } else { "false" };
    let mut parts = Vec::new();
    for (name, res) in &state.resources {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let (me, _) = peer_view(res, node);
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\n  \"name\": \"{name}\",\n  \"node-id\": {node},\n  \"role\": \"{}\",\n  \"suspended\": {},\n  \
             \"suspended-user\": false,\n  \"suspended-no-data\": false,\n  \"suspended-fencing\": {},\n  \
             \"suspended-quorum\": false,\n  \"force-io-failures\": false,\n  \"write-ordering\": \"flush\",\n  \
             \"devices\": [\n",
            me.role,
            b(me.suspended_fencing),
            b(me.suspended_fencing)
        );
        let devices: Vec<String> = (0..res.config.volumes)
            .map(|v| {
                format!(
                    "    {{\n      \"volume\": {v},\n      \"minor\": {},\n      \"disk-state\": \"{}\",\n      \
                     \"client\": false,\n      \"quorum\": true\n    }}",
                    res.config.minor + v,
                    me.disk
                )
            })
            .collect();
        s.push_str(&devices.join(",\n"));
        s.push_str(" ],\n  \"connections\": [\n");
        let peer_devices: Vec<String> = (0..res.config.volumes)
            .map(|v| {
                format!(
                    "        {{\n          \"volume\": {v},\n          \"replication-state\": \"{}\",\n          \
                     \"peer-disk-state\": \"{}\",\n          \"peer-client\": false,\n          \
                     \"resync-suspended\": \"no\",\n          \"received\": 0,\n          \"sent\": 0,\n          \
                     \"out-of-sync\": 0,\n          \"pending\": 0,\n          \"unacked\": 0,\n          \
                     \"has-sync-details\": false,\n          \"has-online-verify-details\": false,\n          \
                     \"percent-in-sync\": 100.00\n        }}",
                    if me.connected() { "Established" } else { "Off" },
                    me.peer_disk
                )
            })
            .collect();
        let _ = write!(
            s,
            "    {{\n      \"peer-node-id\": {},\n      \"name\": \"{}\",\n      \"connection-state\": \"{}\", \n      \
             \"congested\": false,\n      \"peer-role\": \"{}\",\n      \"ap-in-flight\": 0,\n      \
             \"rs-in-flight\": 0,\n      \"peer_devices\": [\n{} ]\n    }}",
            1 - node,
            res.config.hosts[1 - node],
            me.cstate,
            peer_role(res, node),
            peer_devices.join(",\n")
        );
        s.push_str(" ]\n}");
        parts.push(s);
    }
    format!("[\n{}\n]\n\n", parts.join(",\n"))
}

/// The 8.4 /proc/drbd of one node (8.4 names: `WFConnection` for connecting;
/// no protocol letter while StandAlone; `s` first flag while I/O is frozen).
pub fn proc_drbd(state: &State, node: usize) -> String {
    let mut s = String::from("version: 8.4.11 (api:1/proto:86-101)\nsrcversion: TANDEMDRBDSTANDIN000000 \n");
    let mut minors: Vec<(u32, String)> = Vec::new();
    for res in state.resources.values() {
        let (me, _) = peer_view(res, node);
        let cs = match me.cstate.as_str() {
            "Connecting" => "WFConnection",
            other => other,
        };
        let proto = if me.cstate == "StandAlone" { ' ' } else { 'C' };
        let susp = if me.suspended_fencing { 's' } else { 'r' };
        for v in 0..res.config.volumes {
            let line = format!(
                "{:2}: cs:{cs} ro:{}/{} ds:{}/{} {proto} {susp}-----\n    ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 \
                 ua:0 ap:0 ep:1 wo:f oos:0\n",
                res.config.minor + v,
                me.role,
                peer_role(res, node),
                me.disk,
                me.peer_disk
            );
            minors.push((res.config.minor + v, line));
        }
    }
    minors.sort();
    for (_, l) in minors {
        s.push_str(&l);
    }
    s
}

/// `drbdadm dump-xml [R]` for the stand-in's resources (the layout drbdadm 9.22 prints).
pub fn dump_xml(state: &State, only: Option<&str>, config_file: &str) -> String {
    let mut s = format!("<config file=\"{config_file}\">\n");
    for (name, res) in &state.resources {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let _ = writeln!(s, "    <resource name=\"{name}\" conf-file-line=\"{config_file}:1\">");
        for (i, host) in res.config.hosts.iter().enumerate() {
            let _ = writeln!(s, "        <host name=\"{host}\">");
            for v in 0..res.config.volumes {
                let minor = res.config.minor + v;
                let _ = write!(
                    s,
                    "            <volume vnr=\"{v}\">\n                <device minor=\"{minor}\">/dev/drbd{minor}</device>\n                <disk>{}</disk>\n                <meta-disk>internal</meta-disk>\n            </volume>\n",
                    backing_dev(name, v)
                );
            }
            let (ip, port) = res.config.addresses[i].split_once(':').unwrap_or(("127.0.0.1", "7789"));
            let _ = writeln!(
                s,
                "            <address family=\"ipv4\" port=\"{port}\">{ip}</address>\n        </host>"
            );
        }
        s.push_str("    </resource>\n");
    }
    s.push_str("</config>\n");
    s
}
