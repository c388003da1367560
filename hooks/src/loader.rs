//! Builds the [`DrbdMap`] by running `drbdadm dump-xml`, bounded by a timeout.
//!
//! The hook only runs this when a disk path needs it (`/dev/drbdN`, by-disk).
//! drbdadm gets no stdin and pipes for stdout and stderr, never the hook's own
//! stdout/stderr: libvirt waits for those to close, so a child holding them would
//! hold libvirt.

use crate::drbd::{DrbdMap, DumpXmlError};
use std::ffi::OsString;
use std::io::{self, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The environment variable naming the drbdadm to run.
pub const DRBDADM_ENV: &str = "TANDEM_DRBDADM";
/// Tried, in order, when [`DRBDADM_ENV`] is not set: libvirt gives hooks its own
/// `PATH`, which may lack the sbin directories.
pub const DEFAULT_DRBDADM: [&str; 3] = ["drbdadm", "/usr/sbin/drbdadm", "/sbin/drbdadm"];
/// `dump-xml` only reads the configuration; seconds mean something is wrong.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to run drbdadm.
#[derive(Debug, Clone)]
pub struct Drbdadm {
    /// Programs to try in order; the first that exists is used.
    pub programs: Vec<OsString>,
    pub timeout: Duration,
}

/// Why the DRBD configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("drbdadm not found (tried {tried})")]
    NotFound { tried: String },
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("{program} dump-xml did not finish within {} ms", timeout.as_millis())]
    Timeout { program: String, timeout: Duration },
    #[error("{program} dump-xml failed ({status}){}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Failed {
        program: String,
        status: ExitStatus,
        detail: Option<String>,
    },
    #[error("{program} dump-xml printed output that is not UTF-8")]
    NotUtf8 { program: String },
    #[error(transparent)]
    Parse(#[from] DumpXmlError),
}

impl Drbdadm {
    /// `$TANDEM_DRBDADM` if set and not empty, else [`DEFAULT_DRBDADM`].
    pub fn from_env() -> Self {
        let programs = match std::env::var_os(DRBDADM_ENV) {
            Some(p) if !p.is_empty() => vec![p],
            _ => DEFAULT_DRBDADM.iter().map(OsString::from).collect(),
        };
        Drbdadm {
            programs,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Runs `drbdadm dump-xml` and returns its stdout.
    pub fn dump_xml(&self) -> Result<String, LoadError> {
        let deadline = Instant::now() + self.timeout;
        let (mut child, program) = self.spawn()?;
        let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
        // Readers on threads so that a full pipe cannot stall drbdadm while we
        // wait, and so that the wait can time out.
        for (is_out, pipe) in [
            (true, child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>)),
            (false, child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>)),
        ] {
            let Some(mut pipe) = pipe else { continue };
            let tx = tx.clone();
            thread::spawn(move || {
                let mut buf = Vec::new();
                // A read error leaves what was read; the exit status tells the rest.
                let _ = pipe.by_ref().take(64 << 20).read_to_end(&mut buf);
                let _ = tx.send((is_out, buf));
            });
        }
        drop(tx);
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((true, buf)) => stdout = buf,
                Ok((false, buf)) => stderr = buf,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => return Err(kill(&mut child, program, self.timeout)),
            }
        }
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
                Ok(None) => return Err(kill(&mut child, program, self.timeout)),
                Err(source) => return Err(LoadError::Spawn { program, source }),
            }
        };
        if !status.success() {
            // drbdadm prints module-probe noise first; the last line is the reason.
            let text = String::from_utf8_lossy(&stderr);
            let detail = text.lines().map(str::trim).rfind(|l| !l.is_empty()).map(|l| {
                let mut l = l.to_owned();
                if l.len() > 300 {
                    let cut = (0..=300).rev().find(|&i| l.is_char_boundary(i)).unwrap_or(0);
                    l.truncate(cut);
                }
                l
            });
            return Err(LoadError::Failed {
                program,
                status,
                detail,
            });
        }
        String::from_utf8(stdout).map_err(|_| LoadError::NotUtf8 { program })
    }

    fn spawn(&self) -> Result<(Child, String), LoadError> {
        for program in &self.programs {
            let shown = program.to_string_lossy().into_owned();
            let spawned = Command::new(program)
                .arg("dump-xml")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            match spawned {
                Ok(child) => return Ok((child, shown)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(LoadError::Spawn { program: shown, source }),
            }
        }
        let tried: Vec<String> = self.programs.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        Err(LoadError::NotFound {
            tried: tried.join(", "),
        })
    }

    /// The map from `drbdadm dump-xml`, for this host.
    pub fn load(&self) -> Result<DrbdMap, LoadError> {
        let xml = self.dump_xml()?;
        Ok(DrbdMap::from_dump_xml(&xml)?.with_local_host(local_host()))
    }

    /// The map, or the empty map and why there is none. drbdadm missing is not
    /// worth a word (the unresolved minors say enough); anything else is.
    pub fn load_or_empty(&self) -> (DrbdMap, Option<String>) {
        match self.load() {
            Ok(map) => (map, None),
            Err(LoadError::NotFound { .. }) => (DrbdMap::empty(), None),
            Err(e) => (DrbdMap::empty(), Some(e.to_string())),
        }
    }
}

fn kill(child: &mut Child, program: String, timeout: Duration) -> LoadError {
    // Killed and reaped, so no drbdadm outlives the hook.
    let _ = child.kill();
    let _ = child.wait();
    LoadError::Timeout { program, timeout }
}

/// DRBD's name for this host: the kernel's node name, which is what `uname -n`
/// prints and what drbdadm matches `on <host>` sections against.
pub fn local_host() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}
