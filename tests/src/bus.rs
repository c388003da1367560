//! A host's own system bus: a private, system-style `dbus-daemon` with tandem's
//! policy (packaging/dbus/org.tandem.Tandem1.conf), listening on
//! `DIR/system_bus_socket` so that `DIR` mounted over a host's `/run/dbus` makes
//! it that host's default system bus. Dropping it kills it by its pid.

use crate::env::workspace_root;
use anyhow::{anyhow, bail, Context, Result};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[derive(Debug)]
pub struct SystemBus {
    child: Child,
    dir: PathBuf,
    address: String,
}

impl SystemBus {
    /// Starts the bus in `dir` (created), returning once it printed its address.
    pub fn start(dir: &Path) -> Result<SystemBus> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let root = workspace_root();
        let policy = root.join("packaging/dbus/org.tandem.Tandem1.conf");
        let policy = policy
            .to_str()
            .ok_or_else(|| anyhow!("path {} is not UTF-8", policy.display()))?;
        let template = root.join("daemon/tests/fixtures/dbus-system-bus.conf.in");
        let socket = dir.join("system_bus_socket");
        let conf = std::fs::read_to_string(&template)
            .with_context(|| format!("cannot read {}", template.display()))?
            .replace("@LISTEN@", &format!("unix:path={}", socket.display()))
            .replace("@POLICY@", policy);
        let conf_path = dir.join("bus.conf");
        std::fs::write(&conf_path, conf)?;
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf_path.display()))
            .args(["--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(dir.join("bus.stderr"))?)
            .spawn()
            .context("cannot start dbus-daemon (Debian: apt-get install dbus-daemon)")?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        let address = line.trim().to_owned();
        if !address.starts_with("unix:") {
            let _ = child.kill();
            let _ = child.wait();
            bail!("dbus-daemon printed no address (see {}/bus.stderr)", dir.display());
        }
        Ok(SystemBus {
            child,
            dir: dir.to_owned(),
            address,
        })
    }

    /// `unix:path=...`: what `DBUS_SYSTEM_BUS_ADDRESS` must say to reach it.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The directory that stands in for the host's `/run/dbus`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SystemBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
