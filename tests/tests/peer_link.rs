//! Acceptance tests of the peer link: two real `tandemd` processes in two
//! network namespaces joined by two veth links, faults made with iptables.
//!
//! Each test builds its own namespaces, so they run in parallel. They need
//! root, `ip` and `iptables`, and fail (not skip) without them.

// Test code: helpers beside the #[test] functions panic like they do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nix::sys::signal::Signal;
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use tandem_tests::daemon::{config_toml, random_key, write_authkey, HEARTBEAT_PORT};
use tandem_tests::lab::LINKS;
use tandem_tests::status::{self, PeerWatch, Sample, DROP_KINDS};
use tandem_tests::{Daemon, Direction, Lab2, Node, Pair, Timing};

const TIMING: Timing = Timing {
    heartbeat_interval_ms: 200,
    dead_after_ms: 1000,
};

/// Starts a pair and waits until both sides see each other over both links.
fn healthy_pair() -> Pair {
    let mut pair = Pair::start(TIMING).expect("starting the lab and both daemons");
    pair.wait_healthy(Duration::from_secs(10))
        .expect("both daemons see each other on every link");
    pair
}

fn watch(pair: &Pair, every_ms: u64) -> PeerWatch {
    let files = Node::BOTH
        .iter()
        .map(|n| (*n, pair.daemon(*n).status_file().to_path_buf()))
        .collect();
    PeerWatch::start(files, Duration::from_millis(every_ms))
}

/// Samples where a node did not show its peer online.
fn not_online(samples: &[Sample]) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| s.peer_state.as_deref() != Ok("online"))
        .collect()
}

fn peer_lost_events(pair: &Pair, node: Node, since: u64) -> Vec<status::Event> {
    let v = pair.status(node).expect("status");
    status::events_named(&v, "PeerLost", since)
}

fn addr_port(node: Node, link: usize) -> String {
    format!("{}:{HEARTBEAT_PORT}", Lab2::addr(node, link).expect("address"))
}

#[test]
fn both_daemons_come_up() {
    let t0 = status::unix_ms_now();
    let mut pair = Pair::start(TIMING).expect("starting the lab and both daemons");
    let took = pair
        .wait_healthy(Duration::from_secs(10))
        .expect("both daemons see each other on every link");
    eprintln!("pair healthy after {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?} to come up");

    // Let a few round trips pass so RTTs and counters have settled.
    std::thread::sleep(Duration::from_millis(1000));
    for node in Node::BOTH {
        let v = pair.status(node).expect("status");
        eprintln!("{node}: {}", status::summary(&v));
        assert_eq!(v["version"], 1, "{node}: {v}");
        assert_eq!(v["node"], node.name(), "{node}: {v}");
        assert!(
            v["boot"].as_str().is_some_and(|b| !b.is_empty()),
            "{node}: boot id: {v}"
        );
        assert_eq!(v["peer"]["name"], node.other().name(), "{node}: {v}");
        assert_eq!(status::peer_state(&v), Some("online"), "{node}: {v}");
        let now = v["unix_ms"].as_u64().expect("unix_ms");
        assert!(
            now >= t0 && now <= status::unix_ms_now() + 1000,
            "{node}: unix_ms {now}"
        );
        assert!(
            status::peer_since(&v).is_some_and(|s| s >= t0 && s <= now),
            "{node}: peer.since_unix_ms: {v}"
        );
        assert_eq!(status::control_connected(&v), Some(true), "{node}: {v}");
        assert!(
            status::control_link(&v).is_some_and(|l| l < LINKS as u64),
            "{node}: control.link: {v}"
        );
        assert_eq!(v["arbiter"], "idle", "{node}: {v}");
        assert_eq!(status::link_count(&v), LINKS, "{node}: {v}");
        for l in 0..LINKS {
            let link = status::link(&v, l).expect("link");
            assert_eq!(link["id"], l, "{node} link {l}: {link}");
            assert_eq!(link["local"], addr_port(node, l), "{node} link {l}: {link}");
            assert_eq!(link["peer"], addr_port(node.other(), l), "{node} link {l}: {link}");
            assert_eq!(link["up"], true, "{node} link {l}: {link}");
            assert!(
                link["last_seen_ms_ago"].as_u64().is_some_and(|ms| ms < 1000),
                "{node} link {l}: {link}"
            );
            assert!(
                link["rtt_ms"].as_f64().is_some_and(|r| (0.0..100.0).contains(&r)),
                "{node} link {l}: {link}"
            );
            assert!(link["sent"].as_u64().is_some_and(|n| n >= 5), "{node} link {l}: {link}");
            assert!(
                link["received"].as_u64().is_some_and(|n| n >= 5),
                "{node} link {l}: {link}"
            );
            let drops = status::drops(&v, l).expect("drop counters");
            for kind in DROP_KINDS {
                assert_eq!(drops.get(kind), Some(&0), "{node} link {l} drops.{kind}: {link}");
            }
        }
        assert!(peer_lost_events(&pair, node, 0).is_empty(), "{node}: {v}");
    }

    // SIGTERM (alpha) and SIGINT (beta) are a clean shutdown: exit 0, promptly.
    for (node, signal) in [(Node::Alpha, Signal::SIGTERM), (Node::Beta, Signal::SIGINT)] {
        let (exit, in_time) = pair
            .daemon_mut(node)
            .stop_with(signal, Duration::from_secs(3))
            .expect("stop");
        assert!(in_time, "{node}: still running 3 s after {signal}, killed");
        assert!(
            exit.success(),
            "{node}: exit {exit} after {signal}; stderr:\n{}",
            pair.daemon(node).stderr_tail(20)
        );
    }
}

