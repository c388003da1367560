//! Every decoder fed arbitrary and mutated input: never a panic, always an
//! error where the input cannot be authentic.
//!
//! Executions per property (proptest cases; no shrinking happens unless one fails):
//! - `heartbeat_arbitrary_bytes`: 4096
//! - `heartbeat_mutated`: 4096
//! - `heartbeat_authentic_garbage_body`: 4096
//! - `frame_arbitrary_bytes`: 4096
//! - `frame_mutated`: 4096
//! - `frame_len_any_prefix`: 1024
//! - `noise_handshake_arbitrary_first_message`: 1024
//! - `noise_handshake_arbitrary_second_message`: 256 (one key exchange each)
//! - `noise_transport_arbitrary_and_mutated`: 256 (one full handshake each)

use super::cluster_key;
use crate::core::{NodeId, PeerBody, PeerMessage, ResourceName, WindowId};
use crate::net::noise::{new_initiator, new_responder, open, seal, MAX_NOISE_MSG};
use crate::net::wire::tests::{key, sample, seal_raw};
use crate::net::wire::{
    decode_frame, decode_heartbeat, encode_frame, encode_heartbeat, frame_len, ControlFrame, HB_MAGIC, HB_VERSION,
};
use proptest::prelude::*;
use snow::TransportState;

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Truncate { to: usize },
    Append(Vec<u8>),
    Replace { at: usize, with: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|to| Mutation::Truncate { to }),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Append),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, with)| Mutation::Replace { at, with }),
    ]
}

fn mutate(orig: &[u8], m: &Mutation) -> Vec<u8> {
    let mut v = orig.to_vec();
    let len = v.len().max(1);
    match m {
        Mutation::Flip { at, mask } => {
            if let Some(b) = v.get_mut(at % len) {
                *b ^= mask;
            }
        }
        Mutation::Truncate { to } => v.truncate(to % len),
        Mutation::Append(extra) => v.extend_from_slice(extra),
        Mutation::Replace { at, with } => {
            for (i, b) in with.iter().enumerate() {
                if let Some(slot) = v.get_mut((at + i) % len) {
                    *slot = *b;
                }
            }
        }
    }
    v
}

fn sample_frame() -> ControlFrame {
    ControlFrame::Message(PeerMessage {
        from: NodeId(1),
        boot: 77,
        seq: 3,
        body: PeerBody::EnterDual {
            window: WindowId {
                opener: NodeId(1),
                boot: 77,
                n: 1,
            },
            domain: "vm1".into(),
            resources: vec![ResourceName::from("r0"), ResourceName::from("r1")],
        },
    })
}

/// A finished in-memory handshake: (initiator, responder).
fn transport_pair() -> (TransportState, TransportState) {
    let psk = cluster_key(1).noise_psk();
    let mut i = new_initiator(&psk).unwrap();
    let mut r = new_responder(&psk).unwrap();
    let (mut m, mut p) = (vec![0u8; MAX_NOISE_MSG], vec![0u8; MAX_NOISE_MSG]);
    let n = i.write_message(&[], &mut m).unwrap();
    r.read_message(&m[..n], &mut p).unwrap();
    let n = r.write_message(&[], &mut m).unwrap();
    i.read_message(&m[..n], &mut p).unwrap();
    (i.into_transport_mode().unwrap(), r.into_transport_mode().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Half the cases start with a valid header so they reach the tag check.
    #[test]
    fn heartbeat_arbitrary_bytes(header in any::<bool>(), tail in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut bytes = if header { [&HB_MAGIC[..], &[HB_VERSION]].concat() } else { Vec::new() };
        bytes.extend_from_slice(&tail);
        prop_assert!(decode_heartbeat(&key(1), &bytes).is_err());
    }

    #[test]
    fn heartbeat_mutated(m in mutation()) {
        let k = key(1);
        let good = encode_heartbeat(&k, &sample()).unwrap();
        let bad = mutate(&good, &m);
        if bad != good {
            prop_assert!(decode_heartbeat(&k, &bad).is_err(), "{:?} accepted", m);
        }
    }

    /// Only a key holder gets past the tag; even then nothing may panic.
    #[test]
    fn heartbeat_authentic_garbage_body(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let k = key(1);
        if let Ok(dg) = decode_heartbeat(&k, &seal_raw(&k, &body)) {
            prop_assert_eq!(encode_heartbeat(&k, &dg).ok().map(|b| b.len()), Some(body.len() + 21));
        }
    }

    /// Frames are authenticated by Noise before decoding, so arbitrary bytes
    /// may decode; they must never panic.
    #[test]
    fn frame_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_frame(&bytes);
    }

    #[test]
    fn frame_mutated(m in mutation()) {
        let good = encode_frame(&sample_frame()).unwrap();
        let _ = decode_frame(&mutate(&good, &m));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn frame_len_any_prefix(prefix in any::<[u8; 2]>()) {
        match frame_len(prefix) {
            Ok(n) => prop_assert!((1..=65535).contains(&n)),
            Err(_) => prop_assert_eq!(prefix, [0, 0]),
        }
    }

    #[test]
    fn noise_handshake_arbitrary_first_message(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut r = new_responder(&cluster_key(1).noise_psk()).unwrap();
        let mut p = vec![0u8; MAX_NOISE_MSG];
        prop_assert!(r.read_message(&bytes, &mut p).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn noise_handshake_arbitrary_second_message(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut i = new_initiator(&cluster_key(1).noise_psk()).unwrap();
        let mut m = vec![0u8; MAX_NOISE_MSG];
        i.write_message(&[], &mut m).unwrap();
        prop_assert!(i.read_message(&bytes, &mut m).is_err());
    }

    #[test]
    fn noise_transport_arbitrary_and_mutated(bytes in proptest::collection::vec(any::<u8>(), 0..512), m in mutation()) {
        let (mut i, mut r) = transport_pair();
        prop_assert!(open(&mut r, &bytes).is_err());
        let good = seal(&mut i, &sample_frame()).unwrap();
        let bad = mutate(&good, &m);
        if bad != good {
            prop_assert!(open(&mut r, &bad).is_err());
        }
        // A failed attempt leaves the channel usable for the authentic frame.
        prop_assert_eq!(open(&mut r, &good).unwrap(), sample_frame());
    }
}
