//! xenstore through the `xenstore-read`, `xenstore-write`, `xenstore-exists`,
//! `xenstore-rm` and `xenstore-list` commands, as Xen's own hotplug scripts
//! reach it (so a stand-in first on `PATH` replaces the real store in tests).
//!
//! The commands quote what they print and unquote what they are given (`\\`,
//! `\n`, `\xNN`, ...; see Xen's `xenstore_client.c`): values are quoted on the
//! way in and unquoted on the way out here, so what is stored is exactly the
//! text given. Each command is looked up on `PATH`, then in the directories Xen
//! installs them to (a hotplug script inherits the toolstack's `PATH`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// Searched after `PATH`.
const FALLBACK_DIRS: [&str; 5] = ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"];

#[derive(Debug, thiserror::Error)]
pub enum XsError {
    #[error("{command} not found (on PATH or in /usr/bin, /usr/sbin)")]
    NotFound { command: String },
    #[error("cannot run {command}: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("{command} failed ({status}){detail}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        detail: String,
    },
}

/// The xenstore command-line clients.
#[derive(Debug, Clone, Default)]
pub struct Xenstore {
    /// Searched before `PATH` (tests); empty in production.
    pub dirs: Vec<PathBuf>,
}

impl Xenstore {
    fn find(&self, command: &str) -> Result<PathBuf, XsError> {
        let path: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        self.dirs
            .iter()
            .cloned()
            .chain(path)
            .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
            .map(|d| d.join(command))
            .find(|p| p.is_file())
            .ok_or_else(|| XsError::NotFound {
                command: command.to_owned(),
            })
    }

    fn run(&self, command: &str, args: &[OsString]) -> Result<Output, XsError> {
        let program = self.find(command)?;
        Command::new(&program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| XsError::Spawn {
                command: command.to_owned(),
                source,
            })
    }

    fn failed(command: &str, out: &Output) -> XsError {
        let text = String::from_utf8_lossy(&out.stderr);
        let detail = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .map(|l| format!(": {}", tandem_hooks::one_line(l, 200)))
            .unwrap_or_default();
        XsError::Failed {
            command: command.to_owned(),
            status: out.status,
            detail,
        }
    }

    /// The value at `path`; `None` when there is none (the command's `couldn't
    /// read path` answer, exit 1).
    pub fn read(&self, path: &str) -> Result<Option<String>, XsError> {
        let out = self.run("xenstore-read", &[path.into()])?;
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text.strip_suffix('\n').unwrap_or(&text);
            return Ok(Some(unquote(line)));
        }
        if out.status.code() == Some(1) && String::from_utf8_lossy(&out.stderr).contains("couldn't read path") {
            return Ok(None);
        }
        Err(Self::failed("xenstore-read", &out))
    }

    /// Writes every pair in one invocation (one xenstore transaction: all or none).
    pub fn write(&self, pairs: &[(String, String)]) -> Result<(), XsError> {
        let args: Vec<OsString> = pairs
            .iter()
            .flat_map(|(k, v)| [OsString::from(k), OsString::from(quote(v))])
            .collect();
        let out = self.run("xenstore-write", &args)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Self::failed("xenstore-write", &out))
        }
    }

    /// Whether `path` exists (`xenstore-exists` exits 1, silently, when it does not).
    pub fn exists(&self, path: &str) -> Result<bool, XsError> {
        let out = self.run("xenstore-exists", &[path.into()])?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) if out.stderr.is_empty() => Ok(false),
            _ => Err(Self::failed("xenstore-exists", &out)),
        }
    }

    /// The children of `path`; `None` when it does not exist.
    pub fn list(&self, path: &str) -> Result<Option<Vec<String>>, XsError> {
        let out = self.run("xenstore-list", &[path.into()])?;
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            return Ok(Some(text.lines().map(str::to_owned).collect()));
        }
        if out.status.code() == Some(1) && String::from_utf8_lossy(&out.stderr).contains("could not list path") {
            return Ok(None);
        }
        Err(Self::failed("xenstore-list", &out))
    }

    /// Removes `path` and what is below it.
    pub fn rm(&self, path: &str) -> Result<(), XsError> {
        let out = self.run("xenstore-rm", &[path.into()])?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Self::failed("xenstore-rm", &out))
        }
    }
}

/// `text` as `xenstore-write` must be given it to store it unchanged: only the
/// backslash is special on the way in.
pub fn quote(text: &str) -> String {
    text.replace('\\', "\\\\")
}

/// What `xenstore-read` printed, back to the stored text: `\\`, `\t`, `\n`,
/// `\r`, `\xNN` and `\NNN` (the quoting of control and non-ASCII bytes; bytes
/// that are not UTF-8 become U+FFFD).
pub fn unquote(printed: &str) -> String {
    let b = printed.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 == b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let (byte, used) = match b[i + 1] {
            b't' => (b'\t', 2),
            b'n' => (b'\n', 2),
            b'r' => (b'\r', 2),
            b'x' => match number(b.get(i + 2..i + 4), 16) {
                Some(v) => (v, 4),
                None => (b'x', 2),
            },
            d @ b'0'..=b'7' => match number(b.get(i + 1..i + 4), 8) {
                Some(v) => (v, 4),
                None => (d, 2),
            },
            other => (other, 2),
        };
        out.push(byte);
        i += used;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `digits` (all of them) as a number of `radix` that fits a byte.
fn number(digits: Option<&[u8]>, radix: u32) -> Option<u8> {
    let text = std::str::from_utf8(digits?).ok()?;
    u8::from_str_radix(text, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_output_unquotes_to_the_stored_text() {
        assert_eq!(unquote("a\\\\b\\nc\\x7f\\001"), "a\\b\nc\x7f\x01");
        assert_eq!(unquote("plain r0"), "plain r0");
        assert_eq!(quote("a\\nb"), "a\\\\nb");
    }
}
