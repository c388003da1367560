//! The real-Xen tier (docs/real-xen.md): Xen 4.17 from Debian's packages in
//! two QEMU (TCG) machines, a dom0 in each with real DRBD 8.4 between them,
//! tandemd with its `xl` driver, tandem's `block-drbd`, and a BMC
//! (`ipmi_sim`) per machine whose power-off kills that QEMU.
//!
//! Everything runs inside one network namespace the rig makes: the two QEMUs
//! (their DRBD link is a QEMU socket netdev on its loopback), the BMCs, and
//! each dom0's control channel (a `-netdev user` port forward to a shell in
//! the dom0); the dom0s reach the BMCs at 10.0.2.2, QEMU's address for that
//! loopback. Boot files come from `tests/fixtures/xen-tier/build.sh`.

use crate::bmc::{self, Bmc};
use crate::netns::NetNs;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NAMES: [&str; 2] = ["nodea", "nodeb"];
/// The dom0s' addresses on the DRBD link (the socket netdev).
pub const LINK: [&str; 2] = ["192.168.77.1", "192.168.77.2"];
pub const DOMAIN: &str = "g1";
pub const RES: &str = "r0";
/// The port of each dom0's `xl migrate-receive` listener.
pub const MIGRATE_PORT: u16 = 8002;
const CONTROL_PORT: [u16; 2] = [2101, 2102];
const BMC_PORT: [u16; 2] = [6231, 6232];
const DRBD_NET_PORT: u16 = 7000;

/// The tier's boot files, built once per rig.
#[derive(Debug, Clone)]
pub struct BootFiles {
    pub xen: PathBuf,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
}

/// Where downloaded packages are kept between runs.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("TANDEM_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/tandem-tests"))
        .join("xen-tier")
}

/// Builds the boot files into `out` with the workspace's binaries.
pub fn build(out: &Path) -> Result<BootFiles> {
    let ws = crate::env::workspace_root();
    let tandemd = crate::env::tandemd_bin()?;
    let bin = tandemd.parent().context("tandemd has no directory")?.to_owned();
    for b in ["tandemctl", "block-drbd", "tandem-drbd-handler"] {
        if !bin.join(b).is_file() {
            bail!("{} is missing: cargo build --workspace --bins", bin.join(b).display());
        }
    }
    let status = Command::new("bash")
        .arg(ws.join("tests/fixtures/xen-tier/build.sh"))
        .env("CACHE", cache_dir())
        .env("OUT", out)
        .env("BIN", &bin)
        .env("WS", &ws)
        .stdout(Stdio::null())
        .status()
        .context("cannot run build.sh")?;
    if !status.success() {
        bail!("tests/fixtures/xen-tier/build.sh failed ({status})");
    }
    Ok(BootFiles {
        xen: out.join("xen"),
        vmlinuz: out.join("vmlinuz"),
        initrd: out.join("dom0-initrd.gz"),
    })
}

/// What a command in a dom0 printed (stdout and stderr together) and its exit.
#[derive(Debug, Clone)]
pub struct Ran {
    pub exit: i32,
    pub out: String,
}

/// The two machines, their BMCs and the namespace, torn down on drop.
#[derive(Debug)]
pub struct XenTier {
    // Dropped in this order: BMCs, machines, namespace.
    bmcs: Vec<Bmc>,
    qemus: [Option<Child>; 2],
    ns: NetNs,
    dir: PathBuf,
    boot: BootFiles,
}

