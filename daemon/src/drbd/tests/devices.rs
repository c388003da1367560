use super::sample;
use crate::core::ResourceName;
use crate::drbd::*;

#[test]
fn device_path_forms() {
    assert_eq!(parse_device_path("/dev/drbd0"), Some(DeviceRef::Minor(0)));
    assert_eq!(parse_device_path("/dev/drbd12"), Some(DeviceRef::Minor(12)));
    assert_eq!(
        parse_device_path("/dev/drbd/by-res/r0"),
        Some(DeviceRef::ByRes {
            resource: "r0".into(),
            volume: None
        })
    );
    assert_eq!(
        parse_device_path("/dev/drbd/by-res/vm-disk/1"),
        Some(DeviceRef::ByRes {
            resource: "vm-disk".into(),
            volume: Some(1)
        })
    );
    assert_eq!(
        parse_device_path("/dev/drbd/by-disk/vg/r0"),
        Some(DeviceRef::ByDisk("/dev/vg/r0".into()))
    );
    for not in [
        "/dev/sda",
        "/dev/drbd",
        "/dev/drbdx",
        "/dev/drbd/by-res/",
        "/dev/drbd/by-res/r0/x",
        "/dev/drbd/by-res/r0/1/2",
        "/dev/drbd/by-disk/",
        "/dev/drbd/by-disk/../etc/passwd",
        "drbd0",
    ] {
        assert_eq!(parse_device_path(not), None, "{not}");
    }
}

fn map() -> DeviceMap {
    DeviceMap::from_dump_xml(sample!("dump-xml-multi.xml"), "alpha").unwrap()
}

fn resolved(resource: &str, volume: Option<u32>) -> Option<Resolved> {
    Some(Resolved {
        resource: ResourceName::from(resource),
        volume,
    })
}

#[test]
fn real_dump_xml_maps_minors_resources_and_disks() {
    let m = map();
    assert_eq!(m.volumes.len(), 3);
    assert_eq!(m.resolve("/dev/drbd0"), resolved("r0", Some(0)));
    // `device minor 10;` has no path in dump-xml: the minor attribute counts.
    assert_eq!(m.resolve("/dev/drbd10"), resolved("vm-disk", Some(0)));
    assert_eq!(m.resolve("/dev/drbd11"), resolved("vm-disk", Some(1)));
    assert_eq!(m.resolve("/dev/drbd/by-res/r0"), resolved("r0", Some(0)));
    assert_eq!(m.resolve("/dev/drbd/by-res/r0/0"), resolved("r0", Some(0)));
    assert_eq!(m.resolve("/dev/drbd/by-res/vm-disk"), resolved("vm-disk", None));
    assert_eq!(m.resolve("/dev/drbd/by-res/vm-disk/1"), resolved("vm-disk", Some(1)));
    assert_eq!(m.resolve("/dev/drbd/by-disk/vg/vm0"), resolved("vm-disk", Some(0)));
    assert_eq!(m.resolve("/dev/drbd/by-disk/vg/r0"), resolved("r0", Some(0)));
    assert_eq!(m.resolve("/dev/drbd3"), None);
    assert_eq!(m.resolve("/dev/drbd/by-res/nosuch"), None);
    assert_eq!(m.resolve("/dev/drbd/by-res/vm-disk/7"), None);
    assert_eq!(m.minors().get(&11), Some(&ResourceName::from("vm-disk")));
}

#[test]
fn the_other_host_sees_its_own_disks() {
    let beta = DeviceMap::from_dump_xml(sample!("dump-xml-multi.xml"), "beta").unwrap();
    assert_eq!(
        beta.resolve("/dev/drbd/by-disk/vg/other0"),
        resolved("vm-disk", Some(0))
    );
    assert_eq!(beta.resolve("/dev/drbd/by-disk/vg/vm0"), None);
    // An unknown host still maps minors, never disks.
    let nobody = DeviceMap::from_dump_xml(sample!("dump-xml-multi.xml"), "gamma").unwrap();
    assert_eq!(nobody.resolve("/dev/drbd10"), resolved("vm-disk", Some(0)));
    assert_eq!(nobody.resolve("/dev/drbd/by-disk/vg/vm0"), None);
}

#[test]
fn broken_xml_is_an_error() {
    assert!(DeviceMap::from_dump_xml("<config><resource name=\"r0\"><host", "alpha").is_err());
}
