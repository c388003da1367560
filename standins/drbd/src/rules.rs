//! DRBD's rules, applied to the shared state under the lock.
//!
//! Each refusal carries DRBD's code and text (drbd-headers `drbd_strings.c`)
//! and the exit code drbdsetup gives it (`check_error()` in drbdsetup.c: 11 for
//! a refused state change, 17 for `(-2)`, 5 for `(-16)`, 10 for `Failure:`).
//! Order of the checks follows the kernel's `is_valid_state()`: two primaries,
//! then UpToDate data, then the fencing policy.

use crate::state::{alive, Fencing, Locked, Resource};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: i32,
    pub message: &'static str,
    pub exit: i32,
    /// `additional info from kernel:` lines.
    pub info: Vec<String>,
}

impl Refused {
    pub fn state_change(code: i32) -> Self {
        let message = match code {
            -1 => "Multiple primaries not allowed by config",
            -2 => "Need access to UpToDate data",
            -6 => "Refusing to be Outdated while Connected",
            -7 => "Refusing to be Primary while peer is not outdated",
            -12 => "Device is held open by someone",
            -16 => "Disk state is lower than outdated",
            _ => "State change failed",
        };
        let exit = match code {
            -2 => 17,
            -16 => 5,
            -4 => 16,
            _ => 11,
        };
        Refused {
            code,
            message,
            exit,
            info: Vec::new(),
        }
    }

    pub fn failure(code: i32) -> Self {
        let message = match code {
            139 => "Protocol C required",
            158 => "Unknown resource",
            164 => "Can not clear allow_two_primaries as long as\nthere a primaries on both sides",
            _ => "Invalid configuration request",
        };
        Refused {
            code,
            message,
            exit: 10,
            info: Vec::new(),
        }
    }

    /// What drbdsetup prints on stderr, `objname` being the resource or minor.
    pub fn render(&self, objname: &str) -> String {
        let mut s = if self.code < 0 {
            format!("{objname}: State change failed: ({}) {}\n", self.code, self.message)
        } else {
            format!("{objname}: Failure: ({}) {}\n", self.code, self.message)
        };
        if !self.info.is_empty() {
            s.push_str("additional info from kernel:\n");
            for i in &self.info {
                s.push_str(i);
                s.push('\n');
            }
        }
        s
    }
}

fn res<'a>(l: &'a mut Locked, name: &str) -> Result<&'a mut Resource, Refused> {
    l.state.resources.get_mut(name).ok_or_else(|| Refused::failure(158))
}

/// Keeps each node's view of its peer's disk equal to the truth while connected,
/// and drops holders whose process is gone.
pub fn settle(l: &mut Locked) {
    for r in l.state.resources.values_mut() {
        if r.nodes[0].connected() && r.nodes[1].connected() {
            r.nodes[0].peer_disk = r.nodes[1].disk.clone();
            r.nodes[1].peer_disk = r.nodes[0].disk.clone();
        }
        for n in r.nodes.iter_mut() {
            n.holders.retain(|h| h.pid.is_none_or_alive());
        }
    }
}

trait PidAlive {
    fn is_none_or_alive(&self) -> bool;
}

impl PidAlive for Option<u32> {
    fn is_none_or_alive(&self) -> bool {
        match self {
            None => true,
            Some(p) => alive(*p),
        }
    }
}

fn set_role(l: &mut Locked, name: &str, node: usize, role: &str, how: &str) -> Result<(), Refused> {
    let r = res(l, name)?;
    let from = std::mem::replace(&mut r.nodes[node].role, role.to_owned());
    if from != role {
        l.record(name, Some(node), "role", json!({"from": from, "to": role, "how": how}));
    }
    Ok(())
}

pub fn refuse(l: &mut Locked, name: &str, node: usize, command: &str, r: Refused) -> Refused {
    l.record(
        name,
        Some(node),
        "refused",
        json!({"command": command, "code": r.code, "message": r.message}),
    );
    r
}

