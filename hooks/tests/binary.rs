//! The real `tandem-libvirt-hook` binary: `--explain` output, exit codes, and
//! the hook invocations libvirt makes.

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{corpus_file, data, with_drbd_source};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HOOK: &str = env!("CARGO_BIN_EXE_tandem-libvirt-hook");
/// No bus at this address: an acting call cannot reach tandem (hook_dbus.rs
/// tests the calls that can).
const NO_BUS: &str = "unix:path=/nonexistent/tandem-test-bus";

/// The hook could not reach tandem about `subject` and refused or reported it.
fn unreachable(out: &Out, subject: &str) -> bool {
    out.code == 1
        && out.stderr.lines().count() == 1
        && out.stderr.starts_with(&format!(
            "tandem-libvirt-hook: could not reach tandem about {subject}: "
        ))
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the hook with `stdin` and the given environment; drbdadm and the bus
/// are absent unless a test names them, so the host's DRBD configuration and
/// tandemd play no part.
fn run(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(HOOK);
    cmd.args(args)
        .env("TANDEM_DRBDADM", "/nonexistent/drbdadm")
        .env("DBUS_SYSTEM_BUS_ADDRESS", NO_BUS)
        .env_remove("TANDEM_HOOK_TIMEOUT_SECS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    // The hook may exit without reading stdin (as libvirt allows): a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn explain(xml: &str, env: &[(&str, &str)]) -> Out {
    run(&["--explain"], xml.as_bytes(), env)
}

/// A stand-in drbdadm that prints tests/data/drbd/dump-xml-two-node.xml.
fn fake_drbdadm(name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("hooks-binary");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.{}", std::process::id()));
    std::fs::write(&tmp, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path.to_string_lossy().into_owned()
}

fn sample_drbdadm() -> String {
    let sample = data("drbd/dump-xml-two-node.xml");
    fake_drbdadm(
        "sample",
        &format!("[ \"$1\" = dump-xml ] || exit 3\ncat '{}'", sample.display()),
    )
}

#[test]
fn explain_no_drbd_disk_is_an_empty_array() {
    for file in [
        "qemuxml2argvdata_disk-aio.xml",
        "libxlxml2domconfigdata_basic-pv.xml",
        "xlconfigdata_test-disk-positional-parms-partial.xml",
    ] {
        let out = explain(&corpus_file(file), &[]);
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (0, "[]\n", ""),
            "{file}"
        );
    }
}

#[test]
fn explain_prints_the_documented_json() {
    let (xml, target) = with_drbd_source(&corpus_file("qemuxml2argvdata_disk-aio.xml"), "/dev/drbd/by-res/r7/0");
    assert_eq!(target.as_deref(), Some("hda"));
    let out = explain(&xml, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "[{\"resource\": \"r7\", \"volume\": 0, \"source\": \"/dev/drbd/by-res/r7/0\", \"target\": \"hda\"}]\n"
    );

    let (xml, target) = with_drbd_source(
        &corpus_file("libxlxml2domconfigdata_basic-pv.xml"),
        "/dev/drbd/by-res/r7",
    );
    let out = explain(&xml, &[]);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{"resource": "r7", "volume": null, "source": "/dev/drbd/by-res/r7", "target": target}])
    );
}

#[test]
fn explain_several_disks_in_order() {
    let xml = "<domain><name>d</name><devices>\
        <disk type='block'><source dev='/dev/drbd/by-res/a/1'/><target dev='vda'/></disk>\
        <disk type='file'><source file='/srv/x.img'/><target dev='vdb'/></disk>\
        <disk type='block'><source dev='/dev/drbd/by-res/b'/></disk>\
        </devices></domain>";
    let out = explain(xml, &[]);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"resource": "a", "volume": 1, "source": "/dev/drbd/by-res/a/1", "target": "vda"},
            {"resource": "b", "volume": null, "source": "/dev/drbd/by-res/b", "target": null},
        ])
    );
}

