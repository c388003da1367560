//! `tandem-lab` (`make lab`): the two-node lab on this one machine, told as a
//! timeline. Two hosts, alpha and beta, each a network namespace joined by two
//! links, with its own system bus, a real libvirtd and QEMU, a BMC (ipmi_sim)
//! whose power off ends every process of the host, and a tandemd; the DRBD
//! stand-in holds two resources, r0 and r1 (tests/src/virt_pair.rs).
//!
//! It starts two domains on alpha, live-migrates one to beta, then powers beta
//! off through its BMC and shows alpha fencing beta and starting its domain.
//! Everything is torn down on exit, on an error and on Ctrl-C.

use anyhow::{bail, Result};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tandem_tests::libvirt::{domain_xml, kvm_usable, uuid_v4};
use tandem_tests::status::{self, unix_ms_now};
use tandem_tests::{FenceSetup, Node, VirtPair, VirtSetup};

/// Set by SIGINT or SIGTERM: the lab stops at the next step and tears down.
static STOP_FLAG: std::sync::OnceLock<std::sync::Arc<AtomicBool>> = std::sync::OnceLock::new();

/// The lab's clock and narration.
struct Timeline {
    start: Instant,
    start_unix_ms: u64,
}

impl Timeline {
    fn say(&self, what: &str) {
        println!("{:>7} ms  {what}", self.start.elapsed().as_millis());
    }

    /// A line for something that happened at `unix_ms` (read from a status file or log).
    fn at(&self, unix_ms: u64, what: &str) {
        println!("{:>7} ms  {what}", unix_ms.saturating_sub(self.start_unix_ms));
    }
}

fn check_stop() -> Result<()> {
    if STOP_FLAG.get().is_some_and(|f| f.load(Ordering::SeqCst)) {
        bail!("interrupted: tearing everything down");
    }
    Ok(())
}

