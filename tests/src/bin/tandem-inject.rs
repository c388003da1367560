//! `tandem-inject`: an attacker on a link segment, for the peer link tests.
//!
//! ```text
//! tandem-inject --to IP:PORT [--forge N] [--replay-from IP:PORT] [--redirect-from IP:PORT]
//!               [--reflect-from IP:PORT] [--count N] [--copies K] [--key PATH]
//! ```
//!
//! Sends to the heartbeat socket `--to`:
//! - `--forge N`: N each of random garbage, truncated, oversized (9000 bytes) and
//!   bad-version datagrams, and N well-formed heartbeats sealed with a key of its own;
//! - `--replay-from A`: captures `--count` real datagrams arriving for A (the same
//!   socket as `--to`) and sends each `--copies` times again (replays);
//! - `--redirect-from A`: captures datagrams arriving for A (another link's socket
//!   of the same node) and sends them to `--to` (redirected to the wrong link);
//! - `--reflect-from A`: captures datagrams arriving for A (run it in the *peer's*
//!   namespace, A being the peer's socket) and sends them back to `--to`, their
//!   own sender (reflected).
//!
//! Nothing of this needs the cluster key; `--key` only lets it check that what
//! it captured are genuine heartbeats. Captures use a raw socket: run it as root
//! inside the namespace whose incoming traffic it should see. Prints what it
//! sent as JSON on stdout, named like the daemon's drop counters.

use anyhow::{bail, Context, Result};
use std::net::{SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;
use tandem::core::{LinkId, NodeId};
use tandem::net::wire::decode_heartbeat;
use tandem::net::{load_key, HeartbeatKey};
use tandem_tests::inject::{self, Sent};

#[derive(Debug, Default)]
struct Args {
    to: Option<SocketAddrV4>,
    forge: u64,
    replay_from: Option<SocketAddrV4>,
    redirect_from: Option<SocketAddrV4>,
    reflect_from: Option<SocketAddrV4>,
    count: usize,
    copies: u64,
    key: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        count: 3,
        copies: 2,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        let addr = |s: String| -> Result<SocketAddrV4> { s.parse().with_context(|| format!("bad address {s:?}")) };
        match flag.as_str() {
            "--to" => a.to = Some(addr(value()?)?),
            "--forge" => a.forge = value()?.parse().context("--forge")?,
            "--replay-from" => a.replay_from = Some(addr(value()?)?),
            "--redirect-from" => a.redirect_from = Some(addr(value()?)?),
            "--reflect-from" => a.reflect_from = Some(addr(value()?)?),
            "--count" => a.count = value()?.parse().context("--count")?,
            "--copies" => a.copies = value()?.parse().context("--copies")?,
            "--key" => a.key = Some(value()?.into()),
            other => bail!("unknown argument {other:?} (see the source for usage)"),
        }
    }
    Ok(a)
}

/// Describes a captured datagram when the key is known; fails if it is not a
/// genuine heartbeat (then the expected counts would be wrong).
fn check_genuine(key: Option<&HeartbeatKey>, bytes: &[u8]) -> Result<serde_json::Value> {
    let Some(key) = key else {
        return Ok(serde_json::json!({ "len": bytes.len() }));
    };
    let dg = decode_heartbeat(key, bytes).context("a captured datagram is not a genuine heartbeat")?;
    Ok(serde_json::json!({
        "len": bytes.len(),
        "from": dg.heartbeat.from.0,
        "link": dg.link.0,
        "boot": format!("{:x}", dg.heartbeat.boot),
        "counter": dg.heartbeat.counter,
    }))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let to = args.to.context("--to IP:PORT is required")?;
    let key = match &args.key {
        Some(p) => Some(load_key(p)?.heartbeat_key()),
        None => None,
    };
    let sock = UdpSocket::bind("0.0.0.0:0").context("cannot bind a UDP socket")?;
    let send = |bytes: &[u8]| -> Result<()> {
        sock.send_to(bytes, to)
            .with_context(|| format!("cannot send to {to}"))?;
        Ok(())
    };
    let timeout = Duration::from_secs(5);
    let mut sent = Sent::default();
    let mut captured = Vec::new();

    // Captures come first, while nothing of ours is in flight.
    if let Some(from) = args.replay_from {
        let copies = inject::capture(from, args.count, timeout)?;
        for c in &copies {
            captured.push(check_genuine(key.as_ref(), c)?);
            for _ in 0..args.copies {
                send(c)?;
                sent.replayed += 1;
            }
        }
    }
    if let Some(from) = args.redirect_from {
        for c in inject::capture(from, args.count, timeout)? {
            captured.push(check_genuine(key.as_ref(), &c)?);
            send(&c)?;
            sent.wrong_link += 1;
        }
    }
    if let Some(from) = args.reflect_from {
        for c in inject::capture(from, args.count, timeout)? {
            captured.push(check_genuine(key.as_ref(), &c)?);
            send(&c)?;
            sent.wrong_sender += 1;
        }
    }

    let mut rng = rand::thread_rng();
    for _ in 0..args.forge {
        send(&inject::garbage(&mut rng))?;
        sent.garbage += 1;
        send(&inject::truncated(&mut rng))?;
        sent.truncated += 1;
        send(&inject::oversized(&mut rng))?;
        sent.oversized += 1;
        send(&inject::bad_version(&mut rng))?;
        sent.bad_version += 1;
        // Claims to be either node on link 0: the tag check comes first.
        let from = NodeId(u8::from(sent.bad_auth % 2 == 1));
        send(&inject::wrong_key(&mut rng, from, LinkId(0))?)?;
        sent.bad_auth += 1;
    }

    let mut out = sent.to_json();
    if let Some(obj) = out.as_object_mut() {
        obj.insert("captured".into(), serde_json::Value::Array(captured));
    }
    println!("{out}");
    Ok(())
}
