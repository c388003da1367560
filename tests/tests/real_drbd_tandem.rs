//! tandem on the real DRBD 8.4: `tandemd` in two QEMU guests running Debian's
//! kernel with its DRBD module (tests/src/real_drbd/tandem.rs), one boot, in
//! order:
//!
//! 1. a start of `vm1` on nodea through the libvirt hook promotes r0 there,
//!    and the same start on nodeb is refused;
//! 2. a live migration nodea → nodeb as libvirt runs the hooks: dual-primary
//!    entered on both (DRBD's own `allow-two-primaries`), nodeb promoted, then
//!    nodea demoted and dual-primary left on both;
//! 3. the replication link cut while the heartbeats live on link 2: the
//!    kernel on nodeb (Primary) runs `tandem-drbd-handler`, which gets nodea's
//!    disk outdated through tandemd and exits 4; nodea's disk must really be
//!    Outdated, also when nodea's DRBD notices the broken link seconds after
//!    nodeb's (made so with DRBD's default ping-int of 10 s on nodea); then
//!    the link heals and nodea resyncs;
//! 4. both links cut: nodea (preferred) fences nodeb through nodeb's BMC,
//!    whose power-off kills nodeb's QEMU; nodea's tandemd promotes r0, DRBD
//!    runs nodea's handler, which exits 7 only after nodeb was powered off.
//!
//! The figures (boot, handler and fence-to-promote times) are written to
//! `target/real-drbd/tandem/figures.json` for scripts/bench-realdrbd.sh.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::time::{Duration, Instant};
use tandem_tests::real_drbd::conformance::{both_in_sync, View, RES};
use tandem_tests::real_drbd::tandem::{TandemRig, TandemTiming};
use tandem_tests::real_drbd::{image, out_dir};
use tandem_tests::status::{peer_state, unix_ms_now};

const A: usize = 0;
const B: usize = 1;