impl XenTier {
    /// Boots both machines and waits for both dom0s' control shells.
    pub fn boot(dir: &Path, boot: BootFiles) -> Result<XenTier> {
        std::fs::create_dir_all(dir)?;
        let ns = NetNs::new("xen")?;
        ns.ip(&["link", "set", "lo", "up"])?;
        let mut tier = XenTier {
            bmcs: Vec::new(),
            qemus: [None, None],
            ns,
            dir: dir.to_owned(),
            boot,
        };
        for node in 0..2 {
            tier.start_qemu(node)?;
            if node == 0 {
                // B's socket netdev connects to A's listener.
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        for node in 0..2 {
            let name = NAMES[node];
            let bmc = Bmc::start(
                &tier.ns,
                &format!("bmc-{name}"),
                BMC_PORT[node],
                &dir.join(format!("bmc-{name}")),
            )?;
            bmc.set_target(tier.qemus[node].as_ref().map(Child::id))?;
            tier.bmcs.push(bmc);
        }
        for (node, name) in NAMES.iter().enumerate() {
            let started = Instant::now();
            loop {
                if let Ok(r) = tier.run(node, "echo ready", Duration::from_secs(5)) {
                    if r.out.contains("ready") {
                        break;
                    }
                }
                if started.elapsed() > Duration::from_secs(240) {
                    bail!(
                        "dom0 {name} gave no shell within 240 s; see {}",
                        tier.serial_log(node).display()
                    );
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        Ok(tier)
    }

    fn start_qemu(&mut self, node: usize) -> Result<()> {
        let name = NAMES[node];
        let disk = self.dir.join(format!("{name}.img"));
        let f = std::fs::File::create(&disk)?;
        f.set_len(32 << 20)?;
        let net = if node == 0 {
            format!("socket,id=n0,listen=127.0.0.1:{DRBD_NET_PORT}")
        } else {
            format!("socket,id=n0,connect=127.0.0.1:{DRBD_NET_PORT}")
        };
        let log = self.serial_log(node);
        let out = std::fs::File::create(self.dir.join(format!("{name}.qemu.out")))?;
        let child = self
            .ns
            .command("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-cpu",
                "max,-smap",
                "-m",
                "1500",
                "-smp",
                "2",
                "-display",
                "none",
            ])
            .args(["-monitor", "none", "-no-reboot", "-serial"])
            .arg(format!("file:{}", log.display()))
            .arg("-kernel")
            .arg(&self.boot.xen)
            .args([
                "-append",
                "console=com1 com1=115200,8n1 dom0_mem=512M,max:512M dom0_max_vcpus=1 bootscrub=0 noreboot",
            ])
            .arg("-initrd")
            .arg(format!(
                "{} console=hvc0 node={name} ip4={},{}",
                self.boot.vmlinuz.display(),
                LINK[node],
                self.boot.initrd.display()
            ))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            .args(["-netdev", &net, "-device"])
            .arg(format!("virtio-net-pci,netdev=n0,mac=52:54:00:77:00:0{}", node + 1))
            .arg("-netdev")
            .arg(format!("user,id=n1,hostfwd=tcp:127.0.0.1:{}-:2323", CONTROL_PORT[node]))
            .args(["-device", "virtio-net-pci,netdev=n1"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("cannot start qemu-system-x86_64")?;
        self.qemus[node] = Some(child);
        Ok(())
    }

    pub fn serial_log(&self, node: usize) -> PathBuf {
        self.dir.join(format!("{}.serial.log", NAMES[node]))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The namespace everything runs in (for `ip netns exec`).
    pub fn ns_name(&self) -> &str {
        self.ns.name()
    }

    pub fn bmc(&self, node: usize) -> &Bmc {
        &self.bmcs[node]
    }

    /// Whether the node's QEMU still runs (a BMC power-off ends it).
    pub fn machine_runs(&mut self, node: usize) -> bool {
        match self.qemus[node].as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Runs `script` (sh) in the node's dom0; its output and exit status.
    pub fn run(&self, node: usize, script: &str, timeout: Duration) -> Result<Ran> {
        let secs = timeout.as_secs().max(1).to_string();
        let mut child = self
            .ns
            .command("timeout")
            .args([&secs, "socat", "-t", &secs, "-"])
            .arg(format!("TCP:127.0.0.1:{}", CONTROL_PORT[node]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run socat")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(format!("{{\n{script}\n}} 2>&1; echo \"@@rc=$?\"\n").as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let Some((body, rc)) = text.rsplit_once("@@rc=") else {
            bail!(
                "{}: no result from {script:?} within {secs} s; it printed {text:?}",
                NAMES[node]
            );
        };
        let exit = rc.trim().parse().unwrap_or(-1);
        Ok(Ran {
            exit,
            out: body.to_owned(),
        })
    }

    /// [`XenTier::run`], failing unless the script exits 0.
    pub fn ok(&self, node: usize, script: &str, timeout: Duration) -> Result<String> {
        let r = self.run(node, script, timeout)?;
        if r.exit != 0 {
            bail!("{}: {script:?} exited {}:\n{}", NAMES[node], r.exit, r.out);
        }
        Ok(r.out)
    }

    /// Sets up DRBD (initial sync from A, both Secondary), the buses, the
    /// configuration and tandemd, and each dom0's `xl migrate-receive` listener.
    pub fn setup(&self) -> Result<()> {
        for node in 0..2 {
            self.ok(
                node,
                &format!("drbdadm create-md --force {RES} >/dev/null 2>&1; drbdadm up {RES}"),
                Duration::from_secs(60),
            )?;
        }
        self.ok(0, &format!("drbdadm primary --force {RES}"), Duration::from_secs(30))?;
        self.wait(
            0,
            "the initial sync",
            Duration::from_secs(180),
            "cat /proc/drbd | grep -q 'ds:UpToDate/UpToDate'",
        )?;
        self.ok(0, &format!("drbdadm secondary {RES}"), Duration::from_secs(30))?;
        let key = random_hex(32);
        let toml = tandem_toml();
        for node in 0..2 {
            let script = format!(
                "set -e\necho {key} >/etc/tandem/authkey; chmod 600 /etc/tandem/authkey\n\
                 printf '%s\\n' '{pw}' >/etc/tandem/bmc.pass; chmod 600 /etc/tandem/bmc.pass\n\
                 echo {mid} >/etc/machine-id\n\
                 cat >/etc/tandem/tandem.toml <<'EOF'\n{toml}EOF\n\
                 dbus-daemon --config-file=/etc/tandem/bus.conf --fork --print-pid=1 >/var/run/dbus/pid\n\
                 i=0; while [ ! -S /var/run/dbus/system_bus_socket ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
                 setsid socat TCP-LISTEN:{MIGRATE_PORT},reuseaddr,fork EXEC:'xl migrate-receive' </dev/null >/dev/null 2>&1 &\n\
                 echo $! >/run/migrate-receive.pid",
                pw = bmc::PASSWORD,
                mid = random_hex(16),
            );
            self.ok(node, &script, Duration::from_secs(30))?;
            self.start_tandemd(node)?;
        }
        Ok(())
    }

    pub fn start_tandemd(&self, node: usize) -> Result<()> {
        self.ok(
            node,
            &format!(
                "TANDEM_LOG=info setsid tandemd --config /etc/tandem/tandem.toml --node {} \
                 --status-file /run/tandem/status.json --state-dir /var/lib/tandem </dev/null >>/run/tandem/tandemd.log 2>&1 &\n\
                 echo $! >/run/tandem/tandemd.pid",
                NAMES[node]
            ),
            Duration::from_secs(10),
        )?;
        Ok(())
    }

    pub fn stop_tandemd(&self, node: usize) -> Result<()> {
        self.ok(
            node,
            // SIGTERM as systemd sends it; a daemon still there after 15 s
            // fails the step rather than being killed quietly.
            r#"p=$(cat /run/tandem/tandemd.pid); kill $p
running() { [ -e /proc/$p ] && [ "$(cut -d' ' -f3 /proc/$p/stat)" != Z ]; }
i=0; while running && [ $i -lt 30 ]; do sleep 0.5; i=$((i+1)); done
if running; then echo "tandemd $p still runs 15 s after SIGTERM"; tail -5 /run/tandem/tandemd.log; exit 1; fi"#,
            Duration::from_secs(40),
        )?;
        Ok(())
    }

    /// Runs `check` every half second until it exits 0; how long it took.
    pub fn wait(&self, node: usize, what: &str, limit: Duration, check: &str) -> Result<Duration> {
        let started = Instant::now();
        loop {
            if let Ok(r) = self.run(node, check, Duration::from_secs(20)) {
                if r.exit == 0 {
                    return Ok(started.elapsed());
                }
            }
            if started.elapsed() > limit {
                bail!(
                    "{}: {what} did not happen within {} s\n{}",
                    NAMES[node],
                    limit.as_secs(),
                    self.report(node)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The last lines of tandemd's log and the DRBD and xl state, for failures.
    pub fn report(&self, node: usize) -> String {
        self.run(
            node,
            "cat /proc/drbd; xl list; tail -25 /run/tandem/tandemd.log; tail -5 /var/log/xen/xl-g1.log",
            Duration::from_secs(20),
        )
        .map(|r| r.out)
        .unwrap_or_else(|e| format!("(no report: {e})"))
    }
}

impl Drop for XenTier {
    fn drop(&mut self) {
        for b in &mut self.bmcs {
            let _ = b.stop();
        }
        for c in self.qemus.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut buf);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// tandem.toml, the same in both dom0s: the xl driver over TCP, IPMI fencing
/// through each machine's BMC.
pub fn tandem_toml() -> String {
    let mut s = format!(
        "[cluster]\nname = \"realxen\"\nauthkey = \"/etc/tandem/authkey\"\npreferred = \"{}\"\n\n\
         [timing]\nheartbeat_interval_ms = 500\ndead_after_ms = 4000\nfence_delay_ms = 2000\n\n",
        NAMES[0]
    );
    for (i, name) in NAMES.iter().enumerate() {
        s.push_str(&format!(
            "[node.{name}]\naddresses = [\"{}\"]\nmigration_host = \"{}\"\n\
             [[node.{name}.fence]]\n[[node.{name}.fence.device]]\nkind = \"ipmi\"\naddress = \"10.0.2.2\"\n\
             port = {}\nusername = \"{}\"\npassword_file = \"/etc/tandem/bmc.pass\"\ncipher_suite = 3\n\
             privilege = \"admin\"\ntimeout_ms = 5000\n\n",
            LINK[i],
            LINK[i],
            BMC_PORT[i],
            bmc::USER
        ));
    }
    s.push_str(&format!(
        "[drbd]\ndrbdadm = \"/sbin/drbdadm\"\ndrbdsetup = \"/sbin/drbdsetup\"\nresources = [\"{RES}\"]\n\n\
         [hypervisor]\nkind = \"xl\"\nxl = \"/usr/sbin/xl\"\nconfig_dir = \"/etc/xen\"\n\
         migration_transport = \"tcp\"\nmigration_port = {MIGRATE_PORT}\n"
    ));
    s
}
