//! [`FencedPair`]: a [`Pair`] whose nodes have real BMCs, so that `tandemd`
//! fences for real: each node's BMC is an `ipmi_sim` ([`Bmc`]) whose power
//! off kills that node's `tandemd`, and the configuration gives each node
//! fence levels against its BMC.
//!
//! | BMC of | runs in namespace | listens on                      |
//! |--------|-------------------|---------------------------------|
//! | alpha  | beta's            | 127.0.0.1:[`BMC_PORTS`]`[0]`    |
//! | beta   | alpha's           | 127.0.0.1:[`BMC_PORTS`]`[1]`    |
//!
//! so the node that fences reaches its peer's BMC on its own loopback, a
//! management network no link fault touches.
//!
//! Also here: reading what the status file says about fencing
//! ([`arbiter`], [`fence_history`], [`FenceRecord`]).

use crate::bmc::{self, Bmc};
use crate::daemon::{ConfigExtra, Pair, Timing};
use crate::lab::Node;
use crate::status::{self, unix_ms_now};
use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

/// The BMC ports: `[alpha's BMC, beta's BMC]`, each on the loopback of the
/// *other* node's namespace.
pub const BMC_PORTS: [u16; 2] = [6231, 6232];

/// `fence_ipmilan` (Debian: fence-agents), for `kind = "agent"` levels.
pub const FENCE_IPMILAN: &str = "/usr/sbin/fence_ipmilan";

/// One fence level of a node: a single device against that node's own BMC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Level {
    /// tandem's IPMI client (`kind = "ipmi"`, cipher suite 3, admin).
    Ipmi { password: String, timeout_ms: u64 },
    /// `fence_ipmilan` through `kind = "agent"` (lanplus, cipher 3).
    FenceIpmilan { password: String, timeout_ms: u64 },
}

impl Level {
    /// The built-in client with the right password, 2 s timeout.
    pub fn ipmi() -> Level {
        Level::Ipmi {
            password: bmc::PASSWORD.to_owned(),
            timeout_ms: 2000,
        }
    }

    /// `fence_ipmilan` with the right password, 20 s timeout.
    pub fn fence_ipmilan() -> Level {
        Level::FenceIpmilan {
            password: bmc::PASSWORD.to_owned(),
            timeout_ms: 20_000,
        }
    }

    fn password(&self) -> &str {
        match self {
            Level::Ipmi { password, .. } | Level::FenceIpmilan { password, .. } => password,
        }
    }

    /// The `[[node.NAME.fence]]` table of this level; `password_file` is
    /// where its password was written.
    fn toml(&self, node: Node, port: u16, password_file: &Path) -> Result<String> {
        let pw = password_file
            .to_str()
            .ok_or_else(|| anyhow!("path {} is not UTF-8", password_file.display()))?;
        let name = node.name();
        let user = bmc::USER;
        let address = bmc::ADDRESS;
        Ok(match self {
            Level::Ipmi { timeout_ms, .. } => format!(
                "[[node.{name}.fence]]\n\
                 [[node.{name}.fence.device]]\n\
                 kind = \"ipmi\"\n\
                 address = \"{address}\"\n\
                 port = {port}\n\
                 username = \"{user}\"\n\
                 password_file = {pw:?}\n\
                 cipher_suite = 3\n\
                 privilege = \"admin\"\n\
                 timeout_ms = {timeout_ms}\n"
            ),
            Level::FenceIpmilan { timeout_ms, .. } => format!(
                "[[node.{name}.fence]]\n\
                 [[node.{name}.fence.device]]\n\
                 kind = \"agent\"\n\
                 agent = \"{FENCE_IPMILAN}\"\n\
                 options = {{ ip = \"{address}\", ipport = {port}, username = \"{user}\", lanplus = 1, cipher = \"3\" }}\n\
                 password_file = {pw:?}\n\
                 timeout_ms = {timeout_ms}\n"
            ),
        })
    }
}

