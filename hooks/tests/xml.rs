//! The domain XML reader on hand-written documents: what libvirt may emit is
//! read, what is not XML is refused with its position.

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tandem_hooks::drbd::needs_drbd_map;
use tandem_hooks::{drbd_disks, parse_domain_xml, parse_domain_xml_bytes, DrbdMap, XmlError};

fn err(xml: &str) -> (usize, usize, String) {
    match parse_domain_xml(xml) {
        Err(XmlError::At {
            line, column, message, ..
        }) => (line, column, message),
        other => panic!("expected a positioned error for {xml:?}, got {other:?}"),
    }
}

#[test]
fn tolerates_what_libvirt_emits() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE domain>
<!-- a comment, with <disk> inside: not a disk -->
<?some-processing instruction?>
<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0' type='kvm' id='7'>
  <name><![CDATA[web]]>&amp;db&#x31;</name>
  <uuid>
    c7a5fdbd-edaf-9455-926a-d65c16db1809
  </uuid>
  <metadata>
    <app:disk xmlns:app="http://example.com/app"><source dev="/dev/drbd/by-res/meta"/></app:disk>
    <disk><source dev="/dev/drbd/by-res/not-a-device"/></disk>
  </metadata>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk device="disk" type="block"><target bus="virtio" dev="vda"/><driver name='qemu' type='raw' cache='none'/>
      <source dev="/dev/drbd/by-res/r&amp;d/1" startupPolicy='optional'><seclabel model='dac' relabel='no'/></source>
      <backingStore/>
    </disk>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/top.qcow2'/>
      <backingStore type='block' index='1'>
        <format type='raw'/>
        <source dev='/dev/drbd/by-res/base/0'/>
        <backingStore type='file' index='2'><source file='/dev/drbd/by-res/basebase'/><backingStore/></backingStore>
      </backingStore>
      <mirror type='block' job='copy'><source dev='/dev/drbd/by-res/mirror-is-not-used'/></mirror>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='network' device='cdrom'>
      <source protocol='http' name='/iso.iso'><host name='example.org' port='80'/></source>
      <target dev='sda' bus='sata'/><readonly/>
    </disk>
    <hostdev><disk><source dev='/dev/drbd/by-res/nested'/></disk></hostdev>
    <disk type='block'/>
  </devices>
  <qemu:commandline><qemu:arg value='-drive'/><qemu:arg value='file=/dev/drbd/by-res/qemu-arg'/></qemu:commandline>
  <qemu:disk><source dev='/dev/drbd/by-res/ns'/></qemu:disk>
</domain>
"#;
    let info = parse_domain_xml(xml).unwrap();
    assert_eq!(info.name.as_deref(), Some("web&db1"));
    assert_eq!(info.uuid.as_deref(), Some("c7a5fdbd-edaf-9455-926a-d65c16db1809"));
    assert_eq!(info.disks.len(), 4);
    assert_eq!(info.disks[2].source.as_ref().unwrap().protocol.as_deref(), Some("http"));
    assert_eq!(info.disks[2].device.as_deref(), Some("cdrom"));
    assert_eq!(info.disks[3].source, None);
    let found: Vec<(String, Option<u32>, String, Option<String>)> = drbd_disks(&info, &DrbdMap::empty())
        .into_iter()
        .map(|d| (d.resource.unwrap().0, d.volume, d.source, d.target))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                "r&d".into(),
                Some(1),
                "/dev/drbd/by-res/r&d/1".into(),
                Some("vda".into())
            ),
            (
                "base".into(),
                Some(0),
                "/dev/drbd/by-res/base/0".into(),
                Some("vdb".into())
            ),
            (
                "basebase".into(),
                None,
                "/dev/drbd/by-res/basebase".into(),
                Some("vdb".into())
            ),
        ]
    );
}

#[test]
fn xen_driver_name_drbd_with_a_bare_resource() {
    let xml = "<domain type='xen'><name>x</name><devices>\
        <disk type='file' device='disk'><driver name='drbd'/><source file='r3'/><target dev='xvda'/></disk>\
        <disk type='file' device='disk'><driver name='file'/><source file='r4'/><target dev='xvdb'/></disk>\
        </devices></domain>";
    let info = parse_domain_xml(xml).unwrap();
    let disks = drbd_disks(&info, &DrbdMap::empty());
    assert_eq!(disks.len(), 1);
    assert_eq!(disks[0].resource.as_ref().map(|r| r.0.as_str()), Some("r3"));
    assert_eq!(disks[0].target.as_deref(), Some("xvda"));
}

