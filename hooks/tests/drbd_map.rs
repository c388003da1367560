//! Device path forms, `drbdadm dump-xml` reading (samples printed by the real
//! drbd-utils 9.22.0, for DRBD 9 and 8.4 configurations), resolution, and the
//! drbdadm runner with its timeout.

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{read_data, two_node_map};
use std::time::{Duration, Instant};
use tandem_hooks::drbd::{parse_device_path, DevicePath};
use tandem_hooks::loader::{Drbdadm, LoadError};
use tandem_hooks::{DrbdMap, ResourceName};

fn rv(r: &str, v: u32) -> Option<(ResourceName, u32)> {
    Some((ResourceName::from(r), v))
}

#[test]
fn path_forms() {
    use DevicePath::*;
    let by_res = |r: &str, v: Option<u32>| {
        Some(ByRes {
            resource: r.into(),
            volume: v,
        })
    };
    for (path, want) in [
        ("/dev/drbd0", Some(Minor(0))),
        ("/dev/drbd1048575", Some(Minor(1_048_575))),
        ("/dev/drbd99999999999", None),
        ("/dev/drbd", None),
        ("/dev/drbd3p1", None),
        ("/dev/drbd/by-res/r0", by_res("r0", None)),
        ("/dev/drbd/by-res/vm-web/1", by_res("vm-web", Some(1))),
        ("/dev/drbd/by-res/r0/", None),
        ("/dev/drbd/by-res/r0/x", None),
        ("/dev/drbd/by-res/r0/0/1", None),
        ("/dev/drbd/by-res/", None),
        ("/dev/drbd/by-res//0", None),
        ("/dev/drbd/by-disk/vg0/lv7", Some(ByDisk("/dev/vg0/lv7".into()))),
        (
            "/dev/drbd/by-disk/mapper/vg0-web--data",
            Some(ByDisk("/dev/mapper/vg0-web--data".into())),
        ),
        ("/dev/drbd/by-disk/../sda", None),
        ("/dev/drbd/by-disk/", None),
        ("drbd:r0", Some(Xen("r0".into()))),
        ("drbd:", None),
        ("drbd:a/b", None),
        ("/dev/vg0/lv7", None),
        ("/var/lib/libvirt/images/drbd0.img", None),
        ("", None),
    ] {
        assert_eq!(parse_device_path(path), want, "{path}");
    }
}

#[test]
fn two_node_sample() {
    let map = two_node_map();
    type Row<'a> = (String, u32, Option<u32>, Option<&'a str>, Option<&'a str>, Vec<String>);
    let got: Vec<Row> = map
        .volumes
        .iter()
        .map(|v| {
            (
                v.resource.0.clone(),
                v.volume,
                v.minor,
                v.device.as_deref(),
                v.disk.as_deref(),
                v.hosts.clone(),
            )
        })
        .collect();
    let alpha = vec!["alpha".to_owned()];
    let beta = vec!["beta".to_owned()];
    assert_eq!(
        got,
        vec![
            (
                "r0".into(),
                0,
                Some(0),
                Some("/dev/drbd0"),
                Some("/dev/vg0/r0"),
                alpha.clone()
            ),
            (
                "r0".into(),
                0,
                Some(0),
                Some("/dev/drbd0"),
                Some("/dev/vg0/r0"),
                beta.clone()
            ),
            (
                "r7".into(),
                0,
                Some(3),
                Some("/dev/drbd3"),
                Some("/dev/vg0/lv7"),
                alpha.clone()
            ),
            (
                "r7".into(),
                0,
                Some(3),
                Some("/dev/drbd3"),
                Some("/dev/vg0/lv7"),
                beta.clone()
            ),
            (
                "vm-web".into(),
                0,
                Some(10),
                None,
                Some("/dev/vg0/web-root"),
                alpha.clone()
            ),
            (
                "vm-web".into(),
                1,
                Some(11),
                Some("/dev/drbd11"),
                Some("/dev/mapper/vg0-web--data"),
                alpha
            ),
            (
                "vm-web".into(),
                0,
                Some(10),
                None,
                Some("/dev/vg0/web-root"),
                beta.clone()
            ),
            (
                "vm-web".into(),
                1,
                Some(11),
                Some("/dev/drbd11"),
                Some("/dev/mapper/vg0-web--data"),
                beta
            ),
        ]
    );
    assert_eq!(map.resolve_minor(3), rv("r7", 0));
    assert_eq!(map.resolve_minor(11), rv("vm-web", 1));
    assert_eq!(map.resolve_minor(4), None);
    assert_eq!(map.resolve_lower_disk("/dev/vg0/lv7"), rv("r7", 0));
    assert_eq!(map.resolve_lower_disk("/dev/mapper/vg0-web--data"), rv("vm-web", 1));
    assert_eq!(map.resolve_lower_disk("/dev/vg0/nothing"), None);
}

