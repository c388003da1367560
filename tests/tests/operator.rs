//! The operator's commands through the running daemon's D-Bus API, on the
//! two-host rig (tests/src/virt_pair.rs): `tandemctl fence NODE`,
//! `tandemctl migrate DOMAIN`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::Duration;
use tandem_tests::virt_pair::workspace_bin;
use tandem_tests::{wait_for, FenceSetup, Node, VirtPair, VirtSetup};

fn tandemctl(rig: &VirtPair, node: Node, args: &[&str]) -> Output {
    Command::new(workspace_bin("tandemctl").unwrap())
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", rig.bus(node).address())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn tandemctl_fence_powers_the_peer_off_through_the_daemon() {
    let setup = VirtSetup {
        fence: Some(FenceSetup::default()),
        ..VirtSetup::default()
    };
    let rig = VirtPair::start_healthy(setup).expect("rig");
    // A host does not fence itself, and unknown names are named.
    let out = tandemctl(&rig, Node::Alpha, &["fence", "alpha"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("alpha is this host"), "{}", text(&out));
    let out = tandemctl(&rig, Node::Alpha, &["fence", "gamma"]);
    assert!(text(&out).contains("no node \"gamma\""), "{}", text(&out));
    assert_eq!(rig.bmc(Node::Beta).unwrap().power_offs().len(), 0);

    let out = tandemctl(&rig, Node::Alpha, &["fence", "beta", "--wait", "30"]);
    assert!(out.status.success(), "{}\n{}", text(&out), rig.report());
    assert!(
        text(&out).contains("beta: powered off, confirmed by fence level 1"),
        "{}",
        text(&out)
    );
    let bmc = rig.bmc(Node::Beta).unwrap();
    assert_eq!(bmc.power_offs().len(), 1, "{}", bmc.log());
    let gone = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        tandem_tests::bmc::process_gone(rig.pair().daemon(Node::Beta).pid())
    });
    assert!(gone.is_ok(), "beta's tandemd survived its power off");
    rig.check_invariants().unwrap();
}

#[test]
fn tandemctl_migrate_moves_a_running_domain_and_says_why_it_cannot() {
    // Capped at 1 MiB/s: the migration lasts long enough to show progress.
    let setup = VirtSetup {
        hypervisor_extra: vec!["migration_bandwidth_mib = 1".into()],
        ..VirtSetup::default()
    };
    let rig = VirtPair::start_healthy(setup).expect("rig");
    rig.define_everywhere("vm1").unwrap();
    let out = tandemctl(&rig, Node::Alpha, &["migrate", "vm1"]);
    assert_eq!(out.status.code(), Some(1));
    // Before the daemon's first look at libvirt it knows no vm1; after it, vm1 is shut off.
    let said = text(&out);
    assert!(
        said.contains("vm1 does not run on this host") || said.contains("tandem knows no domain vm1"),
        "{said}"
    );
    let out = rig.host(Node::Alpha).virsh(&["start", "vm1"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let out = tandemctl(&rig, Node::Alpha, &["migrate", "vm1"]);
    assert!(out.status.success(), "{}\n{}", text(&out), rig.report());
    let said = text(&out);
    assert!(said.contains("vm1: migrated in"), "{said}");
    // Not a terminal: a line each time another tenth is done, from libvirt's job statistics.
    let bars: Vec<&str> = said.lines().filter(|l| l.starts_with("vm1: [")).collect();
    assert!(!bars.is_empty(), "no progress line in:\n{said}");
    assert!(bars.iter().all(|b| b.contains('%') && b.ends_with("MiB")), "{bars:?}");
    assert_eq!(
        rig.host(Node::Beta).domstate("vm1").unwrap().as_deref(),
        Some("running")
    );
    rig.wait_role(Node::Alpha, "Secondary", Duration::from_secs(10))
        .unwrap();
    rig.check_invariants().unwrap();
}

#[test]
fn tandemctl_start_and_stop_go_through_the_same_checks_as_the_hook() {
    let rig = VirtPair::start_healthy(VirtSetup::default()).expect("rig");
    rig.define_everywhere("vm1").unwrap();
    // Wait for both daemons to have seen vm1 in libvirt.
    let known = wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        let out = tandemctl(&rig, Node::Beta, &["stop", "vm1"]);
        text(&out).contains("does not run on this host")
    });
    assert!(known.is_ok(), "beta's tandemd never learnt of vm1");

    let out = tandemctl(&rig, Node::Alpha, &["start", "vm1"]);
    assert!(out.status.success(), "{}\n{}", text(&out), rig.report());
    assert_eq!(
        rig.host(Node::Alpha).domstate("vm1").unwrap().as_deref(),
        Some("running")
    );
    assert_eq!(rig.role(Node::Alpha).unwrap(), "Primary");

    // Running on alpha: beta refuses, with the reason, and nothing changes.
    let refused = wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        let out = tandemctl(&rig, Node::Beta, &["start", "vm1"]);
        !out.status.success() && text(&out).contains("tandem refuses to start vm1")
    });
    assert!(
        refused.is_ok(),
        "beta started vm1 while it runs on alpha\n{}",
        rig.report()
    );
    assert_eq!(
        rig.host(Node::Beta).domstate("vm1").unwrap().as_deref(),
        Some("shut off")
    );
    assert_eq!(rig.role(Node::Beta).unwrap(), "Secondary");

    let out = tandemctl(&rig, Node::Alpha, &["stop", "vm1", "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        rig.host(Node::Alpha).domstate("vm1").unwrap().as_deref(),
        Some("shut off")
    );
    rig.wait_role(Node::Alpha, "Secondary", Duration::from_secs(10))
        .unwrap();

    // Now beta may.
    let started = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        tandemctl(&rig, Node::Beta, &["start", "vm1"]).status.success()
    });
    assert!(
        started.is_ok(),
        "beta could not start vm1 after alpha stopped it\n{}",
        rig.report()
    );
    assert_eq!(
        rig.host(Node::Beta).domstate("vm1").unwrap().as_deref(),
        Some("running")
    );
    rig.check_invariants().unwrap();
}

