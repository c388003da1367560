//! One set of DRBD scenarios, run against the real DRBD 8.4 in two guests
//! ([`RealDrbd`]) and against tandem's stand-in (`standins/drbd`,
//! [`StandinDrbd`]), and the comparison of what each showed.
//!
//! A scenario is a Rust function over [`Ctx`]: it runs `drbdadm` on a node,
//! cuts and heals the replication link, holds a device open, arms the test
//! fence-peer handler (`tests/fixtures/real-drbd/fence-peer.sh`) and records
//! observations. Each observation is what tandem itself would read, read with
//! tandem's own parsers (`tandem::drbd`): a command's exit code, stdout and
//! the refusal `parse_failure` finds on stderr (code, text, `additional
//! info` lines); a node's `/proc/drbd` (`parse_proc_drbd`: connection state,
//! roles, disk states, protocol, frozen I/O); `drbdsetup events2 --now`
//! folded by `Events2Fold` into the observation tandem's core gets; the
//! handler's runs and exit codes, and the environment variables tandem's
//! handler reads.
//!
//! Where DRBD changes state in the background (connecting, resyncing,
//! noticing a dead link, a handler's answer), a scenario waits with
//! [`Ctx::settle`] until a condition on both nodes holds (or a time limit
//! passes) and then records the state. The condition says when to look, not
//! what to see: the stand-in and the real module are held to the same
//! condition, and what they show then is compared.
//!
//! Every command either backend runs goes to the journal (one JSON line per
//! step, see [`Journal`]).

use super::guest::{GuestPair, Step, LINK_ADDRS, NAMES};
use super::image::fixtures;
use crate::cmd;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tandem::core::ResourceName;
use tandem::drbd::{parse_events2_line, parse_failure, parse_proc_drbd, Events2Fold};

/// The resource every scenario uses (minor 0, port 7789 on link 1).
pub const RES: &str = "r0";
pub const A: usize = 0;
pub const B: usize = 1;

/// One JSON object per line: every command, fault and observation of a run.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    pub fn create(path: &Path) -> Result<Journal> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Journal {
            path: path.to_owned(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn record(&mut self, v: &Value) -> Result<()> {
        writeln!(self.file, "{v}").with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// What a scenario starts from: resource `r0` on both nodes, connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// `fencing` (DRBD 8.4: in `disk { }`); `None`: DRBD's default, dont-care.
    pub fencing: Option<&'static str>,
    /// The test fence-peer handler is configured on both nodes.
    pub handler: bool,
    pub two_primaries: bool,
    /// Fresh metadata, both Inconsistent; otherwise both UpToDate and in sync.
    pub fresh: bool,
}

impl Setup {
    pub const SYNCED: Setup = Setup {
        fencing: None,
        handler: false,
        two_primaries: false,
        fresh: false,
    };

    pub fn fenced(fencing: &'static str) -> Setup {
        Setup {
            fencing: Some(fencing),
            handler: true,
            ..Setup::SYNCED
        }
    }
}

/// A command's outcome in either backend.
#[derive(Debug, Clone, Default)]
pub struct Out {
    pub exit: i32,
    pub stdout: String,
    pub stderr: String,
    /// The node's /proc/drbd right after (the guests report it with every command).
    pub proc_drbd: Option<String>,
    pub kernel: Vec<String>,
}

impl Out {
    fn json(&self) -> Value {
        json!({
            "exit": self.exit,
            "stdout": self.stdout.lines().collect::<Vec<_>>(),
            "stderr": self.stderr.lines().collect::<Vec<_>>(),
            "proc_drbd": self.proc_drbd.as_deref().map(|p| p.lines().collect::<Vec<_>>()),
            "kernel": self.kernel,
        })
    }
}

/// What a scenario can do to DRBD; implemented by the real module in the
/// guests and by the stand-in.
pub trait Backend {
    fn name(&self) -> &'static str;
    /// How long a [`Ctx::settle`] may wait at most here.
    fn settle_limit(&self, asked: Duration) -> Duration;
    /// Brings `r0` up as `setup` says, from whatever the last scenario left.
    fn setup(&mut self, setup: &Setup) -> Result<Vec<Out>>;
    fn drbdadm(&mut self, node: usize, args: &[&str]) -> Result<Out>;
    fn drbdsetup(&mut self, node: usize, args: &[&str]) -> Result<Out>;
    fn proc_drbd(&mut self, node: usize) -> Result<String>;
    /// The replication link breaks (both directions) / comes back.
    fn cut(&mut self) -> Result<()>;
    fn heal(&mut self) -> Result<()>;
    /// A process opens the node's /dev/drbd0 and keeps it open / lets go.
    fn hold(&mut self, node: usize) -> Result<()>;
    fn release(&mut self, node: usize) -> Result<()>;
    /// The node's next fence-peer runs exit `code`; with `hold` they wait for
    /// [`Backend::handler_go`] first.
    fn handler_arm(&mut self, node: usize, code: i32, hold: bool) -> Result<()>;
    fn handler_go(&mut self, node: usize) -> Result<()>;
    /// The handler's log lines ("start", "exit N") and its last environment.
    fn handler_log(&mut self, node: usize) -> Result<(Vec<String>, BTreeMap<String, String>)>;
}

/// A node's state as tandem's /proc/drbd parser reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    pub cs: String,
    pub role: String,
    pub peer_role: String,
    pub disk: String,
    pub peer_disk: String,
    pub protocol: String,
    pub suspended: bool,
    /// A parse error or a missing minor 0, when there is one.
    pub error: Option<String>,
}

