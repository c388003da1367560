//! Byte encodings of the peer link: heartbeat datagrams and control-channel frames.
//!
//! Heartbeat datagram (at most [`MAX_DATAGRAM`] bytes):
//!
//! ```text
//! "TNHB" | version u8 | postcard(HeartbeatDatagram) | HMAC-SHA256(header|body)[..16]
//! ```
//!
//! The tag covers the header too, so a version byte cannot be altered without
//! detection. Control frames are postcard-encoded [`ControlFrame`]s carried
//! inside Noise transport messages (see `noise.rs`), which authenticate them;
//! their version lives in the Noise prologue, so a mismatch fails the handshake.

use super::keyfile::HeartbeatKey;
use crate::core::{Heartbeat, LinkId, NodeId, PeerMessage};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub const HB_MAGIC: [u8; 4] = *b"TNHB";
pub const HB_VERSION: u8 = 1;
pub const HB_HEADER_LEN: usize = 5;
/// Truncated HMAC-SHA256: 128 bits is plenty for a tag checked online.
pub const HB_TAG_LEN: usize = 16;
/// Kept below common MTUs' fragmentation trouble only loosely: a heartbeat of
/// a few hundred domains still fits; larger summaries are refused at encoding.
pub const MAX_DATAGRAM: usize = 8192;
/// Largest Noise message (65535) minus its 16-byte AEAD tag.
pub const MAX_FRAME_PLAINTEXT: usize = 65535 - 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated: {len} bytes, at least {min} needed")]
    Truncated { len: usize, min: usize },
    #[error("oversized: {len} bytes, at most {max} allowed")]
    Oversized { len: usize, max: usize },
    #[error("bad magic {found:02x?}: not a tandem heartbeat")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported wire version {found}, this build speaks {supported}")]
    BadVersion { found: u8, supported: u8 },
    #[error("authentication tag mismatch: sent with another cluster key, or altered")]
    BadTag,
    #[error("undecodable body: {0}")]
    Undecodable(String),
}

/// The sender's view of the receiver's last heartbeat on the same link, echoed
/// back so the receiver can measure the round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echo {
    /// The boot id of the node this echo is addressed to.
    pub boot: u64,
    /// That node's heartbeat counter being echoed.
    pub counter: u64,
    /// How long the echoing node held it before sending this datagram.
    pub held_us: u32,
}

/// Everything authenticated in one heartbeat datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatDatagram {
    /// The link the sender sent it on; a datagram showing up on another link
    /// was redirected and must not make that link look alive.
    pub link: LinkId,
    pub heartbeat: Heartbeat,
    pub echo: Option<Echo>,
}

/// What travels, encrypted, on the control channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlFrame {
    /// Identifies a side during the handshake.
    Hello {
        node: NodeId,
        boot: u64,
    },
    /// Keepalive: proves the connection still carries data both ways.
    Ping,
    Message(PeerMessage),
}

fn new_mac(key: &HeartbeatKey) -> Hmac<Sha256> {
    match <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm cannot run.
        Err(_) => unreachable!("HMAC refused a 32-byte key"),
    }
}

fn undecodable(e: postcard::Error) -> WireError {
    WireError::Undecodable(e.to_string())
}

/// Encodes and authenticates a heartbeat datagram.
pub fn encode_heartbeat(key: &HeartbeatKey, dg: &HeartbeatDatagram) -> Result<Vec<u8>, WireError> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(&HB_MAGIC);
    buf.push(HB_VERSION);
    let mut buf = postcard::to_extend(dg, buf).map_err(undecodable)?;
    let mut mac = new_mac(key);
    mac.update(&buf);
    let tag = mac.finalize().into_bytes();
    buf.extend(tag.iter().take(HB_TAG_LEN));
    if buf.len() > MAX_DATAGRAM {
        return Err(WireError::Oversized {
            len: buf.len(),
            max: MAX_DATAGRAM,
        });
    }
    Ok(buf)
}

