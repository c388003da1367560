//! One established control connection, and the queue of messages waiting for one.

use super::control::{ControlConfig, Shared};
use super::noise::{self, SealError};
use super::wire::ControlFrame;
use crate::core::{LinkId, PeerMessage};
use snow::TransportState;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant, MissedTickBehavior};
use tracing::warn;

/// Messages waiting for a connection, oldest first.
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: VecDeque<(Instant, PeerMessage)>,
    capacity: usize,
    max_age: Duration,
}

impl Outbox {
    pub(crate) fn new(capacity: usize, max_age: Duration) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            capacity,
            max_age,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Queues a message; returns the oldest one if it had to make room.
    pub(crate) fn push(&mut self, msg: PeerMessage) -> Option<PeerMessage> {
        let dropped = if self.queue.len() >= self.capacity {
            self.queue.pop_front().map(|(_, m)| m)
        } else {
            None
        };
        self.queue.push_back((Instant::now(), msg));
        dropped
    }

    /// The next message young enough to send, and how many stale ones were
    /// thrown away on the way.
    pub(crate) fn pop(&mut self, now: Instant) -> (Option<(Instant, PeerMessage)>, u64) {
        let mut stale = 0;
        while let Some((at, msg)) = self.queue.pop_front() {
            if now.saturating_duration_since(at) > self.max_age {
                stale += 1;
                continue;
            }
            return (Some((at, msg)), stale);
        }
        (None, stale)
    }

    /// Puts back a message whose write failed, at the head, keeping its age.
    pub(crate) fn requeue(&mut self, at: Instant, msg: PeerMessage) {
        if self.queue.len() < self.capacity {
            self.queue.push_front((at, msg));
        }
    }
}

/// An authenticated connection to the peer.
pub(crate) struct Session {
    pub(crate) stream: TcpStream,
    pub(crate) transport: TransportState,
    pub(crate) link: LinkId,
    pub(crate) remote: SocketAddr,
    pub(crate) peer_boot: u64,
}

pub(crate) enum SessionEnd {
    Broken(String),
    /// The listener adopted a newer connection.
    Replaced(Session),
    /// Nobody reads inbound messages any more.
    InboundClosed,
}

