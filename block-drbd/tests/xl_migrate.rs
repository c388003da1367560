//! `xl migrate` between two hosts with two real tandemd (tandem_tests'
//! VirtPair: a network namespace, a system bus and a tandemd per host, the
//! shared DRBD stand-in), each host with its own xenstore (the stand-in):
//! the hotplug sequence libxl runs, with block-drbd as the script.
//!
//! tandemd has no xl driver yet: where the domain runs is what the source's
//! tandemd learns from its hypervisor, so the source's copy of the domain runs
//! under the rig's libvirtd (its libvirt hook disabled, so only block-drbd
//! speaks to tandem) and is destroyed at the switch-over, as xl destroys the
//! source domain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{backend, define_domain, xl_create, xl_teardown, Lab, Teardown};
use std::time::Duration;
use tandem_tests::{wait_for, Node, VirtPair, VirtSetup};

const DEVID: u32 = 51712;

/// A host's xenstore and block-drbd environment, on the rig's DRBD stand-in and bus.
fn host_lab(rig: &VirtPair, node: Node) -> Lab {
    let mut lab = Lab::new();
    lab.drbd_state = rig.drbd().state_dir().to_owned();
    lab.bus_address = rig.bus(node).address().to_owned();
    lab
}

fn as_node(mut cmd: std::process::Command, node: Node) -> std::process::Command {
    cmd.env("TANDEM_DRBD_NODE", node.index().to_string());
    cmd
}

fn run(cmd: std::process::Command) -> (i32, String) {
    let mut cmd = cmd;
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn xl_migrate_is_dual_primary_only_between_the_destinations_add_and_the_sources_remove() {
    let rig = VirtPair::start_healthy(VirtSetup::default()).expect("rig");
    let alpha = host_lab(&rig, Node::Alpha);
    let beta = host_lab(&rig, Node::Beta);

    // xl create vm1 on alpha: block-drbd add promotes r0 through alpha's tandemd.
    let outs = xl_create(&alpha, 3, "vm1", &[(DEVID, "r0")]);
    assert_eq!(outs[0].code, 0, "{outs:?}\n{}", rig.report());
    assert_eq!(
        alpha.read(&format!("{}/hotplug-status", backend(3, DEVID))).as_deref(),
        Some("connected")
    );
    assert_eq!(rig.role(Node::Alpha).unwrap(), "Primary");
    // The running domain, as alpha's tandemd sees it.
    rig.disable_hook(Node::Alpha).unwrap();
    let xml = tandem_tests::libvirt::domain_xml(
        "vm1",
        &tandem_tests::libvirt::uuid_v4(),
        &[tandem_tests::virt_pair::RESOURCE_PATH],
    );
    rig.host(Node::Alpha).define(&xml).unwrap();
    rig.host(Node::Alpha).virsh_ok(&["start", "vm1"]).unwrap();
    let seen = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        rig.status(Node::Alpha).is_ok()
    });
    assert!(seen.is_ok());
    std::thread::sleep(Duration::from_millis(1200));

    // xl migrate: the destination's domain is vm1--incoming while the source still runs.
    define_domain(&beta, 7, "vm1--incoming", &[(DEVID, "r0")]);
    let (code, err) = run(as_node(beta.block_command("add", Some(&backend(7, DEVID))), Node::Beta));
    assert_eq!(code, 0, "{err}\n{}", rig.report());
    assert_eq!(
        beta.read(&format!("{}/hotplug-status", backend(7, DEVID))).as_deref(),
        Some("connected")
    );
    assert_eq!(rig.role(Node::Beta).unwrap(), "Primary", "{}", rig.report());
    assert_eq!(rig.role(Node::Alpha).unwrap(), "Primary", "{}", rig.report());

    // Switch-over: the destination takes the name, the source is destroyed and
    // its disks removed under vm1--migratedaway.
    beta.write(&[("/local/domain/7/name", "vm1")]);
    rig.host(Node::Alpha).virsh_ok(&["destroy", "vm1"]).unwrap();
    alpha.write(&[("/local/domain/3/name", "vm1--migratedaway")]);
    let outs = xl_teardown(&alpha, 3, &[DEVID], Teardown::Destroy);
    assert_eq!(outs[0].code, 0, "{outs:?}\n{}", rig.report());

    rig.wait_role(Node::Alpha, "Secondary", Duration::from_secs(10))
        .unwrap();
    assert_eq!(rig.role(Node::Beta).unwrap(), "Primary");
    let closed = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        rig.drbd()
            .history()
            .ok()
            .and_then(|h| h.last().cloned())
            .is_some_and(|e| e.pointer("/after/allow_two_primaries") == Some(&serde_json::json!([false, false])))
    });
    assert!(closed.is_ok(), "dual-primary stayed allowed\n{}", rig.report());
    rig.wait_no_windows(Duration::from_secs(5)).unwrap();
    rig.check_invariants().unwrap();
}