/// Checks and decodes a heartbeat datagram. Cheap checks run before the MAC;
/// the body is only parsed once the tag proves it came from a key holder.
pub fn decode_heartbeat(key: &HeartbeatKey, bytes: &[u8]) -> Result<HeartbeatDatagram, WireError> {
    let min = HB_HEADER_LEN + HB_TAG_LEN + 1;
    if bytes.len() > MAX_DATAGRAM {
        return Err(WireError::Oversized {
            len: bytes.len(),
            max: MAX_DATAGRAM,
        });
    }
    let truncated = WireError::Truncated { len: bytes.len(), min };
    if bytes.len() < min {
        return Err(truncated);
    }
    let (header, rest) = bytes.split_at_checked(HB_HEADER_LEN).ok_or(truncated.clone())?;
    let (magic, version) = header.split_at_checked(4).ok_or(truncated.clone())?;
    if magic != HB_MAGIC {
        let mut found = [0u8; 4];
        found.copy_from_slice(magic);
        return Err(WireError::BadMagic { found });
    }
    if version != [HB_VERSION] {
        return Err(WireError::BadVersion {
            found: version.first().copied().unwrap_or_default(),
            supported: HB_VERSION,
        });
    }
    let body_len = rest.len().checked_sub(HB_TAG_LEN).ok_or(truncated.clone())?;
    let (body, tag) = rest.split_at_checked(body_len).ok_or(truncated)?;
    let mut mac = new_mac(key);
    mac.update(header);
    mac.update(body);
    mac.verify_truncated_left(tag).map_err(|_| WireError::BadTag)?;
    let (dg, trailing) = postcard::take_from_bytes::<HeartbeatDatagram>(body).map_err(undecodable)?;
    if !trailing.is_empty() {
        return Err(WireError::Undecodable(format!("{} trailing bytes", trailing.len())));
    }
    Ok(dg)
}

/// Encodes a control frame's plaintext.
pub fn encode_frame(frame: &ControlFrame) -> Result<Vec<u8>, WireError> {
    let buf = postcard::to_allocvec(frame).map_err(undecodable)?;
    if buf.len() > MAX_FRAME_PLAINTEXT {
        return Err(WireError::Oversized {
            len: buf.len(),
            max: MAX_FRAME_PLAINTEXT,
        });
    }
    Ok(buf)
}

/// Decodes a control frame's plaintext (after Noise authenticated it).
pub fn decode_frame(bytes: &[u8]) -> Result<ControlFrame, WireError> {
    if bytes.is_empty() {
        return Err(WireError::Truncated { len: 0, min: 1 });
    }
    if bytes.len() > MAX_FRAME_PLAINTEXT {
        return Err(WireError::Oversized {
            len: bytes.len(),
            max: MAX_FRAME_PLAINTEXT,
        });
    }
    let (frame, trailing) = postcard::take_from_bytes::<ControlFrame>(bytes).map_err(undecodable)?;
    if !trailing.is_empty() {
        return Err(WireError::Undecodable(format!("{} trailing bytes", trailing.len())));
    }
    Ok(frame)
}

