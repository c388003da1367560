//! `tandem-libvirt-hook` talking to tandem over D-Bus: a private `dbus-daemon`
//! with a real `tandemd` whose peer never comes (so wait-for-all refuses every
//! start), with no daemon at all, and with a stand-in Hooks service that agrees
//! (the success path and the arguments sent).
//!
//! Needs `dbus-daemon`, `dbus-send` and root (see tests/bus/mod.rs).

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bus;

use bus::{run, running_as_root, Bus, FakeTandem, Out, Tandemd};
use std::time::Duration;

const HOOK: &str = env!("CARGO_BIN_EXE_tandem-libvirt-hook");

/// A domain whose disks are `sources` (`<source dev=...>`, targets vda, vdb, ...).
fn domain(name: &str, sources: &[&str]) -> String {
    let disks: String = sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "<disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='{s}'/>\
                 <target dev='vd{}' bus='virtio'/></disk>",
                char::from(b'a' + u8::try_from(i).unwrap())
            )
        })
        .collect();
    format!("<domain type='kvm'><name>{name}</name><memory>1024</memory><devices>{disks}</devices></domain>")
}

/// The hook as libvirt runs it: `DOMAIN OP SUBOP EXTRA`, the XML on stdin, a
/// fixed environment, drbdadm absent, the bus at `bus_address`.
fn hook(bus_address: &str, args: [&str; 4], xml: &str, extra_env: &[(&str, &str)]) -> Out {
    let address = bus_address.to_owned();
    let mut env = vec![
        ("DBUS_SYSTEM_BUS_ADDRESS", address.as_str()),
        ("TANDEM_DRBDADM", "/nonexistent/drbdadm"),
        ("TANDEM_HOOK_TIMEOUT_SECS", "20"),
    ];
    env.extend_from_slice(extra_env);
    let out = run(HOOK, &args, xml.as_bytes(), &env);
    assert_eq!(out.stdout, "", "a hook never writes to stdout: {args:?}");
    assert!(out.stderr.lines().count() <= 1, "one line at most: {out:?}");
    out
}

fn missing_bus() -> String {
    let dir = std::env::temp_dir().join(format!("tandem-hook-test-{}", std::process::id()));
    format!("unix:path={}", dir.join("no-bus").display())
}

#[test]
fn a_domain_without_drbd_disks_never_touches_the_bus() {
    let plain = domain("vm-plain", &["/var/lib/libvirt/images/a.img", "/dev/vg0/lv1"]);
    for args in [
        ["vm-plain", "prepare", "begin", "-"],
        ["vm-plain", "migrate", "begin", "-"],
        ["vm-plain", "release", "end", "-"],
        ["vm-plain", "started", "begin", "-"],
    ] {
        let out = hook(&missing_bus(), args, &plain, &[]);
        assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{args:?}");
    }
}

