//! Two QEMU guests (TCG) booting the image of [`super::image`], inside a
//! network namespace of their own, and the command runner that drives them.
//!
//! - Both `qemu-system-x86_64` processes run inside one test namespace
//!   ([`NetNs`]), so a test run killed outright leaves nothing the next run's
//!   [`crate::netns::sweep_leftovers`] does not kill.
//! - Two links join the guests, each a pair of UDP sockets on the
//!   namespace's loopback (`-netdev socket,udp=...,localaddr=...`): link 1
//!   (`192.0.2.0/24`, DRBD's replication and tandem's first heartbeat link) and
//!   link 2 (`198.51.100.0/24`). A link is cut the way a cable is, outside
//!   the guests: iptables drops its datagrams in the namespace
//!   ([`GuestPair::cut`]); the guests see nothing but silence.
//! - Each guest has a third NIC on QEMU's user network, where the namespace's
//!   127.0.0.1 is 10.0.2.2: the BMCs (`ipmi_sim`) listen there.
//! - Commands reach a guest over a virtio-serial port whose host end is a
//!   Unix socket the test listens on (`tests/fixtures/real-drbd/runner`): one
//!   request line, one answer line with every output base64-encoded, decoded
//!   here into a [`Step`] (exit code, stdout and stderr lines, `/proc/drbd`
//!   after the command, the kernel's log lines since the last command).
//!
//! Dropping a [`GuestPair`] kills both QEMUs by their pids and deletes the
//! namespace (and with it every iptables rule).

use super::image::GuestImage;
use crate::cmd;
use crate::netns::NetNs;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Host names of the two guests (drbd.conf's `on` sections, tandem's nodes).
pub const NAMES: [&str; 2] = ["nodea", "nodeb"];
/// Addresses of each guest on link 1 and link 2.
pub const LINK_ADDRS: [[&str; 2]; 2] = [["192.0.2.1", "198.51.100.1"], ["192.0.2.2", "198.51.100.2"]];
/// What the guests call the namespace's loopback on the user network.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

/// The UDP port guest `node` receives link `link` (1 or 2) on.
pub fn link_port(link: usize, node: usize) -> u16 {
    20000 + (link as u16) * 10 + node as u16 + 1
}

/// How the guests are started.
#[derive(Debug, Clone)]
pub struct BootOptions {
    pub mem_mb: u32,
    /// Size of each guest's DRBD backing disk.
    pub disk_mb: u64,
    /// How long a guest may take from start to its runner's READY line.
    pub boot_timeout: Duration,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            mem_mb: 320,
            disk_mb: 16,
            boot_timeout: Duration::from_secs(180),
        }
    }
}

/// One command run in a guest, as the runner answered it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub node: String,
    pub script: String,
    pub exit: i32,
    pub stdout: String,
    pub stderr: String,
    pub proc_drbd: String,
    pub kernel: Vec<String>,
    pub ms: u64,
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

impl Step {
    /// The step as one JSON object (what the journal keeps).
    pub fn json(&self) -> Value {
        json!({
            "node": self.node,
            "command": self.script,
            "exit": self.exit,
            "stdout": lines(&self.stdout),
            "stderr": lines(&self.stderr),
            "proc_drbd": lines(&self.proc_drbd),
            "kernel": self.kernel,
            "ms": self.ms,
        })
    }
}

/// One guest: its QEMU process and its runner connection.
#[derive(Debug)]
pub struct Guest {
    name: String,
    index: usize,
    child: Option<Child>,
    pid: u32,
    reader: Option<BufReader<UnixStream>>,
    writer: Option<UnixStream>,
    seq: u64,
    console: PathBuf,
    spawned: Instant,
    boot_ms: u64,
}

impl Guest {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn index(&self) -> usize {
        self.index
    }

    /// The pid of this guest's QEMU.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Start of QEMU to the runner's READY line.
    pub fn boot_ms(&self) -> u64 {
        self.boot_ms
    }

