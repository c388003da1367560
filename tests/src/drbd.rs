//! The DRBD stand-in (standins/drbd) as the two test hosts share it: its state
//! directory, its binaries, and what tests read back (state, history, the
//! stand-in's own invariant check).

use crate::cmd;
use crate::env::target_dir;
use crate::lab::Node;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug)]
pub struct DrbdStandin {
    state: PathBuf,
    bin: PathBuf,
}

impl DrbdStandin {
    /// A stand-in whose state lives in `state` (created). Its binaries come from
    /// the workspace's build (`cargo build --workspace --bins`).
    pub fn new(state: &Path) -> Result<DrbdStandin> {
        std::fs::create_dir_all(state).with_context(|| format!("cannot create {}", state.display()))?;
        let bin = crate::virt_pair::workspace_bin("tandem-drbd-standin")?
            .parent()
            .map(Path::to_path_buf)
            .filter(|d| d.join("drbdadm").is_file())
            .ok_or_else(|| {
                anyhow!(
                    "the DRBD stand-in is not built under {}: run `cargo build --workspace --bins`",
                    target_dir().display()
                )
            })?;
        Ok(DrbdStandin {
            state: state.to_owned(),
            bin,
        })
    }

    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The stand-in's `drbdadm`, as a node's `[drbd] drbdadm`.
    pub fn drbdadm(&self) -> PathBuf {
        self.bin.join("drbdadm")
    }

    pub fn drbdsetup(&self) -> PathBuf {
        self.bin.join("drbdsetup")
    }

    /// The environment a node's processes need to be that node to the stand-in.
    pub fn env(&self, node: Node) -> Vec<(String, String)> {
        vec![
            ("TANDEM_DRBD_STATE".into(), self.state.display().to_string()),
            ("TANDEM_DRBD_NODE".into(), node.index().to_string()),
        ]
    }

    /// `tandem-drbd-standin ARGS...`; its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        cmd::output(
            Command::new(self.bin.join("tandem-drbd-standin"))
                .args(args)
                .env("TANDEM_DRBD_STATE", &self.state),
        )
    }

    /// `drbdadm ARGS...` as `node`.
    pub fn drbdadm_as(&self, node: Node, args: &[&str]) -> Result<String> {
        let mut c = Command::new(self.drbdadm());
        c.args(args);
        for (k, v) in self.env(node) {
            c.env(k, v);
        }
        cmd::output(&mut c)
    }

    /// The raw state (`state.json`).
    pub fn state(&self) -> Result<Value> {
        Ok(serde_json::from_str(&self.run(&["state"])?)?)
    }

    /// `node`'s view of `resource`: role, disk, cstate, allow_two_primaries, ...
    pub fn node_state(&self, resource: &str, node: Node) -> Result<Value> {
        let s = self.state()?;
        s.pointer(&format!("/resources/{resource}/nodes/{}", node.index()))
            .cloned()
            .ok_or_else(|| anyhow!("no resource {resource} in the stand-in's state: {s}"))
    }

    /// `node`'s role of `resource`: "Primary" or "Secondary".
    pub fn role(&self, resource: &str, node: Node) -> Result<String> {
        let n = self.node_state(resource, node)?;
        n.get("role")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no role in {n}"))
    }

    /// Every history event, oldest first.
    pub fn history(&self) -> Result<Vec<Value>> {
        let text = std::fs::read_to_string(self.state.join("history.jsonl")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("history line {l:?}")))
            .collect()
    }

    /// The stand-in's own check of DRBD's invariants over the history.
    pub fn check(&self) -> Result<()> {
        let out = Command::new(self.bin.join("tandem-drbd-standin"))
            .arg("check")
            .env("TANDEM_DRBD_STATE", &self.state)
            .output()?;
        if !out.status.success() {
            bail!(
                "the DRBD stand-in's history breaks DRBD's rules:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}