#[test]
fn drbd84_sample() {
    let map = DrbdMap::from_dump_xml(&read_data("drbd/dump-xml-84.xml")).unwrap();
    assert_eq!(map.resolve_minor(0), rv("r0", 0));
    assert_eq!(map.resolve_minor(6), rv("r5", 1));
    assert_eq!(map.resolve_lower_disk("/dev/vg0/r5a"), rv("r5", 0));
}

#[test]
fn edge_sample() {
    let map = DrbdMap::from_dump_xml(&read_data("drbd/dump-xml-edge.xml")).unwrap();
    // floating: no host names, still resolvable
    assert_eq!(map.resolve_minor(20), rv("fl", 0));
    let fl = map.volumes.iter().find(|v| v.resource.0 == "fl").unwrap();
    assert!(fl.hosts.is_empty());
    // `on alpha beta`
    let multi = map.volumes.iter().find(|v| v.resource.0 == "multi").unwrap();
    assert_eq!(multi.hosts, vec!["alpha".to_owned(), "beta".to_owned()]);
    // alpha is diskless with minor 30, beta has minor 31 on /dev/vg/split
    assert_eq!(map.resolve_minor(30), rv("split", 0));
    assert_eq!(map.resolve_minor(31), rv("split", 0));
    assert_eq!(map.resolve_lower_disk("/dev/vg/split"), rv("split", 0));
    assert!(map.volumes.iter().any(|v| v.resource.0 == "split" && v.disk.is_none()));
    // escaped text and a custom device name
    assert_eq!(map.resolve_lower_disk("/dev/vg/a&b<c"), rv("lower", 0));
    assert_eq!(map.resolve_device("/dev/drbd_lower"), rv("lower", 0));
    // stacked: the upper resource on the lower's device
    assert_eq!(map.resolve_minor(41), rv("upper", 0));
}

#[test]
fn local_host_entries_win_and_disagreement_resolves_nothing() {
    let xml = r#"<config file="x">
      <resource name="a"><host name="alpha"><volume vnr="0"><device minor="5"/><disk>/dev/vg/x</disk></volume></host></resource>
      <resource name="b"><host name="beta"><volume vnr="0"><device minor="5"/><disk>/dev/vg/x</disk></volume></host></resource>
    </config>"#;
    let map = DrbdMap::from_dump_xml(xml).unwrap();
    assert_eq!(
        map.resolve_minor(5),
        None,
        "alpha and beta disagree and neither is this host"
    );
    let on_alpha = map.clone().with_local_host(Some("alpha".into()));
    assert_eq!(on_alpha.resolve_minor(5), rv("a", 0));
    assert_eq!(on_alpha.resolve_lower_disk("/dev/vg/x"), rv("a", 0));
    let on_beta = map.clone().with_local_host(Some("beta".into()));
    assert_eq!(on_beta.resolve_minor(5), rv("b", 0));
    let elsewhere = map.with_local_host(Some("gamma".into()));
    assert_eq!(elsewhere.resolve_minor(5), None);
}

