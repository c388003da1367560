//! A host loses power: its BMC (ipmi_sim) ends every process of the host
//! (tandemd, libvirtd, QEMU) and its DRBD replication link breaks; the survivor
//! fences it through that BMC and starts its domains from their synced
//! definitions. Two real libvirtd with QEMU (tests/src/virt_pair.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use tandem_tests::bmc;
use tandem_tests::libvirt::{domain_xml, uuid_v4};
use tandem_tests::virt_pair::RESOURCE_PATH;
use tandem_tests::{wait_for, FenceSetup, Node, VirtPair, VirtSetup};

#[test]
fn a_host_powered_off_is_fenced_and_its_domain_runs_on_the_survivor() {
    let setup = VirtSetup {
        fence: Some(FenceSetup::default()),
        power_kills_host: true,
        ..VirtSetup::default()
    };
    let rig = VirtPair::start_healthy(setup).expect("rig");
    // Defined on beta only: tandem copies the definition to alpha.
    rig.host(Node::Beta)
        .define(&domain_xml("vm1", &uuid_v4(), &[RESOURCE_PATH]))
        .unwrap();
    let synced = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        rig.host(Node::Alpha).domstate("vm1").ok().flatten().is_some()
    });
    assert!(synced.is_ok(), "vm1's definition never reached alpha\n{}", rig.report());
    rig.host(Node::Beta).virsh_ok(&["start", "vm1"]).unwrap();
    let beta_qemu = rig.host(Node::Beta).qemu_pid("vm1").expect("beta's qemu");
    // Let a heartbeat carry "vm1 runs on beta" to alpha.
    std::thread::sleep(Duration::from_millis(1500));

    // beta's power goes, through its BMC, as an operator's ipmitool would do it.
    let cut = Instant::now();
    rig.power_off(Node::Beta).unwrap();
    assert!(
        bmc::process_gone(beta_qemu as u32),
        "beta's qemu survived the power off"
    );

    let back = wait_for(Duration::from_secs(30), Duration::from_millis(20), || {
        rig.host(Node::Alpha).domstate("vm1").ok().flatten().as_deref() == Some("running")
    });
    assert!(back.is_ok(), "vm1 does not run on alpha\n{}", rig.report());
    eprintln!("power off -> vm1 running on alpha: {} ms", cut.elapsed().as_millis());
    assert_eq!(rig.role(Node::Alpha).unwrap(), "Primary");
    // alpha fenced beta (its BMC said off) before it took over.
    let fenced = rig.bmc(Node::Beta).unwrap().log();
    assert!(
        fenced.lines().filter(|l| l.contains("set power 0")).count() >= 1,
        "{fenced}"
    );
    rig.check_drbd().unwrap();
}

#[test]
fn a_symmetric_partition_leaves_exactly_one_host_running_domains() {
    let setup = VirtSetup {
        fence: Some(FenceSetup::default()),
        power_kills_host: true,
        extra_resources: 1,
        ..VirtSetup::default()
    };
    let rig = VirtPair::start_healthy(setup).expect("rig");
    rig.host(Node::Alpha)
        .define(&domain_xml("web", &uuid_v4(), &["/dev/drbd/by-res/r0/0"]))
        .unwrap();
    rig.host(Node::Beta)
        .define(&domain_xml("db", &uuid_v4(), &["/dev/drbd/by-res/r1/0"]))
        .unwrap();
    let synced = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        rig.host(Node::Alpha).domstate("db").ok().flatten().is_some()
            && rig.host(Node::Beta).domstate("web").ok().flatten().is_some()
    });
    assert!(synced.is_ok(), "definitions were not copied\n{}", rig.report());
    rig.host(Node::Alpha).virsh_ok(&["start", "web"]).unwrap();
    rig.host(Node::Beta).virsh_ok(&["start", "db"]).unwrap();
    std::thread::sleep(Duration::from_millis(1500));

    // Both links cut both ways, and alpha's replication link with them.
    rig.pair().lab().cut_all().unwrap();
    rig.drbd().run(&["net-cut", "r0"]).unwrap();

    // alpha is the preferred node: it fences beta at once; beta, which waits its
    // fence delay, is powered off before it can fence alpha.
    let back = wait_for(Duration::from_secs(30), Duration::from_millis(20), || {
        rig.host(Node::Alpha).domstate("db").ok().flatten().as_deref() == Some("running")
    });
    assert!(back.is_ok(), "db does not run on alpha\n{}", rig.report());
    assert_eq!(
        rig.host(Node::Alpha).domstate("web").unwrap().as_deref(),
        Some("running")
    );
    let beta_bmc = rig.bmc(Node::Beta).unwrap().log();
    let alpha_bmc = rig.bmc(Node::Alpha).unwrap().log();
    assert!(beta_bmc.contains("set power 0"), "beta was not powered off: {beta_bmc}");
    assert!(
        !alpha_bmc.contains("set power 0"),
        "alpha was powered off too: {alpha_bmc}"
    );
    assert!(
        tandem_tests::bmc::process_gone(rig.pair().daemon(Node::Beta).pid()),
        "beta's tandemd still runs"
    );
    // Nothing of beta runs any more: its network namespace is empty but for alpha's BMC.
    let left: Vec<i32> = rig
        .pair()
        .lab()
        .ns(Node::Beta)
        .pids()
        .unwrap()
        .into_iter()
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() != "ipmi_sim"))
        .collect();
    assert!(left.is_empty(), "processes of beta survived its power off: {left:?}");
    rig.check_drbd().unwrap();
}
