//! What an attacker on a link segment can send to a daemon's heartbeat port:
//! forgeries without the key, and copies of real datagrams captured on the
//! wire. Used by the `tandem-inject` binary, which the tests run as a third
//! process inside a node's namespace.

use anyhow::{bail, Context, Result};
use rand::Rng;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};
use tandem::core::{Heartbeat, LinkId, NodeId, Summary};
use tandem::net::wire::{self, Echo, HeartbeatDatagram, HB_MAGIC, HB_VERSION, MAX_DATAGRAM};
use tandem::net::ClusterKey;

/// Size of the oversized forgery: a jumbo frame's worth, above [`MAX_DATAGRAM`].
pub const OVERSIZED_LEN: usize = 9000;

/// Random bytes that do not start with the heartbeat magic (counted as garbage).
pub fn garbage(rng: &mut impl Rng) -> Vec<u8> {
    let len = rng.gen_range(40..400);
    let mut b = vec![0u8; len];
    rng.fill_bytes(&mut b);
    if b.first() == HB_MAGIC.first() {
        b[0] ^= 0x80;
    }
    b
}

/// A valid-looking header and too few bytes behind it for a tag (truncated).
pub fn truncated(rng: &mut impl Rng) -> Vec<u8> {
    let mut b = header(HB_VERSION);
    let mut tail = vec![0u8; rng.gen_range(0..8)];
    rng.fill_bytes(&mut tail);
    b.extend(tail);
    b
}

/// [`OVERSIZED_LEN`] bytes behind a valid-looking header (oversized).
pub fn oversized(rng: &mut impl Rng) -> Vec<u8> {
    let mut b = header(HB_VERSION);
    let mut tail = vec![0u8; OVERSIZED_LEN - b.len()];
    rng.fill_bytes(&mut tail);
    b.extend(tail);
    b
}

/// The heartbeat magic with a version this build does not speak (bad version).
pub fn bad_version(rng: &mut impl Rng) -> Vec<u8> {
    let mut b = header(HB_VERSION.wrapping_add(1));
    let mut tail = vec![0u8; 64];
    rng.fill_bytes(&mut tail);
    b.extend(tail);
    b
}

fn header(version: u8) -> Vec<u8> {
    let mut b = HB_MAGIC.to_vec();
    b.push(version);
    b
}

/// A well-formed heartbeat claiming to come from `from` on `link`, sealed with
/// a key of the attacker's own (bad auth).
pub fn wrong_key(rng: &mut impl Rng, from: NodeId, link: LinkId) -> Result<Vec<u8>> {
    let mut k = [0u8; 64];
    rng.fill_bytes(&mut k);
    let key = ClusterKey::from_bytes(&k).context("a 64-byte key was refused")?;
    let dg = HeartbeatDatagram {
        link,
        heartbeat: Heartbeat {
            from,
            boot: rng.gen(),
            counter: rng.gen_range(1..u64::MAX / 2),
            summary: Summary::default(),
        },
        echo: Some(Echo {
            boot: rng.gen(),
            counter: rng.gen(),
            held_us: 10,
        }),
    };
    Ok(wire::encode_heartbeat(&key.heartbeat_key(), &dg)?)
}

/// The UDP payload of an IPv4 packet (as a raw socket delivers it, header
/// included) if it is a datagram to `dst`; `None` for anything else.
pub fn udp_payload(packet: &[u8], dst: SocketAddrV4) -> Option<&[u8]> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || *packet.get(9)? != 17 {
        return None;
    }
    let dst_ip: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
    if Ipv4Addr::from(dst_ip) != *dst.ip() {
        return None;
    }
    let udp = packet.get(ihl..)?;
    let dst_port = u16::from_be_bytes(udp.get(2..4)?.try_into().ok()?);
    let udp_len = usize::from(u16::from_be_bytes(udp.get(4..6)?.try_into().ok()?));
    if dst_port != dst.port() || udp_len < 8 {
        return None;
    }
    udp.get(8..udp_len)
}

/// Captures the first `count` UDP datagrams arriving for `dst` within
/// `timeout`, as a segment sniffer would: a raw socket sees a copy of each
/// before the destination socket reads it. Needs CAP_NET_RAW; run it inside
/// the receiving node's namespace.
pub fn capture(dst: SocketAddrV4, count: usize, timeout: Duration) -> Result<Vec<Vec<u8>>> {
    let mut sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
        .context("cannot open a raw UDP socket (needs CAP_NET_RAW)")?;
    let start = Instant::now();
    let mut out = Vec::with_capacity(count);
    // An IPv4 packet of the largest datagram plus headers.
    let mut buf = vec![0u8; MAX_DATAGRAM + 128];
    while out.len() < count {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            bail!(
                "captured {} of {count} datagrams to {dst} within {timeout:?}",
                out.len()
            );
        }
        sock.set_read_timeout(Some(left))
            .context("cannot set the capture timeout")?;
        let n = match sock.read(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e).context("capture failed"),
        };
        if let Some(payload) = buf.get(..n).and_then(|p| udp_payload(p, dst)) {
            out.push(payload.to_vec());
        }
    }
    Ok(out)
}

