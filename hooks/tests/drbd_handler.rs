//! `tandem-drbd-handler` as DRBD runs it: exit codes and lines against a real
//! `tandemd` whose peer never comes (FencePeer: no verdict, Refused after 4 ×
//! fence_timeout_ms = 4 s), a stand-in Hooks service (the 4 and 7 a peerless
//! tandemd cannot give, and codes it must not pass on), no daemon, and bad
//! arguments or environment.
//!
//! Needs `dbus-daemon`, `dbus-send` and root (see tests/bus/mod.rs).

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bus;

use bus::{run, running_as_root, Bus, FakeTandem, Out, Tandemd};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

const HANDLER: &str = env!("CARGO_BIN_EXE_tandem-drbd-handler");

/// The environment DRBD 9's drbdadm gives a fence-peer handler (trimmed).
fn drbd_env(resource: &str) -> Vec<(&str, &str)> {
    vec![
        ("DRBD_RESOURCE", resource),
        ("DRBD_MINOR", "0"),
        ("DRBD_VOLUME", "0"),
        ("DRBD_PEER_NODE_ID", "1"),
        ("DRBD_NODE_ID_0", "alpha"),
        ("DRBD_NODE_ID_1", "beta"),
        ("DRBD_PEER_ADDRESS", "10.0.0.2"),
        ("DRBD_PEER_AF", "ipv4"),
    ]
}

/// The handler with `args` and `env`, syslog off unless `env` sets it.
fn handler(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut all = vec![("TANDEM_SYSLOG_SOCKET", "")];
    all.extend_from_slice(env);
    let out = run(HANDLER, args, b"", &all);
    if !matches!(args.first(), Some(&("--help" | "--version"))) {
        assert_eq!(out.stdout, "", "{args:?}");
    }
    out
}

fn fence_peer(bus_address: &str, resource: &str, timeout_secs: &str) -> Out {
    let mut env = drbd_env(resource);
    env.push(("DBUS_SYSTEM_BUS_ADDRESS", bus_address));
    env.push(("TANDEM_FENCE_PEER_TIMEOUT_SECS", timeout_secs));
    handler(&["fence-peer"], &env)
}

fn last_line(out: &Out) -> &str {
    out.stderr.lines().last().unwrap_or("")
}

#[test]
fn usage_and_environment_errors_exit_1_never_4_or_7() {
    let env = drbd_env("r0");
    for (args, env, line) in [
        (
            &[][..],
            &env[..],
            "tandem-drbd-handler: expected fence-peer or unfence-peer (DRBD's handler name), got no argument; \
             see --help",
        ),
        (
            &["outdate-peer"],
            &env,
            "tandem-drbd-handler: unknown subcommand 'outdate-peer'; expected fence-peer or unfence-peer; see --help",
        ),
        (
            &["fence-peer", "--timeout", "soon"],
            &env,
            "tandem-drbd-handler: --timeout needs a whole number of seconds above 0, not 'soon'; see --help",
        ),
        (
            &["fence-peer"],
            &[],
            "tandem-drbd-handler: fence-peer: DRBD_RESOURCE is not set; this handler is meant to be run by DRBD; \
             exit 1, DRBD keeps I/O frozen",
        ),
    ] {
        let out = handler(args, env);
        assert_eq!((out.code, out.stderr.trim_end()), (1, line), "{args:?}");
    }
    let out = handler(&["fence-peer"], &[("DRBD_RESOURCE", "r 0")]);
    assert_eq!(out.code, 1);
    assert!(out
        .stderr
        .starts_with("tandem-drbd-handler: fence-peer: DRBD_RESOURCE is not a resource name"));

    // unfence-peer: tandem sets no DRBD-level constraint, so there is nothing to undo.
    let out = handler(&["unfence-peer"], &env);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            0,
            "tandem-drbd-handler: unfence-peer r0: nothing to undo (tandem sets no DRBD-level constraint)\n"
        )
    );
    let out = handler(&["--help"], &[]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("fence-peer [--timeout SECS]"), "{}", out.stdout);
}

#[test]
fn without_tandem_fence_peer_waits_until_its_deadline_then_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:path={}", dir.path().join("no-bus").display());
    let out = fence_peer(&address, "r0", "1");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        out.stderr.lines().next().unwrap(),
        "tandem-drbd-handler: fence-peer r0 (minor 0, volume 0, peer beta, node id 1, at ipv4 10.0.0.2): asking \
         tandem to outdate or fence the peer (up to 1 s)"
    );
    let last = last_line(&out);
    assert!(
        last.starts_with(
            "tandem-drbd-handler: fence-peer r0: could not reach tandem: cannot connect to the D-Bus system bus"
        ) && last.contains("; gave up after ")
            && last.ends_with(" s; exit 1, DRBD keeps I/O frozen"),
        "{last}"
    );
    assert!(
        out.took >= Duration::from_millis(900) && out.took < Duration::from_secs(5),
        "{:?}",
        out.took
    );

    if !running_as_root() {
        eprintln!("skipped the private-bus half: it needs root (tandem's bus policy)");
        return;
    }
    let bus = Bus::start(dir.path());
    let out = fence_peer(&bus.address, "r0", "1");
    assert_eq!(out.code, 1);
    let last = last_line(&out);
    assert!(
        last.starts_with("tandem-drbd-handler: fence-peer r0: could not reach tandem: tandemd is not running (")
            && last.contains("ServiceUnknown")
            && last.contains("; gave up after ")
            && last.ends_with(" s; exit 1, DRBD keeps I/O frozen"),
        "{last}"
    );
}

