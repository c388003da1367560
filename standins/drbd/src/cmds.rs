//! The stand-in's operations: lock, apply DRBD's rules, record, commit.

use crate::handler;
use crate::rules::{self, Loss, Promote, Refused};
use crate::state::{self, Fencing, Holder, Locked, NodeState, ResConfig, Resource, StateError};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("{}", .0.message)]
    Refused(Refused),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Usage(String),
}

impl CmdError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CmdError::Refused(r) => r.exit,
            CmdError::State(_) => 20,
            CmdError::Usage(_) => 20,
        }
    }
}

/// Where this invocation runs: the state directory and the node.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub dir: PathBuf,
    pub node: usize,
}

/// Locks, runs `f`, and commits whatever happened, refusals included (they
/// go to the history too).
fn with_lock<T>(
    dir: &Path,
    node: usize,
    name: &str,
    command: &str,
    f: impl FnOnce(&mut Locked) -> Result<T, Refused>,
) -> Result<T, CmdError> {
    let mut l = state::lock(dir)?;
    rules::settle(&mut l);
    let out = f(&mut l);
    rules::settle(&mut l);
    match out {
        Ok(v) => {
            l.commit()?;
            Ok(v)
        }
        Err(r) => {
            let r = rules::refuse(&mut l, name, node, command, r);
            l.commit()?;
            Err(CmdError::Refused(r))
        }
    }
}

/// DRBD tries a role change up to four times (`max_tries` in `drbd_set_role()`);
/// a disconnected promote runs the fence-peer handler on each try (seen on a
/// real 8.4.11: four handler runs, then `(-7)`).
const PROMOTE_TRIES: u32 = 4;

pub fn primary(ctx: &Ctx, name: &str, force: bool) -> Result<(), CmdError> {
    for _ in 0..PROMOTE_TRIES {
        let next = with_lock(&ctx.dir, ctx.node, name, "primary", |l| {
            let p = rules::promote(l, name, ctx.node, force, false)?;
            if p != Promote::Done {
                l.state.helper(ctx.node, name, "fence-peer", None);
                l.record(
                    name,
                    Some(ctx.node),
                    "helper-call",
                    json!({"helper": "fence-peer", "why": "promote"}),
                );
            }
            Ok(p)
        })?;
        let Promote::NeedFencePeer { epoch } = next else {
            return Ok(());
        };
        // Whatever the handler said, the next try looks at the state it left.
        fence_peer_and_apply(name, ctx.node, epoch)?;
    }
    // The handler never got the peer outdated: -7, or split brain if forced.
    with_lock(&ctx.dir, ctx.node, name, "primary", |l| {
        rules::promote(l, name, ctx.node, force, true).map(|_| ())
    })
}

/// Runs node `node`'s fence-peer handler (no lock held: it may call drbdadm)
/// and applies its exit code; returns whether the peer is now outdated.
pub fn fence_peer_and_apply(name: &str, node: usize, epoch: u64) -> Result<bool, CmdError> {
    let dir = state::state_dir()?;
    let st = state::read(&dir)?.unwrap_or_default();
    let res = st
        .resources
        .get(name)
        .ok_or_else(|| CmdError::Usage(format!("no resource {name}")))?;
    // No handler configured: drbdadm finds none and returns 0, which DRBD
    // takes for a broken handler.
    let exit = match &res.config.fence_peer[node] {
        Some(cmd) => {
            let env = handler::environment(&dir, name, res, node);
            handler::run_inline(cmd, &env, &dir.join("handler.log"))
        }
        None => 0,
    };
    with_lock(&dir, node, name, "fence-peer", |l| {
        l.state.helper(node, name, "fence-peer", Some((exit & 0xff) << 8));
        l.record(
            name,
            Some(node),
            "helper-response",
            json!({"helper": "fence-peer", "exit": exit}),
        );
        rules::apply_fence_peer(l, name, node, exit, epoch)
    })
}

pub fn secondary(ctx: &Ctx, name: &str, force: bool) -> Result<(), CmdError> {
    with_lock(&ctx.dir, ctx.node, name, "secondary", |l| {
        rules::demote(l, name, ctx.node, force)
    })
}

