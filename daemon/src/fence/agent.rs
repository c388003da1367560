//! Any fence-agents compatible program (fence_ipmilan, fence_redfish, ...),
//! driven the way Pacemaker drives them: `key=value` lines on stdin (`action=`,
//! the configured options, `password=` read from the secret), and the exit code
//! as the answer. The password goes only to stdin: a command line is readable by
//! every user through /proc.
//!
//! The agent runs in its own process group, so a timeout (or the caller giving
//! up) kills whatever it started too, such as the ipmitool under fence_ipmilan.

use super::{DeviceError, DeviceErrorKind, DeviceId, FenceAction, Fencer, PowerState};
use crate::config::{AgentDevice, SecretString};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::fmt;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use zeroize::Zeroizing;

/// Most of an agent's output kept for an error message; agents are terse.
const OUTPUT_LIMIT: u64 = 64 * 1024;
/// How long the output pipes may stay open after the agent exited (a
/// background child may hold them) before the output is taken as it is.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// What an agent reads on stdin. It holds the password, so it is wiped when
/// dropped and its `Debug` shows `password=<redacted>`.
pub struct AgentInput {
    text: Zeroizing<String>,
}

impl AgentInput {
    /// `action=...` first, then the options in order, then the password.
    pub fn new(
        action: FenceAction,
        options: &std::collections::BTreeMap<String, String>,
        password: Option<&SecretString>,
    ) -> Self {
        let mut text = Zeroizing::new(String::new());
        text.push_str("action=");
        text.push_str(action.as_str());
        text.push('\n');
        for (key, value) in options {
            text.push_str(key);
            text.push('=');
            text.push_str(value);
            text.push('\n');
        }
        if let Some(p) = password {
            text.push_str("password=");
            text.push_str(p.expose());
            text.push('\n');
        }
        AgentInput { text }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }
}

impl fmt::Debug for AgentInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<&str> = self
            .text
            .lines()
            .map(|l| {
                if l.starts_with("password=") {
                    "password=<redacted>"
                } else {
                    l
                }
            })
            .collect();
        f.debug_struct("AgentInput").field("lines", &lines).finish()
    }
}

/// What an agent's exit code means: for `status`, 0 is on and 2 is off; for the
/// other actions 0 is success (`Ok(None)`), and anything else is a failure.
/// `None` is an agent killed by a signal.
pub fn interpret_exit(action: FenceAction, code: Option<i32>) -> Result<Option<PowerState>, String> {
    match (action, code) {
        (FenceAction::Status, Some(0)) => Ok(Some(PowerState::On)),
        (FenceAction::Status, Some(2)) => Ok(Some(PowerState::Off)),
        (FenceAction::Status, Some(c)) => Err(format!("exit code {c}; status answers 0 (on) or 2 (off)")),
        (_, Some(0)) => Ok(None),
        (_, Some(c)) => Err(format!("exit code {c}")),
        (_, None) => Err("killed by a signal".to_string()),
    }
}

#[derive(Debug)]
pub struct AgentFencer {
    id: DeviceId,
    config: AgentDevice,
}

