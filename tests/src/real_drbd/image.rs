//! The guest image, built at test time from Debian packages:
//!
//! - the kernel: Debian's `linux-image-amd64` (whatever version it depends on),
//!   downloaded with `apt-get download` once and cached under
//!   [`cache_root`] as an uncompressed `vmlinux` (booted through its PVH entry,
//!   which saves the guest the xz decompression: ~10 s less per boot under TCG)
//!   and the few modules the guests load (virtio, DRBD 8.4 and what they
//!   depend on, ext4 for the tools disk), in load order;
//! - the initrd (rebuilt every run, ~2 s): busybox-static, drbd-utils with its
//!   libraries, the modules, `tests/fixtures/real-drbd/{init,runner,fence-peer.sh}`,
//!   and with tandem also `tandem-drbd-handler` (at its installed path,
//!   `/usr/lib/tandem/tandem-drbd-handler`, as DRBD runs it) and a D-Bus bus
//!   configuration with tandem's policy;
//! - with tandem, a tools disk (ext2, read-only in both guests): `tandemd`,
//!   `tandemctl`, `tandem-libvirt-hook` (stripped copies of the workspace's
//!   build) and `dbus-daemon`, with their libraries in `/opt/tandem/lib`.

use crate::cmd;
use crate::env::workspace_root;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Modules the guests load (their dependencies are added, in order).
pub const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "crc32c_generic",
    "drbd",
    "ext4",
];

/// Where downloaded and extracted kernels are kept between runs:
/// `$TANDEM_TEST_CACHE/real-drbd`, else `/var/cache/tandem-tests/real-drbd`.
pub fn cache_root() -> PathBuf {
    match std::env::var_os("TANDEM_TEST_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("real-drbd"),
        _ => PathBuf::from("/var/cache/tandem-tests/real-drbd"),
    }
}

/// The fixtures of this tier (`tests/fixtures/real-drbd`).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/real-drbd")
}

/// A cached kernel: `vmlinux` (or `vmlinuz` when it could not be unpacked),
/// `modules/*.ko` and the load order.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub package: String,
    pub release: String,
    pub image: PathBuf,
    pub modules: Vec<PathBuf>,
}

/// What the guests boot.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: Kernel,
    pub initrd: PathBuf,
    /// The tools disk, when built with tandem.
    pub tools: Option<PathBuf>,
    /// Time spent building (kernel download included when it was not cached).
    pub build_ms: u64,
}

/// Builds the image in `work` (created); `with_tandem` adds tandem's
/// binaries (from the workspace's `target/debug`, or `release`) and the tools disk.
pub fn build(work: &Path, with_tandem: bool) -> Result<GuestImage> {
    let started = Instant::now();
    std::fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
    let kernel = kernel()?;
    let initrd = work.join("initrd.cpio");
    let root = work.join("initrd-root");
    fill_initrd(&root, &kernel, with_tandem)?;
    pack_cpio(&root, &initrd)?;
    let tools = if with_tandem {
        let troot = work.join("tools-root");
        let img = work.join("tools.img");
        fill_tools(&troot)?;
        make_ext2(&troot, &img)?;
        Some(img)
    } else {
        None
    };
    Ok(GuestImage {
        kernel,
        initrd,
        tools,
        build_ms: started.elapsed().as_millis() as u64,
    })
}

/// The kernel package `linux-image-amd64` depends on, and its candidate version.
fn kernel_package() -> Result<(String, String)> {
    let deps = cmd::run("apt-cache", &["depends", "linux-image-amd64"]).context(
        "cannot ask apt which kernel linux-image-amd64 is (run `apt-get update` first: the \
         real-DRBD tier downloads Debian's kernel for its guests)",
    )?;
    let package = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.chars().nth(12).is_some_and(|c| c.is_ascii_digit()))
        .ok_or_else(|| anyhow!("apt-cache depends linux-image-amd64 names no kernel package:\n{deps}"))?
        .to_owned();
    let policy = cmd::run("apt-cache", &["policy", &package])?;
    let version = policy
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .find(|v| !v.is_empty() && *v != "(none)")
        .ok_or_else(|| anyhow!("apt has no candidate version of {package}:\n{policy}"))?
        .to_owned();
    Ok((package, version))
}