fn wait<T>(rig: &mut TandemRig, what: &str, limit: Duration, mut f: impl FnMut(&mut TandemRig) -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f(rig) {
            return v;
        }
        if started.elapsed() > limit {
            let report = rig.report();
            panic!("{what}: not within {limit:?}\n{report}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn views(rig: &mut TandemRig) -> [View; 2] {
    [rig.view(A).unwrap(), rig.view(B).unwrap()]
}

#[test]
fn tandem_on_drbd_84() {
    tandem_tests::preflight().unwrap();
    let _ = tandem_tests::netns::sweep_leftovers();
    let started = Instant::now();
    let out = out_dir("tandem");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let image = image::build(&out.join("image"), true).expect("guest image with tandem");
    let boot_started = Instant::now();
    let mut rig = TandemRig::start(&out, &image, &TandemTiming::default()).expect("tandem in both guests");
    let ready_ms = boot_started.elapsed().as_millis() as u64;
    let boot_ms = rig.pair().guest(A).boot_ms().max(rig.pair().guest(B).boot_ms());
    let _ = std::fs::remove_dir_all(out.join("image"));

    // 1. vm1 starts on nodea: r0 Primary there; a second start on nodeb is refused.
    let s = rig.hook(A, &["prepare", "begin", "-"]).unwrap();
    assert_eq!(s.exit, 0, "prepare begin on nodea: {}\n{}", s.stderr, rig.report());
    let v = views(&mut rig);
    assert_eq!(
        (v[A].role.as_str(), v[B].role.as_str()),
        ("Primary", "Secondary"),
        "{v:?}"
    );
    std::thread::sleep(Duration::from_millis(1000));
    let s = rig.hook(B, &["prepare", "begin", "-"]).unwrap();
    assert_eq!(
        s.exit, 1,
        "a second start of vm1 on nodeb was not refused: {}",
        s.stderr
    );
    assert!(s.stderr.contains("tandem"), "the refusal says nothing: {}", s.stderr);
    assert_eq!(rig.view(B).unwrap().role, "Secondary");

    // 2. Live migration nodea -> nodeb, as libvirt runs the hooks.
    let mig_started = Instant::now();
    let s = rig.hook(B, &["migrate", "begin", "-"]).unwrap();
    assert_eq!(s.exit, 0, "migrate begin on nodeb: {}\n{}", s.stderr, rig.report());
    let v = views(&mut rig);
    assert_eq!(
        (v[A].role.as_str(), v[B].role.as_str()),
        ("Primary", "Primary"),
        "the destination is not promoted inside the window: {v:?}"
    );
    assert!(
        v[A].in_sync() && v[B].in_sync(),
        "dual-primary without UpToDate/UpToDate: {v:?}"
    );
    assert!(
        rig.two_primaries(A).unwrap() && rig.two_primaries(B).unwrap(),
        "allow-two-primaries is not on both"
    );
    let dual_ms = mig_started.elapsed().as_millis() as u64;
    for args in [
        ["prepare", "begin", "-"],
        ["start", "begin", "-"],
        ["started", "begin", "-"],
    ] {
        let s = rig.hook(B, &args).unwrap();
        assert_eq!(s.exit, 0, "{args:?} on nodeb: {}", s.stderr);
    }
    for args in [["stopped", "end", "-"], ["release", "end", "-"]] {
        let s = rig.hook(A, &args).unwrap();
        assert_eq!(s.exit, 0, "{args:?} on nodea: {}\n{}", s.stderr, rig.report());
    }
    wait(
        &mut rig,
        "nodea demoted and dual-primary left on both",
        Duration::from_secs(30),
        |r| {
            let a = r.view(A).ok()?;
            let two = r.two_primaries(A).ok()? || r.two_primaries(B).ok()?;
            (a.role == "Secondary" && !two).then_some(())
        },
    );
    let migration_ms = mig_started.elapsed().as_millis() as u64;
    let v = views(&mut rig);
    assert_eq!(
        (v[A].role.as_str(), v[B].role.as_str()),
        ("Secondary", "Primary"),
        "{v:?}"
    );

    // 3. The replication link breaks, the heartbeats (link 2) live. nodea's
    // DRBD notices a dead link late, as it does with DRBD's default ping-int
    // of 10 s while the Primary notices first: tandem's outdate reaches a
    // node that still believes itself connected.
    let mut problems = Vec::new();
    let s = rig
        .sh(
            A,
            &format!("drbdadm net-options --ping-int=10 --ping-timeout=50 {RES}"),
            Duration::from_secs(20),
        )
        .unwrap();
    assert_eq!(s.exit, 0, "net-options on nodea: {}", s.stderr);
    let cut_at = unix_ms_now();
    rig.pair().cut(1).unwrap();
    wait(
        &mut rig,
        "nodeb's fence-peer handler answered",
        Duration::from_secs(60),
        |r| {
            r.view(B).ok()?;
            r.kernel_time(B, "fence-peer helper returned").map(|_| ())
        },
    );
    let answered = rig
        .kernel_log(B)
        .iter()
        .rev()
        .find(|l| l.contains("fence-peer helper returned"))
        .cloned()
        .unwrap();
    assert!(
        answered.contains("returned 4 (peer was fenced)"),
        "tandem-drbd-handler did not outdate the reachable peer (exit 4): {answered}\n{}",
        rig.report()
    );
    let handler_ms = rig.kernel_unix_ms(B, "fence-peer helper returned 4").unwrap().unwrap() - cut_at as f64;
    let v = views(&mut rig);
    assert_eq!(v[B].role, "Primary");
    assert!(!v[B].suspended, "nodeb's I/O is still frozen after exit 4: {v:?}");
    assert_eq!(v[B].peer_disk, "Outdated", "{v:?}");
    let seen = wait(
        &mut rig,
        "nodea noticed the broken link",
        Duration::from_secs(30),
        |r| {
            let a = r.view(A).ok()?;
            (!a.connected()).then_some(a)
        },
    );
    if v[A].disk != "Outdated" || seen.disk != "Outdated" {
        problems.push(format!(
            "tandem-drbd-handler exited 4 (peer outdated) but nodea's DRBD is {} ({} once it noticed the broken \
             link): DRBD 8.4's `drbdadm outdate` exits 0 and changes nothing while the node still counts itself \
             Connected (docs/real-drbd.md, outdate-while-connected); nodea: {:?}\n{}",
            v[A].disk,
            seen.disk,
            seen,
            rig.report()
        ));
    }
    let s = rig
        .sh(
            A,
            &format!("drbdadm net-options --ping-int=1 --ping-timeout=10 {RES}"),
            Duration::from_secs(20),
        )
        .unwrap();
    assert_eq!(s.exit, 0, "net-options on nodea: {}", s.stderr);
    for node in [A, B] {
        let st = rig.status(node).unwrap();
        assert_eq!(
            peer_state(&st),
            Some("online"),
            "heartbeats on link 2 should keep the peer online"
        );
    }
    rig.pair().heal(1).unwrap();
    wait(
        &mut rig,
        "resynced after the link came back",
        Duration::from_secs(60),
        |r| {
            let v = views(r);
            both_in_sync(&v).then_some(())
        },
    );

    // 4. Both links cut: nodea (preferred) fences nodeb, then takes r0 over.
    let b_pid = rig.pair().guest(B).pid();
    let cut_both_at = unix_ms_now();
    rig.pair().cut(1).unwrap();
    rig.pair().cut(2).unwrap();
    wait(
        &mut rig,
        "nodea Primary after fencing nodeb",
        Duration::from_secs(120),
        |r| {
            let a = r.view(A).ok()?;
            (a.role == "Primary").then_some(())
        },
    );
    let promoted_seen = unix_ms_now();
    assert!(
        !rig.pair().guest(B).running(),
        "nodea promoted while nodeb's QEMU (pid {b_pid}) still runs\n{}",
        rig.report()
    );
    let kills = rig.bmc(B).kills();
    let kill_at = *kills
        .first()
        .unwrap_or_else(|| panic!("nodeb's BMC never powered it off: {}", rig.bmc(B).log())) as f64;
    assert!(
        rig.bmc(A).power_offs().is_empty(),
        "nodea was fenced too: {}",
        rig.bmc(A).log()
    );
    let (_, rtt) = rig.clock(A).unwrap();
    let slack = 50.0 + rtt as f64 / 2.0;
    let exit7 = rig
        .kernel_unix_ms(A, "fence-peer helper returned 7")
        .unwrap()
        .unwrap_or_else(|| panic!("nodea's handler never exited 7:\n{}", rig.kernel_log(A).join("\n")));
    let promote = rig
        .kernel_unix_ms(A, "role( Secondary -> Primary )")
        .unwrap()
        .expect("nodea's kernel logged the promote");
    assert!(
        exit7 + slack >= kill_at,
        "nodea's handler exited 7 at {exit7:.0} before nodeb was powered off at {kill_at:.0}"
    );
    assert!(
        promote + slack >= exit7,
        "promoted at {promote:.0} before the handler's 7 at {exit7:.0}"
    );
    let v = rig.view(A).unwrap();
    assert_eq!(
        (v.disk.as_str(), v.peer_disk.as_str(), v.suspended),
        ("UpToDate", "Outdated", false),
        "{v:?}"
    );
    assert!(
        !rig.kernel_log(A).iter().any(|l| l.contains("Forced")),
        "nodea forced its data"
    );
    let st = rig.status(A).unwrap();
    assert_eq!(peer_state(&st), Some("fenced"), "{st}");
    let fence_to_promote_ms = promote - kill_at;

    let figures = json!({
        "kernel": image.kernel.package,
        "image_build_ms": image.build_ms,
        "boot_ms": boot_ms,
        "ready_ms": ready_ms,
        "dual_primary_ms": dual_ms,
        "migration_hooks_ms": migration_ms,
        "outdate_handler_ms": handler_ms.round(),
        "cut_to_kill_ms": (kill_at - cut_both_at as f64).round(),
        "fence_to_promote_ms": fence_to_promote_ms.round(),
        "cut_to_promote_ms": (promote - cut_both_at as f64).round(),
        "promote_seen_after_cut_ms": promoted_seen - cut_both_at,
        "clock_rtt_ms": rtt,
        "total_ms": started.elapsed().as_millis() as u64,
    });
    std::fs::write(
        out.join("figures.json"),
        serde_json::to_string_pretty(&figures).unwrap(),
    )
    .unwrap();
    eprintln!("real-DRBD tandem: {figures}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
