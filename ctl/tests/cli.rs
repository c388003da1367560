//! tandemctl as an admin runs it.

// The BMC helper below is test code too (clippy.toml only covers #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

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

/// An ipmi_sim BMC whose chassis power lives in a file; killed on drop.
struct Bmc {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Bmc {
    fn start() -> Bmc {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let power = dir.path().join("power");
        std::fs::write(&power, "1\n").unwrap();
        let script = dir.path().join("chassis");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n# NODE get power | NODE set power 0|1\nif [ \"$2\" = get ]; then echo \"power:$(cat {p})\"; \
                 else [ \"$3\" = power ] && echo \"$4\" > {p}; fi\nexit 0\n",
                p = power.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let lan = dir.path().join("lan.conf");
        std::fs::write(
            &lan,
            format!(
                "name \"bmc-b\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    priv_limit admin\n    \
                 allowed_auths_admin none md2 md5 straight\n    allowed_auths_operator none md2 md5 straight\n    \
                 guid a123456789abcdefa123456789abcdef\n  endlan\n  chassis_control \"{} beta\"\n  \
                 user 2 true \"admin\" \"s3cret\" admin 10 none md2 md5 straight\n",
                script.display()
            ),
        )
        .unwrap();
        let emu = dir.path().join("node.emu");
        std::fs::write(
            &emu,
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n",
        )
        .unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let child = Command::new("ipmi_sim")
            .arg("-c")
            .arg(&lan)
            .arg("-f")
            .arg(&emu)
            .arg("-s")
            .arg(&state)
            .args(["-n", "-p"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ipmi_sim (Debian package openipmi; make test installs it)");
        std::thread::sleep(std::time::Duration::from_millis(300));
        Bmc { child, port, dir }
    }

    fn power(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("power"))
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fence_config(dir: &std::path::Path, bmc: &Bmc) -> std::path::PathBuf {
    let pass = dir.join("bmc.pass");
    std::fs::write(&pass, "s3cret\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = dir.join("tandem.toml");
    std::fs::write(
        &path,
        format!(
            "[cluster]\nname = \"x\"\n[node.alpha]\naddresses = [\"192.0.2.1\"]\nfence = []\n[node.beta]\n\
             addresses = [\"192.0.2.2\"]\n[[node.beta.fence]]\n[[node.beta.fence.device]]\nkind = \"ipmi\"\n\
             address = \"127.0.0.1\"\nport = {}\nusername = \"admin\"\npassword_file = \"{}\"\ncipher_suite = 3\n\
             timeout_ms = 3000\n[drbd]\nresources = [\"r0\"]\n[hypervisor]\nkind = \"none\"\n",
            bmc.port,
            pass.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn fence_direct_reports_and_changes_power_through_the_bmc() {
    let bmc = Bmc::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = fence_config(dir.path(), &bmc);
    let run = |action: &str| {
        tandemctl()
            .args(["fence", "beta", "--direct", "--action", action, "--config"])
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let status = run("status");
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(String::from_utf8_lossy(&status.stdout).contains("power on"));

    let off = run("off");
    assert!(off.status.success(), "{}", String::from_utf8_lossy(&off.stderr));
    assert_eq!(bmc.power(), "0", "the BMC really powered the node off");
    assert_eq!(
        run("status").status.code(),
        Some(2),
        "status of an off node exits 2, as fence-agents do"
    );

    let on = run("on");
    assert!(on.status.success());
    assert_eq!(bmc.power(), "1");
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&on.stdout),
        String::from_utf8_lossy(&on.stderr)
    );
    assert!(!shown.contains("s3cret"), "the BMC password never shows: {shown}");
}

#[test]
fn fence_without_direct_says_what_to_do_and_wrong_node_is_named() {
    // Through the daemon, but there is no bus: one line that says so.
    let out = tandemctl()
        .args(["fence", "beta"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/tandem-test-bus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the system bus"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = tandemctl().args(["fence", "beta", "--action", "on"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --direct"));

    let bmc = Bmc::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = fence_config(dir.path(), &bmc);
    let out = tandemctl()
        .args(["fence", "gamma", "--direct", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no node \"gamma\""));
}
