//! block-drbd with entries libxl would not write, or without tandem: a clear
//! line, `hotplug-status` `error` with it as `hotplug-error`, and nothing else
//! changed (no DRBD role, no other xenstore key). No bus is needed: none of
//! these reach tandem (the address points nowhere, so a call would fail).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{backend, define_domain, Lab};

const BE: &str = "backend/vbd/1/51712";

/// Runs `add` on a fresh vm1 disk after `edit`, and checks the failure.
fn add_fails(edit: impl FnOnce(&Lab), line: &str) {
    let lab = Lab::new();
    define_domain(&lab, 1, "vm1", &[(51712, "r0")]);
    edit(&lab);
    let before = lab.snapshot();
    let out = lab.block("add", Some(BE));
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (1, "", format!("{line}\n").as_str())
    );
    assert_eq!(lab.read(&format!("{BE}/hotplug-status")).as_deref(), Some("error"));
    assert_eq!(lab.read(&format!("{BE}/hotplug-error")).as_deref(), Some(line));
    let mut after = lab.snapshot();
    for key in ["hotplug-status", "hotplug-error"] {
        after.rm(&format!("/local/domain/0/{BE}/{key}")).unwrap();
    }
    assert_eq!(after, before, "only the error was written");
    assert_eq!(lab.role("r0"), "Secondary");
}

#[test]
fn missing_entries_are_named() {
    let key = |k: &str| format!("/local/domain/0/{BE}/{k}");
    for k in ["params", "mode", "frontend-id"] {
        add_fails(|lab| lab.rm(&key(k)), &format!("block-drbd: {BE}/{k} is missing"));
    }
    add_fails(
        |lab| lab.rm("/local/domain/1/name"),
        "block-drbd: /local/domain/1/name is missing",
    );
}

#[test]
fn malformed_entries_are_quoted() {
    let key = |k: &str| format!("/local/domain/0/{BE}/{k}");
    let forms = "not a DRBD resource (RES, drbd:RES, RES/VOLUME, /dev/drbd/by-res/RES[/VOLUME] or /dev/drbdMINOR)";
    for params in ["/dev/sda", "r0;reboot", "drbd:", "r0/x"] {
        add_fails(
            |lab| lab.write(&[(&key("params"), params)]),
            &format!("block-drbd: {BE}/params is {params:?}: {forms}"),
        );
    }
    add_fails(
        |lab| lab.write(&[(&key("params"), " ")]),
        &format!("block-drbd: {BE}/params is \" \": empty"),
    );
    add_fails(
        |lab| lab.write(&[(&key("mode"), "x")]),
        &format!("block-drbd: {BE}/mode is \"x\": not r or w (Xen's disk access modes)"),
    );
    add_fails(
        |lab| lab.write(&[(&key("frontend-id"), "one")]),
        &format!("block-drbd: {BE}/frontend-id is \"one\": not a domain id"),
    );
    add_fails(
        |lab| lab.write(&[(&key("frontend-id"), "2")]),
        &format!("block-drbd: {BE}/frontend-id is \"2\": XENBUS_PATH names domain 1"),
    );
}

#[test]
fn resources_the_drbd_configuration_cannot_place_are_refused_before_asking() {
    let key = format!("/local/domain/0/{BE}/params");
    add_fails(
        |lab| lab.write(&[(&key, "r7")]),
        "block-drbd: resource r7 is not in this host's DRBD configuration (drbdadm dump-xml)",
    );
    add_fails(
        |lab| lab.write(&[(&key, "drbd:r2")]),
        "block-drbd: resource r2 has volumes 0, 1: name one, as target=r2/VOLUME",
    );
    add_fails(
        |lab| lab.write(&[(&key, "/dev/drbd42")]),
        "block-drbd: no configured DRBD resource has minor 42",
    );
}

#[test]
fn without_xenbus_path_or_command_nothing_is_written() {
    let lab = Lab::new();
    define_domain(&lab, 1, "vm1", &[(51712, "r0")]);
    let before = lab.snapshot();
    let out = lab.block("add", None);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (1, "block-drbd: XENBUS_PATH is not set\n")
    );
    for action in ["online", ""] {
        let out = lab.block(action, Some(BE));
        assert_eq!(
            (out.code, out.stderr.as_str()),
            (
                1,
                "block-drbd: usage: block-drbd add|remove (with XENBUS_PATH set, as libxl and xend run it)\n"
            )
        );
    }
    assert_eq!(lab.snapshot(), before);
    // A path that is no vbd backend: said, and the error goes where it points.
    let out = lab.block("add", Some("backend/vif/1/0"));
    let line = "block-drbd: XENBUS_PATH \"backend/vif/1/0\" is not a vbd backend (backend/vbd/DOMID/DEVID)";
    assert_eq!((out.code, out.stderr.trim_end()), (1, line));
    assert_eq!(lab.read("backend/vif/1/0/hotplug-error").as_deref(), Some(line));
    assert_eq!(lab.role("r0"), "Secondary");
}

#[test]
fn without_tandem_the_start_is_refused_and_remove_says_what_it_could_not_do() {
    let lab = Lab::new();
    define_domain(&lab, 1, "vm1", &[(51712, "r0")]);
    let out = lab.block("add", Some(BE));
    assert_eq!(out.code, 1);
    let line = out.stderr.trim_end();
    assert!(
        line.starts_with(
            "block-drbd: could not reach tandem about the start of vm1: cannot connect to the D-Bus system bus"
        ) && line.ends_with("; the start is refused for safety"),
        "{line}"
    );
    assert_eq!(lab.read(&format!("{BE}/hotplug-error")).as_deref(), Some(line));
    assert_eq!(lab.read(&format!("{BE}/physical-device")), None);
    // tandemd may have promoted before the answer was lost: remove must ask to release.
    assert_eq!(lab.read(&format!("{BE}/tandem-domain")).as_deref(), Some("vm1"));
    let out = lab.block("remove", Some(BE));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("block-drbd: could not reach tandem about the release of vm1: ")
            && out.stderr.ends_with("; its DRBD resources may still be Primary here\n"),
        "{}",
        out.stderr
    );
    // An incoming migration says so.
    define_domain(&lab, 2, "vm2--incoming", &[(768, "r1")]);
    let out = lab.block("add", Some(&backend(2, 768)));
    assert!(
        out.stderr
            .starts_with("block-drbd: could not reach tandem about the incoming migration of vm2: ")
            && out.stderr.ends_with("; the migration is refused for safety\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn remove_without_an_attached_disk_does_nothing() {
    let lab = Lab::new();
    // No backend at all (libxl removed it after a first remove).
    let out = lab.block("remove", Some(BE));
    assert_eq!((out.code, out.stderr.as_str()), (0, ""));
    // A backend add never asked tandem for (it failed on its entries): no call,
    // which would fail here without a bus.
    define_domain(&lab, 1, "vm1", &[(51712, "/dev/sda")]);
    assert_eq!(lab.block("add", Some(BE)).code, 1);
    let out = lab.block("remove", Some(BE));
    assert_eq!((out.code, out.stderr.as_str()), (0, ""));
    assert_eq!(lab.read(&format!("{BE}/tandem-released")), None);
}

#[test]
fn add_exits_at_once_when_physical_device_is_written() {
    let lab = Lab::new();
    define_domain(&lab, 1, "vm1", &[(51712, "r0")]);
    lab.write(&[(&format!("{BE}/physical-device"), "93:0")]);
    let before = lab.snapshot();
    let out = lab.block("add", Some(BE));
    assert_eq!((out.code, out.stderr.as_str()), (0, ""));
    assert_eq!(lab.snapshot(), before);
}
