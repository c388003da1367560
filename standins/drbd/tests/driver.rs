//! The daemon's DrbdDriver against the stand-in: two "hosts" are two drivers
//! whose children get different TANDEM_DRBD_NODE values.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tandem::core::{DiskState, DrbdOp, ResourceName, ResourceObservation, Role};
use tandem::drbd::{DrbdDriver, DrbdError, DrbdOptions, Observations, Refusal, StateSource, DOWN};

fn r0() -> ResourceName {
    ResourceName::from("r0")
}

fn host(lab: &Lab, node: usize, tune: impl FnOnce(&mut DrbdOptions)) -> DrbdDriver {
    let cfg = tandem::config::Drbd {
        drbdadm: PathBuf::from(DRBDADM),
        drbdsetup: PathBuf::from(DRBDSETUP),
        resources: vec![r0(), ResourceName::from("r9")],
    };
    let mut opts = DrbdOptions {
        env: vec![
            ("TANDEM_DRBD_STATE".into(), lab.path().into()),
            ("TANDEM_DRBD_NODE".into(), node.to_string().into()),
        ],
        demote_retry: Duration::from_millis(50),
        restart_delay: Duration::from_millis(20),
        ..DrbdOptions::default()
    };
    tune(&mut opts);
    DrbdDriver::new(&cfg, opts)
}