impl View {
    pub fn parse(text: &str) -> View {
        let p = match parse_proc_drbd(text) {
            Ok(p) => p,
            Err(e) => {
                return View {
                    error: Some(e.to_string()),
                    ..View::default()
                }
            }
        };
        let Some(m) = p.minors.iter().find(|m| m.minor == 0) else {
            return View {
                cs: "Unconfigured".into(),
                ..View::default()
            };
        };
        match &m.state {
            None => View {
                cs: m.cs.clone(),
                ..View::default()
            },
            Some(s) => View {
                cs: m.cs.clone(),
                role: s.role.to_string(),
                peer_role: s.peer_role.to_string(),
                disk: s.disk.to_string(),
                peer_disk: s.peer_disk.to_string(),
                protocol: s.protocol.map(String::from).unwrap_or_default(),
                suspended: s.suspended,
                error: None,
            },
        }
    }

    pub fn json(&self) -> Value {
        let mut v = json!({
            "cs": self.cs,
            "role": self.role,
            "peer_role": self.peer_role,
            "disk": self.disk,
            "peer_disk": self.peer_disk,
            "protocol": self.protocol,
            "suspended": self.suspended,
        });
        if let (Some(e), Some(o)) = (&self.error, v.as_object_mut()) {
            o.insert("error".into(), json!(e));
        }
        v
    }

    /// Connected (not resyncing), StandAlone or waiting for the peer: no
    /// state change under way.
    pub fn quiet(&self) -> bool {
        matches!(self.cs.as_str(), "Connected" | "WFConnection" | "StandAlone")
    }

    pub fn connected(&self) -> bool {
        self.cs == "Connected"
    }

    pub fn in_sync(&self) -> bool {
        self.connected() && self.disk == "UpToDate" && self.peer_disk == "UpToDate"
    }
}

/// Both nodes quiet.
pub fn both_quiet(v: &[View; 2]) -> bool {
    v.iter().all(View::quiet)
}

/// Both connected, UpToDate/UpToDate, no resync under way.
pub fn both_in_sync(v: &[View; 2]) -> bool {
    v.iter().all(View::in_sync)
}

/// Neither node connected any more, and both quiet.
pub fn both_apart(v: &[View; 2]) -> bool {
    v.iter().all(|n| n.quiet() && !n.connected())
}

/// One thing a scenario observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Obs {
    pub label: String,
    pub value: Value,
}

/// A scenario's view of a backend.
pub struct Ctx<'a> {
    backend: &'a mut dyn Backend,
    journal: &'a mut Journal,
    scenario: &'static str,
    seq: u32,
    pub obs: Vec<Obs>,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("backend", &self.backend.name())
            .field("scenario", &self.scenario)
            .field("observations", &self.obs.len())
            .finish()
    }
}

impl<'a> Ctx<'a> {
    pub fn new(backend: &'a mut dyn Backend, journal: &'a mut Journal, scenario: &'static str) -> Self {
        Ctx {
            backend,
            journal,
            scenario,
            seq: 0,
            obs: Vec::new(),
        }
    }

    fn log(&mut self, op: &str, node: Option<usize>, detail: Value) -> Result<()> {
        self.seq += 1;
        let mut v = json!({
            "backend": self.backend.name(),
            "scenario": self.scenario,
            "seq": self.seq,
            "op": op,
            "node": node.map(|n| NAMES[n]),
        });
        if let (Some(o), Value::Object(d)) = (v.as_object_mut(), detail) {
            o.extend(d);
        }
        self.journal.record(&v)
    }

    fn observe(&mut self, label: String, value: Value) -> Result<()> {
        self.log("observe", None, json!({"label": label, "value": value}))?;
        self.obs.push(Obs { label, value });
        Ok(())
    }

    /// `drbdadm ARGS` on `node`; records its exit code, stdout and refusal.
    pub fn adm(&mut self, node: usize, args: &[&str]) -> Result<i32> {
        let out = self.backend.drbdadm(node, args)?;
        let cmdline = format!("drbdadm {}", args.join(" "));
        self.log("run", Some(node), {
            let mut v = out.json();
            if let Some(o) = v.as_object_mut() {
                o.insert("command".into(), json!(cmdline));
            }
            v
        })?;
        let failure = parse_failure(&out.stderr).map(|f| json!({"code": f.code, "message": f.message, "info": f.info}));
        let stdout: Vec<&str> = out.stdout.lines().filter(|l| !l.trim().is_empty()).collect();
        self.observe(
            format!("{}: {cmdline}", NAMES[node]),
            json!({"exit": out.exit, "failure": failure, "stdout": stdout}),
        )?;
        Ok(out.exit)
    }

    /// Both nodes' /proc/drbd, parsed.
    pub fn views(&mut self) -> Result<[View; 2]> {
        let a = self.backend.proc_drbd(A)?;
        let b = self.backend.proc_drbd(B)?;
        Ok([View::parse(&a), View::parse(&b)])
    }

    /// Records both nodes' state now.
    pub fn state(&mut self, label: &str) -> Result<()> {
        let v = self.views()?;
        self.log(
            "state",
            None,
            json!({"label": label, "nodea": v[0].json(), "nodeb": v[1].json()}),
        )?;
        self.observe(
            format!("state: {label}"),
            json!({"nodea": v[0].json(), "nodeb": v[1].json()}),
        )
    }

