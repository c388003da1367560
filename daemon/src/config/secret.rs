//! Fence device passwords. The configuration only says where a password comes
//! from; it is read when a device is used, so a rotated password needs no reload,
//! and it never sits in the `Config` that gets logged and passed around.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest secret file or script output accepted; a password is far shorter, and
/// a bound keeps a wrong path (a disk image, /dev/zero) from eating memory.
pub const MAX_SECRET_LEN: usize = 64 * 1024;

/// Where a password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// A file of mode 0600 (or stricter) owned by the user tandem runs as; its
    /// first line is the password.
    File(PathBuf),
    /// A shell command (`/bin/sh -c`); the first line it prints is the password.
    Script { command: String, timeout: Duration },
}

impl Secret {
    pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(10);

    pub fn file(path: impl Into<PathBuf>) -> Self {
        Secret::File(path.into())
    }

    pub fn script(command: impl Into<String>) -> Self {
        Secret::Script {
            command: command.into(),
            timeout: Self::DEFAULT_SCRIPT_TIMEOUT,
        }
    }

    /// Changes a script's timeout; a file has none.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        match self {
            Secret::Script { command, .. } => Secret::Script { command, timeout },
            file => file,
        }
    }

    /// Reads the password now.
    pub fn read(&self) -> Result<SecretString, SecretError> {
        match self {
            Secret::File(path) => {
                let what = || format!("secret file {}", path.display());
                first_line(read_private_file(path)?, what)
            }
            Secret::Script { command, timeout } => run_script(command, *timeout),
        }
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::File(path) => write!(f, "secret file {}", path.display()),
            Secret::Script { command, .. } => write!(f, "password script `{command}`"),
        }
    }
}

/// A password in memory. It prints as `<redacted>` and is overwritten when
/// dropped, so it cannot end up in a log by accident.
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: String) -> Self {
        SecretString(s)
    }

    /// The password itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        wipe(std::mem::take(&mut self.0).into_bytes());
    }
}

/// Overwrites a buffer that held a password. `black_box` keeps the compiler from
/// dropping the writes to memory that is about to be freed.
fn wipe(mut bytes: Vec<u8>) {
    bytes.iter_mut().for_each(|b| *b = 0);
    std::hint::black_box(&bytes);
}

/// Why a password could not be read. Names the file or the script, never the
/// password.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("secret file {} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error(
        "secret file {} has mode {mode:04o}, so group or others may read or change it; \
         run chmod 600 {}", path.display(), path.display()
    )]
    Mode { path: PathBuf, mode: u32 },
    #[error(
        "secret file {} belongs to uid {owner}, but tandem runs as uid {uid}; \
         run chown {uid} {}", path.display(), path.display()
    )]
    Owner { path: PathBuf, owner: u32, uid: u32 },
    #[error("cannot tell which user this process runs as: {0}")]
    Uid(String),
    #[error("{what} is longer than {MAX_SECRET_LEN} bytes")]
    TooLong { what: String },
    #[error("{what} is not UTF-8 text")]
    NotUtf8 { what: String },
    #[error("{what} gives an empty password (its first line is empty)")]
    Empty { what: String },
    #[error("cannot run password script `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("password script `{command}` failed ({status}){}", stderr_suffix(.stderr))]
    Failed {
        command: String,
        status: String,
        /// The first line of what it printed on stderr.
        stderr: String,
    },
    #[error("password script `{command}` did not finish within {} ms and was killed", .timeout.as_millis())]
    Timeout { command: String, timeout: Duration },
}