/// What a promote needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promote {
    Done,
    /// Disconnected with a fencing policy and the peer not known outdated: the
    /// fence-peer handler must run first (outside the lock); `epoch` tells
    /// whether its answer still applies.
    NeedFencePeer {
        epoch: u64,
    },
}

pub fn promote(l: &mut Locked, name: &str, node: usize, force: bool, fence_failed: bool) -> Result<Promote, Refused> {
    let r = res(l, name)?;
    let (me, peer) = (&r.nodes[node], &r.nodes[1 - node]);
    if me.primary() {
        return Ok(Promote::Done);
    }
    if me.connected() && peer.primary() && !(me.allow_two_primaries && peer.allow_two_primaries) {
        return Err(Refused::state_change(-1));
    }
    if me.disk != "UpToDate" {
        if !force || !matches!(me.disk.as_str(), "Consistent" | "Outdated" | "Inconsistent") {
            return Err(Refused::state_change(-2));
        }
        let from = std::mem::replace(&mut r.nodes[node].disk, "UpToDate".into());
        l.record(
            name,
            Some(node),
            "disk",
            json!({"from": from, "to": "UpToDate", "how": "primary --force"}),
        );
    }
    let r = res(l, name)?;
    let me = &r.nodes[node];
    let peer_outdated = matches!(me.peer_disk.as_str(), "Outdated" | "Inconsistent" | "Diskless");
    if !me.connected() && r.config.fencing != Fencing::DontCare && !peer_outdated {
        if !fence_failed {
            return Ok(Promote::NeedFencePeer { epoch: r.conn_epoch });
        }
        if !force {
            return Err(Refused::state_change(-7));
        }
        l.record(
            name,
            Some(node),
            "forced-split-brain",
            json!({"detail": "Forced into split brain situation!"}),
        );
    }
    let r = res(l, name)?;
    if !r.nodes[node].connected() {
        // A new current UUID: this node's data moves on without the peer.
        r.nodes[node].generation += 1;
    }
    set_role(
        l,
        name,
        node,
        "Primary",
        if force { "primary --force" } else { "primary" },
    )?;
    if force {
        forced_resync(l, name, node)?;
    }
    Ok(Promote::Done)
}

/// A connected node forced UpToDate becomes the sync source of a peer with
/// worse data (the initial full sync after `primary --force`, seen on a real
/// 8.4.11: SyncSource, then UpToDate/UpToDate). Resyncs are instant here.
fn forced_resync(l: &mut Locked, name: &str, node: usize) -> Result<(), Refused> {
    let r = res(l, name)?;
    let (me, peer) = (&r.nodes[node], &r.nodes[1 - node]);
    let worse = matches!(peer.disk.as_str(), "Inconsistent" | "Outdated" | "Consistent");
    if !(me.connected() && peer.connected() && me.disk == "UpToDate" && worse) {
        return Ok(());
    }
    let from = std::mem::replace(&mut r.nodes[1 - node].disk, "UpToDate".into());
    r.nodes[1 - node].generation = r.nodes[node].generation;
    r.nodes[1 - node].generation_at_connect = r.nodes[node].generation;
    r.nodes[node].generation_at_connect = r.nodes[node].generation;
    l.record(
        name,
        None,
        "resync",
        json!({"source": node, "target": 1 - node, "from": from, "why": "primary --force"}),
    );
    settle(l);
    Ok(())
}

pub fn demote(l: &mut Locked, name: &str, node: usize, force: bool) -> Result<(), Refused> {
    let r = res(l, name)?;
    let minor = r.config.minor;
    let me = &r.nodes[node];
    if !me.primary() {
        return Ok(());
    }
    if !me.holders.is_empty() {
        if !force {
            let mut refused = Refused::state_change(-12);
            refused.info = me
                .holders
                .iter()
                .map(|h| match h.pid {
                    Some(p) => format!("/dev/drbd{minor} opened by {} (pid {p})", h.name),
                    None => format!("/dev/drbd{minor} opened by {}", h.name),
                })
                .collect();
            return Err(refused);
        }
        l.record(
            name,
            Some(node),
            "forced-secondary",
            json!({"detail": "openers get I/O errors"}),
        );
    }
    set_role(
        l,
        name,
        node,
        "Secondary",
        if force { "secondary --force" } else { "secondary" },
    )
}

