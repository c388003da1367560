//! Running external commands (`ip`, `iptables`, `cargo`) with errors that say
//! what was run and what it printed.

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// The command line of `cmd`, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn check(cmd: &Command, out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` to completion; its stdout on success, an error naming the
/// command, its exit status and its stderr otherwise.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))?;
    check(cmd, out)
}

/// Runs `program args...`; see [`output`].
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String> {
    output(Command::new(program).args(args))
}

/// Runs `cmd` with `input` on its stdin; see [`output`].
pub fn output_with_stdin(cmd: &mut Command, input: &str) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .with_context(|| format!("cannot write to the stdin of `{}`", describe(cmd)))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("cannot wait for `{}`", describe(cmd)))?;
    check(cmd, out)
}