#[test]
fn a_tandemd_without_a_verdict_keeps_io_frozen() {
    if !running_as_root() {
        eprintln!("skipped: needs root (tandem's bus policy)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    let daemon = Tandemd::start(dir.path(), &bus);
    let syslog_path = dir.path().join("log");
    let syslog = UnixDatagram::bind(&syslog_path).unwrap();

    let mut env = drbd_env("r0");
    env.push(("DBUS_SYSTEM_BUS_ADDRESS", &bus.address));
    let syslog_env = syslog_path.to_str().unwrap();
    env.push(("TANDEM_SYSLOG_SOCKET", syslog_env));
    let out = run(HANDLER, &["fence-peer"], b"", &env);
    // Neither outdated (the peer is unreachable) nor fenced (wait-for-all, no
    // fence device): tandemd gives up after 4 × fence_timeout_ms.
    assert_eq!(out.code, 1, "{}\n{}", out.stderr, daemon.stderr());
    assert_eq!(
        last_line(&out),
        "tandem-drbd-handler: fence-peer r0: tandem: the peer could neither be outdated nor confirmed fenced; I/O \
         stays frozen (exit 1)"
    );
    assert!(out.took >= Duration::from_secs(3), "{:?}", out.took);
    assert_eq!(out.stdout, "");
    // The same two lines went to syslog, facility daemon: info, then err.
    let logged = read_datagrams(&syslog);
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert!(
        logged[0].starts_with("<30>tandem-drbd-handler[") && logged[0].contains("]: fence-peer r0 (minor 0"),
        "{logged:?}"
    );
    assert!(
        logged[1].starts_with("<27>tandem-drbd-handler[") && logged[1].ends_with("I/O stays frozen (exit 1)"),
        "{logged:?}"
    );

    // A resource tandem does not manage: at once, with tandemd's words.
    let out = fence_peer(&bus.address, "r9", "20");
    assert_eq!(out.code, 1);
    assert_eq!(
        last_line(&out),
        "tandem-drbd-handler: fence-peer r9: tandem: resource r9 is not managed by tandem (it is not in [drbd] \
         resources); exit 1, DRBD keeps I/O frozen"
    );
    assert!(out.took < Duration::from_secs(3), "{:?}", out.took);
}

fn read_datagrams(socket: &UnixDatagram) -> Vec<String> {
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    while let Ok(n) = socket.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

#[test]
fn only_tandems_4_and_7_reach_drbd_and_a_late_tandemd_is_waited_for() {
    if !running_as_root() {
        eprintln!("skipped: needs root (tandem's bus policy)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());

    // tandemd not there yet: the handler keeps trying until it appears.
    let address = bus.address.clone();
    let early = std::thread::spawn(move || fence_peer(&address, "r7", "20"));
    std::thread::sleep(Duration::from_millis(1200));
    let tandem = FakeTandem::start(&bus);
    let out = early.join().unwrap();
    assert_eq!(
        (out.code, last_line(&out)),
        (
            7,
            "tandem-drbd-handler: fence-peer r7: tandem confirmed the peer powered off (exit 7)"
        )
    );
    assert!(out.took >= Duration::from_secs(1), "{:?}", out.took);

    // The stand-in answers FencePeer(rN) with N.
    let out = fence_peer(&bus.address, "r4", "20");
    assert_eq!(
        (out.code, last_line(&out)),
        (
            4,
            "tandem-drbd-handler: fence-peer r4: tandem outdated the peer's disk (exit 4)"
        )
    );
    for (resource, code) in [("r5", 5), ("r3", 3), ("r0", 0), ("r263", 263)] {
        let out = fence_peer(&bus.address, resource, "20");
        assert_eq!(out.code, 1, "{resource}");
        assert_eq!(
            last_line(&out),
            format!(
                "tandem-drbd-handler: fence-peer {resource}: tandem answered {code}, which is neither 4 (peer \
                 outdated) nor 7 (peer fenced); exit 1, DRBD keeps I/O frozen"
            )
        );
    }
    assert_eq!(
        tandem.calls(),
        [
            "FencePeer r7",
            "FencePeer r4",
            "FencePeer r5",
            "FencePeer r3",
            "FencePeer r0",
            "FencePeer r263"
        ]
    );
}