    /// Waits until `until` holds for both nodes (at most `limit`), then records
    /// the state, and whether the condition was met.
    pub fn settle(&mut self, label: &str, until: fn(&[View; 2]) -> bool, limit: Duration) -> Result<bool> {
        let limit = self.backend.settle_limit(limit);
        let started = Instant::now();
        let (views, met) = loop {
            let v = self.views()?;
            if until(&v) {
                break (v, true);
            }
            if started.elapsed() > limit {
                break (v, false);
            }
            std::thread::sleep(Duration::from_millis(150));
        };
        let waited = started.elapsed().as_millis() as u64;
        self.log(
            "settle",
            None,
            json!({"label": label, "met": met, "waited_ms": waited, "nodea": views[0].json(), "nodeb": views[1].json()}),
        )?;
        self.observe(
            format!("settled: {label}"),
            json!({"met": met, "nodea": views[0].json(), "nodeb": views[1].json()}),
        )?;
        Ok(met)
    }

    /// `drbdsetup events2 --now all` on `node`, folded as tandemd folds it.
    pub fn events2(&mut self, node: usize, label: &str) -> Result<()> {
        let out = self.backend.drbdsetup(node, &["events2", "--now", "all"])?;
        self.log("run", Some(node), {
            let mut v = out.json();
            if let Some(o) = v.as_object_mut() {
                o.insert("command".into(), json!("drbdsetup events2 --now all"));
            }
            v
        })?;
        let mut fold = Events2Fold::with_resources([ResourceName(RES.into())]);
        let mut error = None;
        for line in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
            match parse_events2_line(line) {
                Ok(ev) => {
                    fold.apply(&ev);
                }
                Err(e) => {
                    error.get_or_insert(e.to_string());
                }
            }
        }
        let obs = fold.observation(&ResourceName(RES.into()));
        self.observe(
            format!("events2 {}: {label}", NAMES[node]),
            json!({"exit": out.exit, "observation": obs, "parse_error": error}),
        )
    }

    pub fn cut(&mut self) -> Result<()> {
        self.log("cut", None, json!({"link": 1}))?;
        self.backend.cut()
    }

    pub fn heal(&mut self) -> Result<()> {
        self.log("heal", None, json!({"link": 1}))?;
        self.backend.heal()
    }

    pub fn hold(&mut self, node: usize) -> Result<()> {
        self.log("hold", Some(node), json!({}))?;
        self.backend.hold(node)
    }

    pub fn release(&mut self, node: usize) -> Result<()> {
        self.log("release", Some(node), json!({}))?;
        self.backend.release(node)
    }

    pub fn handler_arm(&mut self, node: usize, code: i32, hold: bool) -> Result<()> {
        self.log("handler-arm", Some(node), json!({"exit": code, "hold": hold}))?;
        self.backend.handler_arm(node, code, hold)
    }

    pub fn handler_go(&mut self, node: usize) -> Result<()> {
        self.log("handler-go", Some(node), json!({}))?;
        self.backend.handler_go(node)
    }

    /// Waits until the node's handler log has `n` lines starting with `what`
    /// ("start" or "exit"); whether it did within `limit`.
    pub fn wait_handler(&mut self, node: usize, what: &str, n: usize, limit: Duration) -> Result<bool> {
        let limit = self.backend.settle_limit(limit);
        let started = Instant::now();
        loop {
            let (log, _) = self.backend.handler_log(node)?;
            if log.iter().filter(|l| l.starts_with(what)).count() >= n {
                return Ok(true);
            }
            if started.elapsed() > limit {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Records the node's handler runs: how many started, their exit codes
    /// and, with `env`, the variables tandem's handler reads.
    pub fn handler(&mut self, node: usize, label: &str, env: bool) -> Result<()> {
        let (log, vars) = self.backend.handler_log(node)?;
        let starts = log.iter().filter(|l| *l == "start").count();
        let exits: Vec<&str> = log.iter().filter_map(|l| l.strip_prefix("exit ")).collect();
        let mut v = json!({"starts": starts, "exits": exits});
        if env {
            let keep = [
                "DRBD_RESOURCE",
                "DRBD_MINOR",
                "DRBD_PEER_ADDRESS",
                "DRBD_PEER_AF",
                "DRBD_PEER",
            ];
            let e: Map<String, Value> = keep
                .iter()
                .map(|k| ((*k).to_owned(), vars.get(*k).map_or(Value::Null, |v| json!(v))))
                .collect();
            if let Some(o) = v.as_object_mut() {
                o.insert("env".into(), Value::Object(e));
            }
        }
        self.observe(format!("handler {}: {label}", NAMES[node]), v)
    }

    /// A pause in the scenario (both backends take it).
    pub fn pause(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A scenario: its name, what it starts from and its steps.
#[derive(Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub setup: Setup,
    pub run: fn(&mut Ctx) -> Result<()>,
}

/// Runs `scenarios` on `backend`; the observations of each, in order. A
/// scenario that fails part-way keeps what it observed and an `error` entry.
pub fn run_all(
    backend: &mut dyn Backend,
    journal: &mut Journal,
    scenarios: &[Scenario],
) -> Result<Vec<(String, Vec<Obs>, u64)>> {
    let mut out = Vec::new();
    for s in scenarios {
        let started = Instant::now();
        let setup = backend.setup(&s.setup);
        let mut ctx = Ctx::new(backend, journal, s.name);
        match setup {
            Ok(steps) => {
                ctx.log("setup", None, json!({"setup": format!("{:?}", s.setup), "steps": steps.iter().map(Out::json).collect::<Vec<_>>()}))?;
                if let Err(e) = (s.run)(&mut ctx) {
                    let msg = format!("{e:#}");
                    ctx.log("error", None, json!({"error": msg}))?;
                    ctx.obs.push(Obs {
                        label: "scenario error".into(),
                        value: json!(msg),
                    });
                }
            }
            Err(e) => {
                let msg = format!("setup: {e:#}");
                ctx.log("error", None, json!({"error": msg}))?;
                ctx.obs.push(Obs {
                    label: "scenario error".into(),
                    value: json!(msg),
                });
            }
        }
        let obs = std::mem::take(&mut ctx.obs);
        out.push((s.name.to_owned(), obs, started.elapsed().as_millis() as u64));
    }
    Ok(out)
}

/// A difference the two backends are known to show, written up in
/// docs/real-drbd.md: it is accepted only where it applies and only as
/// described, and a rule that no longer matches anything is an error too
/// (the document would be out of date).
#[derive(Debug)]
pub struct Known {
    pub id: &'static str,
    /// Scenario name (`*`: any) and observation label prefix.
    pub scenario: &'static str,
    pub label: &'static str,
    /// JSON pointer inside the observation (`/exit`, `/failure/info`, ...).
    pub field: &'static str,
    pub real: fn(&Value) -> bool,
    pub standin: fn(&Value) -> bool,
}

/// One disagreement between the backends.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub scenario: String,
    pub label: String,
    pub field: String,
    pub real: Value,
    pub standin: Value,
    /// The [`Known`] rule that accounts for it.
    pub known: Option<&'static str>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}] {} {}: real DRBD {} / stand-in {}",
            self.scenario, self.label, self.field, self.real, self.standin
        )?;
        if let Some(k) = self.known {
            write!(f, " (known: {k})")?;
        }
        Ok(())
    }
}

