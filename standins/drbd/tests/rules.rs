//! The stand-in enforces DRBD's rules, with DRBD's messages and exit codes.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::json;

#[test]
fn second_primary_needs_allow_two_primaries_and_it_propagates_like_drbd() {
    let lab = Lab::new(&[]);
    assert_eq!(lab.drbdadm(0, &["primary", "r0"]).code, 0);
    let r = lab.drbdadm(1, &["primary", "r0"]);
    assert_eq!(r.code, 11, "{r:?}");
    assert!(r
        .stderr
        .contains("r0: State change failed: (-1) Multiple primaries not allowed by config"));
    assert!(r
        .stderr
        .contains("Command 'drbdsetup primary r0' terminated with exit code 11"));
    // Set on node 0 only: while connected the peer adopts it (P_PROTOCOL_UPDATE,
    // seen on a real 8.4.11), so node 1 may now promote.
    assert_eq!(
        lab.drbdadm(0, &["net-options", "--protocol=C", "--allow-two-primaries=yes", "r0"])
            .code,
        0
    );
    assert_eq!(lab.node(1)["allow_two_primaries"], true);
    assert_eq!(lab.drbdadm(1, &["primary", "r0"]).code, 0);
    assert_eq!(lab.state()["resources"]["r0"]["nodes"][0]["role"], "Primary");
    // Cannot clear it while both are Primary.
    let r = lab.drbdadm(1, &["net-options", "--allow-two-primaries=no", "r0"]);
    assert_eq!(r.code, 10);
    assert!(
        r.stderr.contains("Failure: (164) Can not clear allow_two_primaries"),
        "{r:?}"
    );
    assert_eq!(lab.drbdadm(1, &["secondary", "r0"]).code, 0);
    assert_eq!(
        lab.drbdadm(1, &["net-options", "--allow-two-primaries=no", "r0"]).code,
        0
    );
    assert_eq!(lab.drbdadm(1, &["primary", "r0"]).code, 11);
    assert!(lab.standin(&["check"]).code == 0);
    let refusals = lab.events("refused");
    assert_eq!(refusals.len(), 3);
    assert_eq!(refusals[0]["code"], -1);
}

#[test]
fn allow_two_primaries_needs_protocol_c() {
    let lab = Lab::new(&[]);
    let r = lab.drbdadm(0, &["net-options", "--protocol=A", "--allow-two-primaries=yes", "r0"]);
    assert_eq!(r.code, 10);
    assert!(r.stderr.contains("r0: Failure: (139) Protocol C required"), "{r:?}");
    assert_eq!(lab.node(0)["allow_two_primaries"], false);
    // Protocol A alone is fine; then allowing needs C back.
    assert_eq!(lab.drbdadm(0, &["net-options", "--protocol=A", "r0"]).code, 0);
    assert_eq!(
        lab.drbdadm(0, &["net-options", "--allow-two-primaries=yes", "r0"]).code,
        10
    );
}

#[test]
fn mismatched_settings_refuse_the_handshake() {
    let lab = Lab::new(&[]);
    assert_eq!(lab.standin(&["net-cut", "r0"]).code, 0);
    // Disconnected: the change stays on node 0.
    assert_eq!(
        lab.drbdadm(0, &["net-options", "--allow-two-primaries=yes", "r0"]).code,
        0
    );
    assert_eq!(lab.node(1)["allow_two_primaries"], false);
    assert_eq!(lab.standin(&["net-heal", "r0"]).code, 0);
    assert_eq!(lab.node(0)["cstate"], "StandAlone");
    assert_eq!(lab.node(1)["cstate"], "StandAlone");
    let refused = lab.events("handshake-refused");
    assert!(refused[0]["reason"].as_str().unwrap().contains("two-primaries"));
    assert_eq!(
        lab.drbdadm(1, &["net-options", "--allow-two-primaries=yes", "r0"]).code,
        0
    );
    assert_eq!(lab.drbdadm(0, &["connect", "r0"]).code, 0);
    assert_eq!(lab.node(0)["cstate"], "Connecting", "node 1 is still StandAlone");
    assert_eq!(lab.drbdadm(1, &["connect", "r0"]).code, 0);
    assert_eq!(lab.node(0)["cstate"], "Connected");
}

