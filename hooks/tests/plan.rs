//! The plan for every hook operation libvirt documents (libvirt.org/hooks.html,
//! qemu and libxl), with and without DRBD disks.

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tandem_hooks::plan::{classify, parse_args, Step};
use tandem_hooks::{plan, ArgError, DomainName, DrbdDisk, HookPlan, HookRequest, ResourceName, Skip};

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn drbd(resource: Option<&str>, minor: Option<u32>, target: &str) -> DrbdDisk {
    DrbdDisk {
        resource: resource.map(ResourceName::from),
        volume: resource.map(|_| 0),
        minor,
        lower_disk: None,
        source: match (resource, minor) {
            (Some(r), _) => format!("/dev/drbd/by-res/{r}/0"),
            (None, Some(m)) => format!("/dev/drbd{m}"),
            (None, None) => "/dev/drbd/by-disk/vg/x".into(),
        },
        target: Some(target.into()),
    }
}

fn request(disks: &[DrbdDisk], resources: &[&str], reason: Option<&str>) -> HookRequest {
    HookRequest {
        domain: DomainName::from("vm1"),
        resources: resources.iter().map(|r| ResourceName::from(*r)).collect(),
        disks: disks.to_vec(),
        reason: reason.map(str::to_owned),
    }
}

#[test]
fn the_table() {
    let disks = vec![drbd(Some("r0"), None, "vda"), drbd(Some("r1"), None, "vdb")];
    let rq = |reason: Option<&str>| request(&disks, &["r0", "r1"], reason);
    let nothing = |op: &str| HookPlan::Nothing {
        domain: DomainName::from("vm1"),
        operation: op.into(),
    };
    let unknown = |op: &str, sub: &str| {
        HookPlan::None(Skip::UnknownOperation {
            domain: DomainName::from("vm1"),
            operation: op.into(),
            subop: sub.into(),
        })
    };
    let table: Vec<(&[&str], HookPlan)> = vec![
        (&["migrate", "begin", "-"], HookPlan::PrepareIncoming(rq(None))),
        (&["prepare", "begin", "-"], HookPlan::PrepareStart(rq(None))),
        (&["release", "end", "-"], HookPlan::Release(rq(None))),
        (&["release", "end", "migrated"], HookPlan::Release(rq(Some("migrated")))),
        (&["release", "end", "failed"], HookPlan::Release(rq(Some("failed")))),
        (
            &["release", "end", "from snapshot"],
            HookPlan::Release(rq(Some("from snapshot"))),
        ),
        (&["release", "end"], HookPlan::Release(rq(None))),
        (&["start", "begin", "-"], nothing("start")),
        (&["started", "begin", "-"], nothing("started")),
        (&["stopped", "end", "-"], nothing("stopped")),
        (&["restore", "begin", "-"], nothing("restore")),
        (&["reconnect", "begin", "-"], nothing("reconnect")),
        (&["attach", "begin", "-"], nothing("attach")),
        (&["shutdown", "begin", "-"], unknown("shutdown", "begin")),
        (&["prepare", "end", "-"], unknown("prepare", "end")),
        (&["migrate", "end", "-"], unknown("migrate", "end")),
        (&["release", "begin", "-"], unknown("release", "begin")),
        (&["PREPARE", "begin", "-"], unknown("PREPARE", "begin")),
        (&["", "", ""], unknown("", "")),
    ];
    for (rest, want) in table {
        let mut a = vec!["vm1"];
        a.extend_from_slice(rest);
        assert_eq!(plan(&args(&a), &disks).unwrap(), want, "{a:?}");
    }
}

#[test]
fn acting_operations_without_drbd_disks_are_none() {
    for op in [["migrate", "begin"], ["prepare", "begin"], ["release", "end"]] {
        let got = plan(&args(&["vm1", op[0], op[1], "-"]), &[]).unwrap();
        assert_eq!(
            got,
            HookPlan::None(Skip::NoDrbdDisks {
                domain: DomainName::from("vm1")
            }),
            "{op:?}"
        );
        assert_eq!(got.request(), None);
        assert_eq!(got.warning(), None);
    }
    // The others do not depend on the disks at all.
    for op in [["start", "begin"], ["stopped", "end"], ["reconnect", "begin"]] {
        let got = plan(&args(&["vm1", op[0], op[1], "-"]), &[]).unwrap();
        assert!(matches!(got, HookPlan::Nothing { .. }), "{op:?}");
    }
}

#[test]
fn needs_disks_only_for_acting_operations() {
    let acting = [("migrate", "begin"), ("prepare", "begin"), ("release", "end")];
    for (op, sub) in [
        ("migrate", "begin"),
        ("prepare", "begin"),
        ("release", "end"),
        ("start", "begin"),
        ("started", "begin"),
        ("stopped", "end"),
        ("restore", "begin"),
        ("reconnect", "begin"),
        ("attach", "begin"),
        ("frobnicate", "begin"),
    ] {
        assert_eq!(
            classify(op, sub).needs_disks(),
            acting.contains(&(op, sub)),
            "{op} {sub}"
        );
    }
    assert_eq!(classify("frobnicate", "begin"), Step::Unknown);
}

#[test]
fn resources_once_each_in_order_and_unresolved_kept() {
    let disks = vec![
        drbd(Some("r1"), None, "vda"),
        drbd(None, Some(9), "vdb"),
        drbd(Some("r0"), None, "vdc"),
        drbd(Some("r1"), None, "vdd"),
        drbd(None, None, "vde"),
    ];
    let p = plan(&args(&["vm1", "prepare", "begin", "-"]), &disks).unwrap();
    let r = p.request().unwrap();
    assert_eq!(r.resources, vec![ResourceName::from("r1"), ResourceName::from("r0")]);
    assert_eq!(r.disks.len(), 5);
    let unresolved: Vec<&str> = r.unresolved().map(|d| d.source.as_str()).collect();
    assert_eq!(unresolved, vec!["/dev/drbd9", "/dev/drbd/by-disk/vg/x"]);
}

#[test]
fn unknown_operation_warns() {
    let p = plan(&args(&["vm1", "frobnicate", "begin", "-"]), &[]).unwrap();
    let w = p.warning().unwrap();
    assert!(
        w.starts_with("tandem-libvirt-hook: warning: vm1: operation 'frobnicate begin'"),
        "{w}"
    );
    assert!(!w.contains('\n'));
}

#[test]
fn argument_errors() {
    assert_eq!(plan(&args(&[]), &[]), Err(ArgError::Count { got: 0 }));
    assert_eq!(plan(&args(&["vm1", "prepare"]), &[]), Err(ArgError::Count { got: 2 }));
    assert_eq!(
        plan(&args(&["", "prepare", "begin", "-"]), &[]),
        Err(ArgError::EmptyDomain)
    );
    // An argument more than libvirt passes today is ignored.
    let a = parse_args(&args(&["vm1", "release", "end", "shutdown", "future"])).unwrap();
    assert_eq!((a.extra.as_str(), a.domain.0.as_str()), ("shutdown", "vm1"));
    assert_eq!(parse_args(&args(&["vm1", "start", "begin"])).unwrap().extra, "-");
    // Domain names are taken as given, whatever their characters.
    let odd = parse_args(&args(&["-x y/é", "start", "begin", "-"])).unwrap();
    assert_eq!(odd.domain.0, "-x y/é");
    assert!(ArgError::Count { got: 1 }
        .to_string()
        .contains("DOMAIN OPERATION SUBOP"));
}