/// The cached kernel, downloading and unpacking it first when needed.
pub fn kernel() -> Result<Kernel> {
    let (package, version) = kernel_package()?;
    let root = cache_root();
    let dir = root.join(format!("{package}_{}", version.replace([':', '/'], "_")));
    if !dir.join("complete").is_file() {
        std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
        let tmp = root.join(format!(".tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let filled = fill_kernel_cache(&tmp, &package);
        if let Err(e) = filled {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // Another run may have finished first; either copy is good.
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
            if !dir.join("complete").is_file() {
                bail!("cannot move the unpacked kernel to {}", dir.display());
            }
        }
    }
    let release = std::fs::read_to_string(dir.join("release"))?.trim().to_owned();
    let order = std::fs::read_to_string(dir.join("modules.order"))?;
    let modules = order
        .split_whitespace()
        .map(|m| dir.join("modules").join(format!("{m}.ko")))
        .collect();
    let image = ["vmlinux", "vmlinuz"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("no kernel image in {}", dir.display()))?;
    Ok(Kernel {
        package,
        release,
        image,
        modules,
    })
}

fn fill_kernel_cache(tmp: &Path, package: &str) -> Result<()> {
    let dl = tmp.join("download");
    std::fs::create_dir_all(&dl)?;
    cmd::output(
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(&dl),
    )
    .with_context(|| format!("cannot download {package}"))?;
    let deb = std::fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| anyhow!("apt-get download {package} left no .deb in {}", dl.display()))?;
    let ext = tmp.join("extracted");
    cmd::output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&ext))?;
    let modules_dir = ext.join("lib/modules");
    let release = std::fs::read_dir(&modules_dir)
        .with_context(|| format!("{} has no lib/modules", deb.display()))?
        .flatten()
        .find_map(|e| e.file_name().to_str().map(str::to_owned))
        .ok_or_else(|| anyhow!("{} holds no kernel release", deb.display()))?;
    let vmlinuz = ext.join("boot").join(format!("vmlinuz-{release}"));
    if unpack_vmlinux(&vmlinuz, &tmp.join("vmlinux")).is_err() {
        std::fs::copy(&vmlinuz, tmp.join("vmlinuz"))?;
    }
    let tree = modules_dir.join(&release).join("kernel");
    let mut order = Vec::new();
    for m in MODULES {
        add_module(&tree, m, &mut order)?;
    }
    let out = tmp.join("modules");
    std::fs::create_dir_all(&out)?;
    for (name, path) in &order {
        std::fs::copy(path, out.join(format!("{name}.ko")))?;
    }
    let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
    std::fs::write(tmp.join("modules.order"), names.join(" ") + "\n")?;
    std::fs::write(tmp.join("release"), format!("{release}\n"))?;
    std::fs::remove_dir_all(&ext)?;
    std::fs::remove_dir_all(&dl)?;
    std::fs::write(tmp.join("complete"), format!("{package}\n"))?;
    Ok(())
}

/// The ELF kernel inside a bzImage (Debian's is xz-compressed): found by the
/// xz magic, decompressed with `xz --single-stream` (which ignores what follows).
fn unpack_vmlinux(vmlinuz: &Path, out: &Path) -> Result<()> {
    let data = std::fs::read(vmlinuz)?;
    const XZ: &[u8] = b"\xfd7zXZ\x00";
    let at = data
        .windows(XZ.len())
        .position(|w| w == XZ)
        .ok_or_else(|| anyhow!("{}: no xz stream", vmlinuz.display()))?;
    let payload = out.with_extension("xz");
    std::fs::write(&payload, &data[at..])?;
    let status = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(std::fs::File::open(&payload)?)
        .stdout(std::fs::File::create(out)?)
        .stderr(Stdio::null())
        .status()
        .context("cannot run xz (Debian: xz-utils)")?;
    std::fs::remove_file(&payload)?;
    let elf = std::fs::read(out).map(|d| d.starts_with(b"\x7fELF")).unwrap_or(false);
    if !status.success() || !elf {
        let _ = std::fs::remove_file(out);
        bail!("{}: xz could not unpack the kernel", vmlinuz.display());
    }
    Ok(())
}