#[test]
fn promote_needs_up_to_date_data_unless_forced() {
    let lab = Lab::new(&["--disk-1", "Outdated", "--disconnected"]);
    let r = lab.drbdadm(1, &["primary", "r0"]);
    assert_eq!(r.code, 17, "{r:?}");
    assert!(r.stderr.contains("(-2) Need access to UpToDate data"));
    let r = lab.drbdadm(1, &["primary", "--force", "r0"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(lab.node(1)["disk"], "UpToDate");
    assert_eq!(lab.node(1)["role"], "Primary");
}

#[test]
fn demote_refused_while_held_open() {
    let lab = Lab::new(&["--primary", "0"]);
    assert_eq!(
        lab.standin(&["hold", "r0", "--node", "0", "--name", "qemu-system-x86"])
            .code,
        0
    );
    let r = lab.drbdadm(0, &["secondary", "r0"]);
    assert_eq!(r.code, 11);
    assert!(r
        .stderr
        .contains("r0: State change failed: (-12) Device is held open by someone"));
    assert!(r
        .stderr
        .contains("additional info from kernel:\n/dev/drbd0 opened by qemu-system-x86"));
    assert_eq!(lab.standin(&["unhold", "r0", "--node", "0"]).code, 0);
    assert_eq!(lab.drbdadm(0, &["secondary", "r0"]).code, 0);

    // A holder tied to a process lets go when the process ends.
    assert_eq!(lab.drbdadm(0, &["primary", "r0"]).code, 0);
    let mut sleeper = std::process::Command::new("sleep").arg("0.3").spawn().unwrap();
    let pid = sleeper.id().to_string();
    assert_eq!(lab.standin(&["hold", "r0", "--node", "0", "--pid", &pid]).code, 0);
    assert_eq!(lab.drbdadm(0, &["secondary", "r0"]).code, 11);
    sleeper.wait().unwrap();
    assert_eq!(lab.drbdadm(0, &["secondary", "r0"]).code, 0);

    // --force demotes anyway (DRBD 9.1+: openers get I/O errors).
    assert_eq!(lab.drbdadm(0, &["primary", "r0"]).code, 0);
    lab.standin(&["hold", "r0", "--node", "0"]);
    assert_eq!(lab.drbdadm(0, &["secondary", "--force", "r0"]).code, 0);
    assert_eq!(lab.events("forced-secondary").len(), 1);
}

#[test]
fn outdate_rules() {
    let lab = Lab::new(&[]);
    let r = lab.drbdadm(0, &["outdate", "r0"]);
    assert_eq!(r.code, 11);
    assert!(
        r.stderr
            .contains("r0: State change failed: (-6) Refusing to be Outdated while Connected"),
        "{r:?}"
    );
    lab.standin(&["net-cut", "r0"]);
    assert_eq!(lab.drbdadm(1, &["outdate", "r0"]).code, 0);
    assert_eq!(lab.node(1)["disk"], "Outdated");
    assert_eq!(
        lab.drbdadm(1, &["outdate", "r0"]).code,
        0,
        "outdating an Outdated disk is fine"
    );
    assert_eq!(lab.drbdadm(0, &["primary", "r0"]).code, 0);
    assert_eq!(
        lab.drbdadm(0, &["outdate", "r0"]).code,
        17,
        "a Primary cannot be outdated"
    );

    let lab = Lab::new(&["--disk-1", "Inconsistent", "--disconnected"]);
    let r = lab.drbdadm(1, &["outdate", "r0"]);
    assert_eq!(r.code, 5, "{r:?}");
    assert!(r.stderr.contains("(-16) Disk state is lower than outdated"));
}

fn fenced_lab(exit: i32, extra: &[&str]) -> Lab {
    let handler = format!("sleep 0.2; exit {exit}");
    let mut args = vec![
        "--fencing",
        "resource-and-stonith",
        "--fence-peer",
        &handler,
        "--primary",
        "0",
    ];
    args.extend_from_slice(extra);
    Lab::new(&args)
}

#[test]
fn link_break_freezes_the_primary_and_applies_each_exit_code_as_drbd() {
    // (exit, peer disk seen by the Primary, I/O frozen afterwards, own disk)
    let cases = [
        (3, "Inconsistent", false, "UpToDate"),
        (4, "Outdated", false, "UpToDate"),
        (5, "Outdated", false, "UpToDate"),
        (6, "DUnknown", true, "UpToDate"),
        (7, "Outdated", false, "UpToDate"),
        (0, "DUnknown", true, "UpToDate"),
        (1, "DUnknown", true, "UpToDate"),
        (11, "DUnknown", true, "UpToDate"),
    ];
    for (exit, peer_disk, frozen, disk) in cases {
        let lab = fenced_lab(exit, &[]);
        assert_eq!(lab.standin(&["net-cut", "r0"]).code, 0);
        // The kernel runs the handler asynchronously: frozen meanwhile.
        assert_eq!(lab.node(0)["suspended_fencing"], true, "exit {exit}");
        assert_eq!(lab.node(1)["suspended_fencing"], false, "a Secondary does not freeze");
        lab.wait_for("the handler's answer", |l| !l.events("fence-peer-result").is_empty());
        let n = lab.node(0);
        assert_eq!(n["peer_disk"], peer_disk, "exit {exit}");
        assert_eq!(n["suspended_fencing"], frozen, "exit {exit}");
        assert_eq!(n["disk"], disk, "exit {exit}");
        assert_eq!(
            lab.node(1)["disk"],
            "UpToDate",
            "the handler's verdict is the Primary's view only"
        );
    }
}

#[test]
fn exit_5_keeps_io_frozen_without_up_to_date_data() {
    let lab = fenced_lab(5, &["--disk-0", "Consistent"]);
    lab.standin(&["net-cut", "r0", "--wait"]);
    assert_eq!(lab.node(0)["suspended_fencing"], true);
    assert_eq!(lab.node(0)["peer_disk"], "DUnknown");
    // resume-io thaws it by hand.
    assert_eq!(lab.drbdadm(0, &["resume-io", "r0"]).code, 0);
    assert_eq!(lab.node(0)["suspended_fencing"], false);
}

#[test]
fn resource_only_runs_the_handler_without_freezing() {
    let lab = Lab::new(&[
        "--fencing",
        "resource-only",
        "--fence-peer",
        "sleep 0.2; exit 4",
        "--primary",
        "0",
    ]);
    lab.standin(&["net-cut", "r0"]);
    assert_eq!(lab.node(0)["suspended_fencing"], false);
    lab.wait_for("handler", |l| !l.events("fence-peer-result").is_empty());
    assert_eq!(lab.node(0)["peer_disk"], "Outdated");
}

#[test]
fn handler_gets_drbds_environment() {
    let keep = tempfile::tempdir().unwrap();
    let out = keep.path().join("env.txt");
    let handler = format!("env > {}; exit 7", sh_quote(&out));
    let lab = Lab::new(&[
        "--fencing",
        "resource-and-stonith",
        "--fence-peer",
        &handler,
        "--primary",
        "1",
        "--minor",
        "3",
        "--volumes",
        "2",
    ]);
    lab.standin(&["net-cut", "r0", "--wait"]);
    let env = std::fs::read_to_string(&out).unwrap();
    let has = |kv: &str| assert!(env.lines().any(|l| l == kv), "{kv} not in\n{env}");
    has("DRBD_RESOURCE=r0");
    has("DRBD_PEER_NODE_ID=0");
    has("DRBD_MY_NODE_ID=1");
    has("DRBD_NODE_ID_0=alpha");
    has("DRBD_NODE_ID_1=beta");
    has("DRBD_MY_ADDRESS=127.0.0.2");
    has("DRBD_MY_AF=ipv4");
    has("DRBD_PEER_ADDRESS=127.0.0.1");
    has("DRBD_PEER_AF=ipv4");
    has("DRBD_CSTATE=Connecting");
    has("DRBD_MINOR=3 4");
    has("DRBD_VOLUME=0 1");
    has("DRBD_MINOR_0=3");
    has("DRBD_MINOR_1=4");
    has("DRBD_BACKING_DEV_1=/dev/standin/r0/1");
    has("UP_TO_DATE_NODES=0x00000002");
    has("HOME=/");
    has("TERM=linux");
    has("PATH=/sbin:/usr/sbin:/bin:/usr/bin");
    has("TANDEM_DRBD_NODE=1");
    assert!(env.lines().any(|l| l.starts_with("DRBD_CONF=")));
}

#[test]
fn promote_while_disconnected_runs_the_handler_first() {
    let count = tempfile::NamedTempFile::new().unwrap();
    let c = sh_quote(count.path());
    // Node 1's handler cannot get node 0 fenced: DRBD tries four times, then -7.
    let h1 = format!("echo x >> {c}; exit 1");
    let lab = Lab::new(&[
        "--fencing",
        "resource-and-stonith",
        "--fence-peer-1",
        &h1,
        "--disconnected",
    ]);
    let r = lab.drbdadm(1, &["primary", "r0"]);
    assert_eq!(r.code, 11, "{r:?}");
    assert!(r
        .stderr
        .contains("(-7) Refusing to be Primary while peer is not outdated"));
    assert_eq!(std::fs::read_to_string(count.path()).unwrap().lines().count(), 4);
    assert_eq!(lab.node(1)["role"], "Secondary");

    // A handler that confirms the peer fenced (7) lets the promote through.
    let lab = Lab::new(&[
        "--fencing",
        "resource-and-stonith",
        "--fence-peer",
        "exit 7",
        "--disconnected",
    ]);
    assert_eq!(lab.drbdadm(1, &["primary", "r0"]).code, 0);
    assert_eq!(lab.node(1)["peer_disk"], "Outdated");
    let calls = lab.events("helper-call");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["why"], "promote");

    // Exit 6: the peer is Primary, this node outdates itself; no promote.
    let lab = Lab::new(&[
        "--fencing",
        "resource-and-stonith",
        "--fence-peer",
        "exit 6",
        "--disconnected",
    ]);
    let r = lab.drbdadm(1, &["primary", "r0"]);
    assert_eq!(r.code, 17, "{r:?}");
    assert_eq!(lab.node(1)["disk"], "Outdated");

    // Without fencing DRBD just promotes: both Primary, disconnected, and the
    // history check says so.
    let lab = Lab::new(&["--primary", "0"]);
    lab.standin(&["net-cut", "r0"]);
    assert_eq!(lab.drbdadm(1, &["primary", "r0"]).code, 0);
    let r = lab.standin(&["check"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("Primary on both nodes (connected false"), "{r:?}");
}

#[test]
fn a_late_handler_answer_is_ignored_once_the_link_is_back() {
    let lab = fenced_lab(7, &[]);
    let lab = {
        drop(lab);
        Lab::new(&[
            "--fencing",
            "resource-and-stonith",
            "--fence-peer",
            "sleep 0.4; exit 7",
            "--primary",
            "0",
        ])
    };
    lab.standin(&["net-cut", "r0"]);
    lab.standin(&["net-heal", "r0"]);
    assert_eq!(lab.node(0)["cstate"], "Connected");
    assert_eq!(lab.node(0)["suspended_fencing"], false, "reconnecting thaws I/O");
    lab.wait_for("ignored answer", |l| !l.events("fence-peer-ignored").is_empty());
    assert_eq!(lab.node(0)["peer_disk"], "UpToDate");
}

#[test]
fn heal_resyncs_from_the_node_that_wrote_and_detects_split_brain() {
    let lab = fenced_lab(7, &[]);
    lab.standin(&["net-cut", "r0", "--wait"]);
    // The fenced peer outdates itself when asked (what tandem's handler arranges).
    assert_eq!(lab.drbdadm(1, &["outdate", "r0"]).code, 0);
    lab.standin(&["net-heal", "r0"]);
    assert_eq!(lab.node(1)["disk"], "UpToDate", "resync from the Primary");
    assert_eq!(lab.node(0)["peer_disk"], "UpToDate");
    let conns = lab.events("connection");
    assert_eq!(
        conns.last().unwrap()["resync"],
        json!({"target": 1, "from": "Outdated"})
    );

    // Both wrote while apart (no fencing): split brain, both StandAlone.
    let lab = Lab::new(&["--primary", "0"]);
    lab.standin(&["net-cut", "r0"]);
    assert_eq!(lab.drbdadm(1, &["primary", "r0"]).code, 0);
    assert_eq!(lab.drbdadm(1, &["secondary", "r0"]).code, 0);
    lab.standin(&["net-heal", "r0"]);
    assert_eq!(lab.node(0)["cstate"], "StandAlone");
    let r = lab.events("handshake-refused");
    assert!(r[0]["reason"].as_str().unwrap().contains("Split-Brain"));
}

#[test]
fn graceful_disconnect_outdates_the_secondary_under_fencing() {
    let lab = Lab::new(&[
        "--fencing",
        "resource-and-stonith",
        "--fence-peer",
        "exit 1",
        "--primary",
        "0",
    ]);
    assert_eq!(lab.drbdadm(1, &["disconnect", "r0"]).code, 0);
    assert_eq!(lab.node(1)["cstate"], "StandAlone");
    assert_eq!(lab.node(0)["cstate"], "Connecting");
    assert_eq!(lab.node(1)["disk"], "Outdated");
    assert_eq!(lab.node(0)["peer_disk"], "Outdated");
    assert_eq!(lab.node(0)["suspended_fencing"], false);
    assert!(
        lab.events("helper-call").is_empty(),
        "no handler for an agreed disconnect"
    );
    // Without fencing nobody is outdated (as on the real 8.4 run).
    let lab = Lab::new(&["--primary", "0"]);
    lab.drbdadm(1, &["disconnect", "r0"]);
    assert_eq!(lab.node(1)["disk"], "UpToDate");
}

#[test]
fn history_has_every_role_change_with_time_and_state() {
    let lab = Lab::new(&["--allow-two-primaries"]);
    lab.drbdadm(0, &["primary", "r0"]);
    lab.drbdadm(1, &["primary", "r0"]);
    lab.drbdadm(0, &["secondary", "r0"]);
    let roles = lab.events("role");
    assert_eq!(roles.len(), 3);
    let seq: Vec<(u64, String)> = roles
        .iter()
        .map(|r| (r["node"].as_u64().unwrap(), r["to"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        seq,
        vec![(0, "Primary".into()), (1, "Primary".into()), (0, "Secondary".into())]
    );
    let t: Vec<u64> = roles.iter().map(|r| r["t_ms"].as_u64().unwrap()).collect();
    assert!(t.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(roles[1]["after"]["roles"], json!(["Primary", "Primary"]));
    assert_eq!(roles[1]["after"]["allow_two_primaries"], json!([true, true]));
    assert_eq!(lab.standin(&["check"]).code, 0);
}

#[test]
fn usage_errors_look_like_the_real_tools() {
    let lab = Lab::new(&[]);
    let r = lab.drbdadm(0, &["primary", "nosuch"]);
    assert_eq!(r.code, 1);
    assert!(r
        .stderr
        .contains("'nosuch' not defined in your config (for this host)."));
    let r = lab.drbdsetup(0, &["primary", "nosuch"]);
    assert_eq!(r.code, 10);
    assert!(r.stderr.contains("nosuch: Failure: (158) Unknown resource"));
    let r = lab.run(DRBDADM, None, &["primary", "r0"]);
    assert_eq!(r.code, 20, "no TANDEM_DRBD_NODE: {r:?}");
    let r = lab.drbdadm(
        0,
        &["-d", "net-options", "--protocol=C", "--allow-two-primaries=yes", "r0"],
    );
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stdout.trim(),
        "drbdsetup net-options r0 1 --_name=beta --protocol=C --allow-two-primaries=yes"
    );
    assert_eq!(lab.node(0)["allow_two_primaries"], false, "-d changes nothing");
    assert_eq!(lab.drbdadm(0, &["--version"]).code, 0);
    assert_eq!(lab.drbdadm(0, &["sh-minor", "r0"]).stdout, "0\n");
    let r = lab.run(
        DRBDMETA,
        Some(0),
        &["0", "v09", "/dev/standin/r0/0", "internal", "outdate"],
    );
    assert_eq!(r.code, 20);
}

/// Node 1 Primary; every fence-peer handler confirms the peer fenced (7).
fn node_1_primary_fenced_by_7() -> Lab {
    Lab::new(&[
        "--fencing",
        "resource-and-stonith",
        "--fence-peer",
        "exit 7",
        "--primary",
        "1",
    ])
}

#[test]
fn a_primary_that_lost_power_comes_back_as_the_resync_target() {
    // Node 1 runs the domain and loses power; node 0 fences it (exit 7),
    // promotes and writes; node 1 boots and connects again.
    let lab = node_1_primary_fenced_by_7();
    assert_eq!(lab.standin(&["node-down", "r0", "--node", "1"]).code, 0);
    assert_eq!(lab.node(1)["role"], "Secondary");
    assert_eq!(lab.node(0)["cstate"], "Connecting");
    let r = lab.drbdadm(0, &["primary", "r0"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(lab.node(0)["peer_disk"], "Outdated");

    assert_eq!(lab.standin(&["node-up", "r0", "--node", "1"]).code, 0);
    let (alpha, beta) = (lab.node(0), lab.node(1));
    assert_eq!(alpha["cstate"], "Connected");
    assert_eq!(alpha["role"], "Primary");
    assert_eq!(beta["role"], "Secondary");
    assert_eq!(beta["disk"], "UpToDate");
    assert_eq!(alpha["peer_disk"], "UpToDate");
    let resync = lab
        .events("connection")
        .into_iter()
        .filter_map(|e| e["resync"].as_object().cloned())
        .next_back()
        .expect("a resync after the return");
    assert_eq!(resync["target"], 1);
    assert_eq!(resync["from"], "Consistent");
    assert!(lab.events("handshake-refused").is_empty(), "no split brain");
    assert_eq!(lab.standin(&["check"]).code, 0);
}

#[test]
fn both_hosts_back_from_a_power_cut_connect_up_to_date_without_a_resync() {
    let lab = node_1_primary_fenced_by_7();
    assert_eq!(lab.standin(&["node-down", "r0", "--node", "1"]).code, 0);
    assert_eq!(lab.standin(&["node-down", "r0", "--node", "0"]).code, 0);
    assert_eq!(lab.standin(&["node-up", "r0", "--node", "0"]).code, 0);
    // Alone, its data might be older than the peer's.
    assert_eq!(lab.node(0)["disk"], "Consistent");
    assert_eq!(lab.node(0)["cstate"], "Connecting");
    assert_eq!(lab.standin(&["node-up", "r0", "--node", "1"]).code, 0);
    for n in 0..2 {
        assert_eq!(lab.node(n)["disk"], "UpToDate", "node {n}");
        assert_eq!(lab.node(n)["cstate"], "Connected", "node {n}");
    }
    let last = lab.events("connection").pop().unwrap();
    assert!(last["resync"].is_null(), "{last}");
    assert_eq!(lab.standin(&["check"]).code, 0);
}