pub fn net_options(
    l: &mut Locked,
    name: &str,
    node: usize,
    protocol: Option<&str>,
    allow: Option<bool>,
) -> Result<(), Refused> {
    let r = res(l, name)?;
    let me = &r.nodes[node];
    let protocol = protocol.unwrap_or(&me.protocol).to_owned();
    let allow = allow.unwrap_or(me.allow_two_primaries);
    if allow && protocol != "C" {
        return Err(Refused::failure(139));
    }
    let both_primary = me.primary() && me.connected() && r.nodes[1 - node].primary();
    if !allow && both_primary {
        return Err(Refused::failure(164));
    }
    let connected = me.connected();
    for n in 0..2 {
        // While connected DRBD sends the change to the peer (P_PROTOCOL_UPDATE),
        // which adopts it: seen on a real 8.4.11, `drbdsetup show` on the peer.
        if n == node || connected {
            r.nodes[n].protocol = protocol.clone();
            r.nodes[n].allow_two_primaries = allow;
        }
    }
    l.record(
        name,
        Some(node),
        "net-options",
        json!({"protocol": protocol, "allow_two_primaries": allow, "propagated": connected}),
    );
    Ok(())
}

pub fn outdate(l: &mut Locked, name: &str, node: usize) -> Result<(), Refused> {
    let r = res(l, name)?;
    let me = &r.nodes[node];
    if me.primary() {
        return Err(Refused::state_change(-2));
    }
    if me.connected() {
        return Err(Refused::state_change(-6));
    }
    match me.disk.as_str() {
        "UpToDate" | "Consistent" => {
            let from = std::mem::replace(&mut r.nodes[node].disk, "Outdated".into());
            l.record(
                name,
                Some(node),
                "disk",
                json!({"from": from, "to": "Outdated", "how": "outdate"}),
            );
            Ok(())
        }
        "Outdated" => Ok(()),
        _ => Err(Refused::state_change(-16)),
    }
}

pub fn resume_io(l: &mut Locked, name: &str, node: usize) -> Result<(), Refused> {
    let r = res(l, name)?;
    if std::mem::replace(&mut r.nodes[node].suspended_fencing, false) {
        l.record(name, Some(node), "io-resumed", json!({"how": "resume-io"}));
    }
    Ok(())
}

/// Why the connection went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The link broke (`net-cut`): the Primaries' fencing policy applies.
    Cut,
    /// `disconnect` on this node: a cluster-wide, agreed state change.
    Graceful(usize),
}