impl AgentFencer {
    pub fn new(config: AgentDevice) -> Self {
        let program = config.agent.file_name().map_or_else(
            || config.agent.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        // Where the agent points, for people reading logs: the usual target options.
        let target: Vec<String> = ["ip", "ipaddr", "ipport", "plug", "port", "username", "login"]
            .iter()
            .filter_map(|k| config.options.get(*k).map(|v| format!("{k}={v}")))
            .collect();
        let target = if target.is_empty() {
            program
        } else {
            format!("{program} ({})", target.join(", "))
        };
        AgentFencer {
            id: DeviceId { kind: "agent", target },
            config,
        }
    }

    fn err(&self, action: FenceAction, kind: DeviceErrorKind) -> DeviceError {
        DeviceError {
            device: self.id.clone(),
            action,
            kind,
        }
    }

    async fn act(&self, action: FenceAction) -> Result<PowerState, DeviceError> {
        let budget = Duration::from_millis(self.config.timeout_ms);
        let deadline = Instant::now() + budget;
        let password = self.password(deadline).await.map_err(|k| self.err(action, k))?;
        let password = password.as_ref();
        let want = match action {
            FenceAction::Status => {
                return self
                    .invoke(FenceAction::Status, password, deadline)
                    .await
                    .and_then(|s| s.ok_or_else(|| protocol("status gave no power state")))
                    .map_err(|k| self.err(action, k));
            }
            FenceAction::Off => PowerState::Off,
            FenceAction::On | FenceAction::Reboot => PowerState::On,
        };
        self.invoke(action, password, deadline)
            .await
            .map_err(|k| self.err(action, k))?;
        // The agent's word is not enough: a status of our own confirms it.
        let seen = self
            .invoke(FenceAction::Status, password, deadline)
            .await
            .and_then(|s| s.ok_or_else(|| protocol("status gave no power state")))
            .map_err(|k| self.err(action, k))?;
        if seen == want {
            Ok(seen)
        } else {
            Err(self.err(
                action,
                DeviceErrorKind::NotConfirmed {
                    wanted: want,
                    seen,
                    ms: super::ms(budget),
                },
            ))
        }
    }

    async fn password(&self, deadline: Instant) -> Result<Option<SecretString>, DeviceErrorKind> {
        let Some(secret) = self.config.password.clone() else {
            return Ok(None);
        };
        // Reading may run a password script: not on the runtime's threads, and
        // not past the device's deadline.
        let read = tokio::task::spawn_blocking(move || secret.read());
        let Ok(read) = tokio::time::timeout_at(deadline.into(), read).await else {
            return Err(DeviceErrorKind::Timeout {
                ms: self.config.timeout_ms,
                detail: "reading the password took the whole time".into(),
            });
        };
        match read {
            Ok(Ok(p)) => Ok(Some(p)),
            Ok(Err(e)) => Err(DeviceErrorKind::Secret(e)),
            Err(e) => Err(DeviceErrorKind::Spawn {
                detail: format!("reading the password failed: {e}"),
            }),
        }
    }

    /// Runs the agent once, killing its process group at `deadline`.
    async fn invoke(
        &self,
        action: FenceAction,
        password: Option<&SecretString>,
        deadline: Instant,
    ) -> Result<Option<PowerState>, DeviceErrorKind> {
        let input = AgentInput::new(action, &self.config.options, password);
        let agent = &self.config.agent;
        let mut child = Command::new(agent)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DeviceErrorKind::Spawn {
                detail: format!("{}: {e}", agent.display()),
            })?;
        let mut group = GroupGuard::new(child.id());
        let stdout = tokio::spawn(read_limited(child.stdout.take()));
        let stderr = tokio::spawn(read_limited(child.stderr.take()));
        let mut stdin = child.stdin.take();
        let run = async {
            if let Some(pipe) = stdin.as_mut() {
                // An agent may exit without reading everything; its exit code
                // says what happened, not the broken pipe.
                let _ = pipe.write_all(input.as_bytes()).await;
                let _ = pipe.shutdown().await;
            }
            drop(stdin);
            child.wait().await
        };
        let waited = tokio::time::timeout_at(deadline.into(), run).await;
        let status = match waited {
            Ok(Ok(status)) => {
                group.disarm();
                status
            }
            Ok(Err(e)) => {
                group.kill();
                let _ = child.wait().await;
                return Err(DeviceErrorKind::Spawn {
                    detail: format!("waiting for {}: {e}", agent.display()),
                });
            }
            Err(_) => {
                // Killed before it is reaped: the group id cannot have been reused.
                group.kill();
                let _ = child.wait().await;
                let said = self.last_words(stdout, stderr, password).await;
                return Err(DeviceErrorKind::Timeout {
                    ms: self.config.timeout_ms,
                    detail: format!(
                        "{} did not finish {action} in time and was killed{}",
                        agent.display(),
                        if said.is_empty() {
                            String::new()
                        } else {
                            format!(" (it said: {said})")
                        }
                    ),
                });
            }
        };
        match interpret_exit(action, status.code()) {
            Ok(state) => Ok(state),
            Err(what) => Err(DeviceErrorKind::AgentFailed {
                status: format!("{action}: {what}"),
                stderr: self.last_words(stdout, stderr, password).await,
            }),
        }
    }

    /// The agent's last line of complaint (stderr, else stdout), without the
    /// password should the agent have echoed it.
    async fn last_words(
        &self,
        stdout: tokio::task::JoinHandle<Vec<u8>>,
        stderr: tokio::task::JoinHandle<Vec<u8>>,
        password: Option<&SecretString>,
    ) -> String {
        let collect = |h: tokio::task::JoinHandle<Vec<u8>>| async move {
            tokio::time::timeout(DRAIN_GRACE, h)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        };
        let (out, err) = (collect(stdout).await, collect(stderr).await);
        let last = |bytes: &[u8]| {
            String::from_utf8_lossy(bytes)
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .map(str::to_string)
        };
        let line = last(&err).or_else(|| last(&out)).unwrap_or_default();
        let line = match password {
            Some(p) if !p.expose().is_empty() => line.replace(p.expose(), "<redacted>"),
            _ => line,
        };
        line.chars().take(300).collect()
    }
}

fn protocol(detail: &str) -> DeviceErrorKind {
    DeviceErrorKind::Protocol { detail: detail.into() }
}

async fn read_limited<R: AsyncRead + Unpin>(pipe: Option<R>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(pipe) = pipe {
        let _ = pipe.take(OUTPUT_LIMIT).read_to_end(&mut out).await;
    }
    out
}

/// Kills the agent's process group unless the agent was seen to exit: on a
/// timeout, and when the caller drops the future mid-run.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn new(pid: Option<u32>) -> Self {
        GroupGuard {
            pgid: pid.and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw),
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }

    fn kill(&mut self) {
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

impl Fencer for AgentFencer {
    fn id(&self) -> &DeviceId {
        &self.id
    }

    async fn run(&self, action: FenceAction) -> Result<PowerState, DeviceError> {
        self.act(action).await
    }
}

#[cfg(test)]
mod tests;