/// Waits for an observation of `r0` that satisfies `want`.
async fn until(obs: &mut Observations, want: impl Fn(&ResourceObservation) -> bool) -> ResourceObservation {
    let wait = async {
        loop {
            match obs.next().await {
                Some((r, o)) if r == r0() && want(&o) => return o,
                Some(_) => {}
                None => panic!("observation stream ended"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out; last {:?}", obs.current().get(&r0())))
}

fn op(kind: &str) -> DrbdOp {
    match kind {
        "promote" => DrbdOp::Promote { resource: r0() },
        "demote" => DrbdOp::Demote { resource: r0() },
        "allow" => DrbdOp::DualPrimary {
            resource: r0(),
            allow: true,
        },
        "disallow" => DrbdOp::DualPrimary {
            resource: r0(),
            allow: false,
        },
        _ => DrbdOp::Outdate { resource: r0() },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_migration_sequence_between_two_hosts() {
    let lab = Lab::new(&["--fencing", "resource-and-stonith", "--primary", "0"]);
    let (src, dst) = (host(&lab, 0, |_| {}), host(&lab, 1, |_| {}));
    let mut seen = dst.observations();
    let first = until(&mut seen, |_| true).await;
    assert_eq!((first.role, first.peer_role), (Role::Secondary, Role::Primary));
    assert!(first.replicating_up_to_date());
    // A configured resource DRBD does not have is reported down.
    assert_eq!(seen.current().get(&ResourceName::from("r9")), Some(&DOWN));

    // Without the window: refused, with DRBD's reason and the state it saw.
    let e = dst.execute(&op("promote")).await.unwrap_err();
    assert_eq!(e.failure().map(|f| f.refusal), Some(Refusal::TwoPrimaries));
    let msg = e.to_string();
    assert!(
        msg.contains("promote r0: DRBD refused: (-1) Multiple primaries not allowed by config"),
        "{msg}"
    );
    assert!(msg.contains("peer Primary/UpToDate"), "{msg}");
    assert!(matches!(e, DrbdError::Refused { exit_code: 11, .. }));

    // prepare incoming: both sides allow, the destination promotes.
    dst.execute(&op("allow")).await.unwrap();
    src.execute(&op("allow")).await.unwrap();
    dst.execute(&op("promote")).await.unwrap();
    let o = until(&mut seen, |o| o.role == Role::Primary).await;
    assert_eq!(o.peer_role, Role::Primary);
    // released: the source demotes, both leave dual-primary.
    src.execute(&op("demote")).await.unwrap();
    src.execute(&op("disallow")).await.unwrap();
    dst.execute(&op("disallow")).await.unwrap();
    let o = until(&mut seen, |o| o.peer_role == Role::Secondary).await;
    assert_eq!(o.role, Role::Primary);
    assert_eq!(lab.node(0)["allow_two_primaries"], false);
    assert_eq!(lab.standin(&["check"]).code, 0, "{:?}", lab.standin(&["check"]));
}

#[tokio::test]
async fn demote_retries_while_the_device_is_held_open() {
    let lab = Lab::new(&["--primary", "0"]);
    let src = host(&lab, 0, |_| {});
    let mut qemu = std::process::Command::new("sleep").arg("0.4").spawn().unwrap();
    let pid = qemu.id().to_string();
    lab.standin(&["hold", "r0", "--node", "0", "--pid", &pid, "--name", "qemu-system-x86"]);
    let t = Instant::now();
    src.execute(&op("demote")).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
    qemu.wait().unwrap();
    let refusals = lab.events("refused");
    assert!(refusals.len() >= 2, "retried: {refusals:?}");
    assert!(refusals.iter().all(|r| r["code"] == -12));
}

#[tokio::test]
async fn demote_gives_up_at_the_deadline_and_forces_only_when_allowed() {
    let lab = Lab::new(&["--primary", "0"]);
    lab.standin(&["hold", "r0", "--node", "0", "--name", "qemu-system-x86"]);
    let strict = host(&lab, 0, |o| o.demote_deadline = Duration::from_millis(300));
    let e = strict.execute(&op("demote")).await.unwrap_err();
    let DrbdError::StillHeldOpen { attempts, failure, .. } = &e else {
        panic!("{e}")
    };
    assert!(*attempts >= 3, "{e}");
    assert_eq!(failure.refusal, Refusal::DeviceInUse);
    assert!(failure.info[0].contains("opened by qemu-system-x86"), "{failure}");
    assert!(e.to_string().starts_with("demote r0: still held open after"), "{e}");
    assert_eq!(lab.node(0)["role"], "Primary");

    let forcing = host(&lab, 0, |o| {
        o.demote_deadline = Duration::from_millis(100);
        o.force_demote = true;
    });
    forcing.execute(&op("demote")).await.unwrap();
    assert_eq!(lab.node(0)["role"], "Secondary");
    assert_eq!(lab.events("forced-secondary").len(), 1);
}

#[tokio::test]
async fn a_hanging_command_is_killed_with_its_children() {
    // Disconnected, fencing on, a handler that hangs: drbdadm primary waits for it.
    let marker = tempfile::tempdir().unwrap();
    let late = marker.path().join("late");
    let handler = format!("sleep 2; touch {}; exit 7", sh_quote(&late));
    let lab = Lab::new(&[
        "--fencing",
        "resource-and-stonith",
        "--fence-peer",
        &handler,
        "--disconnected",
    ]);
    let d = host(&lab, 1, |o| o.command_timeout = Duration::from_millis(300));
    let t = Instant::now();
    let e = d.execute(&op("promote")).await.unwrap_err();
    assert!(matches!(e, DrbdError::Timeout { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert!(!late.exists(), "the handler was killed with drbdadm's process group");
    assert_eq!(lab.node(1)["role"], "Secondary");
}

#[tokio::test]
async fn outdate_and_unmanaged_resources() {
    let lab = Lab::new(&[]);
    let d = host(&lab, 1, |_| {});
    let e = d.execute(&op("outdate")).await.unwrap_err();
    assert_eq!(e.failure().map(|f| f.refusal), Some(Refusal::ConnectedOutdates));
    lab.standin(&["net-cut", "r0"]);
    d.execute(&op("outdate")).await.unwrap();
    assert_eq!(lab.node(1)["disk"], "Outdated");
    let e = d
        .execute(&DrbdOp::Promote {
            resource: ResourceName::from("other"),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, DrbdError::NotManaged { .. }));
    // Protocol C is checked by DRBD, not assumed.
    let e = d.dual_primary(&r0(), true).await;
    assert!(e.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observations_follow_a_link_break_and_the_fence_verdict() {
    let lab = Lab::new(&[
        "--fencing",
        "resource-and-stonith",
        "--fence-peer",
        "sleep 0.1; exit 7",
        "--primary",
        "0",
    ]);
    let d = host(&lab, 0, |_| {});
    let mut seen = d.observations();
    until(&mut seen, |o| o.connected).await;
    lab.standin(&["net-cut", "r0"]);
    let o = until(&mut seen, |o| !o.connected).await;
    assert_eq!((o.peer_role, o.peer_disk), (Role::Unknown, DiskState::Unknown));
    let o = until(&mut seen, |o| o.peer_disk == DiskState::Outdated).await;
    assert_eq!(
        (o.role, o.disk, o.connected),
        (Role::Primary, DiskState::UpToDate, false)
    );
    lab.standin(&["net-heal", "r0"]);
    until(&mut seen, |o| o.replicating_up_to_date()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_events2_child_is_restarted_with_a_full_refresh() {
    let lab = Lab::new(&[]);
    let (me, peer) = (host(&lab, 0, |_| {}), host(&lab, 1, |_| {}));
    let mut seen = me.observations();
    until(&mut seen, |o| o.peer_role == Role::Secondary).await;
    let followers = || std::fs::read_dir(lab.file("events2")).map_or(0, |d| d.count());
    assert_eq!(followers(), 1);
    assert_eq!(lab.standin(&["kill-events2", "--node", "0"]).stdout.trim(), "1");
    // What changes while no child runs is seen after the restart's dump.
    peer.execute(&op("promote")).await.unwrap();
    let o = until(&mut seen, |o| o.peer_role == Role::Primary).await;
    assert!(o.connected);
    assert_eq!(followers(), 1, "a new child registered");
    // Dropping the driver kills its child.
    drop(seen);
    drop(me);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alive = std::fs::read_dir(lab.file("events2"))
            .unwrap()
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name.split_once('-').map(|(_, p)| p.to_owned()).unwrap_or_default();
                std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
                    && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
            })
            .count();
        if alive == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "events2 child still running after drop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn proc_drbd_source_for_84() {
    let lab = Lab::new(&["--primary", "1", "--minor", "4"]);
    let d = host(&lab, 0, |o| {
        o.source = StateSource::ProcDrbd {
            path: lab.file("proc-drbd-0"),
            interval: Duration::from_millis(10),
        }
    });
    let mut seen = d.observations();
    let o = until(&mut seen, |_| true).await;
    assert_eq!((o.role, o.peer_role), (Role::Secondary, Role::Primary));
    lab.standin(&["net-cut", "r0"]);
    let o = until(&mut seen, |o| !o.connected).await;
    assert_eq!(o.peer_disk, DiskState::Unknown);
}

#[tokio::test]
async fn status_json_and_device_resolution_through_the_tools() {
    let lab = Lab::new(&["--minor", "7", "--volumes", "2"]);
    let d = host(&lab, 0, |o| o.env.push(("__DRBD_NODE__".into(), "alpha".into())));
    let st = d.status().await.unwrap();
    assert_eq!(st[0].name, "r0");
    assert!(st[0].observation().replicating_up_to_date());
    let paths = vec![
        "/dev/drbd8".to_owned(),
        "/dev/drbd/by-res/r0/0".to_owned(),
        "/dev/drbd/by-disk/standin/r0/1".to_owned(),
        "/dev/sda".to_owned(),
    ];
    let got = d.resolve_devices(&paths).await.unwrap();
    let vols: Vec<Option<(String, Option<u32>)>> = got
        .iter()
        .map(|(_, r)| r.as_ref().map(|r| (r.resource.0.clone(), r.volume)))
        .collect();
    assert_eq!(
        vols,
        vec![
            Some(("r0".into(), Some(1))),
            Some(("r0".into(), Some(0))),
            Some(("r0".into(), Some(1))),
            None
        ]
    );
}
