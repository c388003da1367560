//! The stand-in prints what the daemon's parsers read, and the daemon's command
//! lines are what the real drbdadm accepts.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tandem::core::{DiskState, DrbdOp, ResourceName, Role};
use tandem::drbd::{self, DrbdDriver, DrbdOptions, Events2Fold};

fn fold(text: &str) -> tandem::core::ResourceObservation {
    let mut f = Events2Fold::new();
    for l in text.lines() {
        f.apply(&drbd::parse_events2_line(l).unwrap());
    }
    f.observation(&ResourceName::from("r0")).unwrap()
}

#[test]
fn events2_now_status_json_and_proc_drbd_parse_with_the_daemons_parsers() {
    let lab = Lab::new(&["--primary", "0", "--volumes", "2", "--minor", "5"]);
    for stats in [false, true] {
        let mut args = vec!["events2", "--now", "all"];
        if stats {
            args.push("--statistics");
        }
        let o = fold(&lab.drbdsetup(1, &args).stdout);
        assert_eq!((o.role, o.peer_role), (Role::Secondary, Role::Primary));
        assert!(o.replicating_up_to_date());
    }
    let json = lab.drbdsetup(0, &["status", "--json", "r0"]).stdout;
    let st = drbd::parse_status_json(&json).unwrap();
    assert_eq!(st[0].devices.len(), 2);
    assert_eq!(st[0].observation().role, Role::Primary);

    let proc_text = lab.standin(&["proc-drbd", "--node", "1"]).stdout;
    let p = drbd::parse_proc_drbd(&proc_text).unwrap();
    assert_eq!(p.minors.iter().map(|m| m.minor).collect::<Vec<_>>(), vec![5, 6]);
    let kept = std::fs::read_to_string(lab.file("proc-drbd-1")).unwrap();
    assert_eq!(kept, proc_text, "the kept file is the same as the command's output");

    lab.standin(&["net-cut", "r0"]);
    let o = fold(&lab.drbdsetup(0, &["events2", "--now"]).stdout);
    assert_eq!(
        (o.connected, o.peer_role, o.peer_disk),
        (false, Role::Unknown, DiskState::Unknown)
    );
    let p = drbd::parse_proc_drbd(&lab.standin(&["proc-drbd", "--node", "0"]).stdout).unwrap();
    assert_eq!(p.minors[0].cs, "WFConnection");
    let text = lab.drbdsetup(0, &["status", "r0"]).stdout;
    assert_eq!(
        text,
        "r0 role:Primary\n  volume:0 disk:UpToDate\n  volume:1 disk:UpToDate\n  beta connection:Connecting\n\n"
    );
}

#[test]
fn status_text_matches_drbdsetups_layout() {
    let lab = Lab::new(&["--primary", "0"]);
    assert_eq!(
        lab.drbdsetup(0, &["status", "r0"]).stdout,
        "r0 role:Primary\n  disk:UpToDate\n  beta role:Secondary\n    peer-disk:UpToDate\n\n"
    );
}

/// Reads an events2 follower's lines on a thread.
fn follow(lab: &Lab, node: usize, extra: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(DRBDSETUP)
        .arg("events2")
        .args(extra)
        .arg("all")
        .env("TANDEM_DRBD_STATE", lab.path())
        .env("TANDEM_DRBD_NODE", node.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn until(rx: &mpsc::Receiver<String>, want: impl Fn(&str) -> bool) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let l = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("no such line in {seen:#?}"));
        let done = want(&l);
        seen.push(l);
        if done {
            return seen;
        }
    }
}

