//! A two-host DRBD lab on the stand-in: one state directory, commands run as
//! node 0 or node 1.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Each test file uses a part of the helpers.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const DRBDADM: &str = env!("CARGO_BIN_EXE_drbdadm");
pub const DRBDSETUP: &str = env!("CARGO_BIN_EXE_drbdsetup");
pub const DRBDMETA: &str = env!("CARGO_BIN_EXE_drbdmeta");
pub const STANDIN: &str = env!("CARGO_BIN_EXE_tandem-drbd-standin");

pub struct Lab {
    pub dir: tempfile::TempDir,
}

#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(o: Output) -> Self {
        Ran {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Lab {
    /// A lab with resource `r0` set up by `init` plus `extra` init options.
    pub fn new(extra: &[&str]) -> Lab {
        let lab = Lab {
            dir: tempfile::tempdir().unwrap(),
        };
        let mut args = vec!["init", "--resource", "r0", "--hosts", "alpha,beta"];
        args.extend_from_slice(extra);
        let r = lab.standin(&args);
        assert_eq!(r.code, 0, "init: {r:?}");
        lab
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn run(&self, program: &str, node: Option<usize>, args: &[&str]) -> Ran {
        let mut c = Command::new(program);
        c.args(args).env("TANDEM_DRBD_STATE", self.path());
        match node {
            Some(n) => c.env("TANDEM_DRBD_NODE", n.to_string()),
            None => c.env_remove("TANDEM_DRBD_NODE"),
        };
        c.output().unwrap().into()
    }

    pub fn standin(&self, args: &[&str]) -> Ran {
        self.run(STANDIN, None, args)
    }

    pub fn drbdadm(&self, node: usize, args: &[&str]) -> Ran {
        self.run(DRBDADM, Some(node), args)
    }

    pub fn drbdsetup(&self, node: usize, args: &[&str]) -> Ran {
        self.run(DRBDSETUP, Some(node), args)
    }

    pub fn state(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.path().join("state.json")).unwrap()).unwrap()
    }

    pub fn node(&self, n: usize) -> Value {
        self.state()["resources"]["r0"]["nodes"][n].clone()
    }

    pub fn history(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path().join("history.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn events(&self, event: &str) -> Vec<Value> {
        self.history().into_iter().filter(|h| h["event"] == event).collect()
    }

    /// Waits for `cond` on the state (background handlers finish on their own).
    pub fn wait_for(&self, what: &str, cond: impl Fn(&Lab) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }
}

pub fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display())
}
