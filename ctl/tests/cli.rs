//! tandemctl as an admin runs it.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn tandemctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tandemctl"))
}

#[test]
fn keygen_writes_a_0600_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authkey");
    let out = tandemctl().arg("keygen").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 64);
    let first = std::fs::read(&path).unwrap();

    let again = tandemctl().arg("keygen").arg(&path).output().unwrap();
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), first, "a refused keygen changed the key");

    let forced = tandemctl().args(["keygen", "--force"]).arg(&path).output().unwrap();
    assert!(forced.status.success());
    assert_ne!(std::fs::read(&path).unwrap(), first);
    // The key itself never reaches the terminal.
    let shown = String::from_utf8_lossy(&forced.stdout);
    assert!(shown.contains("fingerprint"));
}

#[test]
fn config_check_reports_every_error_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tandem.toml");
    std::fs::write(
        &path,
        "[cluster]\nname = \"x\"\n[timing]\ndead_after_ms = 10\n[node.a]\naddresses = [\"192.0.2.1\"]\nfence = []\n\
         [node.b]\naddresses = [\"192.0.2.2\", \"198.51.100.2\"]\nfence = []\n[drbd]\nresources = [\"r0\"]\n\
         [hypervisor]\nkind = \"none\"\n",
    )
    .unwrap();
    let out = tandemctl().args(["config", "check"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with(&*path.display().to_string()))
        .collect();
    assert!(lines.len() >= 2, "expected at least two located errors:\n{err}");
    assert!(
        lines.iter().any(|l| l.contains(":4:")),
        "dead_after_ms on line 4:\n{err}"
    );
    assert!(
        lines.iter().any(|l| l.contains("address")),
        "link count mismatch:\n{err}"
    );
}

#[test]
fn config_check_accepts_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/tandem.toml.example");
    let out = tandemctl().args(["config", "check", example]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}