#[test]
fn without_tandem_every_acting_call_says_so_and_prepares_are_refused() {
    let xml = domain("vm-1", &["/dev/drbd/by-res/r0/0"]);
    // No bus at all.
    let address = missing_bus();
    let out = hook(&address, ["vm-1", "prepare", "begin", "-"], &xml, &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with(
            "tandem-libvirt-hook: could not reach tandem about the start of vm-1: cannot connect to the D-Bus \
             system bus (failed to connect to `unix:path="
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.ends_with("; the start is refused for safety\n"),
        "{}",
        out.stderr
    );
    let out = hook(&address, ["vm-1", "migrate", "begin", "-"], &xml, &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("tandem-libvirt-hook: could not reach tandem about the incoming migration of vm-1:")
            && out.stderr.ends_with("; the migration is refused for safety\n"),
        "{}",
        out.stderr
    );
    // A release cannot be refused (libvirt ignores the exit code); it says what was not done.
    let out = hook(&address, ["vm-1", "release", "end", "-"], &xml, &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("tandem-libvirt-hook: could not reach tandem about the release of vm-1:")
            && out
                .stderr
                .ends_with("; its DRBD resources may still be Primary here (libvirt ignores a failing release hook)\n"),
        "{}",
        out.stderr
    );

    // A bus, but no tandemd on it.
    if !running_as_root() {
        eprintln!("skipped the private-bus half: it needs root (tandem's bus policy)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    let out = hook(&bus.address, ["vm-1", "prepare", "begin", "-"], &xml, &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with(
            "tandem-libvirt-hook: could not reach tandem about the start of vm-1: tandemd is not running ("
        ) && out.stderr.contains("org.freedesktop.DBus.Error.ServiceUnknown")
            && out.stderr.ends_with("; the start is refused for safety\n"),
        "{}",
        out.stderr
    );
    // Quick: the hook does not wait for a tandemd that is not there.
    assert!(out.took < Duration::from_secs(5), "{:?}", out.took);
}

#[test]
fn a_tandemd_that_never_saw_its_peer_refuses_starts_and_migrations() {
    if !running_as_root() {
        eprintln!("skipped: needs root (tandem's bus policy)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    let daemon = Tandemd::start(dir.path(), &bus);
    let xml = domain("vm-1", &["/dev/drbd/by-res/r0/0", "/dev/drbd/by-res/r1"]);

    let out = hook(&bus.address, ["vm-1", "prepare", "begin", "-"], &xml, &[]);
    assert_eq!(out.code, 1, "{}", daemon.stderr());
    assert!(
        out.stderr.starts_with("tandem: tandem refuses to start vm-1: ") && out.stderr.contains("wait-for-all"),
        "{}",
        out.stderr
    );
    let out = hook(&bus.address, ["vm-1", "migrate", "begin", "-"], &xml, &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with("tandem: ") && out.stderr.contains("a migration needs it online"),
        "{}",
        out.stderr
    );
    // Release: tandemd demotes; without DRBD on this machine demoting fails and it says so.
    let out = hook(&bus.address, ["vm-1", "release", "end", "failed"], &xml, &[]);
    assert!(
        out.code == 0 && out.stderr.is_empty()
            || out.code == 1 && out.stderr.starts_with("tandem: ") && out.stderr.contains("could not demote"),
        "{out:?}"
    );
    // A resource tandem does not manage: the daemon's own words.
    let out = hook(
        &bus.address,
        ["vm-1", "prepare", "begin", "-"],
        &domain("vm-1", &["/dev/drbd/by-res/r9/0"]),
        &[],
    );
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            1,
            "tandem: resource r9 is not managed by tandem (it is not in [drbd] resources)\n"
        )
    );
    // A /dev/drbdN the hook cannot map (no drbdadm here): refused before asking.
    let out = hook(
        &bus.address,
        ["vm-1", "prepare", "begin", "-"],
        &domain("vm-1", &["/dev/drbd/by-res/r0/0", "/dev/drbd9"]),
        &[],
    );
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            1,
            "tandem-libvirt-hook: vm-1: cannot tell tandem which DRBD resource backs disk vdb (/dev/drbd9: no \
             configured resource has minor 9); the start is refused for safety\n"
        )
    );
    let out = hook(
        &bus.address,
        ["vm-plain", "prepare", "begin", "-"],
        &domain("vm-plain", &[]),
        &[],
    );
    assert_eq!((out.code, out.stderr.as_str()), (0, ""));
}

#[test]
fn the_hook_sends_the_plan_and_exits_0_when_tandem_agrees() {
    if !running_as_root() {
        eprintln!("skipped: needs root (tandem's bus policy)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    let tandem = FakeTandem::start(&bus);
    let xml = domain(
        "vm-1",
        &[
            "/dev/drbd/by-res/r0/0",
            "/dev/drbd/by-res/r1/0",
            "/dev/drbd/by-res/r0/1",
        ],
    );
    for (args, call) in [
        (
            ["vm-1", "migrate", "begin", "-"],
            r#"PrepareIncoming vm-1 ["r0", "r1"]"#,
        ),
        (["vm-1", "prepare", "begin", "-"], r#"PrepareStart vm-1 ["r0", "r1"]"#),
        (["vm-1", "release", "end", "migrated"], r#"Release vm-1 ["r0", "r1"]"#),
    ] {
        let out = hook(&bus.address, args, &xml, &[]);
        assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{args:?}");
        assert_eq!(tandem.calls().last().map(String::as_str), Some(call));
    }
    // A release with a disk the hook cannot name still releases the rest, and says so.
    let partly = domain("vm-2", &["/dev/drbd/by-res/r0/0", "/dev/drbd9"]);
    let out = hook(&bus.address, ["vm-2", "release", "end", "-"], &partly, &[]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            1,
            "tandem-libvirt-hook: vm-2: released r0, but cannot tell tandem which DRBD resource backs disk vdb \
             (/dev/drbd9: no configured resource has minor 9); it was not demoted\n"
        )
    );
    assert_eq!(tandem.calls().last().unwrap(), r#"Release vm-2 ["r0"]"#);
    // No answer in time: the call's own deadline, just before the watchdog's.
    let slow = domain("slow", &["/dev/drbd/by-res/r0/0"]);
    let out = hook(
        &bus.address,
        ["slow", "prepare", "begin", "-"],
        &slow,
        &[("TANDEM_HOOK_TIMEOUT_SECS", "2")],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with(
            "tandem-libvirt-hook: could not reach tandem about the start of slow: tandemd did not answer within 1."
        ) && out.stderr.ends_with(" s; the start is refused for safety\n"),
        "{}",
        out.stderr
    );
    assert!(out.took < Duration::from_secs(4), "{:?}", out.took);
}