#[test]
fn one_link_cut_keeps_the_peer_online() {
    let mut pair = healthy_pair();
    let t0 = status::unix_ms_now();
    let watcher = watch(&pair, 50);

    pair.lab().cut(0, Direction::Both).expect("cut link 0");
    let took = pair
        .wait_both(Duration::from_secs(4), "link 0 down after the cut", |_, v| {
            status::link_up(v, 0) == Some(false)
        })
        .expect("link 0 shows down");
    eprintln!("link 0 down on both sides after {took:?}");
    // Control channel: still (or again) connected, over the remaining link.
    pair.wait_both(Duration::from_secs(10), "control connected over link 1", |_, v| {
        status::control_connected(v) == Some(true) && status::control_link(v) == Some(1)
    })
    .expect("control channel moves to link 1");
    for node in Node::BOTH {
        let v = pair.status(node).expect("status");
        eprintln!("{node} during the cut: {}", status::summary(&v));
        assert_eq!(status::peer_state(&v), Some("online"), "{node}: {v}");
        assert_eq!(status::link_up(&v, 0), Some(false), "{node}: {v}");
        assert_eq!(status::link_up(&v, 1), Some(true), "{node}: {v}");
    }

    pair.lab().heal(0).expect("heal link 0");
    let took = pair
        .wait_both(Duration::from_secs(4), "link 0 up after healing", |_, v| {
            status::link_up(v, 0) == Some(true) && status::link_up(v, 1) == Some(true)
        })
        .expect("link 0 shows up again");
    eprintln!("link 0 up again on both sides after {took:?}");

    let samples = watcher.stop();
    assert!(samples.len() > 20, "only {} samples", samples.len());
    let bad = not_online(&samples);
    assert!(bad.is_empty(), "peer not online at some point: {bad:?}");
    // Link 1 never went down.
    let link1_down: Vec<_> = samples
        .iter()
        .filter(|s| s.links_up.get(1) != Some(&Some(true)))
        .collect();
    assert!(link1_down.is_empty(), "link 1 not up at some point: {link1_down:?}");
    for node in Node::BOTH {
        assert!(peer_lost_events(&pair, node, t0).is_empty(), "{node}: PeerLost");
    }
}