#[test]
fn events2_follow_prints_changes_and_helper_calls() {
    let lab = Lab::new(&["--fencing", "resource-and-stonith", "--fence-peer", "sleep 0.1; exit 7"]);
    let (mut child, rx) = follow(&lab, 0, &[]);
    until(&rx, |l| l == "exists -");
    lab.drbdadm(0, &["primary", "r0"]);
    let lines = until(&rx, |l| l.starts_with("change resource"));
    assert_eq!(
        lines.last().unwrap(),
        "change resource name:r0 role:Primary may_promote:no promotion_score:10101"
    );
    // The peer's view changes too, on its own follower; here the link breaks.
    lab.standin(&["net-cut", "r0"]);
    let lines = until(&rx, |l| l.starts_with("call helper"));
    assert!(
        lines.contains(&"change resource name:r0 suspended:fencing".to_owned()),
        "{lines:#?}"
    );
    assert!(lines.contains(
        &"change connection name:r0 peer-node-id:1 conn-name:beta connection:Connecting role:Unknown".to_owned()
    ));
    assert_eq!(
        lines.last().unwrap(),
        "call helper name:r0 peer-node-id:1 conn-name:beta helper:fence-peer"
    );
    let lines = until(&rx, |l| l.contains("peer-disk:Outdated"));
    assert!(lines
        .iter()
        .any(|l| l == "response helper name:r0 peer-node-id:1 conn-name:beta helper:fence-peer status:1792"));
    assert!(lines.iter().any(|l| l == "change resource name:r0 suspended:no"));
    // Everything the follower printed is what the daemon's fold reads.
    let mut f = Events2Fold::new();
    for l in lines {
        f.apply(&drbd::parse_events2_line(&l).unwrap());
    }
    // kill-events2 ends it.
    assert_eq!(lab.standin(&["kill-events2", "--node", "0"]).stdout.trim(), "1");
    let status = child.wait().unwrap();
    assert!(!status.success());
}

#[test]
fn events2_full_and_timestamps() {
    let lab = Lab::new(&[]);
    let (mut child, rx) = follow(&lab, 1, &["--full", "--timestamps"]);
    until(&rx, |l| l.ends_with("exists -"));
    lab.drbdadm(0, &["primary", "r0"]);
    let lines = until(&rx, |l| l.contains("change connection"));
    let last = lines.last().unwrap();
    assert!(
        last.ends_with("change connection name:r0 peer-node-id:0 conn-name:alpha connection:Connected role:Primary")
    );
    let ev = drbd::parse_events2_line(last).unwrap();
    assert!(matches!(ev, drbd::Event2::Connection(..)));
    child.kill().unwrap();
    child.wait().unwrap();
}

const DRBD_CONF: &str = "\
resource r0 {
  net { protocol C; fencing resource-and-stonith; }
  handlers { fence-peer \"/usr/lib/tandem/tandem-drbd-handler\"; }
  volume 0 { device /dev/drbd0; disk /dev/vg/r0; meta-disk internal; }
  on alpha { node-id 0; address 127.0.0.1:7789; }
  on beta { node-id 1; address 127.0.0.1:7790; }
}
";

const REAL_DRBDADM: &str = "/usr/sbin/drbdadm";

fn driver_for(drbdadm: &Path, conf: &Path, env: Vec<(&str, String)>) -> DrbdDriver {
    let cfg = tandem::config::Drbd {
        drbdadm: drbdadm.to_path_buf(),
        drbdsetup: PathBuf::from(DRBDSETUP),
        resources: vec![ResourceName::from("r0")],
    };
    DrbdDriver::new(
        &cfg,
        DrbdOptions {
            config_file: Some(conf.to_path_buf()),
            env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            ..DrbdOptions::default()
        },
    )
}

fn ops() -> Vec<(DrbdOp, Vec<&'static str>)> {
    let r0 = ResourceName::from("r0");
    vec![
        (DrbdOp::Promote { resource: r0.clone() }, vec!["drbdsetup primary r0"]),
        (DrbdOp::Demote { resource: r0.clone() }, vec!["drbdsetup secondary r0"]),
        (
            DrbdOp::DualPrimary {
                resource: r0.clone(),
                allow: true,
            },
            vec!["drbdsetup net-options r0 1 --_name=beta --fencing=resource-and-stonith --protocol=C --allow-two-primaries=yes"],
        ),
        (
            DrbdOp::DualPrimary {
                resource: r0.clone(),
                allow: false,
            },
            vec!["drbdsetup net-options r0 1 --_name=beta --fencing=resource-and-stonith --protocol=C --allow-two-primaries=no"],
        ),
        (
            DrbdOp::Outdate { resource: r0 },
            vec!["drbdsetup outdate r0 0", "drbdmeta 0 v09 /dev/vg/r0 internal outdate"],
        ),
    ]
}