/// Ends the connection; returns the nodes whose fence-peer handler must now
/// run (asynchronously, as the kernel runs it), with the epoch it answers for.
pub fn lose_connection(l: &mut Locked, name: &str, how: Loss) -> Result<Vec<(usize, u64)>, Refused> {
    let r = res(l, name)?;
    if !(r.nodes[0].connected() && r.nodes[1].connected()) {
        return Ok(Vec::new());
    }
    let both_primary = r.nodes[0].primary() && r.nodes[1].primary();
    let fencing = r.config.fencing;
    let mut how = how;
    if let Loss::Graceful(x) = how {
        if fencing != Fencing::DontCare && both_primary {
            // Nobody can be outdated by agreement: as if the link broke.
            how = Loss::Cut;
        } else if fencing != Fencing::DontCare {
            // DRBD's graceful disconnect keeps the Primary's peer from staying
            // UpToDate: the Secondary side is outdated as part of it.
            let secondary = if r.nodes[x].primary() { 1 - x } else { x };
            if r.nodes[1 - secondary].primary() && r.nodes[secondary].disk == "UpToDate" {
                r.nodes[secondary].disk = "Outdated".into();
            }
        }
    }
    r.conn_epoch += 1;
    let epoch = r.conn_epoch;
    let mut fence = Vec::new();
    for n in 0..2 {
        // After an agreed disconnect each side knows the other's last disk
        // state; only an Outdated one is worth keeping (below).
        let peer_disk = match how {
            Loss::Graceful(_) if fencing != Fencing::DontCare => r.nodes[1 - n].disk.clone(),
            _ => "DUnknown".into(),
        };
        let node = &mut r.nodes[n];
        if let Loss::Graceful(x) = how {
            if x == n {
                node.want_connect = false;
            }
        }
        node.cstate = if node.want_connect { "Connecting" } else { "StandAlone" }.into();
        node.peer_disk = peer_disk;
        if node.primary() {
            node.generation += 1;
            if how == Loss::Cut && fencing != Fencing::DontCare {
                node.suspended_fencing = fencing == Fencing::ResourceAndStonith;
                fence.push((n, epoch));
            }
        }
    }
    // A disk outdated by a graceful disconnect is Outdated to both sides.
    if let Loss::Graceful(_) = how {
        for n in 0..2 {
            if r.nodes[n].peer_disk != "Outdated" {
                r.nodes[n].peer_disk = "DUnknown".into();
            }
        }
    }
    let what = match how {
        Loss::Cut => "link broken".to_owned(),
        Loss::Graceful(x) => format!("disconnect on node {x}"),
    };
    l.record(
        name,
        None,
        "connection",
        json!({"from": "Connected", "to": "lost", "how": what}),
    );
    Ok(fence)
}

/// Connects when the link is up and both nodes want it, with DRBD's handshake
/// checks: equal protocol and allow-two-primaries, no two Primaries without
/// it, no split brain (both wrote without the other); the node that wrote
/// alone (or the better disk) is the sync source, and the resync completes at once.
pub fn try_connect(l: &mut Locked, name: &str) -> Result<(), Refused> {
    let r = res(l, name)?;
    for n in r.nodes.iter_mut() {
        if !n.connected() {
            n.cstate = if n.want_connect { "Connecting" } else { "StandAlone" }.into();
        }
    }
    if !r.link_up || !r.nodes[0].want_connect || !r.nodes[1].want_connect || r.nodes[0].connected() {
        return Ok(());
    }
    let (a, b) = (&r.nodes[0], &r.nodes[1]);
    let a_wrote = a.generation != a.generation_at_connect;
    let b_wrote = b.generation != b.generation_at_connect;
    let refusal = if a.protocol != b.protocol {
        Some("incompatible communication protocols")
    } else if a.allow_two_primaries != b.allow_two_primaries {
        Some("incompatible setting of the two-primaries options")
    } else if a.primary() && b.primary() && !a.allow_two_primaries {
        Some("Split-Brain detected: two Primaries without allow-two-primaries, dropping connection!")
    } else if a_wrote && b_wrote {
        Some("Split-Brain detected but unresolved, dropping connection!")
    } else {
        None
    };
    if let Some(why) = refusal {
        for n in r.nodes.iter_mut() {
            n.want_connect = false;
            n.cstate = "StandAlone".into();
        }
        l.record(name, None, "handshake-refused", json!({"reason": why}));
        return Ok(());
    }
    let rank = |d: &str| match d {
        "UpToDate" => 4,
        "Consistent" => 3,
        "Outdated" => 2,
        "Inconsistent" => 1,
        _ => 0,
    };
    let source = if a_wrote {
        Some(0)
    } else if b_wrote {
        Some(1)
    } else {
        match rank(&a.disk).cmp(&rank(&b.disk)) {
            std::cmp::Ordering::Greater => Some(0),
            std::cmp::Ordering::Less => Some(1),
            std::cmp::Ordering::Equal => None,
        }
    };
    let mut synced = None;
    if let Some(s) = source {
        let t = 1 - s;
        if r.nodes[s].disk == "UpToDate" && r.nodes[t].disk != "Diskless" && r.nodes[t].disk != "UpToDate" {
            synced = Some((t, r.nodes[t].disk.clone()));
            r.nodes[t].disk = "UpToDate".into();
        }
        r.nodes[t].generation = r.nodes[s].generation;
    } else if r
        .nodes
        .iter()
        .all(|n| matches!(n.disk.as_str(), "UpToDate" | "Consistent"))
    {
        // Same data generation on both (e.g. both hosts lost power and came
        // back): nothing to resync, and each side now knows its data is current.
        for n in r.nodes.iter_mut() {
            n.disk = "UpToDate".into();
        }
    }
    r.conn_epoch += 1;
    for n in r.nodes.iter_mut() {
        n.cstate = "Connected".into();
        n.suspended_fencing = false;
        n.generation_at_connect = n.generation;
    }
    l.record(
        name,
        None,
        "connection",
        json!({"from": "lost", "to": "Connected", "resync": synced.map(|(t, from)| json!({"target": t, "from": from}))}),
    );
    settle(l);
    Ok(())
}

