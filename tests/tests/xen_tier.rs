//! tandem on real Xen 4.17 with real DRBD 8.4 (tests/src/xen_tier.rs,
//! docs/real-xen.md): two dom0s under QEMU TCG, tandemd with its `xl` driver
//! in each, the PVH guest g1 on a `drbd:r0` disk. One boot, in order:
//!
//! 1. bring-up: both daemons see each other; g1.cfg, written on nodea only,
//!    reaches nodeb's /etc/xen through tandem's definition sync;
//! 2. `xl create` of g1 on nodea boots it; the same on nodeb is refused by
//!    tandem's block-drbd and leaves r0 Secondary there;
//! 3. the operator's plain `xl migrate` nodea → nodeb: g1 runs on nodeb with
//!    the same boot, r0 Secondary on nodea, allow-two-primaries off on both;
//! 4. `tandemctl migrate g1` back to nodea: the same checks;
//! 5. a migration whose receiver is not there fails with xl's reason, g1
//!    keeps running on nodea, nothing is promoted or left dual-primary;
//! 6. the old way, for the benchmark: tandemd stopped, drbd-utils'
//!    block-drbd and allow-two-primaries set by hand, `xl migrate` there and
//!    back; then tandem again;
//! 7. power-off of nodea through its BMC: nodeb's tandemd fences nodea
//!    (IPMI confirms power off) and restarts g1 from the synced file: the
//!    guest boots again (boot counter + 1) on nodeb.
//!
//! Figures go to `target/xen-tier/figures.json` for scripts/bench-xen.sh.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::time::{Duration, Instant};
use tandem_tests::xen_tier::{self, XenTier, DOMAIN, LINK, MIGRATE_PORT, RES};

const A: usize = 0;
const B: usize = 1;
const MIGRATION: Duration = Duration::from_secs(240);
/// xenconsoled's logs of g1: `guest-g1.log`, and `guest-g1--incoming.log`
/// for a domain received by `xl migrate` (the name it had when its console
/// was connected).
const CONSOLES: &str = "/var/log/xen/console/guest-g1*.log";

fn role(t: &XenTier, node: usize) -> String {
    t.ok(node, &format!("drbdadm role {RES}"), Duration::from_secs(20))
        .unwrap()
        .trim()
        .to_owned()
}

fn two_primaries(t: &XenTier, node: usize) -> bool {
    t.ok(node, &format!("drbdsetup show {RES}"), Duration::from_secs(20))
        .unwrap()
        .contains("allow-two-primaries")
}

/// The guest's boot number as its console last said it, if it runs here.
fn guest_boot(t: &XenTier, node: usize) -> Option<u32> {
    let out = t
        .run(
            node,
            &format!("tail -c 400 $(ls -t {CONSOLES} 2>/dev/null | head -1)"),
            Duration::from_secs(20),
        )
        .ok()?
        .out;
    out.rsplit("boot=").next()?.split_whitespace().next()?.parse().ok()
}

fn runs_here(t: &XenTier, node: usize) -> bool {
    t.run(node, &format!("xl domid {DOMAIN}"), Duration::from_secs(20))
        .is_ok_and(|r| r.exit == 0)
}

fn status_json(t: &XenTier, node: usize) -> serde_json::Value {
    let out = t.ok(node, "tandemctl status --json", Duration::from_secs(20)).unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("tandemctl status --json: {e}: {out}"))
}

/// After a migration to `to`: g1 runs there only, with the same boot; r0
/// Primary there only; dual-primary off on both.
fn check_moved(t: &XenTier, to: usize, boot: u32) {
    let from = 1 - to;
    t.wait(
        to,
        "g1 running after the migration",
        Duration::from_secs(60),
        &format!("xl list | grep -q '^{DOMAIN} '"),
    )
    .unwrap();
    assert!(!runs_here(t, from), "g1 still on {from}");
    t.wait(
        to,
        "the guest ticking on the target",
        Duration::from_secs(60),
        &format!("tail -c 200 $(ls -t {CONSOLES} | head -1) | grep -q tick"),
    )
    .unwrap();
    assert_eq!(guest_boot(t, to), Some(boot), "the guest rebooted instead of migrating");
    t.wait(
        from,
        "the source demoted",
        Duration::from_secs(60),
        &format!("drbdadm role {RES} | grep -q '^Secondary'"),
    )
    .unwrap();
    assert!(role(t, to).starts_with("Primary/"), "{}", role(t, to));
    for n in [A, B] {
        assert!(!two_primaries(t, n), "allow-two-primaries left on on {n}");
    }
}

/// `xl migrate` of g1 from `from` to the other dom0's listener; how long it took.
fn xl_migrate(t: &XenTier, from: usize) -> (i32, String, f64) {
    let started = Instant::now();
    let r = t
        .run(
            from,
            &format!(
                "xl migrate -s '' {DOMAIN} 'socat - TCP:{}:{MIGRATE_PORT}' </dev/null",
                LINK[1 - from]
            ),
            MIGRATION,
        )
        .unwrap();
    (r.exit, r.out, started.elapsed().as_secs_f64() * 1000.0)
}