#[test]
fn accepts_a_byte_order_mark_and_crlf() {
    let xml = "\u{feff}<domain>\r\n<name>a</name>\r\n<devices><disk type='block'><source dev='/dev/drbd7'/></disk></devices></domain>\r\n";
    let info = parse_domain_xml(xml).unwrap();
    assert!(needs_drbd_map(&info));
    assert_eq!(drbd_disks(&info, &DrbdMap::empty())[0].minor, Some(7));
}

#[test]
fn empty_input() {
    assert_eq!(parse_domain_xml(""), Err(XmlError::Empty));
    assert_eq!(parse_domain_xml(" \n\t"), Err(XmlError::Empty));
    assert_eq!(parse_domain_xml_bytes(b""), Err(XmlError::Empty));
    assert_eq!(
        XmlError::Empty.to_string(),
        "the input is empty (expected libvirt domain XML)"
    );
}

#[test]
fn malformed_documents_name_line_and_column() {
    let (line, col, msg) = err("<domain>\n  <devices>\n  </device>\n</domain>");
    assert_eq!((line, col), (3, 3), "{msg}");
    assert!(msg.contains("devices") && msg.contains("device"), "{msg}");

    let (line, _, msg) = err("<domain>\n<devices>\n<disk type='block'>\n");
    assert_eq!(line, 4);
    assert!(msg.contains("<disk>") && msg.contains("line 3"), "{msg}");

    let (line, col, msg) = err("<domain>\n <disk type='a' type='b'/></domain>");
    assert_eq!((line, col), (2, 17));
    assert_eq!(msg, "in <disk>: a duplicate attribute (type)");

    let (_, _, msg) = err("<domain/><domain/>");
    assert!(msg.contains("second root"), "{msg}");

    let (_, _, msg) = err("<network><name>n</name></network>");
    assert!(msg.contains("<network>") && msg.contains("<domain>"), "{msg}");

    let (_, _, msg) = err("hello <domain/>");
    assert!(msg.contains("text outside"), "{msg}");

    let (_, _, msg) = err("<!-- only a comment -->");
    assert!(msg.contains("no root element"), "{msg}");

    let (_, _, msg) = err("<domain><devices><disk><source dev='/dev/&bogus;'/></disk></devices></domain>");
    assert!(msg.contains("bogus") && msg.contains("source"), "{msg}");

    let (_, _, msg) = err("<domain><name>&nope;</name></domain>");
    assert!(msg.contains("&nope;"), "{msg}");

    let (_, _, msg) = err("<domain><devices><disk dev=/dev/x/></devices></domain>");
    assert!(msg.contains("<disk>"), "{msg}");

    let (line, _, msg) = err("<domain>\n<devices>\n<disk\n");
    assert_eq!(line, 3, "{msg}");

    let (_, _, msg) = err("<domain></domain></domain>");
    assert!(!msg.is_empty());

    let (_, _, msg) = err("<domain><!-- unterminated");
    assert!(msg.contains("comment"), "{msg}");
}

#[test]
fn unknown_entities_elsewhere_do_not_matter() {
    // Declared in a DOCTYPE (never by libvirt): only values the hook reads are resolved.
    let xml = "<!DOCTYPE domain [<!ENTITY e \"x\">]><domain><description>&e;</description><name>n</name></domain>";
    assert_eq!(parse_domain_xml(xml).unwrap().name.as_deref(), Some("n"));
}

#[test]
fn invalid_utf8_names_its_byte() {
    let mut xml = b"<domain>\n<name>ab".to_vec();
    xml.push(0xff);
    xml.extend_from_slice(b"</name></domain>");
    match parse_domain_xml_bytes(&xml) {
        Err(XmlError::At {
            line,
            column,
            offset,
            message,
        }) => {
            assert_eq!((line, column, offset), (2, 9, 17));
            assert!(message.contains("UTF-8"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn error_display_is_one_line() {
    let e = parse_domain_xml("<domain>\n<a>\n</b>\n</domain>").unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("line 3, column 1 (byte 13): "), "{text}");
    assert!(!text.contains('\n'), "{text}");
}

#[test]
fn messages_stay_on_one_line() {
    assert_eq!(tandem_hooks::one_line("a\nb\r\tc\u{1}d", 100), "a\\nb\\r\\tc\\u{1}d");
    assert_eq!(tandem_hooks::one_line("abcdef", 3), "abc…");
    assert_eq!(tandem_hooks::one_line("é😀", 2), "é😀");
    // quick-xml quotes whole tags in its messages, newlines included.
    let e = parse_domain_xml("<domain><memory>\n<x>\n</memory\ny>").unwrap_err();
    assert!(!e.to_string().contains('\n'), "{e}");
}