#[test]
fn all_links_cut_loses_the_peer_and_healing_restores_it() {
    let mut pair = healthy_pair();
    let dead_after = TIMING.dead_after_ms;
    let t0 = status::unix_ms_now();

    pair.lab().cut_all().expect("cut every link");
    let t_cut = status::unix_ms_now();
    pair.wait_both(
        Duration::from_millis(dead_after + 3000),
        "peer lost after every link was cut",
        |_, v| status::peer_state(v) == Some("lost"),
    )
    .expect("each side reports its peer lost");

    for node in Node::BOTH {
        let v = pair.status(node).expect("status");
        eprintln!("{node} partitioned: {}", status::summary(&v));
        let lost = status::events_named(&v, "PeerLost", t0);
        assert_eq!(lost.len(), 1, "{node}: one PeerLost event expected: {v}");
        // Lost after dead_after of silence, not before, and not much later.
        // The last heartbeat came at most one interval before the cut began.
        let after_cut = lost[0].unix_ms.saturating_sub(t0);
        eprintln!(
            "{node}: PeerLost {after_cut} ms after the cut began ({} ms to cut)",
            t_cut - t0
        );
        assert!(
            after_cut + TIMING.heartbeat_interval_ms + 50 >= dead_after,
            "{node}: peer declared lost {after_cut} ms after the cut, dead_after is {dead_after} ms"
        );
        assert!(
            after_cut <= dead_after + 1500,
            "{node}: peer declared lost only {after_cut} ms after the cut"
        );
        for l in 0..LINKS {
            assert_eq!(status::link_up(&v, l), Some(false), "{node} link {l}: {v}");
        }
        // No fence device configured: the daemon must not claim a fence.
        assert_ne!(v["arbiter"], "fenced", "{node}: {v}");
    }

    // The control channel has its own, longer timeout; it must notice too.
    let took = pair
        .wait_both(
            Duration::from_secs(6),
            "control channel down in the partition",
            |_, v| status::control_connected(v) == Some(false),
        )
        .expect("control channel shows disconnected");
    eprintln!("control down on both sides {took:?} after the peer was lost");

    // Still lost a while later: nothing flaps while the partition lasts.
    std::thread::sleep(Duration::from_millis(500));
    for node in Node::BOTH {
        let v = pair.status(node).expect("status");
        assert_eq!(status::peer_state(&v), Some("lost"), "{node}: {v}");
        assert_eq!(status::events_named(&v, "PeerLost", t0).len(), 1, "{node}: {v}");
        assert_ne!(v["arbiter"], "fenced", "{node}: {v}");
    }

    let t_heal = status::unix_ms_now();
    pair.lab().heal_all().expect("heal");
    let took = pair
        .wait_both(Duration::from_secs(10), "peer online again after healing", |_, v| {
            status::peer_state(v) == Some("online") && status::all_links_up(v, LINKS)
        })
        .expect("peer online again");
    eprintln!("online again on both sides {took:?} after healing");
    pair.wait_both(Duration::from_secs(10), "control reconnected", |_, v| {
        status::control_connected(v) == Some(true)
    })
    .expect("control channel reconnects");
    for node in Node::BOTH {
        let v = pair.status(node).expect("status");
        assert!(
            status::peer_since(&v).is_some_and(|s| s >= t_heal),
            "{node}: peer.since_unix_ms not updated when the peer came back: {v}"
        );
        assert_eq!(status::events_named(&v, "PeerLost", t0).len(), 1, "{node}: {v}");
    }
}

