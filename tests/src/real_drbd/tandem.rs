//! tandem on the real DRBD 8.4: `tandemd` in both guests, with everything a
//! production host has except a hypervisor (`[hypervisor] kind = "none"`):
//!
//! - a system bus (`dbus-daemon` with tandem's policy) in each guest, which
//!   `tandem-libvirt-hook` and `tandem-drbd-handler` reach as on a host;
//! - DRBD's `fence-peer` handler is `tandem-drbd-handler fence-peer`, at its
//!   installed path, run by the kernel through drbdadm;
//! - the peer link over both guest links (heartbeats on both, the control
//!   channel on either);
//! - one BMC per guest: an `ipmi_sim` in the guests' namespace, on its
//!   127.0.0.1 (the guests' 10.0.2.2), whose power-off kills that guest's
//!   QEMU by its pid (tests/fixtures/bmc-power.sh); each tandemd fences its
//!   peer through the peer's BMC with tandem's built-in IPMI client.
//!
//! Domains are what `tandem-libvirt-hook` tells tandemd about (the hook runs in
//! the guest with a domain XML whose disk is `/dev/drbd/by-res/r0/0`), as
//! libvirt would run it.

use super::conformance::{Backend, Journal, RealDrbd, Setup, View, RES};
use super::guest::{GuestPair, Step, HOST_FROM_GUEST, LINK_ADDRS, NAMES};
use super::image::GuestImage;
use super::BootOptions;
use crate::bmc::{self, Bmc};
use crate::daemon::random_key;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The domain the hooks are run for.
pub const DOMAIN: &str = "vm1";
/// `nodea` is cluster.preferred: in a split it fences at once.
pub const PREFERRED: usize = 0;
/// The fence-peer command line in drbd.conf.
pub const HANDLER: &str = "/usr/lib/tandem/tandem-drbd-handler fence-peer";

/// The BMC port of node `node`, on the namespace's loopback.
pub fn bmc_port(node: usize) -> u16 {
    9601 + node as u16
}

/// tandem's timing in the guests (TCG guests are slow: a little more slack
/// than the defaults before a peer counts as dead).
#[derive(Debug, Clone, Copy)]
pub struct TandemTiming {
    pub heartbeat_interval_ms: u64,
    pub dead_after_ms: u64,
    pub fence_delay_ms: u64,
}

impl Default for TandemTiming {
    fn default() -> Self {
        TandemTiming {
            heartbeat_interval_ms: 200,
            dead_after_ms: 2000,
            fence_delay_ms: 4000,
        }
    }
}

/// The domain XML the hook reads on stdin.
pub fn domain_xml() -> String {
    format!(
        "<domain type='kvm'><name>{DOMAIN}</name><devices><disk type='block' device='disk'>\
         <driver name='qemu' type='raw'/><source dev='/dev/drbd/by-res/{RES}/0'/><target dev='vda' bus='virtio'/>\
         </disk></devices></domain>"
    )
}

/// tandem.toml, the same in both guests.
pub fn tandem_toml(t: &TandemTiming) -> String {
    let mut s = format!(
        "[cluster]\nname = \"realdrbd\"\nauthkey = \"/etc/tandem/authkey\"\npreferred = \"{}\"\n\n\
         [timing]\nheartbeat_interval_ms = {}\ndead_after_ms = {}\nfence_delay_ms = {}\n\n",
        NAMES[PREFERRED], t.heartbeat_interval_ms, t.dead_after_ms, t.fence_delay_ms
    );
    for (i, name) in NAMES.iter().enumerate() {
        s.push_str(&format!(
            "[node.{name}]\naddresses = [\"{}\", \"{}\"]\n\
             [[node.{name}.fence]]\n[[node.{name}.fence.device]]\nkind = \"ipmi\"\naddress = \"{HOST_FROM_GUEST}\"\n\
             port = {}\nusername = \"{}\"\npassword_file = \"/etc/tandem/bmc.pass\"\ncipher_suite = 3\n\
             privilege = \"admin\"\ntimeout_ms = 5000\n\n",
            LINK_ADDRS[i][0],
            LINK_ADDRS[i][1],
            bmc_port(i),
            bmc::USER
        ));
    }
    s.push_str(&format!(
        "[drbd]\ndrbdadm = \"/sbin/drbdadm\"\ndrbdsetup = \"/sbin/drbdsetup\"\nresources = [\"{RES}\"]\n\n\
         [hypervisor]\nkind = \"none\"\n"
    ));
    s
}

/// Two guests running tandemd on DRBD 8.4, with their BMCs.
#[derive(Debug)]
pub struct TandemRig {
    // Dropped in this order: the BMCs, then the guests and their namespace.
    bmcs: Vec<Bmc>,
    pair: GuestPair,
    journal: Journal,
    kernel: [Vec<String>; 2],
    offsets: [Option<(f64, u64)>; 2],
    dir: PathBuf,
}

