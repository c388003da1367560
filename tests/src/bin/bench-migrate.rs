//! `bench-migrate`: what tandem adds to a live migration, on two real libvirtd
//! with QEMU and two tandemd with the DRBD stand-in (`tandem_tests::virt_pair`).
//! Run by `scripts/bench-migrate.sh`.
//!
//! - `hook_prepare_ms`, `hook_release_ms`: wall time of `tandem-libvirt-hook`,
//!   process start to exit, for a destination's `vm1 migrate begin -` (tandemd
//!   checks the peer and the disks, both sides allow two primaries, the
//!   destination promotes) and its `vm1 release end -` (demote, both sides back
//!   to one primary), `BENCH_RUNS` (30) pairs, run as libvirt runs the hook:
//!   domain XML on stdin, the host's system bus.
//! - `migrate_ms_with_tandem`, `migrate_ms_without`: `virsh migrate --live`
//!   of the same domain back and forth, `BENCH_MIGRATIONS` (6) times with
//!   tandem's hook installed on both hosts, then as many with the hook replaced
//!   by one that only reads its stdin (libvirt without tandem); medians.
//!
//! Prints a table on stderr and `NAME VALUE` lines on stdout (p50 and p99 of
//! the hook times, medians of the migrations, and their ratio).

use anyhow::{bail, Result};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tandem_tests::bench::{env_num, percentile};
use tandem_tests::virt_pair::workspace_bin;
use tandem_tests::{Node, VirtPair, VirtSetup};

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Runs the hook as libvirt does; its wall time in ms.
fn hook(rig: &VirtPair, node: Node, args: &[&str], xml: &str) -> Result<f64> {
    let bin = workspace_bin("tandem-libvirt-hook")?;
    let start = Instant::now();
    let mut child = Command::new(&bin)
        .args(args)
        .env_clear()
        .env("DBUS_SYSTEM_BUS_ADDRESS", rig.bus(node).address())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(xml.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!(
            "hook {} on {node} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(ms)
}

fn migrate(rig: &VirtPair, from: Node) -> Result<f64> {
    let start = Instant::now();
    let out = rig.migrate("vm1", from, &[])?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!(
            "virsh migrate from {from}: {}\n{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            rig.report()
        );
    }
    // The next migration starts from a settled pair: source demoted, window closed.
    rig.wait_role(from, "Secondary", Duration::from_secs(10)).ok();
    Ok(ms)
}

fn main() -> Result<()> {
    let runs = env_num("BENCH_RUNS", 30)?;
    let migrations = env_num("BENCH_MIGRATIONS", 6)?;
    let rig = VirtPair::start_healthy(VirtSetup::default())?;
    rig.define_everywhere("vm1")?;
    let xml = rig.host(Node::Alpha).virsh_ok(&["dumpxml", "vm1"])?;
    rig.host(Node::Alpha).virsh_ok(&["start", "vm1"])?;
    // Let the source's poll of libvirt see vm1 running.
    std::thread::sleep(Duration::from_millis(1200));

    let (mut prepare, mut release) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        prepare.push(hook(&rig, Node::Beta, &["vm1", "migrate", "begin", "-"], &xml)?);
        release.push(hook(&rig, Node::Beta, &["vm1", "release", "end", "-"], &xml)?);
        // The source closes its side of the window after the destination's
        // release answered: the next round starts once both sides are closed.
        rig.wait_no_windows(Duration::from_secs(10))?;
    }
    rig.check_invariants()?;

    let mut with = Vec::new();
    let mut from = Node::Alpha;
    for _ in 0..migrations {
        with.push(migrate(&rig, from)?);
        from = from.other();
    }
    for node in Node::BOTH {
        rig.disable_hook(node)?;
    }
    let mut without = Vec::new();
    for _ in 0..migrations {
        without.push(migrate(&rig, from)?);
        from = from.other();
    }

    let (prepare, release, with, without) = (sorted(prepare), sorted(release), sorted(with), sorted(without));
    let with_ms = percentile(&with, 50.0);
    let without_ms = percentile(&without, 50.0);
    eprintln!("{:<28} {:>9} {:>9}", "", "p50 ms", "p99 ms");
    eprintln!(
        "{:<28} {:>9.2} {:>9.2}",
        "hook prepare (migrate begin)",
        percentile(&prepare, 50.0),
        percentile(&prepare, 99.0)
    );
    eprintln!(
        "{:<28} {:>9.2} {:>9.2}",
        "hook release (release end)",
        percentile(&release, 50.0),
        percentile(&release, 99.0)
    );
    eprintln!("{:<28} {:>9.1}", "virsh migrate, with tandem", with_ms);
    eprintln!("{:<28} {:>9.1}", "virsh migrate, without", without_ms);
    println!("hook_prepare_ms_p50 {:.2}", percentile(&prepare, 50.0));
    println!("hook_prepare_ms_p99 {:.2}", percentile(&prepare, 99.0));
    println!("hook_release_ms_p50 {:.2}", percentile(&release, 50.0));
    println!("hook_release_ms_p99 {:.2}", percentile(&release, 99.0));
    println!("migrate_ms_with_tandem {with_ms:.1}");
    println!("migrate_ms_without {without_ms:.1}");
    if without_ms > 0.0 {
        println!("migrate_with_vs_without_ratio {:.3}", with_ms / without_ms);
    }
    Ok(())
}