/// Leaf values of `v` by JSON pointer.
fn leaves(v: &Value, at: String, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                leaves(x, format!("{at}/{k}"), out);
            }
        }
        other => {
            out.insert(at, other.clone());
        }
    }
}

/// Compares the observations scenario by scenario, step by step.
pub fn compare(
    real: &[(String, Vec<Obs>, u64)],
    standin: &[(String, Vec<Obs>, u64)],
    known: &[Known],
) -> Vec<Difference> {
    let mut diffs = Vec::new();
    for ((name, r_obs, _), (_, s_obs, _)) in real.iter().zip(standin) {
        let n = r_obs.len().max(s_obs.len());
        for i in 0..n {
            let (r, s) = (r_obs.get(i), s_obs.get(i));
            let label = r.or(s).map(|o| o.label.clone()).unwrap_or_default();
            let (Some(r), Some(s)) = (r, s) else {
                diffs.push(Difference {
                    scenario: name.clone(),
                    label,
                    field: "(observation missing)".into(),
                    real: r.map_or(Value::Null, |o| json!(o.label)),
                    standin: s.map_or(Value::Null, |o| json!(o.label)),
                    known: None,
                });
                continue;
            };
            if r.label != s.label {
                diffs.push(Difference {
                    scenario: name.clone(),
                    label: r.label.clone(),
                    field: "(step)".into(),
                    real: json!(r.label),
                    standin: json!(s.label),
                    known: None,
                });
                break;
            }
            let (mut lr, mut ls) = (BTreeMap::new(), BTreeMap::new());
            leaves(&r.value, String::new(), &mut lr);
            leaves(&s.value, String::new(), &mut ls);
            let mut keys: Vec<&String> = lr.keys().chain(ls.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (rv, sv) = (
                    lr.get(k).cloned().unwrap_or(Value::Null),
                    ls.get(k).cloned().unwrap_or(Value::Null),
                );
                if rv == sv {
                    continue;
                }
                let known_id = known
                    .iter()
                    .find(|kn| {
                        (kn.scenario == "*" || kn.scenario == name)
                            && r.label.starts_with(kn.label)
                            && (kn.field == k || k.starts_with(&format!("{}/", kn.field)))
                            && (kn.real)(r.value.pointer(kn.field).unwrap_or(&Value::Null))
                            && (kn.standin)(s.value.pointer(kn.field).unwrap_or(&Value::Null))
                    })
                    .map(|kn| kn.id);
                diffs.push(Difference {
                    scenario: name.clone(),
                    label: r.label.clone(),
                    field: k.clone(),
                    real: rv,
                    standin: sv,
                    known: known_id,
                });
            }
        }
    }
    diffs
}

// ---------------------------------------------------------------------------
// The real DRBD 8.4, in the guests.

/// The test fence-peer handler, as drbd.conf names it in the guests.
pub const TEST_HANDLER: &str = "/etc/tandem-guest/fence-peer.sh /run/fence";

/// drbd.conf for both guests (DRBD 8.4 syntax), `handler` being the
/// fence-peer command when `setup.handler`. Fast failure detection (ping
/// every second, 1 s to answer) and a fixed, fast resync rate keep the
/// scenarios short under TCG.
pub fn drbd_conf(setup: &Setup, handler: &str) -> String {
    let handlers = if setup.handler {
        format!("  handlers {{ fence-peer \"{handler}\"; }}\n")
    } else {
        String::new()
    };
    let fencing = setup.fencing.map(|f| format!(" fencing {f};")).unwrap_or_default();
    let mut s = format!(
        "global {{ usage-count no; }}\nresource {RES} {{\n{handlers}  disk {{{fencing} resync-rate 100M; c-plan-ahead 0; }}\n  \
         net {{ protocol C; allow-two-primaries {}; ping-int 1; ping-timeout 10; timeout 9; connect-int 1; }}\n",
        if setup.two_primaries { "yes" } else { "no" }
    );
    for (i, name) in NAMES.iter().enumerate() {
        s.push_str(&format!(
            "  on {name} {{ device /dev/drbd0; disk /dev/tandem-backing; address {}:7789; meta-disk internal; }}\n",
            LINK_ADDRS[i][0]
        ));
    }
    s.push_str("}\n");
    s
}