pub fn net_options(ctx: &Ctx, name: &str, protocol: Option<&str>, allow: Option<bool>) -> Result<(), CmdError> {
    with_lock(&ctx.dir, ctx.node, name, "net-options", |l| {
        rules::net_options(l, name, ctx.node, protocol, allow)
    })
}

pub fn outdate(ctx: &Ctx, name: &str) -> Result<(), CmdError> {
    with_lock(&ctx.dir, ctx.node, name, "outdate", |l| {
        rules::outdate(l, name, ctx.node)
    })
}

pub fn resume_io(ctx: &Ctx, name: &str) -> Result<(), CmdError> {
    with_lock(&ctx.dir, ctx.node, name, "resume-io", |l| {
        rules::resume_io(l, name, ctx.node)
    })
}

pub fn connect(ctx: &Ctx, name: &str) -> Result<(), CmdError> {
    with_lock(&ctx.dir, ctx.node, name, "connect", |l| {
        rules::connect(l, name, ctx.node)
    })
}

pub fn disconnect(ctx: &Ctx, name: &str) -> Result<(), CmdError> {
    let fence = with_lock(&ctx.dir, ctx.node, name, "disconnect", |l| {
        let fence = rules::lose_connection(l, name, Loss::Graceful(ctx.node))?;
        rules::disconnect(l, name, ctx.node)?;
        note_calls(l, name, &fence);
        Ok(fence)
    })?;
    start_handlers(&ctx.dir, name, &fence)
}

/// `net-cut R`: the replication link breaks. Primaries with a fencing policy
/// freeze I/O (resource-and-stonith) and start their fence-peer handler in the
/// background, as the kernel does; `wait` returns only once they answered.
pub fn net_cut(dir: &Path, name: &str, wait: bool) -> Result<(), CmdError> {
    let fence = with_lock(dir, 0, name, "net-cut", |l| {
        let r = l.state.resources.get_mut(name).ok_or_else(|| Refused::failure(158))?;
        r.link_up = false;
        let fence = rules::lose_connection(l, name, Loss::Cut)?;
        note_calls(l, name, &fence);
        Ok(fence)
    })?;
    start_handlers(dir, name, &fence)?;
    if wait && !handler::wait_idle(dir, name, Duration::from_secs(60)) {
        return Err(CmdError::Usage("fence-peer handlers still running after 60 s".into()));
    }
    Ok(())
}

/// `node-down R --node N`: host N loses power. The replication link breaks as
/// with `net-cut`, but N's DRBD goes with its kernel: no handler runs there, its
/// I/O and holders are gone, and it would come back Secondary after a reboot.
/// The surviving Primary (if any) runs its handler as usual.
pub fn node_down(dir: &Path, name: &str, node: usize) -> Result<(), CmdError> {
    let fence = with_lock(dir, node, name, "node-down", |l| {
        let r = l.state.resources.get_mut(name).ok_or_else(|| Refused::failure(158))?;
        r.link_up = false;
        // A host without power records nothing after the link breaks: its data
        // generation stays what its peer last saw, so the peer's later writes
        // make it a plain resync target when it comes back, not a split brain.
        let generation = r.nodes[node].generation;
        let mut fence = rules::lose_connection(l, name, Loss::Cut)?;
        fence.retain(|(n, _)| *n != node);
        let r = l.state.resources.get_mut(name).ok_or_else(|| Refused::failure(158))?;
        let n = &mut r.nodes[node];
        n.generation = generation;
        n.role = "Secondary".into();
        n.suspended_fencing = false;
        n.holders.clear();
        // Its DRBD is not running: nothing to connect with until node-up.
        n.want_connect = false;
        n.cstate = "StandAlone".into();
        l.record(name, Some(node), "node-down", json!({}));
        note_calls(l, name, &fence);
        Ok(fence)
    })?;
    start_handlers(dir, name, &fence)
}

/// Host `node` has power again and its DRBD service ran `drbdadm up`: the
/// disk attaches as Consistent (a dead node cannot know whether its data is
/// still current), the link comes back and the handshake decides the resync.
pub fn node_up(dir: &Path, name: &str, node: usize) -> Result<(), CmdError> {
    with_lock(dir, node, name, "node-up", |l| {
        let r = l.state.resources.get_mut(name).ok_or_else(|| Refused::failure(158))?;
        r.link_up = true;
        let n = &mut r.nodes[node];
        n.role = "Secondary".into();
        if n.disk == "UpToDate" {
            n.disk = "Consistent".into();
        }
        n.peer_disk = "DUnknown".into();
        n.want_connect = true;
        l.record(name, Some(node), "node-up", json!({}));
        rules::try_connect(l, name)
    })
}