fn status_json(rig: &VirtPair, node: Node) -> serde_json::Value {
    let out = tandemctl(rig, node, &["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

/// Waits until `node`'s daemon has seen `domain` running there (libvirt is
/// polled every 500 ms; until then a domain just started shows as paused).
fn wait_seen_running(rig: &VirtPair, node: Node, domain: &str) {
    let seen = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        status_json(rig, node)["domains"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["name"] == domain && d["here"] == "running"))
    });
    assert!(seen.is_ok(), "{node} never saw {domain} running\n{}", rig.report());
}

#[test]
fn tandemctl_status_shows_both_hosts_and_says_when_the_daemon_is_gone() {
    let mut rig = VirtPair::with_domain_running(VirtSetup::default(), "vm1", Node::Alpha).expect("rig");
    wait_seen_running(&rig, Node::Alpha, "vm1");
    // Until beta's heartbeat lists vm1 as running on alpha.
    let seen = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        let v = status_json(&rig, Node::Beta);
        v["domains"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["name"] == "vm1" && d["on_peer"] == true))
    });
    assert!(seen.is_ok(), "beta never saw vm1 on alpha\n{}", rig.report());

    let out = tandemctl(&rig, Node::Alpha, &["status"]);
    let screen = text(&out);
    assert!(out.status.success(), "{screen}");
    for expected in [
        "Node    alpha (this host",
        "Peer    beta: online since",
        "192.0.2.1:5405 -> 192.0.2.2:5405",
        "control channel: connected",
        "Fencing idle",
        "r0    Primary  UpToDate  Secondary  UpToDate   yes",
        "vm1   alpha",
        "Migration windows: none open",
    ] {
        assert!(
            screen.contains(expected),
            "missing {expected:?} in alpha's status:\n{screen}"
        );
    }
    let beta_screen = text(&tandemctl(&rig, Node::Beta, &["status"]));
    assert!(
        beta_screen.contains("r0    Secondary  UpToDate  Primary    UpToDate   yes"),
        "{beta_screen}"
    );
    assert!(beta_screen.contains("vm1   alpha"), "{beta_screen}");

    let v = status_json(&rig, Node::Alpha);
    assert_eq!(v["version"], 1);
    assert_eq!(v["node"], "alpha");
    assert_eq!(v["peer"]["state"], "online");
    assert_eq!(v["resources"][0]["name"], "r0");
    assert_eq!(v["resources"][0]["role"], "Primary");
    assert_eq!(v["resources"][0]["peer_disk"], "UpToDate");
    let vm1 = v["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "vm1")
        .unwrap();
    assert_eq!(vm1["here"], "running");
    assert_eq!(vm1["on_peer"], false);
    assert_eq!(v["links"].as_array().map(Vec::len), Some(2));
    assert!(v["links"][0]["rtt_ms"].is_number(), "{}", v["links"][0]);

    let out = tandemctl(&rig, Node::Alpha, &["cleanup"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no failed domains on record"), "{}", text(&out));

    // No daemon: one line that says what to do.
    rig.pair_mut()
        .daemon_mut(Node::Alpha)
        .stop(Duration::from_secs(5))
        .unwrap();
    let out = tandemctl(&rig, Node::Alpha, &["status"]);
    assert!(!out.status.success());
    let err = text(&out);
    assert!(err.contains("tandemd is not running on this host"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn standby_drains_a_host_and_nothing_moves_back_when_it_ends() {
    let rig = VirtPair::with_domain_running(VirtSetup::default(), "vm1", Node::Alpha).expect("rig");
    wait_seen_running(&rig, Node::Alpha, "vm1");
    let out = tandemctl(&rig, Node::Alpha, &["standby", "on", "--wait", "60"]);
    assert!(out.status.success(), "{}\n{}", text(&out), rig.report());
    assert!(text(&out).contains("drained: vm1 left this host"), "{}", text(&out));
    assert_eq!(
        rig.host(Node::Beta).domstate("vm1").unwrap().as_deref(),
        Some("running")
    );
    // The source is demoted when its hook releases, just after the switch-over.
    rig.wait_role(Node::Alpha, "Secondary", Duration::from_secs(10))
        .unwrap();
    assert!(text(&tandemctl(&rig, Node::Alpha, &["status"])).contains("STANDBY (draining)"));
    // A host in standby starts nothing.
    let refused = rig.host(Node::Alpha).virsh(&["start", "vm1"]).unwrap();
    assert!(!refused.status.success());

    let out = tandemctl(&rig, Node::Alpha, &["standby", "off"]);
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        rig.host(Node::Beta).domstate("vm1").unwrap().as_deref(),
        Some("running")
    );
    assert_eq!(
        rig.host(Node::Alpha).domstate("vm1").unwrap().as_deref(),
        Some("shut off")
    );
    assert_eq!(status_json(&rig, Node::Alpha)["standby"], false);
    rig.check_invariants().unwrap();
}