#[test]
fn explain_minor_resolved_through_drbdadm_or_reported_as_minor() {
    let (xml, target) = with_drbd_source(&corpus_file("qemuxml2argvdata_disk-aio.xml"), "/dev/drbd3");
    let target = target.unwrap();
    let drbdadm = sample_drbdadm();
    let out = explain(&xml, &[("TANDEM_DRBDADM", &drbdadm)]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""));
    assert_eq!(
        out.stdout,
        format!("[{{\"resource\": \"r7\", \"volume\": 0, \"source\": \"/dev/drbd3\", \"target\": \"{target}\"}}]\n")
    );

    // No drbdadm at all: the minor, and no complaint.
    let out = explain(&xml, &[]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""));
    assert_eq!(
        out.stdout,
        format!("[{{\"minor\": 3, \"volume\": null, \"source\": \"/dev/drbd3\", \"target\": \"{target}\"}}]\n")
    );

    // A drbdadm that fails: the minor, and one warning line.
    let broken = fake_drbdadm("broken", "echo 'drbd.conf:3: Parse error' >&2; exit 10");
    let out = explain(&xml, &[("TANDEM_DRBDADM", &broken)]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.starts_with("[{\"minor\": 3,"), "{}", out.stdout);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("drbd.conf:3: Parse error"), "{}", out.stderr);
}

#[test]
fn explain_by_disk_through_drbdadm() {
    let (xml, target) = with_drbd_source(
        &corpus_file("qemuxml2argvdata_disk-aio.xml"),
        "/dev/drbd/by-disk/vg0/lv7",
    );
    let out = explain(&xml, &[("TANDEM_DRBDADM", &sample_drbdadm())]);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{"resource": "r7", "volume": 0, "source": "/dev/drbd/by-disk/vg0/lv7", "target": target}])
    );
    let out = explain(&xml, &[]);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json[0]["disk"], "/dev/vg0/lv7");
    assert!(json[0].get("resource").is_none());
}

#[test]
fn explain_malformed_and_empty_input() {
    let out = explain("<domain>\n<devices>\n</device>\n</domain>\n", &[]);
    assert_eq!((out.code, out.stdout.as_str()), (1, ""));
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("tandem-libvirt-hook: domain XML on stdin: line 3, column 1"),
        "{}",
        out.stderr
    );
    for empty in ["", "\n  \n"] {
        let out = explain(empty, &[]);
        assert_eq!(out.code, 1);
        assert_eq!(
            out.stderr,
            "tandem-libvirt-hook: domain XML on stdin: the input is empty (expected libvirt domain XML)\n"
        );
    }
    let out = run(&["--explain"], b"<domain>\xff</domain>", &[]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("UTF-8"), "{}", out.stderr);
}

#[test]
fn unknown_options_are_usage_errors() {
    for args in [
        &["--bogus"][..],
        &["--explain", "extra"],
        &["-q"],
        &["--explain", "--bogus"],
    ] {
        let out = run(args, b"", &[]);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("error: unexpected argument"),
            "{args:?}: {}",
            out.stderr
        );
        assert_eq!(out.stdout, "");
    }
    let out = run(&["--help"], b"", &[]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("--explain"));
    for args in [&[][..], &["vm1"], &["vm1", "prepare"]] {
        let out = run(args, b"", &[]);
        assert_eq!(out.code, 2, "{args:?}");
        assert!(out.stderr.contains("DOMAIN OPERATION SUBOP"), "{}", out.stderr);
    }
}

#[test]
fn migrate_begin_prints_nothing_on_stdout() {
    let plain = corpus_file("qemuxml2argvdata_disk-aio.xml");
    let (drbd, _) = with_drbd_source(&plain, "/dev/drbd/by-res/r7/0");
    // No DRBD disk: nothing to do.
    let out = run(&["QEMUGuest1", "migrate", "begin", "-"], plain.as_bytes(), &[]);
    assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (0, "", ""));
    // A DRBD disk: the daemon is needed, and unreachable here: refused, silently on stdout.
    let out = run(&["QEMUGuest1", "migrate", "begin", "-"], drbd.as_bytes(), &[]);
    assert_eq!(out.stdout, "");
    assert!(
        unreachable(&out, "the incoming migration of QEMUGuest1"),
        "{}",
        out.stderr
    );
    for op in [
        ["restore", "begin", "-"],
        ["prepare", "begin", "-"],
        ["release", "end", "migrated"],
    ] {
        let out = run(&["QEMUGuest1", op[0], op[1], op[2]], drbd.as_bytes(), &[]);
        assert_eq!(out.stdout, "", "{op:?}");
    }
}

