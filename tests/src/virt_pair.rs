//! [`VirtPair`]: two complete test hosts: each with its network namespace
//! (the [`Lab2`] links), its own system bus ([`SystemBus`]), its own real
//! libvirtd with QEMU ([`LibvirtHost`]) whose hook is `tandem-libvirt-hook`,
//! and its `tandemd` on that bus, using that libvirtd and the shared DRBD
//! stand-in ([`DrbdStandin`]) for one resource `r0` whose by-res device on both
//! hosts is one loop device (what DRBD would present as one replicated disk).
//!
//! The DRBD fence-peer handler of each host is `tandem-drbd-handler`, pointed at
//! that host's bus, as DRBD would run it from `handlers { fence-peer ...; }`.

use crate::bmc::Bmc;
use crate::bus::SystemBus;
use crate::cmd;
use crate::daemon::{ConfigExtra, DaemonOptions, Pair, Timing};
use crate::domain_events::DomainEvents;
use crate::drbd::DrbdStandin;
use crate::env::target_dir;
use crate::fenced::{FenceSetup, BMC_PORTS};
use crate::lab::{Lab2, Node};
use crate::libvirt::{HostSpec, LibvirtHost};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The one replicated resource of the rig.
pub const RESOURCE: &str = "r0";

/// Its by-res path, as a domain's disk names it.
pub const RESOURCE_PATH: &str = "/dev/drbd/by-res/r0/0";

/// How a [`VirtPair`] is set up.
#[derive(Debug, Clone)]
pub struct VirtSetup {
    pub timing: Timing,
    /// More `[timing]` lines (`key = value`).
    pub timing_extra: Vec<String>,
    /// The stand-in's `init` options after `--resource r0 --hosts alpha,beta`.
    pub drbd_init: Vec<String>,
    /// BMCs and fence levels as a [`crate::FencedPair`] has them (each BMC in
    /// the other host's namespace; its power off kills the host's tandemd);
    /// `None`: no fence devices.
    pub fence: Option<FenceSetup>,
    /// With `fence`: a BMC's power off ends the whole host (every process in
    /// its namespace: tandemd, libvirtd, QEMU) and breaks the DRBD replication
    /// link; otherwise it kills only the host's tandemd.
    pub power_kills_host: bool,
    /// More resources besides `r0`: `r1`, `r2`, ... (minors 1, 2, ...), each
    /// with its own loop device.
    pub extra_resources: usize,
    /// More `[hypervisor]` lines (`key = value`).
    pub hypervisor_extra: Vec<String>,
}

impl Default for VirtSetup {
    fn default() -> Self {
        VirtSetup {
            timing: Timing::default(),
            timing_extra: Vec::new(),
            drbd_init: vec!["--fencing".into(), "resource-and-stonith".into()],
            fence: None,
            power_kills_host: false,
            extra_resources: 0,
            hypervisor_extra: Vec::new(),
        }
    }
}

/// A loop device over a file; detached on drop.
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
}