fn note_calls(l: &mut Locked, name: &str, fence: &[(usize, u64)]) {
    for (node, _) in fence {
        l.state.helper(*node, name, "fence-peer", None);
        l.record(
            name,
            Some(*node),
            "helper-call",
            json!({"helper": "fence-peer", "why": "connection lost"}),
        );
    }
}

fn start_handlers(dir: &Path, name: &str, fence: &[(usize, u64)]) -> Result<(), CmdError> {
    for (node, epoch) in fence {
        handler::spawn_detached(dir, name, *node, *epoch).map_err(|source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

pub fn net_heal(dir: &Path, name: &str) -> Result<(), CmdError> {
    with_lock(dir, 0, name, "net-heal", |l| {
        let r = l.state.resources.get_mut(name).ok_or_else(|| Refused::failure(158))?;
        r.link_up = true;
        rules::try_connect(l, name)
    })
}

pub fn hold(ctx: &Ctx, name: &str, holder: Holder) -> Result<(), CmdError> {
    with_lock(&ctx.dir, ctx.node, name, "hold", |l| {
        let r = l.state.resources.get_mut(name).ok_or_else(|| Refused::failure(158))?;
        r.nodes[ctx.node].holders.push(holder.clone());
        l.record(
            name,
            Some(ctx.node),
            "hold",
            json!({"name": holder.name, "pid": holder.pid}),
        );
        Ok(())
    })
}

/// Removes the holders matching `pid`/`holder_name` (all of them when both are `None`).
pub fn unhold(ctx: &Ctx, name: &str, pid: Option<u32>, holder_name: Option<&str>) -> Result<(), CmdError> {
    with_lock(&ctx.dir, ctx.node, name, "unhold", |l| {
        let r = l.state.resources.get_mut(name).ok_or_else(|| Refused::failure(158))?;
        r.nodes[ctx.node].holders.retain(|h| {
            let pid_match = pid.is_some() && h.pid == pid;
            let name_match = holder_name.is_some_and(|n| n == h.name);
            let all = pid.is_none() && holder_name.is_none();
            !(all || pid_match || name_match)
        });
        l.record(name, Some(ctx.node), "unhold", json!({"pid": pid, "name": holder_name}));
        Ok(())
    })
}

/// What `init` sets up for a resource.
#[derive(Debug, Clone)]
pub struct Init {
    pub name: String,
    pub config: ResConfig,
    pub disks: [String; 2],
    pub roles: [String; 2],
    pub allow_two_primaries: bool,
    pub connected: bool,
}

pub fn init(dir: &Path, init: Init) -> Result<(), CmdError> {
    let name = init.name.clone();
    with_lock(dir, 0, &name, "init", |l| {
        let mut nodes = [NodeState::fresh(), NodeState::fresh()];
        for (n, node) in nodes.iter_mut().enumerate() {
            node.disk = init.disks[n].clone();
            node.role = init.roles[n].clone();
            node.allow_two_primaries = init.allow_two_primaries;
            node.peer_disk = if init.connected {
                init.disks[1 - n].clone()
            } else {
                "DUnknown".into()
            };
            node.cstate = if init.connected { "Connected" } else { "Connecting" }.into();
        }
        let link_up = init.connected;
        l.state.resources.insert(
            name.clone(),
            Resource {
                config: init.config.clone(),
                link_up,
                conn_epoch: 0,
                nodes,
            },
        );
        l.record(&name, None, "init", json!({"config": init.config}));
        Ok(())
    })
}

/// Parses a fencing policy name as drbd.conf spells it.
pub fn fencing(s: &str) -> Option<Fencing> {
    match s {
        "dont-care" => Some(Fencing::DontCare),
        "resource-only" => Some(Fencing::ResourceOnly),
        "resource-and-stonith" => Some(Fencing::ResourceAndStonith),
        _ => None,
    }
}
