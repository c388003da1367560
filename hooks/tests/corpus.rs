//! libvirt's own domain XML (1254 files from libvirt 9.0.0's test suite): every
//! file reads without error and has no DRBD disk; with one disk's source
//! rewritten to a DRBD path, exactly that disk is found, with the right resource.
//!
//! All corpus files are well-formed XML (checked with Python's expat when the
//! tests were written), including the "invalid"/"bogus" ones: libvirt rejects
//! those for their content, not their syntax, so the hook must read them.

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{corpus, two_node_map, with_drbd_source};
use tandem_hooks::drbd::needs_drbd_map;
use tandem_hooks::{drbd_disks, parse_domain_xml, DrbdDisk, DrbdMap, ResourceName};

#[test]
fn every_corpus_file_parses_and_has_no_drbd_disk() {
    let map = two_node_map();
    let mut disks = 0;
    for (name, xml) in corpus() {
        let info = parse_domain_xml(&xml).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(info.name.is_some(), "{name}: no <name>");
        assert!(!needs_drbd_map(&info), "{name}: would run drbdadm");
        assert_eq!(drbd_disks(&info, &DrbdMap::empty()), vec![], "{name}");
        assert_eq!(drbd_disks(&info, &map), vec![], "{name}");
        disks += info.disks.len();
    }
    // grep -c "<disk " over the corpus counts 1122 (a few are in comments or
    // metadata); this guards against the parser silently seeing none.
    assert!(disks > 1000, "only {disks} disks found in the corpus");
}

#[test]
fn corpus_disk_details_match_libvirt() {
    let xml = common::corpus_file("qemuxml2argvdata_disk-aio.xml");
    let info = parse_domain_xml(&xml).unwrap();
    assert_eq!(info.name.as_deref(), Some("QEMUGuest1"));
    assert_eq!(info.uuid.as_deref(), Some("c7a5fdbd-edaf-9455-926a-d65c16db1809"));
    let d = &info.disks[0];
    assert_eq!(d.disk_type.as_deref(), Some("block"));
    assert_eq!(d.device.as_deref(), Some("disk"));
    assert_eq!(
        d.source.as_ref().unwrap().dev.as_deref(),
        Some("/dev/HostVG/QEMUGuest1")
    );
    assert_eq!(d.target.as_deref(), Some("hda"));
    assert_eq!(d.target_bus.as_deref(), Some("ide"));
    assert_eq!(info.disks[1].device.as_deref(), Some("cdrom"));
}

fn check_rewrite(path: &str, map: &DrbdMap, expect: impl Fn(&str, Option<String>) -> DrbdDisk) -> usize {
    let mut n = 0;
    for (name, xml) in corpus() {
        let (rewritten, target) = with_drbd_source(&xml, path);
        let info = parse_domain_xml(&rewritten).unwrap_or_else(|e| panic!("{name} rewritten: {e}"));
        let found = drbd_disks(&info, map);
        assert_eq!(found, vec![expect(path, target)], "{name} with {path}");
        n += 1;
    }
    n
}

fn disk(resource: Option<&str>, volume: Option<u32>, source: &str, target: Option<String>) -> DrbdDisk {
    DrbdDisk {
        resource: resource.map(ResourceName::from),
        volume,
        minor: None,
        lower_disk: None,
        source: source.to_owned(),
        target,
    }
}

#[test]
fn by_res_with_volume_in_every_file() {
    let n = check_rewrite("/dev/drbd/by-res/r7/0", &DrbdMap::empty(), |p, t| {
        disk(Some("r7"), Some(0), p, t)
    });
    assert!(n > 1000);
}

#[test]
fn by_res_without_volume_in_every_file() {
    check_rewrite("/dev/drbd/by-res/r7", &DrbdMap::empty(), |p, t| {
        disk(Some("r7"), None, p, t)
    });
}

#[test]
fn minor_through_the_map_in_every_file() {
    check_rewrite("/dev/drbd3", &two_node_map(), |p, t| DrbdDisk {
        minor: Some(3),
        ..disk(Some("r7"), Some(0), p, t)
    });
}

#[test]
fn minor_without_a_map_stays_a_minor() {
    check_rewrite("/dev/drbd3", &DrbdMap::empty(), |p, t| DrbdDisk {
        minor: Some(3),
        ..disk(None, None, p, t)
    });
}

#[test]
fn by_disk_through_the_map_in_every_file() {
    check_rewrite("/dev/drbd/by-disk/vg0/lv7", &two_node_map(), |p, t| DrbdDisk {
        lower_disk: Some("/dev/vg0/lv7".into()),
        ..disk(Some("r7"), Some(0), p, t)
    });
}

#[test]
fn xen_style_source_in_every_file() {
    check_rewrite("drbd:r7", &DrbdMap::empty(), |p, t| disk(Some("r7"), None, p, t));
}

#[test]
fn needs_map_only_for_minor_and_by_disk() {
    let xml = common::corpus_file("qemuxml2argvdata_disk-aio.xml");
    for (path, needs) in [
        ("/dev/drbd/by-res/r7/0", false),
        ("/dev/drbd/by-res/r7", false),
        ("drbd:r7", false),
        ("/dev/drbd3", true),
        ("/dev/drbd/by-disk/vg0/lv7", true),
        ("/dev/drbd_custom", true),
        ("/dev/vg0/lv7", false),
    ] {
        let (rewritten, _) = with_drbd_source(&xml, path);
        assert_eq!(needs_drbd_map(&parse_domain_xml(&rewritten).unwrap()), needs, "{path}");
    }
}