impl TandemRig {
    /// Boots the guests, brings r0 up in sync with tandem's handler and
    /// `fencing resource-and-stonith`, starts the BMCs, the buses and both
    /// tandemd; returns once each daemon sees its peer online.
    pub fn start(dir: &Path, image: &GuestImage, timing: &TandemTiming) -> Result<TandemRig> {
        if image.tools.is_none() {
            bail!("the image has no tools disk: build it with tandem");
        }
        let pair = GuestPair::boot(&dir.join("guests"), image, &BootOptions::default())?;
        let journal = Journal::create(&dir.join("steps.jsonl"))?;
        let mut rig = TandemRig {
            bmcs: Vec::new(),
            pair,
            journal,
            kernel: [Vec::new(), Vec::new()],
            offsets: [None, None],
            dir: dir.to_owned(),
        };
        for (node, name) in NAMES.iter().enumerate() {
            let bmc = Bmc::start(
                rig.pair.ns(),
                &format!("bmc-{name}"),
                bmc_port(node),
                &dir.join(format!("bmc-{name}")),
            )?;
            bmc.set_target(Some(rig.pair.guest(node).pid()))?;
            rig.bmcs.push(bmc);
        }
        let setup = Setup::fenced("resource-and-stonith");
        let outs = RealDrbd::with_handler(&mut rig.pair, HANDLER).setup(&setup)?;
        for o in &outs {
            rig.journal
                .record(&json!({"op": "drbd-setup", "exit": o.exit, "stderr": o.stderr}))?;
        }
        let key = super::guest::base64_encode(&random_key(64));
        let toml = tandem_toml(timing);
        let machine_id: String = random_key(16).iter().map(|b| format!("{b:02x}")).collect();
        for (node, name) in NAMES.iter().enumerate() {
            let script = format!(
                "set -e\nmkdir -p /etc/tandem /run/tandem /var/lib/tandem /run/dbus\n\
                 echo {key} | base64 -d >/etc/tandem/authkey; chmod 600 /etc/tandem/authkey\n\
                 printf '%s\\n' '{pw}' >/etc/tandem/bmc.pass; chmod 600 /etc/tandem/bmc.pass\n\
                 echo {machine_id} >/etc/machine-id\n\
                 cat >/etc/tandem/tandem.toml <<'EOF'\n{toml}EOF\n\
                 export LD_LIBRARY_PATH=/opt/tandem/lib\n\
                 /opt/tandem/bin/dbus-daemon --config-file=/etc/tandem-guest/bus.conf --fork --print-pid=1 >/run/dbus/pid\n\
                 i=0; while [ ! -S /run/dbus/system_bus_socket ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
                 TANDEM_LOG=info setsid /opt/tandem/bin/tandemd --config /etc/tandem/tandem.toml --node {name} \
                 --status-file /run/tandem/status.json --state-dir /var/lib/tandem </dev/null >/run/tandem/tandemd.log 2>&1 &\n\
                 echo $! >/run/tandem/tandemd.pid",
                pw = bmc::PASSWORD,
            );
            let s = rig.sh(node, &script, Duration::from_secs(60))?;
            if s.exit != 0 {
                bail!("{name}: cannot start tandem: {}", s.stderr.trim());
            }
        }
        let started = Instant::now();
        loop {
            let online = (0..2)
                .map(|n| rig.status(n).map(|v| crate::status::peer_state(&v) == Some("online")))
                .collect::<Result<Vec<bool>>>()
                .unwrap_or_default();
            if online.len() == 2 && online.iter().all(|o| *o) {
                break;
            }
            if started.elapsed() > Duration::from_secs(90) {
                bail!("the daemons did not see each other within 90 s:\n{}", rig.report());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(rig)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pair(&mut self) -> &mut GuestPair {
        &mut self.pair
    }

    pub fn bmc(&self, node: usize) -> &Bmc {
        &self.bmcs[node.min(1)]
    }

    /// Runs `script` in guest `node` (journaled; its kernel lines kept).
    pub fn sh(&mut self, node: usize, script: &str, timeout: Duration) -> Result<Step> {
        let s = self.pair.guest(node).run(script, timeout)?;
        self.kernel[node].extend(s.kernel.iter().cloned());
        let mut v = s.json();
        if let Some(o) = v.as_object_mut() {
            o.insert("unix_ms".into(), json!(crate::status::unix_ms_now()));
        }
        self.journal.record(&v)?;
        Ok(s)
    }

    /// The daemon's status file in guest `node`.
    pub fn status(&mut self, node: usize) -> Result<Value> {
        let s = self.sh(node, "cat /run/tandem/status.json", Duration::from_secs(10))?;
        serde_json::from_str(&s.stdout).with_context(|| format!("{}: status is not JSON: {:?}", NAMES[node], s.stdout))
    }

    /// Guest `node`'s DRBD state (/proc/drbd, as tandem parses it).
    pub fn view(&mut self, node: usize) -> Result<View> {
        let s = self.sh(node, "true", Duration::from_secs(10))?;
        Ok(View::parse(&s.proc_drbd))
    }

    /// `tandem-libvirt-hook DOMAIN ARGS...` in guest `node`, the domain XML on stdin.
    pub fn hook(&mut self, node: usize, args: &[&str]) -> Result<Step> {
        let script = format!(
            "cat >/tmp/{DOMAIN}.xml <<'EOF'\n{}\nEOF\n\
             LD_LIBRARY_PATH=/opt/tandem/lib TANDEM_DRBDADM=/sbin/drbdadm \
             /opt/tandem/bin/tandem-libvirt-hook {DOMAIN} {} </tmp/{DOMAIN}.xml",
            domain_xml(),
            args.join(" ")
        );
        self.sh(node, &script, Duration::from_secs(90))
    }

    /// Whether DRBD in guest `node` has allow-two-primaries set now
    /// (`drbdsetup show` prints the options that differ from the defaults).
    pub fn two_primaries(&mut self, node: usize) -> Result<bool> {
        let s = self.sh(node, &format!("drbdsetup show {RES}"), Duration::from_secs(10))?;
        if s.exit != 0 {
            bail!("{}: drbdsetup show failed: {}", NAMES[node], s.stderr.trim());
        }
        Ok(s.stdout.contains("allow-two-primaries"))
    }

    /// Every kernel log line of guest `node` seen so far.
    pub fn kernel_log(&self, node: usize) -> &[String] {
        &self.kernel[node.min(1)]
    }

    /// Guest uptime (seconds) of the last kernel line containing `text`.
    pub fn kernel_time(&self, node: usize, text: &str) -> Option<f64> {
        self.kernel[node.min(1)]
            .iter()
            .rev()
            .filter(|l| l.contains(text))
            .find_map(|l| {
                let ts = l.strip_prefix('[')?.split(']').next()?;
                ts.trim().parse::<f64>().ok()
            })
    }

    /// host unix ms minus guest uptime ms for guest `node`, from the round
    /// trip with the smallest delay of a few `cat /proc/uptime`.
    pub fn clock_offset(&mut self, node: usize) -> Result<f64> {
        Ok(self.clock(node)?.0)
    }

    /// [`TandemRig::clock_offset`] and the round trip it was measured with
    /// (the offset is right to within half of it).
    pub fn clock(&mut self, node: usize) -> Result<(f64, u64)> {
        if let Some(o) = self.offsets[node] {
            return Ok(o);
        }
        let mut best: Option<(u64, f64)> = None;
        for _ in 0..5 {
            let t0 = crate::status::unix_ms_now();
            let s = self.pair.guest(node).run("cat /proc/uptime", Duration::from_secs(10))?;
            let t1 = crate::status::unix_ms_now();
            let up: f64 = s
                .stdout
                .split_whitespace()
                .next()
                .and_then(|u| u.parse().ok())
                .ok_or_else(|| anyhow!("/proc/uptime: {:?}", s.stdout))?;
            let rtt = t1.saturating_sub(t0);
            let offset = (t0 + t1) as f64 / 2.0 - up * 1000.0;
            if best.is_none_or(|(r, _)| rtt < r) {
                best = Some((rtt, offset));
            }
        }
        let (rtt, offset) = best.ok_or_else(|| anyhow!("no clock sample"))?;
        self.offsets[node] = Some((offset, rtt));
        Ok((offset, rtt))
    }

    /// Host unix ms of guest `node`'s kernel line containing `text`.
    pub fn kernel_unix_ms(&mut self, node: usize, text: &str) -> Result<Option<f64>> {
        let Some(t) = self.kernel_time(node, text) else {
            return Ok(None);
        };
        Ok(Some(self.clock_offset(node)? + t * 1000.0))
    }

    /// What each guest's daemon logged, its status, and the consoles.
    pub fn report(&mut self) -> String {
        let mut out = String::new();
        for (node, name) in NAMES.iter().enumerate() {
            if !self.pair.guest(node).running() {
                out.push_str(&format!("--- {name}: powered off\n"));
                continue;
            }
            if let Ok(s) = self.pair.guest(node).run(
                "tail -n 60 /run/tandem/tandemd.log; cat /proc/drbd",
                Duration::from_secs(10),
            ) {
                out.push_str(&format!("--- {name} tandemd.log (tail) ---\n{}\n", s.stdout));
            }
        }
        for b in &self.bmcs {
            out.push_str(&format!("--- {} log ---\n{}\n", b.name(), b.log()));
        }
        out.push_str(&self.pair.consoles());
        out
    }
}