impl LoopDevice {
    pub fn new(file: &Path, size_mib: u64) -> Result<LoopDevice> {
        let f = std::fs::File::create(file).with_context(|| format!("cannot create {}", file.display()))?;
        f.set_len(size_mib << 20)?;
        let out = cmd::output(Command::new("losetup").args(["-f", "--show"]).arg(file))
            .context("cannot attach a loop device (needs root and /dev/loop-control)")?;
        Ok(LoopDevice {
            path: PathBuf::from(out.trim()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// A binary of this workspace's build (`cargo build --workspace --bins`).
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    if name == "tandemd" {
        return crate::env::tandemd_bin();
    }
    // The profile this program was built with first: a release bench measures
    // release binaries.
    let release_first = std::env::current_exe()
        .ok()
        .is_some_and(|p| p.components().any(|c| c.as_os_str() == "release"));
    let profiles = if release_first {
        ["release", "debug"]
    } else {
        ["debug", "release"]
    };
    profiles
        .iter()
        .map(|p| target_dir().join(p).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "{name} is not built under {}: run `cargo build --workspace --bins`",
                target_dir().display()
            )
        })
}

/// Two hosts with everything (see the module documentation). Dropping it
/// stops the daemons, the libvirtds and their QEMUs, the buses, detaches the
/// loop device and removes the network; the files stay when a test panicked.
#[derive(Debug)]
pub struct VirtPair {
    // Dropped in this order.
    events: DomainEvents,
    bmcs: Vec<Bmc>,
    hosts: [LibvirtHost; 2],
    pair: Pair,
    buses: [SystemBus; 2],
    drbd: DrbdStandin,
    /// The resources' loop devices, detached on drop.
    _disks: Vec<LoopDevice>,
}

impl VirtPair {
    pub fn start(setup: VirtSetup) -> Result<VirtPair> {
        let prepared = Pair::prepare(setup.timing)?;
        let dir = prepared.dir().to_owned();
        let resources: Vec<String> = (0..=setup.extra_resources).map(|i| format!("r{i}")).collect();
        let disks = resources
            .iter()
            .map(|r| LoopDevice::new(&dir.join(format!("{r}.img")), 64))
            .collect::<Result<Vec<_>>>()?;
        let buses = [
            SystemBus::start(&dir.join("alpha/dbus"))?,
            SystemBus::start(&dir.join("beta/dbus"))?,
        ];
        let drbd = DrbdStandin::new(&dir.join("drbd"))?;
        let handler = workspace_bin("tandem-drbd-handler")?;
        let fence_peer = |node: Node| {
            format!(
                "env DBUS_SYSTEM_BUS_ADDRESS={} {} fence-peer",
                buses[node.index()].address(),
                handler.display()
            )
        };
        let addresses = format!(
            "{}:7789,{}:7789",
            Lab2::addr(Node::Alpha, 0)?,
            Lab2::addr(Node::Beta, 0)?
        );
        for (minor, r) in resources.iter().enumerate() {
            let minor = minor.to_string();
            let mut init: Vec<String> = [
                "init",
                "--resource",
                r,
                "--minor",
                &minor,
                "--hosts",
                "alpha,beta",
                "--addresses",
                &addresses,
                "--fence-peer-0",
                &fence_peer(Node::Alpha),
                "--fence-peer-1",
                &fence_peer(Node::Beta),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            init.extend(setup.drbd_init.iter().cloned());
            drbd.run(&init.iter().map(String::as_str).collect::<Vec<_>>())?;
        }

        let hook = workspace_bin("tandem-libvirt-hook")?;
        let start_host = |node: Node| {
            LibvirtHost::start(
                prepared.lab().ns(node),
                &dir.join(format!("{node}/libvirt")),
                &HostSpec {
                    hostname: node.name(),
                    hook: Some(&hook),
                    dbus_dir: buses[node.index()].dir(),
                    drbd_links: resources
                        .iter()
                        .zip(&disks)
                        .map(|(r, d)| (r.clone(), d.path().to_owned()))
                        .collect(),
                },
            )
        };
        let alpha = start_host(Node::Alpha)?;
        alpha.save_cache();
        let beta = start_host(Node::Beta)?;
        let hosts = [alpha, beta];
        let mut events = DomainEvents::new();
        for node in Node::BOTH {
            events.follow(node, &hosts[node.index()].uri())?;
        }

        let fencing = match &setup.fence {
            Some(f) => f.config(&dir)?,
            None => ConfigExtra::default(),
        };
        let listed = resources
            .iter()
            .map(|r| format!("{r:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let extra = |node: Node| -> Result<ConfigExtra> {
            let mut timing = setup.timing_extra.clone();
            timing.extend(fencing.timing.iter().cloned());
            let node_keys = Node::BOTH.map(|n| {
                format!(
                    "libvirt_uri = {:?}\nmigration_uri = \"tcp://{}\"\n",
                    hosts[n.index()].uri(),
                    Lab2::addr(n, 0).unwrap_or("127.0.0.1")
                )
            });
            Ok(ConfigExtra {
                timing,
                node_keys,
                fence: fencing.fence.clone(),
                tail: Some(format!(
                    "[drbd]\ndrbdadm = {:?}\ndrbdsetup = {:?}\nresources = [{listed}]\n\n\
                     [hypervisor]\nkind = \"libvirt\"\nuri = {:?}\n{}",
                    path_str(&drbd.drbdadm())?,
                    path_str(&drbd.drbdsetup())?,
                    hosts[node.index()].uri(),
                    setup
                        .hypervisor_extra
                        .iter()
                        .map(|l| format!("{l}\n"))
                        .collect::<String>(),
                )),
            })
        };
        let options = |node: Node| DaemonOptions {
            system_bus: Some(buses[node.index()].address().to_owned()),
            env: drbd.env(node),
        };
        let pair = prepared.start(
            &[extra(Node::Alpha)?, extra(Node::Beta)?],
            &[options(Node::Alpha), options(Node::Beta)],
        )?;
        let mut bmcs = Vec::new();
        if setup.fence.is_some() {
            for node in Node::BOTH {
                let b = Bmc::start(
                    pair.lab().ns(node.other()),
                    &format!("bmc-{node}"),
                    BMC_PORTS[node.index()],
                    &dir.join(format!("bmc-{node}")),
                )
                .with_context(|| format!("starting {node}'s BMC"))?;
                if setup.power_kills_host {
                    let standin = workspace_bin("tandem-drbd-standin")?;
                    let net_cut = resources
                        .iter()
                        .map(|r| {
                            format!(
                                "TANDEM_DRBD_STATE={} {} node-down {r} --node {}",
                                drbd.state_dir().display(),
                                standin.display(),
                                node.index()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n");
                    b.set_target_host(pair.lab().ns(node).name(), Some(&net_cut))?;
                } else {
                    b.set_target(Some(pair.daemon(node).pid()))?;
                }
                bmcs.push(b);
            }
        }
        Ok(VirtPair {
            events,
            bmcs,
            hosts,
            pair,
            buses,
            drbd,
            _disks: disks,
        })
    }

    /// [`VirtPair::start`], then waits until both daemons see each other.
    pub fn start_healthy(setup: VirtSetup) -> Result<VirtPair> {
        let mut rig = VirtPair::start(setup)?;
        rig.pair.wait_healthy(Duration::from_secs(15))?;
        Ok(rig)
    }

    pub fn host(&self, node: Node) -> &LibvirtHost {
        &self.hosts[node.index()]
    }

    pub fn host_mut(&mut self, node: Node) -> &mut LibvirtHost {
        &mut self.hosts[node.index()]
    }

    /// `node`'s BMC, when the setup has fencing.
    pub fn bmc(&self, node: Node) -> Option<&Bmc> {
        self.bmcs.get(node.index())
    }

    pub fn pair(&self) -> &Pair {
        &self.pair
    }

    pub fn pair_mut(&mut self) -> &mut Pair {
        &mut self.pair
    }

    pub fn drbd(&self) -> &DrbdStandin {
        &self.drbd
    }

    pub fn bus(&self, node: Node) -> &SystemBus {
        &self.buses[node.index()]
    }

    pub fn status(&self, node: Node) -> Result<Value> {
        self.pair.status(node)
    }

    /// Defines `domain` (one disk: [`RESOURCE_PATH`]) on both hosts.
    pub fn define_everywhere(&self, domain: &str) -> Result<()> {
        let xml = crate::libvirt::domain_xml(domain, &crate::libvirt::uuid_v4(), &[RESOURCE_PATH]);
        for h in &self.hosts {
            h.define(&xml)?;
        }
        Ok(())
    }

    /// Starts a fresh rig, defines `domain` on both hosts and starts it on
    /// `node` through virsh (and so through the hook), which must promote r0.
    pub fn with_domain_running(setup: VirtSetup, domain: &str, node: Node) -> Result<VirtPair> {
        let rig = VirtPair::start_healthy(setup)?;
        rig.define_everywhere(domain)?;
        rig.host(node).virsh_ok(&["start", domain])?;
        if rig.role(node)? != "Primary" {
            bail!("{node} started {domain} without promoting {RESOURCE}\n{}", rig.report());
        }
        Ok(rig)
    }

    /// `node` loses power the way an operator would do it: `ipmitool chassis
    /// power off` against its BMC, from the other host (needs a rig with `fence`).
    pub fn power_off(&self, node: Node) -> Result<()> {
        self.ipmitool(node, &["chassis", "power", "off"])
    }

    /// `ipmitool ARGS` against `node`'s BMC, from the other host.
    fn ipmitool(&self, node: Node, args: &[&str]) -> Result<()> {
        let out = self
            .pair
            .lab()
            .ns(node.other())
            .command("ipmitool")
            .args(["-I", "lanplus", "-C", "3", "-H", crate::bmc::ADDRESS, "-p"])
            .arg(BMC_PORTS[node.index()].to_string())
            .args(["-U", crate::bmc::USER, "-P", crate::bmc::PASSWORD])
            .args(args)
            .output()
            .context("cannot run ipmitool (Debian: ipmitool)")?;
        if !out.status.success() {
            bail!(
                "ipmitool {} of {node}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// `node` loses power together with its BMC (a failed power supply): the
    /// BMC stops answering, then everything of the host goes as in a BMC power
    /// off (the same chassis script, run directly).
    pub fn lose_power_and_bmc(&mut self, node: Node) -> Result<()> {
        self.bmcs.get_mut(node.index()).context("the rig has no BMCs")?.stop()?;
        self.lose_power(node)
    }

    /// `node` loses power without anyone asking its BMC (a cut in the rack):
    /// the BMC's chassis script, run directly.
    pub fn lose_power(&self, node: Node) -> Result<()> {
        let bmc = self.bmcs.get(node.index()).context("the rig has no BMCs")?;
        let out = Command::new(crate::bmc::power_script())
            .arg(bmc.node_dir())
            .args(["set", "power", "0"])
            .output()
            .context("cannot run the chassis script")?;
        if !out.status.success() {
            bail!(
                "powering {node} off failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Starts `node`'s BMC again (after [`VirtPair::lose_power_and_bmc`]); the
    /// host stays off.
    pub fn restart_bmc(&mut self, node: Node) -> Result<()> {
        let ns = self.pair.lab().ns(node.other());
        self.bmcs
            .get_mut(node.index())
            .context("the rig has no BMCs")?
            .restart(ns)
    }

    /// `ipmitool chassis power on` against `node`'s BMC, then what the host
    /// does when it boots: libvirtd comes up with the domains defined before
    /// (none running), the DRBD service brings the resources up (they connect
    /// and resync), and tandemd starts.
    pub fn power_on_and_boot(&mut self, node: Node) -> Result<()> {
        self.ipmitool(node, &["chassis", "power", "on"])?;
        let ns = self.pair.lab().ns(node);
        self.hosts[node.index()].reboot(ns)?;
        self.events.follow(node, &self.hosts[node.index()].uri())?;
        let resources: Vec<String> = self
            .drbd
            .state()?
            .get("resources")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for r in &resources {
            self.drbd.run(&["node-up", r, "--node", &node.index().to_string()])?;
        }
        self.pair.restart(node)
    }

    /// How many migration windows `node`'s status shows open.
    pub fn open_windows(&self, node: Node) -> Option<usize> {
        self.status(node)
            .ok()?
            .get("windows")
            .and_then(Value::as_array)
            .map(Vec::len)
    }

    /// Waits until neither daemon shows an open window (the status file is
    /// rewritten every 200 ms).
    pub fn wait_no_windows(&self, timeout: Duration) -> Result<()> {
        let closed = crate::status::wait_for(timeout, Duration::from_millis(20), || {
            Node::BOTH.iter().all(|n| self.open_windows(*n) == Some(0))
        });
        if closed.is_err() {
            bail!("a migration window stayed open\n{}", self.report());
        }
        Ok(())
    }

    /// `virsh migrate --live DOMAIN` from `from` to the other host, over the
    /// first link; the virsh output (success or not).
    pub fn migrate(&self, domain: &str, from: Node, extra: &[&str]) -> Result<std::process::Output> {
        self.migrate_command(domain, from, extra)?
            .output()
            .context("cannot run virsh (Debian: libvirt-clients)")
    }

    /// The `virsh migrate` of [`VirtPair::migrate`], to run in the background.
    pub fn migrate_command(&self, domain: &str, from: Node, extra: &[&str]) -> Result<Command> {
        let to = from.other();
        let mut command = Command::new("virsh");
        command
            .arg("-c")
            .arg(self.host(from).uri())
            .args(["migrate", "--live", domain])
            .arg(self.host(to).uri())
            .arg(format!("tcp://{}", Lab2::addr(to, 0)?))
            .args(extra)
            .stdin(std::process::Stdio::null());
        Ok(command)
    }

    /// Replaces `node`'s libvirt hook with one that only reads its stdin: the
    /// host behaves as if tandem were not installed there.
    pub fn disable_hook(&self, node: Node) -> Result<()> {
        let dir = self.pair.dir().join(format!("{node}/libvirt"));
        let stub = dir.join("no-hook.sh");
        std::fs::write(&stub, "#!/bin/sh\ncat >/dev/null\n")?;
        std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let link = dir.join("etc/hooks/qemu.d/tandem");
        let tmp = dir.join("etc/hooks/qemu.d/.tandem.new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&stub, &tmp)?;
        std::fs::rename(&tmp, &link)?;
        Ok(())
    }

    /// Everything a failed test needs to see: both daemons' stderr tails, the
    /// stand-in's history, libvirtd logs.
    pub fn report(&self) -> String {
        let mut s = String::new();
        for node in Node::BOTH {
            s.push_str(&format!(
                "--- {node} tandemd stderr:\n{}\n",
                self.pair.daemon(node).stderr_tail(30)
            ));
        }
        match self.drbd.history() {
            Ok(h) => {
                s.push_str("--- DRBD stand-in history:\n");
                for e in h.iter().rev().take(40).rev() {
                    s.push_str(&format!("{e}\n"));
                }
            }
            Err(e) => s.push_str(&format!("--- no DRBD history: {e:#}\n")),
        }
        s
    }

    /// DESIGN.md's invariants on what the real parts recorded: the stand-in's
    /// history must keep DRBD's rules (no two Primaries outside an agreed
    /// dual-primary setting, no promote of data that is not UpToDate) and
    /// libvirt's events must never show a domain running on both hosts.
    pub fn check_invariants(&self) -> Result<()> {
        self.drbd.check()?;
        self.events
            .check()
            .with_context(|| format!("libvirt's events of both hosts:\n{}", self.events.render()))
    }

    /// libvirt's lifecycle events of both hosts so far.
    pub fn domain_events(&self) -> &DomainEvents {
        &self.events
    }

    /// `node`'s role of `r0`, or an error with the rig's report.
    pub fn role(&self, node: Node) -> Result<String> {
        self.drbd.role(RESOURCE, node)
    }

    /// Waits until `node` holds `r0` in `role`.
    pub fn wait_role(&self, node: Node, role: &str, timeout: Duration) -> Result<()> {
        if crate::status::wait_for(timeout, Duration::from_millis(20), || {
            self.role(node).map(|r| r == role).unwrap_or(false)
        })
        .is_err()
        {
            bail!("{node} did not become {role} within {timeout:?}\n{}", self.report());
        }
        Ok(())
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().ok_or_else(|| anyhow!("path {} is not UTF-8", p.display()))
}