fn stderr_suffix(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

/// Reads a file that must be private to this user: a regular file, owned by the
/// effective uid, with no permission bits for group or others. Used for fence
/// passwords and fit for the cluster key.
pub fn read_private_file(path: &Path) -> Result<Vec<u8>, SecretError> {
    let io_err = |source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    };
    // The checks are made on the opened file, so the file checked is the file read.
    let file = File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(SecretError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Mode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let uid = effective_uid()?;
    if meta.uid() != uid {
        return Err(SecretError::Owner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            uid,
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() > MAX_SECRET_LEN {
        wipe(bytes);
        return Err(SecretError::TooLong {
            what: format!("secret file {}", path.display()),
        });
    }
    Ok(bytes)
}

/// The effective uid, from /proc: std has no getuid and this crate has no unsafe.
fn effective_uid() -> Result<u32, SecretError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| SecretError::Uid(format!("/proc/self/status: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| SecretError::Uid("no Uid line in /proc/self/status".into()))
}

/// The first line of `bytes` (without its line end); the buffer is wiped.
fn first_line(bytes: Vec<u8>, what: impl Fn() -> String) -> Result<SecretString, SecretError> {
    let end = bytes.iter().position(|&b| b == b'\n').unwrap_or(bytes.len());
    let mut line = bytes.get(..end).unwrap_or(&[]);
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    let result = if line.is_empty() {
        Err(SecretError::Empty { what: what() })
    } else {
        match std::str::from_utf8(line) {
            Ok(s) => Ok(SecretString(s.to_owned())),
            Err(_) => Err(SecretError::NotUtf8 { what: what() }),
        }
    };
    wipe(bytes);
    result
}

fn run_script(command: &str, timeout: Duration) -> Result<SecretString, SecretError> {
    let spawn_err = |source| SecretError::Spawn {
        command: command.to_string(),
        source,
    };
    let timed_out = || SecretError::Timeout {
        command: command.to_string(),
        timeout,
    };
    let deadline = Instant::now() + timeout;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can stop whatever it started too.
        .process_group(0)
        .spawn()
        .map_err(spawn_err)?;
    let stdout = match drain(child.stdout.take()) {
        Ok(rx) => rx,
        Err(e) => {
            kill(&mut child);
            return Err(spawn_err(e));
        }
    };
    let stderr = match drain(child.stderr.take()) {
        Ok(rx) => rx,
        Err(e) => {
            kill(&mut child);
            return Err(spawn_err(e));
        }
    };
    let output = match stdout.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            kill(&mut child);
            return Err(spawn_err(e));
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            kill(&mut child);
            return Err(timed_out());
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Vec::new(),
    };
    // Stdout is closed; the shell may still be finishing.
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                wipe(output);
                kill(&mut child);
                return Err(timed_out());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                wipe(output);
                kill(&mut child);
                return Err(spawn_err(e));
            }
        }
    };
    if !status.success() {
        wipe(output);
        // What a failing script says on stderr is its explanation, not a password.
        let said = match stderr.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes)
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect(),
            _ => String::new(),
        };
        return Err(SecretError::Failed {
            command: command.to_string(),
            status: status.to_string(),
            stderr: said,
        });
    }
    if output.len() > MAX_SECRET_LEN {
        wipe(output);
        return Err(SecretError::TooLong {
            what: format!("the output of password script `{command}`"),
        });
    }
    first_line(output, || format!("password script `{command}`"))
}

/// Reads a pipe to its end (or past the length limit) on a thread, so the caller
/// can wait with a deadline.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> io::Result<mpsc::Receiver<io::Result<Vec<u8>>>> {
    let (tx, rx) = mpsc::channel();
    if let Some(pipe) = pipe {
        std::thread::Builder::new()
            .name("password-script".into())
            .spawn(move || {
                let mut bytes = Vec::new();
                let result = pipe
                    .take(MAX_SECRET_LEN as u64 + 1)
                    .read_to_end(&mut bytes)
                    .map(|_| bytes);
                // The receiver may have given up on a deadline; nothing to do then.
                let _ = tx.send(result);
            })?;
    }
    Ok(rx)
}

fn kill(child: &mut Child) {
    // The group first: while the shell is unreaped its pid (the group id) cannot
    // be reused. std cannot signal a group, so this uses kill(1), and falls back
    // to killing only the shell when that is missing.
    let group = format!("-{}", child.id());
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &group])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}
