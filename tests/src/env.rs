//! What the tests need from the machine, and where the `tandemd` binary is.

use crate::cmd;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

/// Checks that the tests can build networks: root, `ip` with netns support and
/// `iptables`. The error says what is missing and how to get it; tests fail
/// with it rather than skip, so a CI run without root cannot pass silently.
pub fn preflight() -> Result<()> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push(format!(
            "root (running as uid {}): network namespaces, veth pairs and iptables need it; \
             run the tests as root, e.g. `sudo -E cargo test -p tandem-tests`",
            nix::unistd::geteuid()
        ));
    }
    if let Err(e) = cmd::run("ip", &["netns", "list"]) {
        missing.push(format!(
            "`ip` with netns support (Debian: apt-get install iproute2): {e:#}"
        ));
    }
    if let Err(e) = cmd::run("iptables", &["--version"]) {
        missing.push(format!("`iptables` (Debian: apt-get install iptables): {e:#}"));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        bail!(
            "the peer link tests cannot run on this machine; they need:\n  - {}",
            missing.join("\n  - ")
        )
    }
}

/// The workspace root (the folder above this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target directory for this workspace.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        _ => workspace_root().join("target"),
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    p.metadata().and_then(|m| m.modified()).ok()
}

/// Newest modification time of the daemon's sources (`daemon/src/**`, its manifest).
fn newest_source(dir: &Path) -> Option<SystemTime> {
    let mut newest = mtime(&dir.join("Cargo.toml"));
    let mut stack = vec![dir.join("src")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(t) = mtime(&p) {
                newest = newest.max(Some(t));
            }
        }
    }
    newest
}

static TANDEMD: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The `tandemd` binary: `$TANDEMD_BIN` if set; else `target/debug/tandemd` or
/// `target/release/tandemd`, whichever exists and is not older than the daemon's
/// sources; else it is built once with `cargo build -p tandemd --bin tandemd`.
pub fn tandemd_bin() -> Result<PathBuf> {
    let mut cached = TANDEMD.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(p) = cached.as_ref() {
        return Ok(p.clone());
    }
    let found = find_or_build_tandemd()?;
    *cached = Some(found.clone());
    Ok(found)
}

fn find_or_build_tandemd() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TANDEMD_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("TANDEMD_BIN={} is not a file", p.display());
        }
        return Ok(p);
    }
    let target = target_dir();
    let sources = newest_source(&workspace_root().join("daemon"));
    for profile in ["debug", "release"] {
        let p = target.join(profile).join("tandemd");
        if let Some(built) = mtime(&p) {
            if !matches!(sources, Some(s) if built < s) {
                return Ok(p);
            }
        }
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "-p", "tandemd", "--bin", "tandemd"])
        .current_dir(workspace_root());
    let status = build
        .status()
        .with_context(|| format!("cannot run `{}`", cmd::describe(&build)))?;
    if !status.success() {
        bail!(
            "`{}` failed ({status}): no tandemd binary to test",
            cmd::describe(&build)
        );
    }
    let p = target.join("debug").join("tandemd");
    if p.is_file() {
        Ok(p)
    } else {
        Err(anyhow!(
            "`{}` succeeded but {} is missing",
            cmd::describe(&build),
            p.display()
        ))
    }
}
