//! The libvirt driver against libvirt's built-in test driver (`test:///default`:
//! in-process, no libvirtd), through the library API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;
use tandem::core::{DomainName, DomainRun, Input, ResourceName};
use tandem::hypervisor::{resources_in, DomainResources, Hypervisor, HypervisorError, Libvirt, WatchConfig, Watcher};
use tandem_hooks::DrbdMap;
use tokio::sync::mpsc;
use virt::connect::Connect;

const URI: &str = "test:///default";

fn domain_xml(name: &str, disk: &str) -> String {
    format!(
        "<domain type='test'><name>{name}</name><memory>65536</memory><vcpu>1</vcpu>\
         <os><type>hvm</type></os><devices>\
         <disk type='block' device='disk'><source dev='{disk}'/><target dev='vda' bus='virtio'/></disk>\
         </devices></domain>"
    )
}

fn open() -> Connect {
    virt::error::clear_error_callback();
    Connect::open(Some(URI)).unwrap()
}

fn r(name: &str) -> ResourceName {
    ResourceName(name.to_owned())
}

fn d(name: &str) -> DomainName {
    DomainName(name.to_owned())
}

fn watch(conn: &Connect, resources: &[&str]) -> (Watcher, mpsc::Receiver<Input>) {
    let hv: Arc<dyn Hypervisor> = Arc::new(Libvirt::from_connect(URI, conn.clone()));
    let (tx, rx) = mpsc::channel(64);
    let mut cfg = WatchConfig::new(resources.iter().map(|s| r(s)).collect());
    cfg.interval = Duration::from_millis(20);
    (Watcher::spawn(hv, cfg, tx), rx)
}

fn about(input: &Input) -> Option<&DomainName> {
    match input {
        Input::DomainDefined { domain, .. } | Input::DomainObserved { domain, .. } => Some(domain),
        _ => None,
    }
}

/// The next input about `domain`. The test driver's `test:///default` state is
/// shared by every connection of the process while one is open (seen with
/// libvirt 9.0), so the tests running in parallel see each other's domains:
/// each uses its own names and skips the others'.
async fn next(rx: &mut mpsc::Receiver<Input>, domain: &str) -> Input {
    loop {
        let input = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("no input from the watcher within 5 s")
            .expect("watcher channel closed");
        if about(&input) == Some(&d(domain)) {
            return input;
        }
    }
}

async fn observed(rx: &mut mpsc::Receiver<Input>, domain: &str) -> DomainRun {
    match next(rx, domain).await {
        Input::DomainObserved { run, .. } => run,
        other => panic!("expected DomainObserved for {domain}, got {other:?}"),
    }
}

#[test]
fn lists_the_test_drivers_default_domain() {
    let hv = Libvirt::connect(URI).unwrap();
    let domains = hv.domains().unwrap();
    assert!(domains.contains(&(d("test"), DomainRun::Running)), "{domains:?}");
}