#[test]
fn tandem_on_xen_417() {
    tandem_tests::preflight().unwrap();
    let _ = tandem_tests::netns::sweep_leftovers();
    let started = Instant::now();
    let out = tandem_tests::env::target_dir().join("xen-tier");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let boot = xen_tier::build(&out.join("boot")).unwrap();
    let built_s = started.elapsed().as_secs_f64();
    let t = XenTier::boot(&out, boot).unwrap();
    let booted_s = started.elapsed().as_secs_f64();
    t.setup().unwrap();
    let mut figures = serde_json::Map::new();

    // 1. Bring-up and definition sync.
    for n in [A, B] {
        t.wait(
            n,
            "the peer online",
            Duration::from_secs(90),
            "tandemctl status --json | grep -q '\"online\"'",
        )
        .unwrap();
    }
    assert_eq!(role(&t, A), "Secondary/Secondary");
    t.ok(A, "cp /etc/g1.cfg /etc/xen/g1.cfg", Duration::from_secs(10))
        .unwrap();
    let synced = t
        .wait(
            B,
            "g1.cfg synced to nodeb",
            Duration::from_secs(60),
            "cmp -s /etc/g1.cfg /etc/xen/g1.cfg",
        )
        .unwrap();
    figures.insert("xen_definition_sync_ms".into(), json!(synced.as_millis() as u64));
    eprintln!("step 1: up after {booted_s:.0} s (build {built_s:.0} s), g1.cfg synced in {synced:?}");

    // 2. Start on A; the same start on B is refused.
    t.ok(A, "xl create /etc/xen/g1.cfg </dev/null", Duration::from_secs(120))
        .unwrap();
    t.wait(
        A,
        "the guest up on nodea",
        Duration::from_secs(120),
        &format!("cat {CONSOLES} | grep -q 'GUEST-UP boot=1'"),
    )
    .unwrap();
    assert!(role(&t, A).starts_with("Primary/"), "{}", role(&t, A));
    let refused = t
        .run(B, "xl create /etc/xen/g1.cfg </dev/null", Duration::from_secs(120))
        .unwrap();
    assert_ne!(
        refused.exit, 0,
        "xl create on nodeb while g1 runs on nodea: {}",
        refused.out
    );
    assert!(
        refused.out.contains("tandem"),
        "the refusal does not say tandem refused: {}",
        refused.out
    );
    assert!(!runs_here(&t, B));
    assert_eq!(role(&t, B), "Secondary/Primary");
    let view = status_json(&t, B);
    eprintln!(
        "step 2: g1 on nodea, refused on nodeb: {}",
        refused.out.lines().last().unwrap_or("")
    );
    assert!(
        view.to_string().contains(DOMAIN),
        "nodeb's status does not know g1: {view}"
    );

    // 3. The operator's plain xl migrate A -> B.
    let (exit, said, with_ms) = xl_migrate(&t, A);
    assert_eq!(exit, 0, "xl migrate nodea -> nodeb: {said}\n{}", t.report(B));
    check_moved(&t, B, 1);
    figures.insert("xen_migrate_ms_with_tandem".into(), json!(with_ms.round()));
    eprintln!("step 3: xl migrate nodea -> nodeb in {with_ms:.0} ms");

    // 4. tandemctl migrate back to A.
    let t0 = Instant::now();
    let r = t.run(B, &format!("tandemctl migrate {DOMAIN}"), MIGRATION).unwrap();
    assert_eq!(r.exit, 0, "tandemctl migrate: {}\n{}", r.out, t.report(B));
    check_moved(&t, A, 1);
    figures.insert(
        "xen_migrate_ms_tandemctl".into(),
        json!(t0.elapsed().as_millis() as u64),
    );
    eprintln!("step 4: tandemctl migrate nodeb -> nodea in {:?}", t0.elapsed());

    // 5. No receiver on B: refused, g1 stays on A.
    t.ok(B, "kill $(cat /run/migrate-receive.pid)", Duration::from_secs(10))
        .unwrap();
    let (exit, said, _) = xl_migrate(&t, A);
    assert_ne!(exit, 0, "xl migrate without a receiver succeeded: {said}");
    assert!(runs_here(&t, A) && !runs_here(&t, B));
    assert!(role(&t, A).starts_with("Primary/") && role(&t, B).starts_with("Secondary/"));
    assert!(!two_primaries(&t, A) && !two_primaries(&t, B));
    let r = t.run(A, &format!("tandemctl migrate {DOMAIN}"), MIGRATION).unwrap();
    assert_ne!(r.exit, 0, "tandemctl migrate without a receiver succeeded: {}", r.out);
    assert!(r.out.contains(DOMAIN), "the error does not name the domain: {}", r.out);
    assert!(runs_here(&t, A) && !runs_here(&t, B));
    assert!(!two_primaries(&t, A) && !two_primaries(&t, B));
    eprintln!("step 5: refused: {}", r.out.lines().last().unwrap_or(""));
    t.ok(
        B,
        &format!("setsid socat TCP-LISTEN:{MIGRATE_PORT},reuseaddr,fork EXEC:'xl migrate-receive' </dev/null >/dev/null 2>&1 & echo $! >/run/migrate-receive.pid"),
        Duration::from_secs(10),
    )
    .unwrap();

    // 6. The old way: no tandemd, drbd-utils' script, dual-primary by hand.
    for n in [A, B] {
        t.stop_tandemd(n).unwrap();
        t.ok(
            n,
            &format!(
                "cp /etc/xen/scripts/block-drbd /etc/xen/scripts/block-drbd.tandem && \
                 cp /etc/xen/scripts/block-drbd.orig /etc/xen/scripts/block-drbd && \
                 drbdadm net-options --allow-two-primaries=yes {RES}"
            ),
            Duration::from_secs(20),
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    let (exit, said, without_ms) = xl_migrate(&t, A);
    assert_eq!(exit, 0, "the old way's xl migrate: {said}");
    t.wait(
        B,
        "g1 on nodeb (old way)",
        Duration::from_secs(60),
        &format!("xl list | grep -q '^{DOMAIN} '"),
    )
    .unwrap();
    let (exit, said, _) = xl_migrate(&t, B);
    assert_eq!(exit, 0, "the old way's xl migrate back: {said}");
    t.wait(
        A,
        "g1 on nodea (old way)",
        Duration::from_secs(60),
        &format!("xl list | grep -q '^{DOMAIN} '"),
    )
    .unwrap();
    figures.insert("xen_migrate_ms_without".into(), json!(without_ms.round()));
    figures.insert(
        "xen_migrate_ratio".into(),
        json!((with_ms / without_ms * 1000.0).round() / 1000.0),
    );
    eprintln!("step 6: old way nodea -> nodeb in {without_ms:.0} ms (tandem: {with_ms:.0} ms)");
    for n in [A, B] {
        t.ok(
            n,
            &format!(
                "cp /etc/xen/scripts/block-drbd.tandem /etc/xen/scripts/block-drbd && \
                 drbdadm net-options --allow-two-primaries=no {RES}"
            ),
            Duration::from_secs(20),
        )
        .unwrap();
        t.start_tandemd(n).unwrap();
    }
    for n in [A, B] {
        t.wait(
            n,
            "the peer online again",
            Duration::from_secs(90),
            "tandemctl status --json | grep -q '\"online\"'",
        )
        .unwrap();
    }
    let boot_before = guest_boot(&t, A).expect("g1's console on nodea");

    // 7. Power loss of nodea: nodeb fences it and restarts g1.
    let off = Instant::now();
    let bmc = t.bmc(A).port();
    let power = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &netns_of(&t),
            "ipmitool",
            "-I",
            "lanplus",
            "-H",
            "127.0.0.1",
            "-p",
            &bmc.to_string(),
        ])
        .args([
            "-U",
            tandem_tests::bmc::USER,
            "-P",
            tandem_tests::bmc::PASSWORD,
            "-C",
            "3",
            "chassis",
            "power",
            "off",
        ])
        .output()
        .unwrap();
    assert!(
        power.status.success(),
        "ipmitool power off: {}",
        String::from_utf8_lossy(&power.stderr)
    );
    t.wait(
        B,
        "g1 restarted on nodeb",
        Duration::from_secs(180),
        &format!("cat {CONSOLES} | grep -q 'GUEST-UP boot={}'", boot_before + 1),
    )
    .unwrap();
    let failover_ms = off.elapsed().as_millis() as u64;
    assert!(role(&t, B).starts_with("Primary/"), "{}", role(&t, B));
    let log = t.ok(B, "cat /run/tandem/tandemd.log", Duration::from_secs(20)).unwrap();
    assert!(
        log.contains("fence confirmed"),
        "nodeb restarted g1 without a confirmed fence:\n{log}"
    );
    assert!(
        !log.contains(tandem_tests::bmc::PASSWORD),
        "the BMC password is in tandemd's log"
    );
    figures.insert("xen_failover_ms".into(), json!(failover_ms));
    eprintln!("step 7: power off nodea -> g1 up on nodeb in {failover_ms} ms");

    figures.insert("xen_tier_s".into(), json!(started.elapsed().as_secs()));
    std::fs::write(
        out.join("figures.json"),
        serde_json::to_string_pretty(&figures).unwrap(),
    )
    .unwrap();
    eprintln!("figures: {}", serde_json::Value::Object(figures));
}

fn netns_of(t: &XenTier) -> String {
    t.ns_name().to_owned()
}
