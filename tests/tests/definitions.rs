//! Domain definitions follow their domain to the peer: a DRBD-backed domain
//! defined (or changed) on one host is defined on the other by its tandemd, so
//! a failover can start it there. Two real libvirtd (tests/src/virt_pair.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use tandem_tests::libvirt::{domain_xml, uuid_v4};
use tandem_tests::virt_pair::RESOURCE_PATH;
use tandem_tests::{wait_for, Node, VirtPair, VirtSetup};

fn vcpus(rig: &VirtPair, node: Node, domain: &str) -> Option<String> {
    let out = rig.host(node).virsh(&["dumpxml", "--inactive", domain]).ok()?;
    if !out.status.success() {
        return None;
    }
    let xml = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = xml.find("<vcpu")?;
    let rest = &xml[start..];
    let open = rest.find('>')? + 1;
    let close = rest.find("</vcpu>")?;
    Some(rest[open..close].trim().to_owned())
}

#[test]
fn a_drbd_backed_definition_is_copied_to_the_peer_and_kept_current() {
    let rig = VirtPair::start_healthy(VirtSetup::default()).expect("rig");
    let uuid = uuid_v4();
    let xml = domain_xml("vm2", &uuid, &[RESOURCE_PATH]);
    rig.host(Node::Alpha).define(&xml).unwrap();
    // Not DRBD-backed: none of tandem's business.
    rig.host(Node::Alpha)
        .define(&domain_xml("plain", &uuid_v4(), &[]))
        .unwrap();

    let copied = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        vcpus(&rig, Node::Beta, "vm2").is_some()
    });
    assert!(copied.is_ok(), "vm2 never appeared on beta\n{}", rig.report());
    let beta_xml = rig
        .host(Node::Beta)
        .virsh_ok(&["dumpxml", "--inactive", "vm2"])
        .unwrap();
    assert!(beta_xml.contains(&uuid), "another domain of that name: {beta_xml}");
    assert!(beta_xml.contains(RESOURCE_PATH), "{beta_xml}");
    assert_eq!(
        rig.host(Node::Beta).domstate("vm2").unwrap().as_deref(),
        Some("shut off")
    );
    assert_eq!(
        rig.host(Node::Beta).domstate("plain").unwrap(),
        None,
        "a domain without DRBD disks was copied"
    );

    // Changed on alpha (2 vCPUs): the change follows within the watcher's rescan (10 s).
    rig.host(Node::Alpha)
        .define(&xml.replace("<vcpu>1</vcpu>", "<vcpu>2</vcpu>"))
        .unwrap();
    let updated = wait_for(Duration::from_secs(25), Duration::from_millis(200), || {
        vcpus(&rig, Node::Beta, "vm2").as_deref() == Some("2")
    });
    assert!(updated.is_ok(), "beta kept the old definition\n{}", rig.report());
    // And the copy on beta does not bounce back as a change on alpha.
    assert_eq!(vcpus(&rig, Node::Alpha, "vm2").as_deref(), Some("2"));
    rig.check_invariants().unwrap();
}