#[test]
fn acting_operations_with_drbd_disks_ask_the_daemon() {
    let (drbd, _) = with_drbd_source(&corpus_file("qemuxml2argvdata_disk-aio.xml"), "/dev/drbd/by-res/r7/0");
    for (op, subject) in [
        (["prepare", "begin", "-"], "the start of QEMUGuest1"),
        (["release", "end", "-"], "the release of QEMUGuest1"),
        (["release", "end", "failed"], "the release of QEMUGuest1"),
    ] {
        let out = run(&["QEMUGuest1", op[0], op[1], op[2]], drbd.as_bytes(), &[]);
        assert!(unreachable(&out, subject), "{op:?}: {}", out.stderr);
    }
    // A domain named like an option is still a hook call when libvirt passes four arguments.
    let out = run(&["-x", "prepare", "begin", "-"], drbd.as_bytes(), &[]);
    assert!(unreachable(&out, "the start of -x"), "{}", out.stderr);
    let out = run(&["-x", "prepare", "begin", "-"], b"<domain/>", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn acting_operations_refuse_unreadable_xml() {
    let out = run(&["vm1", "prepare", "begin", "-"], b"<domain><devices>", &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("tandem-libvirt-hook: vm1 prepare begin: domain XML on stdin: line 1"),
        "{}",
        out.stderr
    );
    let out = run(&["vm1", "migrate", "begin", "-"], b"", &[]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("the input is empty"), "{}", out.stderr);
    assert_eq!(out.stdout, "");
}

/// Exit status of the hook run with a stdin that stays open and empty, or
/// `None` if it is still running after `limit`.
fn exit_with_open_stdin(args: &[&str], env: &[(&str, &str)], limit: Duration) -> (Option<i32>, String) {
    let mut cmd = Command::new(HOOK);
    cmd.args(args)
        .env("TANDEM_DRBDADM", "/nonexistent/drbdadm")
        .env("DBUS_SYSTEM_BUS_ADDRESS", NO_BUS)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdin = child.stdin.take();
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    drop(stdin);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (code, stderr)
}

#[test]
fn operations_tandem_ignores_exit_without_reading_stdin() {
    for op in [
        ["start", "begin", "-"],
        ["started", "begin", "-"],
        ["stopped", "end", "-"],
        ["restore", "begin", "-"],
        ["reconnect", "begin", "-"],
        ["attach", "begin", "-"],
        ["frobnicate", "begin", "-"],
    ] {
        let (code, stderr) = exit_with_open_stdin(&["vm1", op[0], op[1], op[2]], &[], Duration::from_secs(5));
        assert_eq!(code, Some(0), "{op:?} did not exit at once: {stderr}");
        if op[0] == "frobnicate" {
            assert_eq!(
                stderr,
                "tandem-libvirt-hook: warning: vm1: operation 'frobnicate begin' is unknown to this version \
                 of tandem; letting it through\n"
            );
        } else {
            assert_eq!(stderr, "", "{op:?}");
        }
    }
}

#[test]
fn odd_domain_names_do_not_break_the_stderr_line() {
    let out = run(&["evil\nname", "frobnicate", "begin", "-"], b"", &[]);
    assert_eq!(out.code, 0);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("evil\\nname"), "{}", out.stderr);
    let out = run(&["evil\nname", "prepare", "begin", "-"], b"<domain>", &[]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

#[test]
fn a_hung_stdin_times_out_and_refuses() {
    let started = Instant::now();
    let (code, stderr) = exit_with_open_stdin(
        &["vm1", "prepare", "begin", "-"],
        &[("TANDEM_HOOK_TIMEOUT_SECS", "1")],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr, "tandem-libvirt-hook: vm1 prepare begin: timed out after 1 s\n");
    assert!(started.elapsed() < Duration::from_secs(5));
}