#[test]
fn thirty_percent_loss_on_one_link_never_loses_the_peer() {
    let pair = healthy_pair();
    let t0 = status::unix_ms_now();
    let watcher = watch(&pair, 100);
    for node in Node::BOTH {
        pair.lab().loss(0, node, 0.3).expect("loss");
    }
    std::thread::sleep(Duration::from_secs(20));
    let samples = watcher.stop();
    pair.lab().heal(0).expect("heal");

    assert!(samples.len() >= 300, "only {} samples in 20 s", samples.len());
    let bad = not_online(&samples);
    assert!(
        bad.is_empty(),
        "peer not online in {} of {} samples, first: {:?}",
        bad.len(),
        samples.len(),
        bad.first()
    );
    let link0_down = samples
        .iter()
        .filter(|s| s.links_up.first() == Some(&Some(false)))
        .count();
    let link1_down: Vec<_> = samples
        .iter()
        .filter(|s| s.links_up.get(1) != Some(&Some(true)))
        .collect();
    eprintln!(
        "{} samples; link 0 (30% loss) shown down in {link0_down}",
        samples.len()
    );
    assert!(
        link1_down.is_empty(),
        "clean link 1 not up at some point: {:?}",
        link1_down.first()
    );
    for node in Node::BOTH {
        let v = pair.status(node).expect("status");
        eprintln!("{node} after 20 s of loss: {}", status::summary(&v));
        assert!(
            status::events_named(&v, "PeerLost", t0).is_empty(),
            "{node}: PeerLost: {v}"
        );
        assert_eq!(status::peer_state(&v), Some("online"), "{node}: {v}");
    }
}

fn run_inject(pair: &Pair, inside: Node, args: &[&str]) -> Value {
    let bin = env!("CARGO_BIN_EXE_tandem-inject");
    let mut cmd = pair.lab().ns(inside).command(bin);
    cmd.args(args).arg("--key").arg(pair.authkey());
    let out = tandem_tests::cmd::output(&mut cmd).expect("tandem-inject");
    serde_json::from_str(out.trim()).expect("tandem-inject prints JSON")
}

fn all_drops(v: &Value) -> Vec<BTreeMap<String, u64>> {
    (0..LINKS)
        .map(|l| status::drops(v, l).expect("drop counters"))
        .collect()
}

#[test]
fn forged_and_replayed_heartbeats_are_dropped_and_counted() {
    let mut pair = healthy_pair();
    let before: Vec<Value> = Node::BOTH.iter().map(|n| pair.status(*n).expect("status")).collect();
    let watcher = watch(&pair, 50);

    // Inside alpha's namespace: forgeries without the key, beta's real link-0
    // heartbeats replayed, and beta's link-1 heartbeats redirected to link 0.
    let target = addr_port(Node::Alpha, 0);
    let mut sent = run_inject(
        &pair,
        Node::Alpha,
        &[
            "--to",
            &target,
            "--forge",
            "3",
            "--replay-from",
            &target,
            "--redirect-from",
            &addr_port(Node::Alpha, 1),
            "--count",
            "3",
            "--copies",
            "2",
        ],
    );
    // Inside beta's namespace: alpha's own heartbeats reflected back to it.
    let reflected = run_inject(
        &pair,
        Node::Beta,
        &[
            "--to",
            &target,
            "--reflect-from",
            &addr_port(Node::Beta, 0),
            "--count",
            "3",
        ],
    );
    eprintln!("sent from alpha's namespace: {sent}\nfrom beta's: {reflected}");
    sent["wrong_sender"] = reflected["wrong_sender"].clone();

    let expected: BTreeMap<String, u64> = DROP_KINDS
        .iter()
        .map(|k| ((*k).to_owned(), sent[*k].as_u64().unwrap_or(0)))
        .collect();
    for kind in [
        "garbage",
        "truncated",
        "oversized",
        "bad_version",
        "bad_auth",
        "replayed",
        "wrong_sender",
        "wrong_link",
    ] {
        assert!(expected[kind] > 0, "nothing sent of kind {kind}: {sent}");
    }
    let old = all_drops(&before[0]);
    let delta = |v: &Value| -> BTreeMap<String, u64> {
        let now = all_drops(v);
        DROP_KINDS
            .iter()
            .map(|k| ((*k).to_owned(), now[0][*k].saturating_sub(old[0][*k])))
            .collect()
    };
    let got = pair.wait_status(
        Node::Alpha,
        Duration::from_secs(3),
        "every injected datagram counted",
        |v| delta(v) == expected,
    );
    let v = pair.status(Node::Alpha).expect("status");
    assert!(
        got.is_ok(),
        "alpha's link 0 drop counters: expected increases {expected:?}, saw {:?}\n{v}",
        delta(&v)
    );
    // Nothing landed elsewhere: alpha's link 1 and beta saw no drops.
    assert_eq!(
        all_drops(&v)[1],
        all_drops(&before[0])[1],
        "alpha link 1 drops changed: {v}"
    );
    let vb = pair.status(Node::Beta).expect("status");
    assert_eq!(all_drops(&vb), all_drops(&before[1]), "beta's drops changed: {vb}");

    // And none of it changed what either side thinks of its peer.
    std::thread::sleep(Duration::from_millis(500));
    let samples = watcher.stop();
    let bad = not_online(&samples);
    assert!(bad.is_empty(), "peer not online at some point: {bad:?}");
    for (node, old) in Node::BOTH.iter().zip(&before) {
        let v = pair.status(*node).expect("status");
        assert_eq!(status::peer_state(&v), Some("online"), "{node}: {v}");
        assert_eq!(
            status::peer_since(&v),
            status::peer_since(old),
            "{node}: peer state changed: {v}"
        );
        assert!(status::all_links_up(&v, LINKS), "{node}: {v}");
        let new_events: Vec<_> = status::events(&v)
            .into_iter()
            .filter(|e| !status::events(old).contains(e))
            .collect();
        assert!(new_events.is_empty(), "{node}: new events {new_events:?}");
    }
}

