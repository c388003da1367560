//! The control channel's handshake and framing.
//!
//! Pattern `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`, PSK derived from the cluster
//! key. Every frame on the socket is a u16 big-endian length followed by one
//! Noise message (at most 65535 bytes).
//!
//! ```text
//! initiator -> responder   Noise msg 1 (psk, e), empty payload
//! responder -> initiator   Noise msg 2 (e, ee), payload Hello{responder}
//! initiator -> responder   transport frame: Hello{initiator}
//! ```
//!
//! Message 1 proves the initiator knows the key but can be replayed; the
//! responder trusts the connection only after the third message, which needs
//! the initiator's ephemeral secret and so cannot be replayed. Message 2 proves
//! the responder knows the key (it is encrypted under psk and ee).

use super::keyfile::NoisePsk;
use super::wire::{decode_frame, encode_frame, frame_len, ControlFrame, WireError};
use crate::core::NodeId;
use snow::{HandshakeState, TransportState};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Binds the handshake to this protocol and version: a peer speaking another
/// version fails the handshake instead of misreading frames.
const PROLOGUE: &[u8] = b"tandem control channel v1";
pub const MAX_NOISE_MSG: usize = 65535;

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("connection failed during handshake: {0}")]
    Io(#[from] io::Error),
    #[error("handshake refused (wrong cluster key, or not a tandem peer): {0}")]
    Noise(#[from] snow::Error),
    #[error("handshake frame: {0}")]
    Wire(#[from] WireError),
    #[error("handshake: expected a Hello, got another frame")]
    NotHello,
    #[error("handshake: expected {expected}, the other side is {found}")]
    WrongNode { expected: NodeId, found: NodeId },
}

/// Who the other side said it is, once the handshake proved it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerHello {
    pub node: NodeId,
    pub boot: u64,
}

fn builder_state(psk: &NoisePsk, initiator: bool) -> Result<HandshakeState, snow::Error> {
    let params = NOISE_PARAMS.parse()?;
    let b = snow::Builder::new(params).psk(0, psk.as_bytes()).prologue(PROLOGUE);
    if initiator {
        b.build_initiator()
    } else {
        b.build_responder()
    }
}

pub(crate) fn new_initiator(psk: &NoisePsk) -> Result<HandshakeState, snow::Error> {
    builder_state(psk, true)
}

pub(crate) fn new_responder(psk: &NoisePsk) -> Result<HandshakeState, snow::Error> {
    builder_state(psk, false)
}

/// Writes one length-prefixed frame.
pub(crate) async fn write_raw<W: AsyncWrite + Unpin>(w: &mut W, msg: &[u8]) -> io::Result<()> {
    let len =
        u16::try_from(msg.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 65535 bytes"))?;
    let mut buf = Vec::with_capacity(msg.len() + 2);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(msg);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Reads one length-prefixed frame.
pub(crate) async fn read_raw<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut prefix = [0u8; 2];
    r.read_exact(&mut prefix).await?;
    let len = frame_len(prefix).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut msg = vec![0u8; len];
    r.read_exact(&mut msg).await?;
    Ok(msg)
}

/// Encrypts a frame for the wire.
pub(crate) fn seal(t: &mut TransportState, frame: &ControlFrame) -> Result<Vec<u8>, SealError> {
    let plain = encode_frame(frame)?;
    let mut out = vec![0u8; plain.len() + 16];
    let n = t.write_message(&plain, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// Decrypts and decodes a frame from the wire.
pub(crate) fn open(t: &mut TransportState, msg: &[u8]) -> Result<ControlFrame, SealError> {
    let mut plain = vec![0u8; msg.len()];
    let n = t.read_message(msg, &mut plain)?;
    Ok(decode_frame(plain.get(..n).unwrap_or_default())?)
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("frame encryption or authentication failed: {0}")]
    Noise(#[from] snow::Error),
    #[error("frame: {0}")]
    Wire(#[from] WireError),
}

impl From<SealError> for HandshakeError {
    fn from(e: SealError) -> Self {
        match e {
            SealError::Noise(e) => HandshakeError::Noise(e),
            SealError::Wire(e) => HandshakeError::Wire(e),
        }
    }
}

fn check_hello(frame: ControlFrame, expected: NodeId) -> Result<PeerHello, HandshakeError> {
    match frame {
        ControlFrame::Hello { node, boot } if node == expected => Ok(PeerHello { node, boot }),
        ControlFrame::Hello { node, .. } => Err(HandshakeError::WrongNode { expected, found: node }),
        _ => Err(HandshakeError::NotHello),
    }
}

/// Runs the initiator's side. The caller bounds it with a timeout.
pub(crate) async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    psk: &NoisePsk,
    me: PeerHello,
    expected: NodeId,
) -> Result<(TransportState, PeerHello), HandshakeError> {
    let mut hs = new_initiator(psk)?;
    let mut buf = vec![0u8; MAX_NOISE_MSG];
    let n = hs.write_message(&[], &mut buf)?;
    write_raw(stream, buf.get(..n).unwrap_or_default()).await?;

    let msg = read_raw(stream).await?;
    let mut payload = vec![0u8; MAX_NOISE_MSG];
    let n = hs.read_message(&msg, &mut payload)?;
    let hello = check_hello(decode_frame(payload.get(..n).unwrap_or_default())?, expected)?;

    let mut t = hs.into_transport_mode()?;
    let confirm = seal(
        &mut t,
        &ControlFrame::Hello {
            node: me.node,
            boot: me.boot,
        },
    )?;
    write_raw(stream, &confirm).await?;
    Ok((t, hello))
}

/// Runs the responder's side. The caller bounds it with a timeout.
pub(crate) async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    psk: &NoisePsk,
    me: PeerHello,
    expected: NodeId,
) -> Result<(TransportState, PeerHello), HandshakeError> {
    let mut hs = new_responder(psk)?;
    let msg = read_raw(stream).await?;
    let mut payload = vec![0u8; MAX_NOISE_MSG];
    hs.read_message(&msg, &mut payload)?;

    let hello = encode_frame(&ControlFrame::Hello {
        node: me.node,
        boot: me.boot,
    })?;
    let mut buf = vec![0u8; MAX_NOISE_MSG];
    let n = hs.write_message(&hello, &mut buf)?;
    write_raw(stream, buf.get(..n).unwrap_or_default()).await?;

    let mut t = hs.into_transport_mode()?;
    let confirm = read_raw(stream).await?;
    let hello = check_hello(open(&mut t, &confirm)?, expected)?;
    Ok((t, hello))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::net::keyfile::ClusterKey;

    fn psk(b: u8) -> NoisePsk {
        ClusterKey::from_bytes(&[b; 32]).unwrap().noise_psk()
    }

    const A: PeerHello = PeerHello {
        node: NodeId(0),
        boot: 10,
    };
    const B: PeerHello = PeerHello {
        node: NodeId(1),
        boot: 11,
    };

    async fn pair(
        pi: NoisePsk,
        pr: NoisePsk,
        expect_by_i: NodeId,
        expect_by_r: NodeId,
    ) -> (
        Result<(TransportState, PeerHello), HandshakeError>,
        Result<(TransportState, PeerHello), HandshakeError>,
    ) {
        let (mut x, mut y) = tokio::io::duplex(1 << 17);
        let i = async move {
            let r = initiate(&mut x, &pi, A, expect_by_i).await;
            drop(x);
            r
        };
        let r = async move {
            let r = respond(&mut y, &pr, B, expect_by_r).await;
            drop(y);
            r
        };
        tokio::join!(i, r)
    }

    #[tokio::test]
    async fn handshake_and_frames() {
        let (i, r) = pair(psk(1), psk(1), NodeId(1), NodeId(0)).await;
        let (mut ti, hi) = i.unwrap();
        let (mut tr, hr) = r.unwrap();
        assert_eq!(hi, B);
        assert_eq!(hr, A);
        let sealed = seal(&mut ti, &ControlFrame::Ping).unwrap();
        assert_eq!(open(&mut tr, &sealed).unwrap(), ControlFrame::Ping);
        // Replaying a transport message fails: the nonce moved on.
        assert!(matches!(open(&mut tr, &sealed), Err(SealError::Noise(_))));
        let sealed = seal(&mut tr, &ControlFrame::Ping).unwrap();
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert!(open(&mut ti, &bad).is_err());
    }

    #[tokio::test]
    async fn wrong_key_fails_on_both_sides() {
        let (i, r) = pair(psk(1), psk(2), NodeId(1), NodeId(0)).await;
        assert!(matches!(r, Err(HandshakeError::Noise(_))), "{r:?}");
        assert!(i.is_err());
    }

    #[tokio::test]
    async fn wrong_node_is_refused() {
        let (i, _r) = pair(psk(1), psk(1), NodeId(0), NodeId(0)).await;
        assert!(matches!(
            i,
            Err(HandshakeError::WrongNode {
                expected: NodeId(0),
                found: NodeId(1)
            })
        ));
        let (_i, r) = pair(psk(1), psk(1), NodeId(1), NodeId(1)).await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn zero_length_frame_is_refused() {
        let (mut x, mut y) = tokio::io::duplex(64);
        x.write_all(&[0, 0]).await.unwrap();
        let e = read_raw(&mut y).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(write_raw(&mut x, &vec![0u8; 70_000]).await.is_err());
    }
}