/// Adds module `name` after its dependencies (`modinfo -F depends`).
fn add_module(tree: &Path, name: &str, order: &mut Vec<(String, PathBuf)>) -> Result<()> {
    if order.iter().any(|(n, _)| n == name) {
        return Ok(());
    }
    let path = find_file(tree, &format!("{name}.ko"))?
        .ok_or_else(|| anyhow!("the kernel has no module {name} under {}", tree.display()))?;
    let deps = cmd::run("modinfo", &["-F", "depends", &path.display().to_string()])
        .context("cannot run modinfo (Debian: kmod)")?;
    for d in deps.trim().split(',').filter(|d| !d.is_empty()) {
        add_module(tree, d, order)?;
    }
    order.push((name.to_owned(), path));
    Ok(())
}

fn find_file(dir: &Path, name: &str) -> Result<Option<PathBuf>> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == name) {
                return Ok(Some(p));
            }
        }
    }
    Ok(None)
}

fn mkdirs(root: &Path, dirs: &[&str]) -> Result<()> {
    for d in dirs {
        let p = root.join(d);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    Ok(())
}

fn copy_exec(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// A stripped copy (debug builds are mostly debug info); a plain copy when
/// `strip` is missing or fails.
fn copy_stripped(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(to)
        .arg(from)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        copy_exec(from, to)?;
    }
    Ok(())
}

/// The shared libraries `ldd` lists for `bin` (absolute paths).
fn libraries(bin: &Path) -> Result<BTreeSet<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .with_context(|| format!("cannot run ldd {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || !out.status.success() {
        return Ok(BTreeSet::new());
    }
    let mut libs = BTreeSet::new();
    for line in text.lines() {
        if line.contains("not found") {
            bail!("{}: a library is missing: {}", bin.display(), line.trim());
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.insert(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// Copies `libs` under `root`, at their own path (`dest_dir` = None) or into
/// `dest_dir` (relative to root), following symlinks.
fn copy_libs(root: &Path, libs: &BTreeSet<PathBuf>, dest_dir: Option<&str>) -> Result<()> {
    for lib in libs {
        let rel = match dest_dir {
            Some(d) => Path::new(d).join(lib.file_name().ok_or_else(|| anyhow!("{}", lib.display()))?),
            None => lib.strip_prefix("/").unwrap_or(lib).to_path_buf(),
        };
        let to = root.join(rel);
        if to.exists() {
            continue;
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(lib, &to).with_context(|| format!("cannot copy {}", lib.display()))?;
    }
    Ok(())
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The host's drbd-utils, as Debian 12 installs them.
const DRBD_UTILS: &[(&str, &str)] = &[
    ("/sbin/drbdadm", "sbin/drbdadm"),
    ("/sbin/drbdsetup", "sbin/drbdsetup"),
    ("/sbin/drbdmeta", "sbin/drbdmeta"),
    ("/lib/drbd/drbdadm-84", "lib/drbd/drbdadm-84"),
    ("/lib/drbd/drbdsetup-84", "lib/drbd/drbdsetup-84"),
];

fn fill_initrd(root: &Path, kernel: &Kernel, with_tandem: bool) -> Result<()> {
    let _ = std::fs::remove_dir_all(root);
    mkdirs(
        root,
        &[
            "bin",
            "sbin",
            "usr",
            "lib/modules",
            "lib/drbd",
            "lib64",
            "etc/tandem-guest",
            "proc",
            "sys",
            "dev",
            "tmp",
            "run",
            "var/lib",
            "root",
        ],
    )?;
    std::os::unix::fs::symlink("../bin", root.join("usr/bin"))?;
    std::os::unix::fs::symlink("../sbin", root.join("usr/sbin"))?;
    std::os::unix::fs::symlink("../lib", root.join("usr/lib"))?;
    std::os::unix::fs::symlink("../run", root.join("var/run"))?;
    std::os::unix::fs::symlink("../run/lock", root.join("var/lock"))?;

    let busybox = Path::new("/bin/busybox");
    let static_bb = Command::new("ldd")
        .arg(busybox)
        .output()
        .map(|o| !o.status.success() || String::from_utf8_lossy(&o.stdout).contains("not a dynamic"))
        .unwrap_or(false);
    if !busybox.is_file() || !static_bb {
        bail!("/bin/busybox is missing or not static (Debian: apt-get install busybox-static)");
    }
    copy_exec(busybox, &root.join("bin/busybox"))?;
    let applets = cmd::run("/bin/busybox", &["--list"])?;
    for a in applets.split_whitespace() {
        let link = root.join("bin").join(a);
        if a != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", &link)?;
        }
    }

    let mut libs = BTreeSet::new();
    for (from, to) in DRBD_UTILS {
        let from = Path::new(from);
        if !from.is_file() {
            bail!("{} is missing (Debian: apt-get install drbd-utils)", from.display());
        }
        copy_exec(from, &root.join(to))?;
        libs.extend(libraries(from)?);
    }
    for m in &kernel.modules {
        let name = m.file_name().ok_or_else(|| anyhow!("{}", m.display()))?;
        std::fs::copy(m, root.join("lib/modules").join(name))?;
    }
    let order: Vec<String> = kernel
        .modules
        .iter()
        .filter_map(|m| m.file_stem().and_then(|s| s.to_str()).map(str::to_owned))
        .collect();
    write_file(&root.join("etc/tandem-guest/modules"), &(order.join(" ") + "\n"), 0o644)?;

    let fx = fixtures();
    copy_exec(&fx.join("init"), &root.join("init"))?;
    copy_exec(&fx.join("runner"), &root.join("etc/tandem-guest/runner"))?;
    copy_exec(&fx.join("fence-peer.sh"), &root.join("etc/tandem-guest/fence-peer.sh"))?;
    write_file(&root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n", 0o644)?;
    write_file(&root.join("etc/group"), "root:x:0:\ntandem:x:900:\n", 0o644)?;
    write_file(&root.join("etc/hosts"), "127.0.0.1 localhost\n", 0o644)?;

    if with_tandem {
        let handler = crate::virt_pair::workspace_bin("tandem-drbd-handler")?;
        let dest = root.join("usr/lib/tandem/tandem-drbd-handler");
        copy_stripped(&handler, &dest)?;
        libs.extend(libraries(&handler)?);
        let ws = workspace_root();
        let policy = ws.join("packaging/dbus/org.tandem.Tandem1.conf");
        std::fs::copy(&policy, root.join("etc/tandem-guest/org.tandem.Tandem1.conf"))
            .with_context(|| format!("cannot copy {}", policy.display()))?;
        let template = ws.join("daemon/tests/fixtures/dbus-system-bus.conf.in");
        let conf = std::fs::read_to_string(&template)
            .with_context(|| format!("cannot read {}", template.display()))?
            .replace("@LISTEN@", "unix:path=/run/dbus/system_bus_socket")
            .replace("@POLICY@", "/etc/tandem-guest/org.tandem.Tandem1.conf");
        write_file(&root.join("etc/tandem-guest/bus.conf"), &conf, 0o644)?;
    }
    copy_libs(root, &libs, None)?;
    Ok(())
}

fn fill_tools(root: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(root);
    mkdirs(root, &["bin", "lib"])?;
    let mut libs = BTreeSet::new();
    for name in ["tandemd", "tandemctl", "tandem-libvirt-hook"] {
        let bin = crate::virt_pair::workspace_bin(name)?;
        copy_stripped(&bin, &root.join("bin").join(name))?;
        libs.extend(libraries(&bin)?);
    }
    let dbus = Path::new("/usr/bin/dbus-daemon");
    if !dbus.is_file() {
        bail!("/usr/bin/dbus-daemon is missing (Debian: apt-get install dbus-daemon)");
    }
    copy_exec(dbus, &root.join("bin/dbus-daemon"))?;
    libs.extend(libraries(dbus)?);
    copy_libs(root, &libs, Some("lib"))?;
    Ok(())
}

fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// An ext2 image holding `root` (`mke2fs -d`: no mount needed).
fn make_ext2(root: &Path, img: &Path) -> Result<()> {
    let _ = std::fs::remove_file(img);
    let kib = tree_size(root) / 1024 * 5 / 4 + 8192;
    cmd::output(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext2", "-L", "tandemtools", "-d"])
            .arg(root)
            .arg(img)
            .arg(format!("{kib}k")),
    )
    .context("cannot make the tools disk (Debian: e2fsprogs)")?;
    Ok(())
}

/// `find . | cpio -o -H newc` in `root`, uncompressed: the kernel unpacks a
/// plain cpio faster than it decompresses one under TCG.
fn pack_cpio(root: &Path, out: &Path) -> Result<()> {
    let status = Command::new("sh")
        .args(["-c", "cd \"$1\" && find . | cpio -o -H newc --quiet > \"$2\"", "sh"])
        .arg(root)
        .arg(out)
        .status()
        .context("cannot run sh")?;
    if !status.success() {
        bail!("cannot pack the initrd with cpio (Debian: apt-get install cpio)");
    }
    Ok(())
}
