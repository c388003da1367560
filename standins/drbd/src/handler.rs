//! Running a node's fence-peer handler the way DRBD 9 does.
//!
//! The kernel calls its user-mode helper (`drbdadm fence-peer R`) with a clean
//! environment (`drbd_khelper()` in drbd_nl.c): HOME, TERM, PATH,
//! DRBD_MY_ADDRESS/AF, DRBD_PEER_ADDRESS/AF, DRBD_PEER_NODE_ID, DRBD_CSTATE,
//! DRBD_MINOR_<vnr>, DRBD_BACKING_DEV_<vnr>, UP_TO_DATE_NODES; drbdadm adds
//! DRBD_CONF, DRBD_RESOURCE, DRBD_NODE_ID_<n> (host names), DRBD_MY_NODE_ID,
//! DRBD_MINOR, DRBD_VOLUME, DRBD_LL_DISK (space-separated lists;
//! `adm_khelper()` in drbdadm_main.c) and runs the handler with `/bin/sh -c`.
//! The stand-in adds TANDEM_DRBD_STATE and TANDEM_DRBD_NODE so a test handler
//! can reach the stand-in too. (DRBD 8.4's drbdadm sets DRBD_PEER/DRBD_PEERS
//! instead of the node-id variables; not modelled.)
//!
//! After a link break the kernel runs the handler asynchronously, so the
//! stand-in runs it in a detached process that applies the exit code under the
//! lock when the handler returns; before a promote it runs in-line, as
//! `drbdadm primary` waits for it.

use crate::render::backing_dev;
use crate::state::{self, Resource};
use std::path::Path;
use std::process::{Command, Stdio};

/// The environment DRBD gives node `node`'s handler for `name`.
pub fn environment(dir: &Path, name: &str, res: &Resource, node: usize) -> Vec<(String, String)> {
    let peer = 1 - node;
    let me = &res.nodes[node];
    let addr = |i: usize| {
        res.config.addresses[i]
            .split_once(':')
            .map_or(res.config.addresses[i].clone(), |(ip, _)| ip.to_owned())
    };
    let mut env = vec![
        ("HOME".into(), "/".into()),
        ("TERM".into(), "linux".into()),
        ("PATH".into(), "/sbin:/usr/sbin:/bin:/usr/bin".into()),
        ("DRBD_MY_ADDRESS".into(), addr(node)),
        ("DRBD_MY_AF".into(), "ipv4".into()),
        ("DRBD_PEER_ADDRESS".into(), addr(peer)),
        ("DRBD_PEER_AF".into(), "ipv4".into()),
        ("DRBD_PEER_NODE_ID".into(), peer.to_string()),
        ("DRBD_CSTATE".into(), me.cstate.clone()),
        ("DRBD_CONF".into(), dir.join("state.json").display().to_string()),
        ("DRBD_RESOURCE".into(), name.to_owned()),
        ("DRBD_MY_NODE_ID".into(), node.to_string()),
        ("TANDEM_DRBD_STATE".into(), dir.display().to_string()),
        ("TANDEM_DRBD_NODE".into(), node.to_string()),
    ];
    let mut minors = Vec::new();
    let mut volumes = Vec::new();
    let mut disks = Vec::new();
    for v in 0..res.config.volumes {
        let minor = res.config.minor + v;
        env.push((format!("DRBD_MINOR_{v}"), minor.to_string()));
        env.push((format!("DRBD_BACKING_DEV_{v}"), backing_dev(name, v)));
        minors.push(minor.to_string());
        volumes.push(v.to_string());
        disks.push(backing_dev(name, v));
    }
    env.push(("DRBD_MINOR".into(), minors.join(" ")));
    env.push(("DRBD_VOLUME".into(), volumes.join(" ")));
    env.push(("DRBD_LL_DISK".into(), disks.join(" ")));
    for (i, host) in res.config.hosts.iter().enumerate() {
        env.push((format!("DRBD_NODE_ID_{i}"), host.clone()));
    }
    // up_to_date_nodes(): this node if its disk is UpToDate, and the peer if
    // it was UpToDate when last seen and this node has not written since.
    let mut mask = 0u64;
    if me.disk == "UpToDate" {
        mask |= 1 << node;
        if me.generation == me.generation_at_connect && res.nodes[peer].disk == "UpToDate" {
            mask |= 1 << peer;
        }
    }
    env.push(("UP_TO_DATE_NODES".into(), format!("0x{mask:08X}")));
    env
}

/// Runs `command` with `env` only, waits, returns its exit code (-1 when killed
/// by a signal or not started, which DRBD treats like any broken handler).
pub fn run_inline(command: &str, env: &[(String, String)], log: &Path) -> i32 {
    let out = open_log(log);
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out.0)
        .stderr(out.1)
        .status();
    match status {
        Ok(s) => s.code().unwrap_or(-1),
        Err(_) => -1,
    }
}

fn open_log(log: &Path) -> (Stdio, Stdio) {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null())
    };
    (open(), open())
}

/// Starts `tandem-drbd-standin` (this program) detached to run node `node`'s
/// handler and apply its answer for connection epoch `epoch`.
pub fn spawn_detached(dir: &Path, name: &str, node: usize, epoch: u64) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let log = open_log(&dir.join("handler.log"));
    Command::new(exe)
        .env(crate::RUN_HANDLER_ENV, format!("{name} {node} {epoch}"))
        .env("TANDEM_DRBD_STATE", dir)
        .stdin(Stdio::null())
        .stdout(log.0)
        .stderr(log.1)
        // Its own group: killing the command that cut the link (a timeout in a
        // test) must not kill what the kernel would have started.
        .process_group(0)
        .spawn()
        .map(|_| ())
}

/// The detached half: run the handler, then apply its exit code.
pub fn run_detached(spec: &str) -> i32 {
    let mut words = spec.split_whitespace();
    let (Some(name), Some(node), Some(epoch)) = (words.next(), words.next(), words.next()) else {
        eprintln!("bad handler spec {spec:?}");
        return 20;
    };
    let (Ok(node), Ok(epoch)) = (node.parse::<usize>(), epoch.parse::<u64>()) else {
        eprintln!("bad handler spec {spec:?}");
        return 20;
    };
    match crate::cmds::fence_peer_and_apply(name, node.min(1), epoch) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("fence-peer for {name} on node {node}: {e}");
            20
        }
    }
}

/// Waits until no fence-peer handler is running for `name` (for `net-cut --wait`).
pub fn wait_idle(dir: &Path, name: &str, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let busy = state::read(dir)
            .ok()
            .flatten()
            .map(|s| {
                s.helpers
                    .iter()
                    .filter(|h| h.resource == name && h.helper == "fence-peer")
                    .fold(0i64, |n, h| if h.status.is_none() { n + 1 } else { n - 1 })
                    > 0
            })
            // A state that cannot be read now is not proof that the handlers
            // are done: look again.
            .unwrap_or(true);
        if !busy {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
