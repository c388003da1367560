//! Runs `xl` with a deadline. `xl create` and `xl migrate-receive` leave a
//! daemonised `xl` behind that may hold the pipes open, so the result is
//! the process's exit, not the end of its output: what was read by then (and
//! a moment after) is what the caller gets.

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// The line to put in an error: xl's last line on stderr (where it says
    /// what failed), else the exit status.
    pub fn reason(&self) -> String {
        let last = self
            .stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .or_else(|| self.stdout.lines().map(str::trim).rfind(|l| !l.is_empty()));
        match last {
            Some(l) => format!("{l} (xl {})", self.status),
            None => format!("xl {}", self.status),
        }
    }
}

fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let into = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = from.read(&mut chunk) {
            if n == 0 {
                break;
            }
            let mut b = into.lock().unwrap_or_else(PoisonError::into_inner);
            // Bounded: an error line is all anyone reads from it.
            if b.len() < 1 << 20 {
                b.extend_from_slice(&chunk[..n]);
            }
        }
    });
    buf
}

fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
}

/// Runs `program args` and waits at most `timeout` for it to exit; one line
/// of error when it cannot start or runs too long (it is killed then).
pub fn run(program: &Path, args: &[&str], timeout: Duration) -> Result<Ran, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let out = child.stdout.take().map(collect);
    let err = child.stderr.take().map(collect);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} {} did not finish within {} s",
                    program.display(),
                    args.first().unwrap_or(&""),
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("cannot wait for {}: {e}", program.display())),
        }
    };
    // The readers finish at once unless a daemonised child holds the pipes.
    std::thread::sleep(Duration::from_millis(30));
    Ok(Ran {
        status,
        stdout: out.as_ref().map(text).unwrap_or_default(),
        stderr: err.as_ref().map(text).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_exit_and_timeout() {
        let ran = run(
            Path::new("/bin/sh"),
            &["-c", "echo out; echo first >&2; echo 'last words' >&2; exit 3"],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(ran.status.code(), Some(3));
        assert_eq!(ran.stdout, "out\n");
        assert!(
            ran.reason().starts_with("last words (xl exit status: 3"),
            "{}",
            ran.reason()
        );
        let e = run(Path::new("/bin/sleep"), &["5"], Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        let e = run(Path::new("/nonexistent/xl"), &["list"], Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("cannot run /nonexistent/xl"), "{e}");
    }

    #[test]
    fn a_daemonised_child_holding_the_pipes_does_not_hold_the_caller() {
        let ran = run(
            Path::new("/bin/sh"),
            &["-c", "sleep 60 & echo $!; exit 0"],
            Duration::from_secs(30),
        )
        .unwrap();
        assert!(ran.status.success());
        let pid: i32 = ran.stdout.trim().parse().unwrap();
        let pid = nix::unistd::Pid::from_raw(pid);
        // Still there, holding the pipes: the run ended with the process it started.
        assert!(nix::sys::signal::kill(pid, None).is_ok());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
}