/// Length of the frame announced by a control channel's 2-byte big-endian
/// prefix. Zero is refused: no valid Noise message is empty.
pub fn frame_len(prefix: [u8; 2]) -> Result<usize, WireError> {
    match usize::from(u16::from_be_bytes(prefix)) {
        0 => Err(WireError::Truncated { len: 0, min: 1 }),
        n => Ok(n),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use crate::core::{DomainName, PeerBody, ResourceName, Summary, WindowId};
    use crate::net::keyfile::ClusterKey;

    pub(crate) fn key(b: u8) -> HeartbeatKey {
        ClusterKey::from_bytes(&[b; 32]).unwrap().heartbeat_key()
    }

    pub(crate) fn sample() -> HeartbeatDatagram {
        HeartbeatDatagram {
            link: LinkId(1),
            heartbeat: Heartbeat {
                from: NodeId(1),
                boot: 0xdead_beef,
                counter: 42,
                summary: Summary {
                    domains: vec![DomainName::from("vm1"), DomainName::from("vm2")],
                    primaries: vec![ResourceName::from("r0")],
                    standby: true,
                },
            },
            echo: Some(Echo {
                boot: 7,
                counter: 9,
                held_us: 1234,
            }),
        }
    }

    /// Seals arbitrary body bytes with a valid header and tag.
    pub(crate) fn seal_raw(key: &HeartbeatKey, body: &[u8]) -> Vec<u8> {
        let mut buf = HB_MAGIC.to_vec();
        buf.push(HB_VERSION);
        buf.extend_from_slice(body);
        let mut mac = new_mac(key);
        mac.update(&buf);
        buf.extend(mac.finalize().into_bytes().iter().take(HB_TAG_LEN));
        buf
    }

    #[test]
    fn heartbeat_round_trip() {
        let k = key(1);
        let dg = sample();
        let bytes = encode_heartbeat(&k, &dg).unwrap();
        assert_eq!(decode_heartbeat(&k, &bytes).unwrap(), dg);
        let plain = HeartbeatDatagram { echo: None, ..dg };
        assert_eq!(
            decode_heartbeat(&k, &encode_heartbeat(&k, &plain).unwrap()).unwrap(),
            plain
        );
    }

    #[test]
    fn every_heartbeat_error_kind() {
        let k = key(1);
        let good = encode_heartbeat(&k, &sample()).unwrap();

        assert!(matches!(
            decode_heartbeat(&k, &good[..10]),
            Err(WireError::Truncated { len: 10, .. })
        ));
        assert!(matches!(
            decode_heartbeat(&k, &[]),
            Err(WireError::Truncated { len: 0, .. })
        ));
        assert!(matches!(
            decode_heartbeat(&k, &vec![0u8; MAX_DATAGRAM + 1]),
            Err(WireError::Oversized { .. })
        ));

        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(decode_heartbeat(&k, &bad), Err(WireError::BadMagic { .. })));
        let mut bad = good.clone();
        bad[4] = 2;
        assert_eq!(
            decode_heartbeat(&k, &bad),
            Err(WireError::BadVersion { found: 2, supported: 1 })
        );

        assert_eq!(decode_heartbeat(&key(2), &good), Err(WireError::BadTag));
        let mut bad = good.clone();
        bad[8] ^= 1;
        assert_eq!(decode_heartbeat(&k, &bad), Err(WireError::BadTag));
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x80;
        assert_eq!(decode_heartbeat(&k, &bad), Err(WireError::BadTag));

        // Authentic but meaningless bodies: a peer on another build, or a bug.
        assert!(matches!(
            decode_heartbeat(&k, &seal_raw(&k, &[0xff; 3])),
            Err(WireError::Undecodable(_))
        ));
        let mut body = postcard::to_allocvec(&sample()).unwrap();
        body.push(0);
        match decode_heartbeat(&k, &seal_raw(&k, &body)) {
            Err(WireError::Undecodable(m)) => assert!(m.contains("trailing"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversized_summary_is_refused_at_encoding() {
        let mut dg = sample();
        dg.heartbeat.summary.domains = (0..2000).map(|i| DomainName(format!("domain-{i}"))).collect();
        assert!(matches!(
            encode_heartbeat(&key(1), &dg),
            Err(WireError::Oversized { .. })
        ));
    }

    #[test]
    fn frame_round_trips_and_errors() {
        let frames = [
            ControlFrame::Hello {
                node: NodeId(0),
                boot: u64::MAX,
            },
            ControlFrame::Ping,
            ControlFrame::Message(PeerMessage {
                from: NodeId(1),
                boot: 3,
                seq: 4,
                body: PeerBody::EnterDualAnswer {
                    window: WindowId {
                        opener: NodeId(0),
                        boot: 1,
                        n: 2,
                    },
                    result: Err("no".into()),
                },
            }),
        ];
        for f in frames {
            assert_eq!(decode_frame(&encode_frame(&f).unwrap()).unwrap(), f);
        }
        assert!(matches!(decode_frame(&[]), Err(WireError::Truncated { .. })));
        assert!(matches!(decode_frame(&[0xff, 0xff]), Err(WireError::Undecodable(_))));
        assert!(matches!(decode_frame(&[1, 0]), Err(WireError::Undecodable(_))));
        assert!(matches!(
            decode_frame(&vec![1u8; MAX_FRAME_PLAINTEXT + 1]),
            Err(WireError::Oversized { .. })
        ));
        let huge = ControlFrame::Message(PeerMessage {
            from: NodeId(1),
            boot: 0,
            seq: 0,
            body: PeerBody::Outdate {
                token: 0,
                resource: ResourceName("r".repeat(70_000)),
            },
        });
        assert!(matches!(encode_frame(&huge), Err(WireError::Oversized { .. })));
        assert_eq!(frame_len([0, 0]), Err(WireError::Truncated { len: 0, min: 1 }));
        assert_eq!(frame_len([0xff, 0xff]), Ok(65535));
        assert_eq!(frame_len([1, 2]), Ok(258));
    }
}
