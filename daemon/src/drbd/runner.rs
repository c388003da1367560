//! Running drbdadm/drbdsetup once: own process group, bounded time.
//!
//! drbdadm runs drbdsetup (and drbdmeta) as its children, so a timeout must
//! kill the whole group, not just drbdadm: a surviving drbdsetup would still
//! change DRBD's state after we reported failure. The same happens when the
//! caller drops the future (daemon shutdown, cancelled action).

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// "exited 11" / "was killed by a signal", for messages.
    pub fn status_text(&self) -> String {
        match self.code {
            Some(c) => format!("exited {c}"),
            None => "was killed by a signal".to_owned(),
        }
    }
}

#[derive(Debug)]
pub enum RunError {
    Spawn(std::io::Error),
    Timeout,
    Wait(std::io::Error),
}

/// `program args...` with `env` added, killed (with its process group) after `timeout`.
pub async fn run(
    program: &Path,
    args: &[String],
    env: &[(OsString, OsString)],
    timeout: Duration,
) -> Result<Output, RunError> {
    let started = Instant::now();
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        // drbdadm asks before some actions when stdin is a terminal; never here.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(RunError::Spawn)?;
    let mut group = GroupGuard::new(child.id());
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            group.disarm();
            Ok(Output {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                elapsed: started.elapsed(),
            })
        }
        Ok(Err(e)) => Err(RunError::Wait(e)),
        // Dropping the wait future dropped the child (kill_on_drop); the guard
        // takes the rest of the group with it.
        Err(_) => Err(RunError::Timeout),
    }
}

/// Kills a process group unless disarmed: on timeout and on drop mid-run.
#[derive(Debug)]
pub struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    pub fn new(pid: Option<u32>) -> Self {
        GroupGuard {
            pgid: pid.and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw),
        }
    }

    pub fn disarm(&mut self) {
        self.pgid = None;
    }

    pub fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH: the group is already gone, which is the goal.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command line for messages: program and arguments, space separated.
pub fn display(program: &Path, args: &[String]) -> String {
    let mut s = program.display().to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}
