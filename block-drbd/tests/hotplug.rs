//! The hotplug sequences of `xl create`, `xl shutdown` and `xl destroy` with a
//! real `tandemd` (one node: its peer never comes) on a private `dbus-daemon`,
//! the DRBD stand-in and the xenstore stand-in; and with the hook's stand-in
//! Hooks service where a single tandemd cannot agree (an incoming migration).
//!
//! Needs `dbus-daemon`, `dbus-send` and root (tandem's bus policy lets only root
//! own org.tandem.Tandem1 and call Hooks).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::bus::{running_as_root, Bus, FakeTandem};
use common::{backend, define_domain, xl_create, xl_teardown, Lab, Out, Tandemd, Teardown};

fn ok(outs: &[Out]) {
    for o in outs {
        assert_eq!((o.code, o.stdout.as_str(), o.stderr.as_str()), (0, "", ""), "{o:?}");
    }
}

/// A lab whose scripts use a private system bus with tandem's policy; `None`
/// (the test is skipped, and says so) when not root, as that policy needs.
fn lab_on_a_private_bus() -> Option<(Lab, Bus)> {
    if !running_as_root() {
        eprintln!("skipped: needs root (tandem's bus policy)");
        return None;
    }
    let mut lab = Lab::new();
    let bus = Bus::start(lab.path());
    lab.bus_address = bus.address.clone();
    Some((lab, bus))
}

fn key(domid: u32, devid: u32, k: &str) -> String {
    format!("{}/{k}", backend(domid, devid))
}

#[test]
fn a_peerless_tandemd_refuses_starts_and_migrations_in_its_words() {
    let Some((lab, bus)) = lab_on_a_private_bus() else {
        return;
    };
    let daemon = Tandemd::start(&lab, &bus);

    // xl create under wait-for-all: refused, and libxl then destroys the domain.
    let out = &xl_create(&lab, 1, "vm1", &[(51712, "r0")])[0];
    let line = out.stderr.trim_end();
    assert_eq!(out.code, 1, "{}", daemon.stderr());
    assert!(
        line.starts_with("tandem: tandem refuses to start vm1: the peer has not been seen since tandem started")
            && line.contains("wait-for-all"),
        "{line}"
    );
    assert_eq!(lab.read(&key(1, 51712, "hotplug-status")).as_deref(), Some("error"));
    assert_eq!(lab.read(&key(1, 51712, "hotplug-error")).as_deref(), Some(line));
    assert_eq!(lab.read(&key(1, 51712, "physical-device")), None);
    assert_eq!(lab.role("r0"), "Secondary");
    // Nothing was promoted, so remove asks nothing.
    ok(&xl_teardown(&lab, 1, &[51712], Teardown::Destroy));

    // The receiving end of xl migrate: PrepareIncoming, refused for want of the peer.
    let out = &xl_create(&lab, 2, "vm2--incoming", &[(51712, "r1")])[0];
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with("tandem: tandem refuses the migration: ")
            && out.stderr.ends_with("; a migration needs it online\n"),
        "{}",
        out.stderr
    );
    ok(&xl_teardown(&lab, 2, &[51712], Teardown::Destroy));

    // A resource tandem does not manage (r9 is configured in DRBD, not in tandem).
    let out = &xl_create(&lab, 3, "vm3", &[(51712, "r9")])[0];
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            1,
            "tandem: resource r9 is not managed by tandem (it is not in [drbd] resources)\n"
        )
    );
    assert_eq!(lab.role("r9"), "Secondary");
}