/// How a [`FencedPair`] is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceSetup {
    pub timing: Timing,
    /// More `[timing]` keys, e.g. `("fence_backoff_max_ms", 2000)`.
    pub timing_extra: Vec<(&'static str, u64)>,
    /// The fence levels of each node, in order, each against that node's BMC.
    pub levels: Vec<Level>,
}

impl Default for FenceSetup {
    /// Default timing, one level: the built-in IPMI client.
    fn default() -> Self {
        FenceSetup {
            timing: Timing::default(),
            timing_extra: Vec::new(),
            levels: vec![Level::ipmi()],
        }
    }
}

impl FenceSetup {
    /// The configuration's fence levels and timing keys; writes the password
    /// files (0600) into `dir`.
    pub fn config(&self, dir: &Path) -> Result<ConfigExtra> {
        let mut extra = ConfigExtra {
            timing: self.timing_extra.iter().map(|(k, v)| format!("{k} = {v}")).collect(),
            fence: Default::default(),
            tail: None,
            node_keys: Default::default(),
        };
        for node in Node::BOTH {
            let mut levels = String::new();
            for (i, level) in self.levels.iter().enumerate() {
                let file = dir.join(format!("bmc-{node}-level{}.pass", i + 1));
                bmc::write_password_file(&file, level.password())?;
                levels.push_str(&level.toml(node, BMC_PORTS[node.index()], &file)?);
            }
            extra.fence[node.index()] = levels;
        }
        Ok(extra)
    }
}

/// Two `tandemd` with a BMC each. Dropping it stops the BMCs, then the
/// daemons, then removes the network (and, unless a test panicked, the files).
#[derive(Debug)]
pub struct FencedPair {
    // Dropped first: the BMCs' files live in the pair's directory.
    bmcs: [Bmc; 2],
    pair: Pair,
    setup: FenceSetup,
}

impl FencedPair {
    /// Starts the pair with `setup`'s configuration, then each node's BMC in
    /// the other node's namespace, aimed at the node's `tandemd`. Does not wait
    /// for the daemons to see each other.
    pub fn start(setup: FenceSetup) -> Result<FencedPair> {
        let pair = Pair::start_with(setup.timing, |dir| setup.config(dir))?;
        let start_bmc = |node: Node| -> Result<Bmc> {
            let b = Bmc::start(
                pair.lab().ns(node.other()),
                &format!("bmc-{node}"),
                BMC_PORTS[node.index()],
                &pair.dir().join(format!("bmc-{node}")),
            )
            .with_context(|| format!("starting {node}'s BMC"))?;
            b.set_target(Some(pair.daemon(node).pid()))?;
            Ok(b)
        };
        let alpha = start_bmc(Node::Alpha)?;
        let beta = start_bmc(Node::Beta)?;
        Ok(FencedPair {
            bmcs: [alpha, beta],
            pair,
            setup,
        })
    }

    /// [`FencedPair::start`], then waits until both daemons see each other on
    /// every link with the control channel up (a daemon that never saw its
    /// peer fences nobody).
    pub fn start_healthy(setup: FenceSetup, timeout: Duration) -> Result<FencedPair> {
        let mut p = FencedPair::start(setup)?;
        p.pair.wait_healthy(timeout)?;
        Ok(p)
    }

    pub fn setup(&self) -> &FenceSetup {
        &self.setup
    }

    pub fn pair(&self) -> &Pair {
        &self.pair
    }

    pub fn pair_mut(&mut self) -> &mut Pair {
        &mut self.pair
    }

    /// `node`'s BMC (the one that powers `node` off).
    pub fn bmc(&self, node: Node) -> &Bmc {
        &self.bmcs[node.index()]
    }

    /// Kills `node`'s BMC: fencing `node` fails until [`FencedPair::restart_bmc`].
    pub fn stop_bmc(&mut self, node: Node) -> Result<()> {
        self.bmcs[node.index()].stop()
    }

    /// Starts `node`'s BMC again: same namespace, port and files.
    pub fn restart_bmc(&mut self, node: Node) -> Result<()> {
        let ns = self.pair.lab().ns(node.other());
        self.bmcs[node.index()].restart(ns)
    }