#[test]
fn unreachable_libvirt_is_a_connect_error() {
    // What a libvirtd that is not up looks like: no socket.
    let hv = Libvirt::new("qemu+unix:///system?socket=/nonexistent/tandem-libvirt-sock");
    match hv.domains() {
        Err(e @ HypervisorError::Connect { .. }) => {
            assert!(e.to_string().contains("/nonexistent/tandem-libvirt-sock"), "{e}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[test]
fn start_a_defined_domain_and_refuse_an_unknown_one() {
    let conn = open();
    let dom = conn
        .define_domain_xml(&domain_xml("tandem-start", "/dev/drbd/by-res/r0/0"))
        .unwrap();
    let hv = Libvirt::from_connect(URI, conn.clone());
    hv.start(&d("tandem-start")).unwrap();
    assert!(hv.domains().unwrap().contains(&(d("tandem-start"), DomainRun::Running)));
    // Asked again (a lost answer): still success, not "already running".
    hv.start(&d("tandem-start")).unwrap();

    let e = hv.start(&d("tandem-no-such-domain")).unwrap_err();
    assert_eq!(
        e,
        HypervisorError::NoSuchDomain {
            domain: d("tandem-no-such-domain")
        }
    );
    assert!(e.to_string().contains("\"tandem-no-such-domain\""), "{e}");

    dom.destroy().unwrap();
    dom.undefine().unwrap();
}

#[test]
fn migration_is_refused_with_the_reason() {
    let hv = Libvirt::connect(URI).unwrap();
    let e = hv.migrate(&d("test")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "live migration by tandem needs the peer's libvirt URI ([node.PEER] libvirt_uri)"
    );
    // A peer that cannot be reached: the domain, the peer and libvirt's reason.
    let peer = "qemu:///system?socket=/nonexistent/tandem-test/libvirt-sock";
    let hv = Libvirt::connect(URI)
        .unwrap()
        .with_peer(tandem::hypervisor::PeerLibvirt {
            uri: peer.into(),
            migration_uri: Some("tcp://192.0.2.2".into()),
            bandwidth_mib: 0,
        });
    let e = hv.migrate(&d("test")).unwrap_err();
    assert!(
        matches!(&e, HypervisorError::Migrate { domain, peer: p, .. } if domain.0 == "test" && p == peer),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.starts_with("cannot migrate domain \"test\" to qemu:///system?socket=/nonexistent"),
        "{text}"
    );
    assert!(text.contains("cannot connect"), "{text}");
}

#[tokio::test]
async fn watcher_reports_a_drbd_domain_and_its_transitions() {
    let conn = open();
    let dom = conn
        .define_domain_xml(&domain_xml("tandem-watch", "/dev/drbd/by-res/r0/0"))
        .unwrap();
    let (watcher, mut rx) = watch(&conn, &["r0", "r1"]);

    // Defined before observed: the core refuses observations of unknown domains.
    // The default domain "test" has no DRBD disk and is never reported.
    assert_eq!(
        next(&mut rx, "tandem-watch").await,
        Input::DomainDefined {
            domain: d("tandem-watch"),
            resources: vec![r("r0")]
        }
    );
    assert_eq!(observed(&mut rx, "tandem-watch").await, DomainRun::Stopped);

    dom.create().unwrap();
    assert_eq!(observed(&mut rx, "tandem-watch").await, DomainRun::Running);
    dom.suspend().unwrap();
    assert_eq!(observed(&mut rx, "tandem-watch").await, DomainRun::Paused);
    dom.resume().unwrap();
    assert_eq!(observed(&mut rx, "tandem-watch").await, DomainRun::Running);
    dom.destroy().unwrap();
    assert_eq!(observed(&mut rx, "tandem-watch").await, DomainRun::Stopped);

    // Redefined with a second resource while stopped: seen at the next start,
    // which rereads the XML.
    let uuid = dom.uuid_string().unwrap();
    let xml =
        domain_xml("tandem-watch", "/dev/drbd/by-res/r1").replace("</name>", &format!("</name><uuid>{uuid}</uuid>"));
    let dom = conn.define_domain_xml(&xml).unwrap();
    dom.create().unwrap();
    assert_eq!(
        next(&mut rx, "tandem-watch").await,
        Input::DomainDefined {
            domain: d("tandem-watch"),
            resources: vec![r("r1")]
        }
    );
    assert_eq!(observed(&mut rx, "tandem-watch").await, DomainRun::Running);

    // Undefined (after destroy): no longer runs here.
    dom.destroy().unwrap();
    assert_eq!(observed(&mut rx, "tandem-watch").await, DomainRun::Stopped);
    dom.undefine().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Ok(input) = rx.try_recv() {
        assert_ne!(
            about(&input),
            Some(&d("tandem-watch")),
            "nothing more to report: {input:?}"
        );
    }
    drop(watcher);
}

#[tokio::test]
async fn domains_with_unconfigured_resources_are_not_reported() {
    let conn = open();
    let other = conn
        .define_domain_xml(&domain_xml("tandem-r9", "/dev/drbd/by-res/r9/0"))
        .unwrap();
    let mine = conn
        .define_domain_xml(&domain_xml("tandem-r0", "/dev/drbd/by-res/r0/0"))
        .unwrap();
    other.create().unwrap();
    let (_watcher, mut rx) = watch(&conn, &["r0"]);
    let mut got = Vec::new();
    while let Ok(Some(i)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        got.push(i);
    }
    assert!(got.contains(&Input::DomainDefined {
        domain: d("tandem-r0"),
        resources: vec![r("r0")]
    }));
    assert!(!got.iter().any(|i| about(i) == Some(&d("tandem-r9"))), "{got:?}");
    other.destroy().unwrap();
    other.undefine().unwrap();
    mine.undefine().unwrap();
}

#[tokio::test]
async fn watcher_stops_when_dropped() {
    let conn = open();
    let (watcher, mut rx) = watch(&conn, &["r0"]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(watcher);
    // The aborted task drops its sender: the channel closes.
    let closed = tokio::time::timeout(Duration::from_secs(2), async { while rx.recv().await.is_some() {} }).await;
    assert!(closed.is_ok(), "the watcher kept running after drop");
}

#[test]
fn unresolvable_drbd_minor_makes_a_domain_unusable() {
    let info = tandem_hooks::parse_domain_xml(&domain_xml("x", "/dev/drbd7")).unwrap();
    match resources_in(&info, &DrbdMap::empty(), &[r("r0")]) {
        DomainResources::Unusable(reason) => assert!(reason.contains("/dev/drbd7"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let info = tandem_hooks::parse_domain_xml(&domain_xml("x", "/var/lib/libvirt/images/x.qcow2")).unwrap();
    assert_eq!(
        resources_in(&info, &DrbdMap::empty(), &[r("r0")]),
        DomainResources::Resources(vec![])
    );
}
