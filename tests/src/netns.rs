//! Network namespaces and veth pairs made by the tests, removed when dropped.
//!
//! Every namespace is named `tdm-<pid>-<n>-<role>`, `<pid>` being the test
//! process. [`sweep_leftovers`] removes those of processes that no longer run
//! (a test run killed before its guards could clean up).

use crate::cmd;
use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::ffi::OsStr;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every namespace this crate makes.
pub const PREFIX: &str = "tdm-";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `tdm-<pid>-<n>-<role>`, with its loopback up.
    pub fn new(role: &str) -> Result<NetNs> {
        if role.is_empty() || !role.chars().all(|c| c.is_ascii_alphanumeric()) {
            bail!("namespace role {role:?}: use letters and digits only");
        }
        let pid = std::process::id();
        // A name can only be taken already if this pid was used by an earlier
        // run that left it behind; skip such names rather than fail.
        for _ in 0..100 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("{PREFIX}{pid}-{n}-{role}");
            if Path::new("/run/netns").join(&name).exists() {
                continue;
            }
            cmd::run("ip", &["netns", "add", &name])?;
            let ns = NetNs { name };
            ns.ip(&["link", "set", "lo", "up"])?;
            return Ok(ns);
        }
        bail!("no free namespace name {PREFIX}{pid}-*-{role}")
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME args...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        cmd::output(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// A command that runs `program` inside this namespace (`ip netns exec`,
    /// which execs the program in place: the child's pid is the program's).
    pub fn command<S: AsRef<OsStr>>(&self, program: S) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `program args...` inside this namespace; its stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        cmd::output(self.command(program).args(args))
    }

    /// Runs `iptables -w args...` inside this namespace.
    pub fn iptables(&self, args: &[&str]) -> Result<String> {
        cmd::output(self.command("iptables").arg("-w").args(args))
    }

    /// Feeds `rules` to `iptables-restore --noflush` inside this namespace: all
    /// of them take effect in one transaction.
    pub fn iptables_restore(&self, rules: &str) -> Result<String> {
        cmd::output_with_stdin(self.command("iptables-restore").args(["-w", "--noflush"]), rules)
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns
    /// its result. Sockets `f` creates stay in this namespace.
    pub fn run_inside<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let path = Path::new("/run/netns").join(&self.name);
        let fd = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let name = self.name.clone();
        let thread = std::thread::spawn(move || -> Result<T> {
            setns(&fd, CloneFlags::CLONE_NEWNET).with_context(|| format!("cannot enter namespace {name}"))?;
            f()
        });
        match thread.join() {
            Ok(r) => r,
            Err(_) => bail!("the thread inside namespace {} panicked", self.name),
        }
    }

    /// A UDP socket bound to `addr` inside this namespace.
    pub fn udp_bind(&self, addr: SocketAddr) -> Result<UdpSocket> {
        self.run_inside(move || UdpSocket::bind(addr).with_context(|| format!("cannot bind UDP {addr}")))
    }

    /// Pids of the processes inside this namespace.
    pub fn pids(&self) -> Result<Vec<i32>> {
        pids_in(&self.name)
    }
}

fn pids_in(ns: &str) -> Result<Vec<i32>> {
    let out = cmd::run("ip", &["netns", "pids", ns])?;
    Ok(out.split_whitespace().filter_map(|p| p.parse().ok()).collect())
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = cmd::run("ip", &["netns", "del", &self.name]) {
            eprintln!("tandem-tests: cannot delete namespace {}: {e:#}", self.name);
        }
    }
}

/// The test process that made namespace `name`, if it is one of ours.
pub fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Removes namespaces of this crate whose test process is gone, after killing
/// what still runs inside them (daemons a killed test run left behind).
/// Returns the names removed.
pub fn sweep_leftovers() -> Result<Vec<String>> {
    let list = cmd::run("ip", &["netns", "list"])?;
    let mut removed = Vec::new();
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = owner_pid(name) else { continue };
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        for p in pids_in(name).unwrap_or_default() {
            // Only processes inside a namespace a dead test run made: its daemons.
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        match cmd::run("ip", &["netns", "del", name]) {
            Ok(_) => removed.push(name.to_owned()),
            // Another test of this run may have swept it at the same time.
            Err(_) if !Path::new("/run/netns").join(name).exists() => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove leftover namespace {name}")),
        }
    }
    Ok(removed)
}

/// A veth pair joining two namespaces, each end with an IPv4 address (CIDR
/// notation) and up. Deleting one end deletes both; deleting a namespace
/// deletes its ends.
#[derive(Debug)]
pub struct VethLink {
    ns_a: String,
    if_a: String,
    if_b: String,
}

impl VethLink {
    /// `ip link add IF_A netns A type veth peer name IF_B netns B`: the ends are
    /// created inside the namespaces, so names never clash with the host's.
    pub fn new(a: &NetNs, if_a: &str, cidr_a: &str, b: &NetNs, if_b: &str, cidr_b: &str) -> Result<VethLink> {
        for ifname in [if_a, if_b] {
            if ifname.is_empty() || ifname.len() > 15 {
                bail!("interface name {ifname:?}: 1 to 15 characters");
            }
        }
        cmd::run(
            "ip",
            &[
                "link",
                "add",
                if_a,
                "netns",
                a.name(),
                "type",
                "veth",
                "peer",
                "name",
                if_b,
                "netns",
                b.name(),
            ],
        )?;
        let link = VethLink {
            ns_a: a.name().to_owned(),
            if_a: if_a.to_owned(),
            if_b: if_b.to_owned(),
        };
        for (ns, ifname, cidr) in [(a, if_a, cidr_a), (b, if_b, cidr_b)] {
            ns.ip(&["addr", "add", cidr, "dev", ifname])?;
            ns.ip(&["link", "set", ifname, "up"])?;
        }
        Ok(link)
    }

    /// The interface names: (in namespace A, in namespace B).
    pub fn ifnames(&self) -> (&str, &str) {
        (&self.if_a, &self.if_b)
    }
}

impl Drop for VethLink {
    fn drop(&mut self) {
        // Fails harmlessly when the namespace is already gone.
        let _ = cmd::run("ip", &["-n", &self.ns_a, "link", "del", &self.if_a]);
    }
}