pub fn disconnect(l: &mut Locked, name: &str, node: usize) -> Result<(), Refused> {
    lose_connection(l, name, Loss::Graceful(node))?;
    let r = res(l, name)?;
    r.nodes[node].want_connect = false;
    r.nodes[node].cstate = "StandAlone".into();
    Ok(())
}

pub fn connect(l: &mut Locked, name: &str, node: usize) -> Result<(), Refused> {
    res(l, name)?.nodes[node].want_connect = true;
    try_connect(l, name)
}

/// What the kernel does with a fence-peer handler's exit code
/// (`conn_try_outdate_peer()` in drbd_nl.c); returns whether the peer is now
/// known to be outdated (I/O resumes, a promote may go on).
pub fn apply_fence_peer(l: &mut Locked, name: &str, node: usize, exit: i32, epoch: u64) -> Result<bool, Refused> {
    let r = res(l, name)?;
    let stonith = r.config.fencing == Fencing::ResourceAndStonith;
    if r.conn_epoch != epoch || r.nodes[node].connected() {
        l.record(
            name,
            Some(node),
            "fence-peer-ignored",
            json!({"exit": exit, "detail": "connection changed while the handler ran"}),
        );
        return Ok(false);
    }
    let me = &mut r.nodes[node];
    let meaning = match exit {
        3 => {
            me.peer_disk = "Inconsistent".into();
            "peer is inconsistent or worse"
        }
        4 => {
            me.peer_disk = "Outdated".into();
            "peer was fenced"
        }
        5 if me.disk == "UpToDate" => {
            me.peer_disk = "Outdated".into();
            "peer is unreachable, assumed to be dead"
        }
        5 => "peer unreachable, doing nothing since disk != UpToDate",
        // The peer is Primary: this node outdates itself, which a Primary
        // cannot (seen on a real 8.4.11: "State change failed: Need access to
        // UpToDate data"; the disk stays UpToDate and I/O stays frozen).
        6 if me.primary() => "peer is active (outdating myself refused: Need access to UpToDate data)",
        6 => {
            me.disk = "Outdated".into();
            "peer is active"
        }
        7 => {
            me.peer_disk = "Outdated".into();
            if stonith {
                "peer was stonithed"
            } else {
                "peer was stonithed (fence-peer() = 7 && fencing != Stonith !!!)"
            }
        }
        _ => "fence-peer helper broken",
    };
    let outdated = matches!(me.peer_disk.as_str(), "Outdated" | "Inconsistent" | "Diskless");
    let resumed = outdated && std::mem::replace(&mut me.suspended_fencing, false);
    l.record(
        name,
        Some(node),
        "fence-peer-result",
        json!({"exit": exit, "meaning": meaning, "peer_outdated": outdated, "io_resumed": resumed}),
    );
    Ok(outdated)
}