#[test]
fn empty_configuration_and_bad_xml() {
    // What drbdadm prints with no resource configured (Debian's default /etc/drbd.conf).
    let map = DrbdMap::from_dump_xml("<config file=\"/etc/drbd.conf\">\n    <common>\n    </common>\n</config>\n");
    assert_eq!(map.unwrap(), DrbdMap::empty());
    let e = DrbdMap::from_dump_xml("<config>\n<resource name='r'>\n</config>").unwrap_err();
    assert_eq!(e.line, 3, "{e}");
    assert!(e.to_string().starts_with("drbdadm dump-xml output, line 3"), "{e}");
    let e = DrbdMap::from_dump_xml("<config>\n<resource name='r'>\n").unwrap_err();
    assert!(e.message.contains("<resource>"), "{e}");
}

/// A stand-in drbdadm script in the test's temporary directory.
fn script(name: &str, body: &str) -> std::ffi::OsString {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("hooks-drbdadm");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    // Written to a new name and renamed: a script being written cannot be executed (ETXTBSY).
    let tmp = dir.join(format!("{name}.{}", std::process::id()));
    std::fs::write(&tmp, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path.into_os_string()
}

fn runner(program: std::ffi::OsString, timeout_ms: u64) -> Drbdadm {
    Drbdadm {
        programs: vec![program],
        timeout: Duration::from_millis(timeout_ms),
    }
}

/// `load`, again while the new script is "text file busy": a test thread that
/// forked while another wrote its script holds the write descriptor until it
/// execs (a race of parallel tests, not of the hook, which has one thread).
fn load(d: &Drbdadm) -> Result<DrbdMap, LoadError> {
    for _ in 0..50 {
        match d.load() {
            Err(LoadError::Spawn { source, .. }) if source.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
    d.load()
}

#[test]
fn loader_runs_dump_xml() {
    let sample = common::data("drbd/dump-xml-two-node.xml");
    let ok = script(
        "ok",
        &format!(
            "[ \"$1\" = dump-xml ] || exit 3\necho 'modinfo: ERROR: Module drbd not found.' >&2\ncat '{}'",
            sample.display()
        ),
    );
    let map = load(&runner(ok, 5000)).unwrap();
    assert_eq!(map.resolve_minor(3), rv("r7", 0));
    assert!(map.local_host.is_some(), "the node name comes from the kernel");
}

#[test]
fn loader_missing_drbdadm_gives_the_empty_map_quietly() {
    let d = Drbdadm {
        programs: vec!["/nonexistent/drbdadm".into(), "tandem-no-such-drbdadm".into()],
        timeout: Duration::from_secs(1),
    };
    assert!(matches!(d.load(), Err(LoadError::NotFound { .. })));
    assert_eq!(d.load_or_empty(), (DrbdMap::empty(), None));
}

#[test]
fn loader_reports_failure_with_drbdadms_last_line() {
    let bad = script(
        "bad",
        "echo 'modinfo: ERROR: Module drbd not found.' >&2\necho \"bad.conf:1: Parse error: 'on' expected\" >&2\nexit 10",
    );
    let e = load(&runner(bad, 5000)).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, LoadError::Failed { .. }), "{text}");
    assert!(
        text.contains("exit status: 10") && text.ends_with("bad.conf:1: Parse error: 'on' expected"),
        "{text}"
    );
    let garbage = script("garbage", "echo '<config><resource'");
    let (map, warning) = runner(garbage, 5000).load_or_empty();
    assert_eq!(map, DrbdMap::empty());
    assert!(warning.unwrap().contains("dump-xml output"));
}

#[test]
fn loader_times_out_and_kills_drbdadm() {
    let slow = script("slow", "exec sleep 30");
    let started = Instant::now();
    let e = load(&runner(slow, 300)).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, LoadError::Timeout { .. }), "{e}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(e.to_string().contains("300 ms"), "{e}");
}