    /// `node`'s current status.
    pub fn status(&self, node: Node) -> Result<Value> {
        self.pair.status(node)
    }

    /// Cuts every link both ways, `alpha`'s inbound first (one iptables
    /// transaction per node); returns when each node's inbound cut was in
    /// place (unix_ms, by [`Node::index`]).
    pub fn partition(&self) -> Result<[u64; 2]> {
        let mut at = [0; 2];
        for node in Node::BOTH {
            self.pair.lab().isolate(node)?;
            at[node.index()] = unix_ms_now();
        }
        Ok(at)
    }

    /// How `node`'s `tandemd` ended, if it has (reaping it: from then on its
    /// pid may be reused).
    pub fn exited(&mut self, node: Node) -> Result<Option<ExitStatus>> {
        self.pair.daemon_mut(node).try_exit()
    }

    /// Whether `node`'s `tandemd` is dead (exited, or killed and not reaped yet),
    /// without reaping it.
    pub fn daemon_gone(&self, node: Node) -> bool {
        bmc::process_gone(self.pair.daemon(node).pid())
    }

    /// Everything worth showing when a fencing test fails: both statuses,
    /// BMC logs, daemon logs.
    pub fn report(&self) -> String {
        let mut s = String::new();
        for node in Node::BOTH {
            let st = self
                .status(node)
                .map_or_else(|e| format!("{e:#}"), |v| format!("{}\n{v}", status::summary(&v)));
            s.push_str(&format!(
                "=== {node}: status\n{st}\n=== {node}'s BMC (port {}, pid {:?}) chassis log:\n{}\
                 === tandemd {node} stderr (last 30 lines):\n{}\n",
                self.bmc(node).port(),
                self.bmc(node).pid(),
                self.bmc(node).log(),
                self.pair.daemon(node).stderr_tail(30),
            ));
        }
        s
    }
}

/// `arbiter`: "idle", "fence-delay", "fencing", "fence-backoff" or "fenced".
pub fn arbiter(v: &Value) -> Option<&str> {
    v.get("arbiter")?.as_str()
}

/// One record of `fence_history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceRecord {
    pub unix_ms: u64,
    pub node: String,
    /// Counted from 1.
    pub level: u64,
    pub kind: String,
    pub device: String,
    pub action: String,
    pub duration_ms: u64,
    /// The confirmed power state ("off", "on") or "error: ...".
    pub result: String,
}

impl FenceRecord {
    pub fn is_error(&self) -> bool {
        self.result.starts_with("error")
    }
}

/// `fence_history`, oldest first; records lacking a field are skipped.
pub fn fence_history(v: &Value) -> Vec<FenceRecord> {
    let Some(list) = v.get("fence_history").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|r| {
            let text = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
            let num = |k: &str| r.get(k).and_then(Value::as_u64);
            Some(FenceRecord {
                unix_ms: num("unix_ms")?,
                node: text("node")?,
                level: num("level")?,
                kind: text("kind")?,
                device: text("device")?,
                action: text("action")?,
                duration_ms: num("duration_ms")?,
                result: text("result")?,
            })
        })
        .collect()
}

/// The events of the kinds in `kinds`, at or after `since_unix_ms`, in order.
pub fn fence_events(v: &Value, kinds: &[&str], since_unix_ms: u64) -> Vec<status::Event> {
    status::events(v)
        .into_iter()
        .filter(|e| e.unix_ms >= since_unix_ms && kinds.contains(&e.kind()))
        .collect()
}

/// The event kinds every fence goes through.
pub const FENCE_KINDS: [&str; 7] = [
    "PeerLost",
    "PeerOnline",
    "FenceStarted",
    "FenceLevelFailed",
    "FenceRoundFailed",
    "FenceCancelled",
    "FenceConfirmed",
];

/// unix_ms of the first event of kind `kind` at or after `since_unix_ms`.
pub fn first_event(v: &Value, kind: &str, since_unix_ms: u64) -> Option<u64> {
    status::events_named(v, kind, since_unix_ms).first().map(|e| e.unix_ms)
}