#[test]
fn xl_create_shutdown_and_destroy_promote_and_demote_through_tandemd() {
    let Some((lab, bus)) = lab_on_a_private_bus() else {
        return;
    };
    let daemon = Tandemd::start(&lab, &bus);
    // An operator's fence of the absent peer lifts wait-for-all.
    daemon.fence_peer();

    // xl create with two disks, both forms of the disk line; the scripts run at once.
    let outs = xl_create(&lab, 1, "vm1", &[(51712, "r0"), (51728, "drbd:r1")]);
    for o in &outs {
        assert_eq!((o.code, o.stderr.as_str()), (0, ""), "{}", daemon.stderr());
    }
    for (devid, resource, mm, dev) in [(51712, "r0", "93:0", "/dev/drbd0"), (51728, "r1", "93:1", "/dev/drbd1")] {
        assert_eq!(lab.read(&key(1, devid, "physical-device")).as_deref(), Some(mm));
        assert_eq!(lab.read(&key(1, devid, "physical-device-path")).as_deref(), Some(dev));
        assert_eq!(lab.read(&key(1, devid, "node")).as_deref(), Some(dev));
        assert_eq!(lab.read(&key(1, devid, "hotplug-status")).as_deref(), Some("connected"));
        assert_eq!(lab.role(resource), "Primary");
    }
    // Hotplug may run add twice: the second run changes nothing.
    let before = lab.snapshot();
    ok(&[lab.block("add", Some(&backend(1, 51712)))]);
    assert_eq!(lab.snapshot(), before);

    // xl shutdown: both removed, both demoted; a late second remove finds no backend.
    ok(&xl_teardown(&lab, 1, &[51712, 51728], Teardown::Shutdown));
    assert_eq!(
        (lab.role("r0"), lab.role("r1")),
        ("Secondary".into(), "Secondary".into())
    );
    ok(&[lab.block("remove", Some(&backend(1, 51712)))]);

    // xl create on both volumes of r2, then xl destroy with every remove run twice.
    let outs = xl_create(&lab, 2, "vm2", &[(768, "r2/0"), (832, "/dev/drbd/by-res/r2/1")]);
    ok(&outs);
    assert_eq!(lab.read(&key(2, 832, "physical-device")).as_deref(), Some("93:3"));
    assert_eq!(lab.role("r2"), "Primary");
    let be = backend(2, 768);
    lab.write(&[(&format!("/local/domain/0/{be}/online"), "0")]);
    // The first volume goes while the second is attached: r2 stays Primary.
    ok(&[lab.block("remove", Some(&be)), lab.block("remove", Some(&be))]);
    assert_eq!(lab.role("r2"), "Primary");
    ok(&xl_teardown(&lab, 2, &[832, 768], Teardown::Destroy));
    assert_eq!(lab.role("r2"), "Secondary");

    // The same domain starts again after it is gone.
    ok(&xl_create(&lab, 3, "vm1", &[(51712, "r0")]));
    assert_eq!(lab.role("r0"), "Primary");
    ok(&xl_teardown(&lab, 3, &[51712], Teardown::Destroy));
    assert_eq!(lab.role("r0"), "Secondary");
}

#[test]
fn one_call_names_every_drbd_resource_of_the_domain() {
    let Some((lab, bus)) = lab_on_a_private_bus() else {
        return;
    };
    let tandem = FakeTandem::start(&bus);

    // xl migrate, receiving end: the first disk opens the window for all, the
    // second finds it open. One disk is not DRBD (libxl's own phy backend).
    define_domain(&lab, 5, "vm5--incoming", &[(51712, "r0"), (51728, "/dev/drbd1")]);
    lab.write(&[
        ("backend/vbd/5/51744/script", "/etc/xen/scripts/block"),
        ("backend/vbd/5/51744/params", "/dev/vg0/swap"),
    ]);
    ok(&[lab.block("add", Some(&backend(5, 51728)))]);
    ok(&[lab.block("add", Some(&backend(5, 51712)))]);
    assert_eq!(
        tandem.calls(),
        [
            r#"PrepareIncoming vm5 ["r0", "r1"]"#,
            r#"PrepareStart vm5 ["r0", "r1"]"#
        ]
    );
    assert_eq!(lab.read(&key(5, 51728, "physical-device")).as_deref(), Some("93:1"));
    // The migration completes: xl renames the domain; later, it stops here.
    lab.write(&[("/local/domain/5/name", "vm5")]);
    ok(&xl_teardown(&lab, 5, &[51712, 51728], Teardown::Shutdown));
    assert_eq!(tandem.calls()[2..], [r#"Release vm5 ["r0"]"#, r#"Release vm5 ["r1"]"#]);

    // xl migrate, sending end: the source is renamed NAME--migratedaway before
    // its devices go; the release is for NAME.
    ok(&xl_create(&lab, 6, "vm6", &[(51712, "r0")]));
    lab.write(&[("/local/domain/6/name", "vm6--migratedaway")]);
    ok(&xl_teardown(&lab, 6, &[51712], Teardown::Destroy));
    assert_eq!(
        tandem.calls()[4..],
        [r#"PrepareStart vm6 ["r0"]"#, r#"Release vm6 ["r0"]"#]
    );

    // Two volumes of one resource: the first remove releases nothing yet.
    ok(&xl_create(&lab, 7, "vm7", &[(768, "r2/0"), (832, "r2/1")]));
    ok(&xl_teardown(&lab, 7, &[768, 832], Teardown::Shutdown));
    assert_eq!(
        tandem.calls()[6..],
        [
            r#"PrepareStart vm7 ["r2"]"#,
            r#"PrepareStart vm7 ["r2"]"#,
            r#"Release vm7 []"#,
            r#"Release vm7 ["r2"]"#
        ]
    );
}