/// Polls `pred` every 20 ms until it holds; fails after `timeout` or on Ctrl-C.
fn wait(what: &str, timeout: Duration, mut pred: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    loop {
        check_stop()?;
        if pred() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn roles(rig: &VirtPair, resource: &str) -> String {
    let role = |n| rig.drbd().role(resource, n).unwrap_or_else(|_| "?".into());
    format!("{resource} {}/{}", role(Node::Alpha), role(Node::Beta))
}

/// How long dual-primary was allowed for `resource`, from the stand-in's history.
fn dual_primary_ms(rig: &VirtPair, resource: &str) -> Option<u64> {
    let history = rig.drbd().history().ok()?;
    let mine = |e: &&Value| e.get("resource").and_then(Value::as_str) == Some(resource);
    let allowed = |e: &Value| e.pointer("/after/allow_two_primaries").cloned();
    let on = history
        .iter()
        .filter(mine)
        .find(|e| allowed(e).is_some_and(|a| a.as_array().is_some_and(|v| v.iter().any(|x| x == true))))?;
    let off = history
        .iter()
        .filter(mine)
        .rev()
        .find(|e| allowed(e) == Some(serde_json::json!([false, false])))?;
    Some(off.get("t_ms")?.as_u64()? - on.get("t_ms")?.as_u64()?)
}

fn run(t: &Timeline) -> Result<()> {
    let accel = if kvm_usable() {
        "KVM"
    } else {
        "TCG (no usable /dev/kvm)"
    };
    t.say(&format!(
        "building two hosts, alpha and beta: network namespaces joined by two links, and per host a system bus, \
         libvirtd with QEMU ({accel}), an ipmi_sim BMC and tandemd; DRBD stand-in with r0 and r1"
    ));
    let setup = VirtSetup {
        fence: Some(FenceSetup::default()),
        power_kills_host: true,
        extra_resources: 1,
        ..VirtSetup::default()
    };
    let mut rig = VirtPair::start(setup)?;
    check_stop()?;
    rig.pair_mut().wait_healthy(Duration::from_secs(15))?;
    t.say("both tandemd see each other on both links; the control channel is up");

    for (dom, res) in [("web", "r0"), ("db", "r1")] {
        let xml = domain_xml(dom, &uuid_v4(), &[&format!("/dev/drbd/by-res/{res}/0")]);
        rig.host(Node::Alpha).define(&xml)?;
    }
    t.say("defined domains web (disk r0) and db (disk r1) on alpha only");
    wait("definitions copied to beta", Duration::from_secs(15), || {
        ["web", "db"]
            .iter()
            .all(|d| rig.host(Node::Beta).domstate(d).ok().flatten().is_some())
    })?;
    t.say("tandem copied both definitions to beta");

    for dom in ["web", "db"] {
        rig.host(Node::Alpha).virsh_ok(&["start", dom])?;
    }
    t.say(&format!(
        "virsh start web, db on alpha: the hook asked tandemd, which promoted ({}, {})",
        roles(&rig, "r0"),
        roles(&rig, "r1")
    ));
    // Let a poll of libvirt and a heartbeat carry "db runs on alpha".
    std::thread::sleep(Duration::from_millis(1200));
    check_stop()?;

    t.say("virsh migrate --live db to beta ...");
    let started = Instant::now();
    let out = rig.migrate("db", Node::Alpha, &[])?;
    if !out.status.success() {
        bail!("virsh migrate: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let migrate_ms = started.elapsed().as_millis();
    wait("alpha demoted r1", Duration::from_secs(10), || {
        rig.drbd().role("r1", Node::Alpha).is_ok_and(|r| r == "Secondary")
    })?;
    wait("r1 back to one primary", Duration::from_secs(10), || {
        dual_primary_ms(&rig, "r1").is_some()
    })?;
    let dual = dual_primary_ms(&rig, "r1").unwrap_or(0);
    t.say(&format!(
        "migrated in {migrate_ms} ms; r1 was allowed two primaries for {dual} ms only; now {}",
        roles(&rig, "r1")
    ));
    rig.check_invariants()?;
    std::thread::sleep(Duration::from_millis(1200));
    check_stop()?;

    t.say("beta loses power: ipmitool chassis power off against beta's BMC (every process of beta dies)");
    let off_unix = unix_ms_now();
    rig.power_off(Node::Beta)?;
    wait("db running on alpha", Duration::from_secs(30), || {
        rig.host(Node::Alpha).domstate("db").ok().flatten().as_deref() == Some("running")
    })?;
    let running_unix = unix_ms_now();

    let v = rig.status(Node::Alpha)?;
    for (kind, what) in [
        ("PeerLost", "alpha: beta lost (no heartbeat on any link for 1000 ms)"),
        ("FenceStarted", "alpha: fencing beta through its BMC"),
        ("FenceConfirmed", "alpha: beta's BMC confirms power off"),
        ("DomainTakenOver", "alpha: starting beta's domains"),
    ] {
        if let Some(e) = status::events_named(&v, kind, off_unix).first() {
            t.at(e.unix_ms, what);
        }
    }
    t.at(running_unix, &format!("db runs on alpha again ({})", roles(&rig, "r1")));
    rig.check_invariants()?;

    println!();
    println!("summary");
    println!("  live migration of db, alpha -> beta      {migrate_ms} ms (dual-primary {dual} ms)");
    println!(
        "  power off of beta -> db running on alpha  {} ms (goal: 3000 ms)",
        running_unix - off_unix
    );
    println!("  web stayed on alpha throughout; DRBD never had two primaries outside the migration window");
    Ok(())
}

fn main() -> std::process::ExitCode {
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, std::sync::Arc::clone(&stop)) {
            eprintln!("tandem-lab: cannot catch signal {sig} ({e}); Ctrl-C will not clean up");
        }
    }
    let _ = STOP_FLAG.set(stop);
    let t = Timeline {
        start: Instant::now(),
        start_unix_ms: unix_ms_now(),
    };
    match run(&t) {
        Ok(()) => {
            t.say("tearing down: daemons, libvirtd and QEMU, BMCs, buses, loop devices, namespaces");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tandem-lab: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