#[test]
fn the_daemons_command_lines_pass_the_real_drbdadm_dry_run() {
    if !Path::new(REAL_DRBDADM).exists() {
        eprintln!("SKIP: {REAL_DRBDADM} not installed (apt-get install drbd-utils)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("drbd.conf");
    std::fs::write(&conf, DRBD_CONF).unwrap();
    let driver = driver_for(Path::new(REAL_DRBDADM), &conf, vec![]);
    for (op, expected) in ops() {
        let mut args = vec!["-d".to_owned()];
        args.extend(driver.command_for(&op));
        // drbdadm picks its host section by node name; pretend to be alpha.
        let out = Command::new(REAL_DRBDADM)
            .args(&args)
            .env("__DRBD_NODE__", "alpha")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // drbdadm names its helpers by the path it found them under.
        let printed: Vec<String> = stdout
            .lines()
            .filter_map(|l| {
                let (prog, rest) = l.split_once(' ')?;
                let prog = Path::new(prog).file_name()?.to_str()?;
                prog.starts_with("drbd").then(|| format!("{prog} {rest}"))
            })
            .collect();
        assert_eq!(printed, expected, "{args:?}");
    }
}

#[test]
fn real_drbdadm_drives_the_standin_drbdsetup() {
    if !Path::new(REAL_DRBDADM).exists() {
        eprintln!("SKIP: {REAL_DRBDADM} not installed");
        return;
    }
    // A copied drbdadm runs drbdsetup and drbdmeta from its own directory.
    let bin = tempfile::tempdir().unwrap();
    let drbdadm = bin.path().join("drbdadm");
    std::fs::copy(REAL_DRBDADM, &drbdadm).unwrap();
    std::fs::copy(DRBDSETUP, bin.path().join("drbdsetup")).unwrap();
    std::fs::copy(DRBDMETA, bin.path().join("drbdmeta")).unwrap();
    let lab = Lab::new(&["--fencing", "resource-and-stonith"]);
    let conf = lab.file("drbd.conf");
    std::fs::write(&conf, DRBD_CONF).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let host = |name: &str, node: usize| {
        driver_for(
            &drbdadm,
            &conf,
            vec![
                ("__DRBD_NODE__", name.to_owned()),
                ("TANDEM_DRBD_STATE", lab.path().display().to_string()),
                ("TANDEM_DRBD_NODE", node.to_string()),
            ],
        )
    };
    let (alpha, beta) = (host("alpha", 0), host("beta", 1));
    let r0 = ResourceName::from("r0");
    rt.block_on(async {
        alpha.execute(&DrbdOp::Promote { resource: r0.clone() }).await.unwrap();
        let e = beta
            .execute(&DrbdOp::Promote { resource: r0.clone() })
            .await
            .unwrap_err();
        assert_eq!(e.failure().map(|f| f.refusal), Some(drbd::Refusal::TwoPrimaries), "{e}");
        let allow = DrbdOp::DualPrimary {
            resource: r0.clone(),
            allow: true,
        };
        alpha.execute(&allow).await.unwrap();
        beta.execute(&allow).await.unwrap();
        beta.execute(&DrbdOp::Promote { resource: r0.clone() }).await.unwrap();
        alpha.execute(&DrbdOp::Demote { resource: r0.clone() }).await.unwrap();
        let e = beta
            .execute(&DrbdOp::Outdate { resource: r0.clone() })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("r0"), "{e}");
    });
    assert_eq!(lab.node(0)["role"], "Secondary");
    assert_eq!(lab.node(1)["role"], "Primary");
    assert_eq!(lab.node(1)["allow_two_primaries"], true);
    assert_eq!(lab.standin(&["check"]).code, 0);
}