async fn next_session(rx: Option<&mut mpsc::Receiver<Session>>) -> Session {
    match rx {
        Some(rx) => match rx.recv().await {
            Some(s) => s,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs a connection until it breaks, is replaced, or the consumer is gone.
pub(crate) async fn run_session(
    session: Session,
    cfg: &ControlConfig,
    shared: &Shared,
    inbound: &mpsc::Sender<PeerMessage>,
    mut sessions: Option<&mut mpsc::Receiver<Session>>,
) -> SessionEnd {
    let Session {
        stream, mut transport, ..
    } = session;
    let (mut rd, mut wr) = stream.into_split();
    // Reading a frame is not cancel-safe, so it runs in its own task instead of
    // inside the select below; the ciphertext comes over a channel.
    let (frames_tx, mut frames_rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(16);
    let _reader = AbortOnDrop(tokio::spawn(async move {
        loop {
            let frame = noise::read_raw(&mut rd).await;
            let failed = frame.is_err();
            if frames_tx.send(frame).await.is_err() || failed {
                return;
            }
        }
    }));
    let mut keepalive = tokio::time::interval(cfg.keepalive);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    loop {
        if let Err(reason) = flush(&mut transport, &mut wr, cfg, shared).await {
            return SessionEnd::Broken(reason);
        }
        tokio::select! {
            frame = frames_rx.recv() => {
                let ciphertext = match frame {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => return SessionEnd::Broken(format!("read: {e}")),
                    None => return SessionEnd::Broken("reader stopped".into()),
                };
                last_heard = Instant::now();
                match noise::open(&mut transport, &ciphertext) {
                    Ok(ControlFrame::Message(msg)) => {
                        if msg.from != cfg.peer {
                            let n = shared.count(|c| &mut c.wrong_sender);
                            warn!(from = %msg.from, count = n, "control message from a node that is not the peer, dropped");
                            continue;
                        }
                        shared.count(|c| &mut c.received);
                        if inbound.send(msg).await.is_err() {
                            return SessionEnd::InboundClosed;
                        }
                    }
                    Ok(ControlFrame::Ping) => {}
                    Ok(ControlFrame::Hello { .. }) => {
                        shared.count(|c| &mut c.bad_frames);
                        return SessionEnd::Broken("Hello after the handshake".into());
                    }
                    // Someone altered or injected bytes in the stream, or the
                    // peer is broken: nothing more on it can be trusted.
                    Err(e) => {
                        shared.count(|c| &mut c.bad_frames);
                        return SessionEnd::Broken(e.to_string());
                    }
                }
            }
            _ = shared.notify.notified() => {}
            _ = keepalive.tick() => {
                if let Err(reason) = write_frame(&mut transport, &mut wr, cfg, &ControlFrame::Ping).await {
                    return SessionEnd::Broken(reason);
                }
            }
            _ = tokio::time::sleep_until(last_heard + cfg.dead_after) => {
                return SessionEnd::Broken(format!("nothing heard for {:?}", cfg.dead_after));
            }
            s = next_session(sessions.as_deref_mut()) => return SessionEnd::Replaced(s),
        }
    }
}

async fn write_sealed<W: AsyncWrite + Unpin>(wr: &mut W, cfg: &ControlConfig, sealed: &[u8]) -> Result<(), String> {
    match timeout(cfg.dead_after, noise::write_raw(wr, sealed)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write: {e}")),
        Err(_) => Err(format!("write blocked for {:?}", cfg.dead_after)),
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(
    t: &mut TransportState,
    wr: &mut W,
    cfg: &ControlConfig,
    frame: &ControlFrame,
) -> Result<(), String> {
    let sealed = noise::seal(t, frame).map_err(|e| e.to_string())?;
    write_sealed(wr, cfg, &sealed).await
}

/// Sends every queued message.
async fn flush<W: AsyncWrite + Unpin>(
    t: &mut TransportState,
    wr: &mut W,
    cfg: &ControlConfig,
    shared: &Shared,
) -> Result<(), String> {
    loop {
        let (next, stale) = shared.outbox().pop(Instant::now());
        if stale > 0 {
            let total = {
                let mut st = shared.status();
                st.counters.dropped_stale += stale;
                st.counters.dropped_stale
            };
            warn!(dropped = stale, total, max_age = ?cfg.queue_max_age, "stale control messages dropped");
        }
        let Some((at, msg)) = next else { return Ok(()) };
        let frame = ControlFrame::Message(msg);
        let sealed = match noise::seal(t, &frame) {
            Ok(s) => s,
            Err(SealError::Wire(error)) => {
                // Nothing was encrypted, so the nonces still agree; the
                // connection stays, the message cannot ever be sent.
                let n = shared.count(|c| &mut c.unsendable);
                warn!(%error, count = n, "control message too large, dropped");
                continue;
            }
            Err(e @ SealError::Noise(_)) => return Err(e.to_string()),
        };
        match write_sealed(wr, cfg, &sealed).await {
            Ok(()) => {
                shared.count(|c| &mut c.sent);
            }
            Err(reason) => {
                if let ControlFrame::Message(msg) = frame {
                    shared.outbox().requeue(at, msg);
                }
                return Err(reason);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::core::{NodeId, PeerBody, ResourceName};

    fn msg(seq: u64) -> PeerMessage {
        PeerMessage {
            from: NodeId(0),
            boot: 1,
            seq,
            body: PeerBody::Outdate {
                token: seq,
                resource: ResourceName::from("r0"),
            },
        }
    }

    #[test]
    fn full_queue_drops_the_oldest() {
        let mut q = Outbox::new(3, Duration::from_secs(60));
        for s in 0..3 {
            assert!(q.push(msg(s)).is_none());
        }
        assert_eq!(q.push(msg(3)).map(|m| m.seq), Some(0));
        assert_eq!(q.len(), 3);
        let now = Instant::now();
        let seqs: Vec<u64> = std::iter::from_fn(|| q.pop(now).0.map(|(_, m)| m.seq)).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn stale_messages_are_dropped_and_requeue_keeps_order() {
        let mut q = Outbox::new(8, Duration::from_secs(5));
        q.push(msg(1));
        q.push(msg(2));
        let later = Instant::now() + Duration::from_secs(6);
        assert!(matches!(q.pop(later), (None, 2)));

        q.push(msg(3));
        q.push(msg(4));
        let (Some((at, m)), 0) = q.pop(Instant::now()) else {
            panic!()
        };
        q.requeue(at, m);
        assert_eq!(q.pop(Instant::now()).0.map(|(_, m)| m.seq), Some(3));
    }
}