/// The real DRBD 8.4 in a [`GuestPair`].
#[derive(Debug)]
pub struct RealDrbd<'a> {
    pair: &'a mut GuestPair,
    handler: String,
}

impl<'a> RealDrbd<'a> {
    /// With the test fence-peer handler ([`TEST_HANDLER`]).
    pub fn new(pair: &'a mut GuestPair) -> Self {
        RealDrbd::with_handler(pair, TEST_HANDLER)
    }

    /// With `handler` as the fence-peer command line.
    pub fn with_handler(pair: &'a mut GuestPair, handler: &str) -> Self {
        RealDrbd {
            pair,
            handler: handler.to_owned(),
        }
    }

    fn sh(&mut self, node: usize, script: &str, timeout: Duration) -> Result<Out> {
        let s = self.pair.guest(node).run(script, timeout)?;
        Ok(out_of(s))
    }

    fn wait_views(&mut self, until: fn(&[View; 2]) -> bool, limit: Duration, what: &str) -> Result<()> {
        let started = Instant::now();
        loop {
            let v = [View::parse(&self.proc_drbd(A)?), View::parse(&self.proc_drbd(B)?)];
            if until(&v) {
                return Ok(());
            }
            if started.elapsed() > limit {
                bail!(
                    "{what}: not reached within {limit:?}: nodea {:?}, nodeb {:?}",
                    v[0],
                    v[1]
                );
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

fn out_of(s: Step) -> Out {
    Out {
        exit: s.exit,
        stdout: s.stdout,
        stderr: s.stderr,
        proc_drbd: Some(s.proc_drbd),
        kernel: s.kernel,
    }
}

fn quote(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_=./:,".contains(c)) {
                (*a).to_owned()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Backend for RealDrbd<'_> {
    fn name(&self) -> &'static str {
        "real"
    }

    fn settle_limit(&self, asked: Duration) -> Duration {
        asked
    }

    fn setup(&mut self, setup: &Setup) -> Result<Vec<Out>> {
        self.pair.heal(1)?;
        self.pair.heal(2)?;
        let conf = drbd_conf(setup, &self.handler);
        let script = format!(
            "for p in $(cat /run/holders 2>/dev/null); do kill $p; done; rm -f /run/holders\n\
             drbdadm resume-io {RES} >/dev/null 2>&1\n\
             drbdadm down {RES} >/dev/null 2>&1\n\
             rm -rf /run/fence; mkdir -p /run/fence\n\
             cat >/etc/drbd.conf <<'EOF'\n{conf}EOF\n\
             yes yes | drbdadm create-md --force {RES} >/tmp/create-md.log 2>&1 || {{ cat /tmp/create-md.log >&2; exit 1; }}\n\
             drbdadm up {RES}"
        );
        let mut outs = Vec::new();
        for node in [A, B] {
            let o = self.sh(node, &script, Duration::from_secs(60))?;
            if o.exit != 0 {
                bail!(
                    "{}: setting up {RES} failed ({}): {}",
                    NAMES[node],
                    o.exit,
                    o.stderr.trim()
                );
            }
            outs.push(o);
        }
        self.wait_views(|v| v.iter().all(View::connected), Duration::from_secs(60), "connect")?;
        if !setup.fresh {
            let o = self.sh(
                A,
                &format!("drbdadm new-current-uuid --clear-bitmap {RES}"),
                Duration::from_secs(30),
            )?;
            if o.exit != 0 {
                bail!(
                    "new-current-uuid --clear-bitmap failed ({}): {}",
                    o.exit,
                    o.stderr.trim()
                );
            }
            outs.push(o);
            self.wait_views(both_in_sync, Duration::from_secs(60), "skip the initial sync")?;
        }
        Ok(outs)
    }

    fn drbdadm(&mut self, node: usize, args: &[&str]) -> Result<Out> {
        self.sh(node, &format!("drbdadm {}", quote(args)), Duration::from_secs(60))
    }

    fn drbdsetup(&mut self, node: usize, args: &[&str]) -> Result<Out> {
        self.sh(node, &format!("drbdsetup {}", quote(args)), Duration::from_secs(30))
    }

    fn proc_drbd(&mut self, node: usize) -> Result<String> {
        let s = self.pair.guest(node).run("true", Duration::from_secs(10))?;
        Ok(s.proc_drbd)
    }

    fn cut(&mut self) -> Result<()> {
        self.pair.cut(1)
    }

    fn heal(&mut self) -> Result<()> {
        self.pair.heal(1)
    }

    fn hold(&mut self, node: usize) -> Result<()> {
        let o = self.sh(
            node,
            "sleep 100000 </dev/drbd0 >/dev/null 2>&1 & echo $! >>/run/holders; sleep 0.2",
            Duration::from_secs(10),
        )?;
        if o.exit != 0 {
            bail!("{}: cannot hold /dev/drbd0 open: {}", NAMES[node], o.stderr.trim());
        }
        Ok(())
    }

    fn release(&mut self, node: usize) -> Result<()> {
        self.sh(
            node,
            "for p in $(cat /run/holders 2>/dev/null); do kill $p; done; rm -f /run/holders; sleep 0.2",
            Duration::from_secs(10),
        )?;
        Ok(())
    }

    fn handler_arm(&mut self, node: usize, code: i32, hold: bool) -> Result<()> {
        let hold = if hold {
            "touch /run/fence/hold"
        } else {
            "rm -f /run/fence/hold"
        };
        self.sh(
            node,
            &format!("mkdir -p /run/fence; rm -f /run/fence/log /run/fence/env; echo {code} >/run/fence/exit; {hold}"),
            Duration::from_secs(10),
        )?;
        Ok(())
    }

    fn handler_go(&mut self, node: usize) -> Result<()> {
        self.sh(node, "rm -f /run/fence/hold", Duration::from_secs(10))?;
        Ok(())
    }

    fn handler_log(&mut self, node: usize) -> Result<(Vec<String>, BTreeMap<String, String>)> {
        let log = self.sh(node, "cat /run/fence/log 2>/dev/null", Duration::from_secs(10))?;
        let env = self.sh(node, "cat /run/fence/env 2>/dev/null", Duration::from_secs(10))?;
        Ok((log.stdout.lines().map(str::to_owned).collect(), env_map(&env.stdout)))
    }
}

fn env_map(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------
// The stand-in.

/// tandem's DRBD stand-in (target/debug/drbdadm etc.), a fresh state
/// directory per scenario under `dir`.
#[derive(Debug)]
pub struct StandinDrbd {
    bin: PathBuf,
    dir: PathBuf,
    state: PathBuf,
    n: u32,
    holders: [Vec<Child>; 2],
}

impl StandinDrbd {
    pub fn new(dir: &Path) -> Result<StandinDrbd> {
        let bin = crate::virt_pair::workspace_bin("tandem-drbd-standin")?
            .parent()
            .map(Path::to_path_buf)
            .filter(|d| d.join("drbdadm").is_file() && d.join("drbdsetup").is_file())
            .ok_or_else(|| anyhow!("the DRBD stand-in is not built: run `cargo build --workspace --bins`"))?;
        std::fs::create_dir_all(dir)?;
        Ok(StandinDrbd {
            bin,
            dir: dir.to_owned(),
            state: dir.join("s0"),
            n: 0,
            holders: [Vec::new(), Vec::new()],
        })
    }

    fn fence_dir(&self, node: usize) -> PathBuf {
        self.state.join(format!("fence-{node}"))
    }

    fn run(&self, program: &str, node: Option<usize>, args: &[&str]) -> Result<Out> {
        let mut c = Command::new(self.bin.join(program));
        c.args(args).env("TANDEM_DRBD_STATE", &self.state);
        if let Some(n) = node {
            c.env("TANDEM_DRBD_NODE", n.to_string());
        }
        let o = c
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", cmd::describe(&c)))?;
        Ok(Out {
            exit: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            proc_drbd: None,
            kernel: Vec::new(),
        })
    }

    fn standin(&self, args: &[&str]) -> Result<Out> {
        let o = self.run("tandem-drbd-standin", None, args)?;
        if o.exit != 0 {
            bail!("tandem-drbd-standin {}: {}", args.join(" "), o.stderr.trim());
        }
        Ok(o)
    }

    fn with_proc(&self, node: usize, mut o: Out) -> Out {
        o.proc_drbd = std::fs::read_to_string(self.state.join(format!("proc-drbd-{node}"))).ok();
        o
    }

    fn kill_holders(&mut self, node: usize) {
        for mut c in self.holders[node].drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for StandinDrbd {
    fn drop(&mut self) {
        self.kill_holders(A);
        self.kill_holders(B);
    }
}

impl Backend for StandinDrbd {
    fn name(&self) -> &'static str {
        "standin"
    }

    fn settle_limit(&self, asked: Duration) -> Duration {
        // The stand-in changes state at once; only its fence-peer handlers
        // run in the background.
        asked.min(Duration::from_secs(5))
    }

    fn setup(&mut self, setup: &Setup) -> Result<Vec<Out>> {
        self.kill_holders(A);
        self.kill_holders(B);
        self.n += 1;
        self.state = self.dir.join(format!("s{}", self.n));
        std::fs::create_dir_all(&self.state)?;
        let addresses = format!("{}:7789,{}:7789", LINK_ADDRS[0][0], LINK_ADDRS[1][0]);
        let hosts = NAMES.join(",");
        let script = fixtures().join("fence-peer.sh");
        let handlers: Vec<String> = (0..2)
            .map(|n| format!("{} {}", script.display(), self.fence_dir(n).display()))
            .collect();
        let mut args = vec!["init", "--resource", RES, "--hosts", &hosts, "--addresses", &addresses];
        if let Some(f) = setup.fencing {
            args.extend(["--fencing", f]);
        }
        if setup.handler {
            args.extend(["--fence-peer-0", &handlers[0], "--fence-peer-1", &handlers[1]]);
        }
        if setup.two_primaries {
            args.push("--allow-two-primaries");
        }
        if setup.fresh {
            args.extend(["--disk-0", "Inconsistent", "--disk-1", "Inconsistent"]);
        }
        let o = self.standin(&args)?;
        for n in 0..2 {
            std::fs::create_dir_all(self.fence_dir(n))?;
        }
        Ok(vec![o])
    }

    fn drbdadm(&mut self, node: usize, args: &[&str]) -> Result<Out> {
        let o = self.run("drbdadm", Some(node), args)?;
        Ok(self.with_proc(node, o))
    }

    fn drbdsetup(&mut self, node: usize, args: &[&str]) -> Result<Out> {
        let o = self.run("drbdsetup", Some(node), args)?;
        Ok(self.with_proc(node, o))
    }

    fn proc_drbd(&mut self, node: usize) -> Result<String> {
        Ok(self.standin(&["proc-drbd", "--node", &node.to_string()])?.stdout)
    }

    fn cut(&mut self) -> Result<()> {
        self.standin(&["net-cut", RES]).map(|_| ())
    }

    fn heal(&mut self) -> Result<()> {
        self.standin(&["net-heal", RES]).map(|_| ())
    }

    fn hold(&mut self, node: usize) -> Result<()> {
        let child = Command::new("sleep")
            .arg("100000")
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start sleep")?;
        let pid = child.id().to_string();
        self.holders[node].push(child);
        self.standin(&[
            "hold",
            RES,
            "--node",
            &node.to_string(),
            "--pid",
            &pid,
            "--name",
            "sleep",
        ])
        .map(|_| ())
    }

    fn release(&mut self, node: usize) -> Result<()> {
        self.kill_holders(node);
        Ok(())
    }

    fn handler_arm(&mut self, node: usize, code: i32, hold: bool) -> Result<()> {
        let d = self.fence_dir(node);
        std::fs::create_dir_all(&d)?;
        let _ = std::fs::remove_file(d.join("log"));
        let _ = std::fs::remove_file(d.join("env"));
        std::fs::write(d.join("exit"), format!("{code}\n"))?;
        if hold {
            std::fs::write(d.join("hold"), "")?;
        } else {
            let _ = std::fs::remove_file(d.join("hold"));
        }
        Ok(())
    }

    fn handler_go(&mut self, node: usize) -> Result<()> {
        let _ = std::fs::remove_file(self.fence_dir(node).join("hold"));
        Ok(())
    }

    fn handler_log(&mut self, node: usize) -> Result<(Vec<String>, BTreeMap<String, String>)> {
        let d = self.fence_dir(node);
        let log = std::fs::read_to_string(d.join("log")).unwrap_or_default();
        let env = std::fs::read_to_string(d.join("env")).unwrap_or_default();
        Ok((log.lines().map(str::to_owned).collect(), env_map(&env)))
    }
}

// ---------------------------------------------------------------------------
// The scenarios.

const SETTLE: Duration = Duration::from_secs(30);

/// create-md, up, connect; a promote refused on Inconsistent data; the
/// initial full sync after `primary --force`.
fn bring_up(c: &mut Ctx) -> Result<()> {
    c.state("after create-md and up")?;
    c.events2(A, "after up")?;
    c.adm(A, &["primary", RES])?;
    c.adm(A, &["primary", "--force", RES])?;
    c.settle("initial sync done", both_in_sync, Duration::from_secs(120))?;
    c.events2(B, "after the initial sync")?;
    c.adm(A, &["secondary", RES])?;
    c.state("demoted")
}

/// Promote and demote on either side; the second Primary refused.
fn roles(c: &mut Ctx) -> Result<()> {
    c.adm(A, &["primary", RES])?;
    c.state("A Primary")?;
    c.events2(A, "A Primary")?;
    c.events2(B, "A Primary")?;
    c.adm(B, &["primary", RES])?;
    c.state("B refused")?;
    c.adm(A, &["secondary", RES])?;
    c.adm(B, &["primary", RES])?;
    c.state("B Primary")?;
    c.adm(B, &["secondary", RES])?;
    c.adm(B, &["secondary", RES])?;
    c.state("both Secondary")
}

/// Dual-primary switched on and off at runtime with net-options.
fn dual_primary(c: &mut Ctx) -> Result<()> {
    c.adm(A, &["primary", RES])?;
    c.adm(B, &["primary", RES])?;
    c.adm(A, &["net-options", "--allow-two-primaries=yes", RES])?;
    c.adm(B, &["primary", RES])?;
    c.state("Primary/Primary")?;
    c.events2(A, "Primary/Primary")?;
    c.events2(B, "Primary/Primary")?;
    c.adm(A, &["net-options", "--allow-two-primaries=no", RES])?;
    c.adm(B, &["net-options", "--allow-two-primaries=no", RES])?;
    c.adm(B, &["secondary", RES])?;
    c.adm(B, &["net-options", "--allow-two-primaries=no", RES])?;
    c.adm(B, &["primary", RES])?;
    c.state("dual-primary off again")?;
    c.adm(A, &["net-options", "--protocol=A", "--allow-two-primaries=yes", RES])?;
    c.adm(A, &["secondary", RES])?;
    c.state("end")
}

/// Demote refused while a process holds the device open.
fn held_open(c: &mut Ctx) -> Result<()> {
    c.adm(A, &["primary", RES])?;
    c.hold(A)?;
    c.adm(A, &["secondary", RES])?;
    c.state("held open")?;
    c.release(A)?;
    c.adm(A, &["secondary", RES])?;
    c.state("released")
}

/// disconnect and connect, without fencing.
fn disconnect(c: &mut Ctx) -> Result<()> {
    c.adm(A, &["primary", RES])?;
    c.adm(A, &["disconnect", RES])?;
    c.settle("A disconnected", both_apart, SETTLE)?;
    c.events2(A, "StandAlone Primary")?;
    c.events2(B, "peer gone")?;
    c.adm(A, &["connect", RES])?;
    c.settle("reconnected", both_in_sync, SETTLE)?;
    c.adm(A, &["secondary", RES])?;
    c.adm(B, &["disconnect", RES])?;
    c.settle("B disconnected", both_apart, SETTLE)?;
    c.adm(B, &["connect", RES])?;
    c.settle("reconnected again", both_in_sync, SETTLE)?;
    Ok(())
}

/// disconnect under `resource-and-stonith`: the Secondary is outdated by the
/// disconnect; promotes while disconnected run the handler (refused after
/// four "broken" answers, done after 4 or 7); a split brain on reconnect.
fn disconnect_fenced(c: &mut Ctx) -> Result<()> {
    c.adm(A, &["primary", RES])?;
    c.adm(A, &["disconnect", RES])?;
    c.settle("A disconnected", both_apart, SETTLE)?;
    c.adm(B, &["primary", RES])?;
    c.adm(B, &["outdate", RES])?;
    c.state("B outdated")?;
    c.adm(A, &["connect", RES])?;
    c.settle("reconnected", both_in_sync, SETTLE)?;
    c.adm(A, &["secondary", RES])?;
    c.adm(A, &["disconnect", RES])?;
    c.settle("disconnected without a Primary", both_apart, SETTLE)?;
    c.handler_arm(B, 1, false)?;
    c.adm(B, &["primary", RES])?;
    c.handler(B, "promote, handler broken", false)?;
    c.state("promote refused")?;
    c.handler_arm(B, 4, false)?;
    c.adm(B, &["primary", RES])?;
    c.handler(B, "promote, peer outdated", true)?;
    c.state("B Primary alone")?;
    c.adm(B, &["secondary", RES])?;
    c.handler_arm(A, 7, false)?;
    c.adm(A, &["primary", RES])?;
    c.handler(A, "promote, peer stonithed", false)?;
    c.adm(A, &["connect", RES])?;
    c.settle("split brain", |v| v.iter().all(|n| n.cs == "StandAlone"), SETTLE)?;
    c.adm(A, &["secondary", RES])?;
    Ok(())
}

/// drbdadm outdate: connected, on a Primary, disconnected.
fn outdate(c: &mut Ctx) -> Result<()> {
    c.adm(B, &["outdate", RES])?;
    c.state("outdate while connected")?;
    c.adm(A, &["primary", RES])?;
    c.adm(A, &["outdate", RES])?;
    c.adm(A, &["disconnect", RES])?;
    c.settle("A disconnected", both_apart, SETTLE)?;
    c.adm(B, &["outdate", RES])?;
    c.state("B outdated")?;
    c.adm(B, &["outdate", RES])?;
    c.adm(A, &["outdate", RES])?;
    c.adm(B, &["primary", RES])?;
    c.events2(B, "Outdated, disconnected")?;
    c.adm(A, &["connect", RES])?;
    c.settle("reconnected", both_in_sync, SETTLE)?;
    c.adm(A, &["secondary", RES])?;
    c.state("end")
}

/// The replication link of a Primary breaks; its fence-peer handler answers
/// `code`; then the link heals.
fn fence_round(c: &mut Ctx, code: i32, env: bool) -> Result<()> {
    c.adm(A, &["primary", RES])?;
    c.handler_arm(A, code, true)?;
    c.cut()?;
    let started = c.wait_handler(A, "start", 1, SETTLE)?;
    c.settle(&format!("exit {code}: link lost, handler running"), both_apart, SETTLE)?;
    c.handler(A, &format!("exit {code}: called (started: {started})"), env)?;
    c.handler_go(A)?;
    c.wait_handler(A, "exit", 1, SETTLE)?;
    // The kernel applies the answer as the helper returns.
    c.pause(Duration::from_millis(500));
    c.state(&format!("exit {code}: answered"))?;
    c.events2(A, &format!("exit {code}: answered"))?;
    c.adm(A, &["secondary", RES])?;
    c.state(&format!("exit {code}: demoted"))?;
    c.heal()?;
    c.settle(&format!("exit {code}: link back"), both_in_sync, SETTLE)?;
    c.handler(A, &format!("exit {code}: runs"), false)?;
    Ok(())
}

fn fencing_stonith(c: &mut Ctx) -> Result<()> {
    for (i, code) in [4, 3, 5, 7, 6, 1].into_iter().enumerate() {
        fence_round(c, code, i == 0)?;
    }
    Ok(())
}

fn fencing_resource_only(c: &mut Ctx) -> Result<()> {
    for code in [7, 1] {
        fence_round(c, code, false)?;
    }
    Ok(())
}

/// Every conformance scenario, in the order they run.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "bring-up",
            setup: Setup {
                fresh: true,
                ..Setup::SYNCED
            },
            run: bring_up,
        },
        Scenario {
            name: "roles",
            setup: Setup::SYNCED,
            run: roles,
        },
        Scenario {
            name: "dual-primary",
            setup: Setup::SYNCED,
            run: dual_primary,
        },
        Scenario {
            name: "held-open",
            setup: Setup::SYNCED,
            run: held_open,
        },
        Scenario {
            name: "disconnect",
            setup: Setup::SYNCED,
            run: disconnect,
        },
        Scenario {
            name: "disconnect-fenced",
            setup: Setup::fenced("resource-and-stonith"),
            run: disconnect_fenced,
        },
        Scenario {
            name: "outdate",
            setup: Setup::SYNCED,
            run: outdate,
        },
        Scenario {
            name: "fencing-resource-and-stonith",
            setup: Setup::fenced("resource-and-stonith"),
            run: fencing_stonith,
        },
        Scenario {
            name: "fencing-resource-only",
            setup: Setup::fenced("resource-only"),
            run: fencing_resource_only,
        },
    ]
}