/// Starts `tandemd` with a bad key file; it must exit non-zero within a few
/// seconds and name the file. Returns its stderr.
fn refused(key: &[u8], mode: u32) -> (String, String) {
    let lab = Lab2::new().expect("lab");
    let dir = tempfile::tempdir().expect("tempdir");
    let authkey = dir.path().join("authkey");
    write_authkey(&authkey, key, mode).expect("key file");
    assert_eq!(
        std::fs::metadata(&authkey).expect("stat").permissions().mode() & 0o777,
        mode
    );
    let config = dir.path().join("tandem.toml");
    std::fs::write(&config, config_toml(&authkey, TIMING).expect("config")).expect("write config");
    let bin = tandem_tests::tandemd_bin().expect("tandemd");
    let mut d = Daemon::start(&bin, lab.ns(Node::Alpha), &config, Node::Alpha, dir.path()).expect("start");
    let exit = d.wait_exit(Duration::from_secs(5)).expect("wait");
    let stderr = d.stderr();
    let exit = exit.unwrap_or_else(|| panic!("tandemd still runs with key {mode:04o}/{} bytes:\n{stderr}", key.len()));
    assert!(!exit.success(), "tandemd accepted the key ({exit}):\n{stderr}");
    assert!(
        !Path::new(d.status_file()).exists() || status::peer_state(&d.status().expect("status")) != Some("online"),
        "a refused daemon reported a peer"
    );
    let path = authkey.display().to_string();
    let line = stderr
        .lines()
        .find(|l| l.contains(&path))
        .unwrap_or_else(|| panic!("stderr does not name {path}:\n{stderr}"))
        .to_owned();
    eprintln!("refused ({exit}): {line}");
    (line, stderr)
}

#[test]
fn authkey_readable_by_others_or_too_short_is_refused() {
    let (line, stderr) = refused(&random_key(64), 0o644);
    assert!(
        line.contains("0644") || line.contains("mode") || line.contains("permission"),
        "the line naming the key does not say what is wrong with its mode: {line}\n{stderr}"
    );
    let (line, stderr) = refused(&random_key(16), 0o600);
    assert!(
        line.contains("short") || line.contains("16 bytes") || line.contains("32"),
        "the line naming the key does not say it is too short: {line}\n{stderr}"
    );
}