/// How many datagrams of each kind were sent, named like the daemon's drop
/// counters they must land in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    pub garbage: u64,
    pub truncated: u64,
    pub oversized: u64,
    pub bad_version: u64,
    pub bad_auth: u64,
    pub replayed: u64,
    pub wrong_sender: u64,
    pub wrong_link: u64,
}

impl Sent {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "garbage": self.garbage,
            "truncated": self.truncated,
            "oversized": self.oversized,
            "bad_version": self.bad_version,
            "bad_auth": self.bad_auth,
            "replayed": self.replayed,
            "wrong_sender": self.wrong_sender,
            "wrong_link": self.wrong_link,
        })
    }

    /// `(counter name, count)` for every kind.
    pub fn counts(&self) -> [(&'static str, u64); 8] {
        [
            ("garbage", self.garbage),
            ("truncated", self.truncated),
            ("oversized", self.oversized),
            ("bad_version", self.bad_version),
            ("bad_auth", self.bad_auth),
            ("replayed", self.replayed),
            ("wrong_sender", self.wrong_sender),
            ("wrong_link", self.wrong_link),
        ]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tandem::net::wire::{decode_heartbeat, WireError};
    use tandem::net::DropCounters;

    fn counters_for(bytes: &[u8]) -> DropCounters {
        let key = ClusterKey::from_bytes(&[7u8; 64]).unwrap().heartbeat_key();
        let mut c = DropCounters::default();
        let e: WireError = decode_heartbeat(&key, bytes).unwrap_err();
        c.count_wire(&e);
        c
    }

    #[test]
    fn each_forgery_lands_in_its_counter() {
        let mut rng = rand::thread_rng();
        for _ in 0..50 {
            assert_eq!(counters_for(&garbage(&mut rng)).garbage, 1);
            assert_eq!(counters_for(&truncated(&mut rng)).truncated, 1);
            assert_eq!(counters_for(&oversized(&mut rng)).oversized, 1);
            assert_eq!(counters_for(&bad_version(&mut rng)).bad_version, 1);
            let wk = wrong_key(&mut rng, NodeId(1), LinkId(0)).unwrap();
            assert_eq!(counters_for(&wk).bad_auth, 1);
        }
    }

    fn ipv4_udp(dst: [u8; 4], port: u16, payload: &[u8], ihl_words: u8) -> Vec<u8> {
        let ihl = usize::from(ihl_words) * 4;
        let mut p = vec![0u8; ihl];
        p[0] = 0x40 | ihl_words;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&dst);
        p.extend_from_slice(&4242u16.to_be_bytes());
        p.extend_from_slice(&port.to_be_bytes());
        p.extend_from_slice(&u16::try_from(payload.len() + 8).unwrap().to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn udp_payload_picks_datagrams_to_the_target_only() {
        let dst: SocketAddrV4 = "192.0.2.1:5405".parse().unwrap();
        let p = ipv4_udp([192, 0, 2, 1], 5405, b"hello", 5);
        assert_eq!(udp_payload(&p, dst), Some(&b"hello"[..]));
        // IP options move the UDP header.
        let p = ipv4_udp([192, 0, 2, 1], 5405, b"opts", 7);
        assert_eq!(udp_payload(&p, dst), Some(&b"opts"[..]));
        assert_eq!(udp_payload(&ipv4_udp([192, 0, 2, 2], 5405, b"x", 5), dst), None);
        assert_eq!(udp_payload(&ipv4_udp([192, 0, 2, 1], 5406, b"x", 5), dst), None);
        let mut tcp = ipv4_udp([192, 0, 2, 1], 5405, b"x", 5);
        tcp[9] = 6;
        assert_eq!(udp_payload(&tcp, dst), None);
        // Cut short anywhere: never a panic, never a payload past the end.
        let p = ipv4_udp([192, 0, 2, 1], 5405, b"hello", 5);
        for n in 0..p.len() {
            assert_eq!(udp_payload(&p[..n], dst), None, "cut at {n}");
        }
        assert_eq!(udp_payload(&[0x60; 40], dst), None);
    }
}
