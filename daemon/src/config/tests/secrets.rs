//! Reading passwords: file checks, scripts, timeouts, redaction.

use super::super::secret::MAX_SECRET_LEN;
use super::*;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn file_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bmc.pass");
    write_mode(&p, "hunter2\r\nsecond line\n", 0o600);
    let s = Secret::file(&p).read().unwrap();
    assert_eq!(s.expose(), "hunter2");
    assert_eq!(format!("{s:?}"), "SecretString(<redacted>)");
    assert_eq!(s.to_string(), "<redacted>");

    write_mode(&p, "no newline", 0o400);
    assert_eq!(Secret::file(&p).read().unwrap().expose(), "no newline");

    write_mode(&p, "\nhunter2\n", 0o600);
    let e = Secret::file(&p).read().unwrap_err();
    assert!(matches!(e, SecretError::Empty { .. }), "{e}");
}

#[test]
fn file_mode_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bmc.pass");
    for mode in [0o644, 0o640, 0o604, 0o620] {
        write_mode(&p, "hunter2\n", mode);
        let e = Secret::file(&p).read().unwrap_err();
        assert!(matches!(e, SecretError::Mode { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
    let e = Secret::file(dir.path()).read().unwrap_err();
    assert!(
        matches!(e, SecretError::NotAFile { .. } | SecretError::Mode { .. }),
        "{e}"
    );
    let e = Secret::file(dir.path().join("missing")).read().unwrap_err();
    assert!(matches!(e, SecretError::Io { .. }), "{e}");
    write_mode(&p, &"x".repeat(MAX_SECRET_LEN + 1), 0o600);
    assert!(matches!(
        Secret::file(&p).read().unwrap_err(),
        SecretError::TooLong { .. }
    ));
}

#[test]
fn file_owner_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bmc.pass");
    write_mode(&p, "hunter2\n", 0o600);
    // Only root can give a file away; elsewhere this check cannot be staged.
    if std::os::unix::fs::chown(&p, Some(65534), None).is_ok() {
        let e = Secret::file(&p).read().unwrap_err();
        assert!(matches!(e, SecretError::Owner { owner: 65534, .. }), "{e}");
    }
}

#[test]
fn script_first_line() {
    let s = Secret::script("printf 'from-script\\nsecond\\n'").read().unwrap();
    assert_eq!(s.expose(), "from-script");

    let e = Secret::script("echo oops >&2; printf 'hun%s\\n' ter2; exit 3")
        .read()
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, SecretError::Failed { .. }), "{msg}");
    assert!(msg.contains("exit status: 3") && msg.contains("oops"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");

    let e = Secret::script("true").read().unwrap_err();
    assert!(matches!(e, SecretError::Empty { .. }), "{e}");
}

#[test]
fn hanging_script_times_out() {
    let started = Instant::now();
    let e = Secret::script("echo partial; sleep 30")
        .with_timeout(Duration::from_millis(300))
        .read()
        .unwrap_err();
    assert!(matches!(e, SecretError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("300 ms"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // Closing stdout does not count as finishing.
    let e = Secret::script("echo pw; exec >&-; sleep 30")
        .with_timeout(Duration::from_millis(300))
        .read()
        .unwrap_err();
    assert!(matches!(e, SecretError::Timeout { .. }), "{e}");
}

#[test]
fn config_lists_secrets() {
    let c = check_str(FILE, EXAMPLE).unwrap();
    let names: Vec<String> = c.secrets().iter().map(|(n, s)| format!("{n}: {s}")).collect();
    assert_eq!(
        names,
        [
            "alpha: secret file /etc/tandem/bmc-alpha.pass",
            "alpha: secret file /etc/tandem/bmc-alpha.pass",
            "beta: password script `/usr/local/bin/get-bmc-password beta`",
        ]
    );
}