    /// What the guest printed on its serial console (kernel warnings, init).
    pub fn console(&self) -> String {
        std::fs::read(&self.console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether QEMU still runs (it has not exited, nor been killed and reaped).
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Runs `script` with the guest's `sh`; the runner kills it after `timeout`
    /// (whole seconds, at least 1).
    pub fn run(&mut self, script: &str, timeout: Duration) -> Result<Step> {
        let started = Instant::now();
        let secs = timeout.as_secs().max(1);
        self.seq += 1;
        let id = self.seq;
        let name = self.name.clone();
        let (Some(writer), Some(reader)) = (self.writer.as_mut(), self.reader.as_mut()) else {
            bail!("{name}: the runner is not connected");
        };
        writeln!(writer, "{id} {secs} {}", base64_encode(script.as_bytes()))
            .with_context(|| format!("{name}: cannot send to the runner"))?;
        writer.flush()?;
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(secs + 20)))?;
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .with_context(|| format!("{name}: no answer from the runner to `{script}`"))?;
            if n == 0 {
                bail!("{name}: the runner closed its port (guest gone?) during `{script}`");
            }
            // An answer to an earlier request that timed out on our side: skip.
            let mut f = line.trim_end().split(' ');
            if f.next() == Some("R") && f.next() == Some(id.to_string().as_str()) {
                break;
            }
        }
        let f: Vec<&str> = line.trim_end().split(' ').collect();
        if f.len() != 7 {
            bail!("{name}: malformed runner answer {:?}", line.trim_end());
        }
        let exit: i32 = f[2].parse().with_context(|| format!("{name}: exit code {:?}", f[2]))?;
        let field = |s: &str| -> Result<String> {
            let b = s.strip_prefix('x').ok_or_else(|| anyhow!("runner field {s:?}"))?;
            Ok(String::from_utf8_lossy(&base64_decode(b)?).into_owned())
        };
        Ok(Step {
            node: name,
            script: script.to_owned(),
            exit,
            stdout: field(f[3])?,
            stderr: field(f[4])?,
            proc_drbd: field(f[5])?,
            kernel: field(f[6])?.lines().map(str::to_owned).collect(),
            ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Kills QEMU (SIGKILL to its pid) and reaps it.
    pub fn kill(&mut self) {
        self.reader = None;
        self.writer = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two guests joined by two links, in a namespace of their own.
#[derive(Debug)]
pub struct GuestPair {
    // Dropped in this order: the QEMUs first, then their namespace.
    guests: Vec<Guest>,
    ns: NetNs,
    dir: PathBuf,
    cut: [bool; 2],
}

impl GuestPair {
    /// Boots both guests from `image` (with its tools disk when it has one),
    /// keeping disks, sockets and console logs in `dir`; returns once both
    /// runners said READY.
    pub fn boot(dir: &Path, image: &GuestImage, opts: &BootOptions) -> Result<GuestPair> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let ns = NetNs::new("realdrbd")?;
        let mut pair = GuestPair {
            guests: Vec::new(),
            ns,
            dir: dir.to_owned(),
            cut: [false; 2],
        };
        let mut listeners = Vec::new();
        for index in 0..2 {
            let (guest, listener) = pair.spawn(index, image, opts)?;
            pair.guests.push(guest);
            listeners.push(listener);
        }
        for (g, l) in pair.guests.iter_mut().zip(listeners) {
            connect(g, &l, opts.boot_timeout)?;
        }
        Ok(pair)
    }

    fn spawn(&self, index: usize, image: &GuestImage, opts: &BootOptions) -> Result<(Guest, UnixListener)> {
        let name = NAMES[index];
        let sock = self.dir.join(format!("{name}.runner"));
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).with_context(|| format!("cannot listen on {}", sock.display()))?;
        let disk = self.dir.join(format!("{name}.disk"));
        let f = std::fs::File::create(&disk).with_context(|| format!("cannot create {}", disk.display()))?;
        f.set_len(opts.disk_mb * 1024 * 1024)?;
        let console = self.dir.join(format!("{name}.console"));
        let mac = |n: usize| format!("52:54:00:7a:{:02x}:{n:02x}", index + 1);
        let net = format!(
            "{}/{}/24,{}/{}/24,{}/10.0.2.15/24",
            mac(1),
            LINK_ADDRS[index][0],
            mac(2),
            LINK_ADDRS[index][1],
            mac(3)
        );
        let mut c = self.ns.command("qemu-system-x86_64");
        c.args(["-accel", "tcg", "-smp", "1", "-m"])
            .arg(opts.mem_mb.to_string())
            .args(["-nodefaults", "-display", "none", "-vga", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(&image.kernel.image)
            .arg("-initrd")
            .arg(&image.initrd)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 quiet panic=-1 tandem.node={name} tandem.net={net}"
            ))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=none,id=d0,cache=unsafe", disk.display()))
            .args(["-device", "virtio-blk-pci,drive=d0,serial=backing"]);
        if let Some(tools) = &image.tools {
            c.arg("-drive")
                .arg(format!("file={},format=raw,if=none,id=d1,readonly=on", tools.display()))
                .args(["-device", "virtio-blk-pci,drive=d1,serial=tools"]);
        }
        c.arg("-chardev")
            .arg(format!("socket,id=run,path={}", sock.display()))
            .args([
                "-device",
                "virtio-serial-pci",
                "-device",
                "virtserialport,chardev=run,name=tandem.runner",
            ]);
        for link in 1..=2 {
            c.arg("-netdev").arg(format!(
                "socket,id=l{link},udp=127.0.0.1:{},localaddr=127.0.0.1:{}",
                link_port(link, 1 - index),
                link_port(link, index)
            ));
            c.arg("-device")
                .arg(format!("virtio-net-pci,netdev=l{link},mac={},romfile=", mac(link)));
        }
        c.args(["-netdev", "user,id=u3", "-device"])
            .arg(format!("virtio-net-pci,netdev=u3,mac={},romfile=", mac(3)));
        let log = std::fs::File::create(self.dir.join(format!("{name}.qemu.log")))?;
        c.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = c
            .spawn()
            .with_context(|| format!("cannot start `{}` (Debian: qemu-system-x86)", cmd::describe(&c)))?;
        let pid = child.id();
        Ok((
            Guest {
                name: name.to_owned(),
                index,
                child: Some(child),
                pid,
                reader: None,
                writer: None,
                seq: 0,
                console,
                spawned: Instant::now(),
                boot_ms: 0,
            },
            listener,
        ))
    }

    pub fn guest(&mut self, node: usize) -> &mut Guest {
        &mut self.guests[node.min(1)]
    }

    pub fn guests(&mut self) -> &mut [Guest] {
        &mut self.guests
    }

    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Cuts link `link` (1 or 2) in both directions: its datagrams are dropped.
    pub fn cut(&mut self, link: usize) -> Result<()> {
        if !(1..=2).contains(&link) {
            bail!("link {link}: 1 or 2");
        }
        if !self.cut[link - 1] {
            self.ns.iptables_restore(&link_rules(link, "-A"))?;
            self.cut[link - 1] = true;
        }
        Ok(())
    }

    /// Repairs link `link`.
    pub fn heal(&mut self, link: usize) -> Result<()> {
        if !(1..=2).contains(&link) {
            bail!("link {link}: 1 or 2");
        }
        if self.cut[link - 1] {
            self.ns.iptables_restore(&link_rules(link, "-D"))?;
            self.cut[link - 1] = false;
        }
        Ok(())
    }

    /// Both guests' console output, for failure messages.
    pub fn consoles(&self) -> String {
        self.guests
            .iter()
            .map(|g| format!("--- {} console ---\n{}", g.name, tail(&g.console(), 40)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for GuestPair {
    fn drop(&mut self) {
        // The QEMUs first (their disks and sockets are theirs until then);
        // the consoles stay for reading.
        for g in &mut self.guests {
            g.kill();
        }
        for name in NAMES {
            for ext in ["disk", "runner"] {
                let _ = std::fs::remove_file(self.dir.join(format!("{name}.{ext}")));
            }
        }
    }
}

fn link_rules(link: usize, op: &str) -> String {
    let mut r = String::from("*filter\n");
    for node in 0..2 {
        r.push_str(&format!(
            "{op} INPUT -p udp --dport {} -j DROP\n",
            link_port(link, node)
        ));
    }
    r.push_str("COMMIT\n");
    r
}

fn tail(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
}

/// Waits for guest `g`'s QEMU to connect its runner port and the runner to say READY.
fn connect(g: &mut Guest, listener: &UnixListener, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    listener.set_nonblocking(true)?;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if !g.running() {
                    bail!("{}: QEMU exited at once (see its .qemu.log)", g.name);
                }
                if started.elapsed() > Duration::from_secs(30) {
                    bail!("{}: QEMU did not connect its runner port", g.name);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context("accept on the runner socket"),
        }
    };
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            bail!("{}: no READY from the guest within {timeout:?}", g.name);
        }
        reader.get_ref().set_read_timeout(Some(left))?;
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => bail!("{}: the guest closed its runner port while booting", g.name),
            Ok(_) if line.trim() == format!("READY {}", g.name) => break,
            Ok(_) => continue,
            Err(e) => return Err(e).with_context(|| format!("{}: waiting for READY", g.name)),
        }
    }
    g.boot_ms = g.spawned.elapsed().as_millis() as u64;
    g.reader = Some(reader);
    g.writer = Some(stream);
    Ok(())
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (what busybox `base64` reads and writes).
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        if c == b'=' || c == b'\n' || c == b'\r' {
            continue;
        }
        let v = B64
            .iter()
            .position(|&x| x == c)
            .ok_or_else(|| anyhow!("not base64: {:?}", c as char))? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for s in ["", "a", "ab", "abc", "abcd", "drbdadm primary r0\n", "\u{e9}t\u{e9}"] {
            let e = base64_encode(s.as_bytes());
            assert_eq!(base64_decode(&e).expect("decodes"), s.as_bytes(), "{s:?} -> {e}");
        }
        assert_eq!(base64_encode(b"abc"), "YWJj");
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert!(base64_decode("a*b").is_err());
    }

    #[test]
    fn link_ports_differ() {
        let all = [link_port(1, 0), link_port(1, 1), link_port(2, 0), link_port(2, 1)];
        let set: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(set.len(), 4);
    }
}
