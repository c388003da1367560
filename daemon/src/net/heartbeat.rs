//! Heartbeats over every link: one UDP socket per link, one sender task that
//! stamps every datagram with the boot id and a fresh counter, one receiver task
//! per link that authenticates, filters replays and counts what it drops.
//!
//! The counter grows per datagram, not per round: the core refuses any counter
//! not above the last one it took (over all links), so the same counter sent on
//! two links would always lose on the slower one.

use super::keyfile::HeartbeatKey;
use super::replay::{ReplayVerdict, ReplayWindow};
use super::wire::{decode_heartbeat, encode_heartbeat, Echo, HeartbeatDatagram, WireError, MAX_DATAGRAM};
use crate::core::{Heartbeat, LinkId, NodeId, Summary};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

/// One link: where this node's socket is bound and where the peer's listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAddrs {
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatConfig {
    pub me: NodeId,
    pub peer: NodeId,
    /// This daemon's random boot id.
    pub boot: u64,
    /// Time between two rounds of heartbeats (one datagram per link each).
    pub interval: Duration,
    /// In configuration order: index `i` is `LinkId(i)`.
    pub links: Vec<LinkAddrs>,
}

#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("heartbeat configuration: no links")]
    NoLinks,
    #[error("heartbeat configuration: {0} links, at most 256 are supported")]
    TooManyLinks(usize),
    #[error("heartbeat configuration: this node and the peer are both {0}")]
    SameNode(NodeId),
    #[error("heartbeat configuration: the interval must not be zero")]
    ZeroInterval,
    #[error("heartbeat link {link}: cannot bind UDP {addr}: {source}")]
    Bind {
        link: u8,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Datagrams a link's receiver threw away, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounters {
    pub truncated: u64,
    pub oversized: u64,
    /// Bad magic, or authentic but undecodable.
    pub garbage: u64,
    pub bad_version: u64,
    /// Tag mismatch: another cluster key, or altered in flight.
    pub bad_auth: u64,
    /// Duplicate, or too old for the replay window.
    pub replayed: u64,
    /// Claims to come from a node other than the peer (e.g. our own, reflected).
    pub wrong_sender: u64,
    /// Sent on another link and redirected to this one.
    pub wrong_link: u64,
    /// The core's queue was full.
    pub overflow: u64,
    /// A new boot id not yet proven fresh (it did not echo a recent heartbeat of ours).
    pub unproven: u64,
}

impl DropCounters {
    /// Counts one decoding failure; returns the new value of its counter.
    pub fn count_wire(&mut self, e: &WireError) -> u64 {
        let c = match e {
            WireError::Truncated { .. } => &mut self.truncated,
            WireError::Oversized { .. } => &mut self.oversized,
            WireError::BadMagic { .. } | WireError::Undecodable(_) => &mut self.garbage,
            WireError::BadVersion { .. } => &mut self.bad_version,
            WireError::BadTag => &mut self.bad_auth,
        };
        *c += 1;
        *c
    }

    pub fn total(&self) -> u64 {
        self.truncated
            + self.oversized
            + self.garbage
            + self.bad_version
            + self.bad_auth
            + self.replayed
            + self.wrong_sender
            + self.wrong_link
            + self.overflow
            + self.unproven
    }
}

/// What status shows about one link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkStats {
    pub link: LinkId,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub sent: u64,
    pub send_errors: u64,
    /// Authentic, fresh heartbeats received.
    pub received: u64,
    pub recv_errors: u64,
    pub drops: DropCounters,
    pub last_seen: Option<Instant>,
    /// Smoothed round-trip time (like TCP's SRTT), once the peer echoed one of ours.
    pub rtt_ms: Option<f64>,
}

/// How many of our own sent counters are remembered to match echoes against.
const SENT_RING: usize = 32;
/// Echoes held longer than this are not sent: the round trip would be meaningless.
const MAX_ECHO_HOLD: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct LinkState {
    stats: LinkStats,
    window: ReplayWindow,
    /// The peer's last heartbeat here: (boot, counter, when), to echo back.
    last_peer: Option<(u64, u64, Instant)>,
    sent_at: VecDeque<(u64, Instant)>,
}

/// Why a datagram was dropped, for logging.
#[derive(Debug, thiserror::Error)]
enum Dropped {
    #[error("{0}")]
    Wire(WireError),
    #[error("claims to come from {0}, which is not the peer")]
    WrongSender(NodeId),
    #[error("sent on link {}, received on another", .0.0)]
    WrongLink(LinkId),
    #[error("replayed ({0:?})")]
    Replayed(ReplayVerdict),
    #[error("new boot id {0:x} that does not echo a recent heartbeat of ours yet")]
    Unproven(u64),
}

impl LinkState {
    fn new(link: LinkId, addrs: LinkAddrs) -> LinkState {
        LinkState {
            stats: LinkStats {
                link,
                local: addrs.local,
                peer: addrs.peer,
                sent: 0,
                send_errors: 0,
                received: 0,
                recv_errors: 0,
                drops: DropCounters::default(),
                last_seen: None,
                rtt_ms: None,
            },
            window: ReplayWindow::new(),
            last_peer: None,
            sent_at: VecDeque::with_capacity(SENT_RING),
        }
    }

    fn echo(&self, now: Instant) -> Option<Echo> {
        let (boot, counter, at) = self.last_peer?;
        let held = now.saturating_duration_since(at);
        if held > MAX_ECHO_HOLD {
            return None;
        }
        Some(Echo {
            boot,
            counter,
            held_us: u32::try_from(held.as_micros()).unwrap_or(u32::MAX),
        })
    }

    fn record_sent(&mut self, counter: u64, at: Instant) {
        if self.sent_at.len() >= SENT_RING {
            self.sent_at.pop_front();
        }
        self.sent_at.push_back((counter, at));
    }

    /// Checks one datagram; on success records it and returns the heartbeat
    /// for the core. Returns the drop reason and the new value of its counter.
    fn receive(
        &mut self,
        cfg: &HeartbeatConfig,
        key: &HeartbeatKey,
        data: &[u8],
        now: Instant,
    ) -> Result<Heartbeat, (Dropped, u64)> {
        let drops = &mut self.stats.drops;
        let dg = match decode_heartbeat(key, data) {
            Ok(dg) => dg,
            Err(e) => {
                let n = drops.count_wire(&e);
                return Err((Dropped::Wire(e), n));
            }
        };
        if dg.heartbeat.from != cfg.peer {
            drops.wrong_sender += 1;
            return Err((Dropped::WrongSender(dg.heartbeat.from), drops.wrong_sender));
        }
        if dg.link != self.stats.link {
            drops.wrong_link += 1;
            return Err((Dropped::WrongLink(dg.link), drops.wrong_link));
        }
        // A boot id we do not track yet (first contact, or a restarted peer) is
        // trusted only once it echoes one of our recent heartbeats: a datagram
        // recorded from an earlier incarnation cannot, so replaying it cannot
        // fake a peer coming back. It is still echoed, so the peer can prove
        // itself on its next heartbeat.
        if self.window.check(dg.heartbeat.boot, dg.heartbeat.counter) == ReplayVerdict::NewBoot {
            let proven = dg
                .echo
                .is_some_and(|e| e.boot == cfg.boot && self.sent_at.iter().any(|(c, _)| *c == e.counter));
            if !proven {
                self.last_peer = Some((dg.heartbeat.boot, dg.heartbeat.counter, now));
                drops.unproven += 1;
                return Err((Dropped::Unproven(dg.heartbeat.boot), drops.unproven));
            }
        }
        let verdict = self.window.accept(dg.heartbeat.boot, dg.heartbeat.counter);
        if !verdict.accepted() {
            drops.replayed += 1;
            return Err((Dropped::Replayed(verdict), drops.replayed));
        }
        self.stats.received += 1;
        self.stats.last_seen = Some(now);
        self.last_peer = Some((dg.heartbeat.boot, dg.heartbeat.counter, now));
        if let Some(echo) = dg.echo.filter(|e| e.boot == cfg.boot) {
            self.rtt_sample(echo, now);
        }
        Ok(dg.heartbeat)
    }

    fn rtt_sample(&mut self, echo: Echo, now: Instant) {
        let Some(&(_, sent)) = self.sent_at.iter().find(|(c, _)| *c == echo.counter) else {
            return;
        };
        let held = Duration::from_micros(u64::from(echo.held_us));
        let Some(rtt) = now.saturating_duration_since(sent).checked_sub(held) else {
            return;
        };
        let sample = rtt.as_secs_f64() * 1000.0;
        self.stats.rtt_ms = Some(match self.stats.rtt_ms {
            Some(srtt) => srtt * 0.875 + sample * 0.125,
            None => sample,
        });
    }
}

#[derive(Debug)]
struct LinkShared {
    id: LinkId,
    peer: SocketAddr,
    socket: UdpSocket,
    state: Mutex<LinkState>,
}

impl LinkShared {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // A panic elsewhere while holding the lock leaves only counters behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Running heartbeats. Dropping it stops them.
#[derive(Debug)]
pub struct HeartbeatHandle {
    links: Arc<[LinkShared]>,
    tasks: Vec<JoinHandle<()>>,
}

impl HeartbeatHandle {
    /// Per-link counters, in link order.
    pub fn stats(&self) -> Vec<LinkStats> {
        self.links.iter().map(|l| l.lock().stats.clone()).collect()
    }

    /// The addresses the sockets are bound to (the actual ports when 0 was configured).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.links.iter().map(|l| l.lock().stats.local).collect()
    }

    pub fn shutdown(self) {}
}

impl Drop for HeartbeatHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Binds one socket per link and starts sending and receiving. Authentic,
/// fresh heartbeats go to `out` as `(link, heartbeat)`; when `out` is full the
/// heartbeat is dropped and counted (`overflow`) rather than stalling the link.
pub async fn spawn_heartbeats(
    cfg: HeartbeatConfig,
    key: HeartbeatKey,
    summary: watch::Receiver<Summary>,
    out: mpsc::Sender<(LinkId, Heartbeat)>,
) -> Result<HeartbeatHandle, HeartbeatError> {
    if cfg.links.is_empty() {
        return Err(HeartbeatError::NoLinks);
    }
    if cfg.links.len() > 256 {
        return Err(HeartbeatError::TooManyLinks(cfg.links.len()));
    }
    if cfg.me == cfg.peer {
        return Err(HeartbeatError::SameNode(cfg.me));
    }
    if cfg.interval.is_zero() {
        return Err(HeartbeatError::ZeroInterval);
    }
    let mut links = Vec::with_capacity(cfg.links.len());
    for (i, addrs) in (0u8..=u8::MAX).zip(&cfg.links) {
        let bind_err = |source| HeartbeatError::Bind {
            link: i,
            addr: addrs.local,
            source,
        };
        let socket = UdpSocket::bind(addrs.local).await.map_err(bind_err)?;
        let local = socket.local_addr().map_err(bind_err)?;
        let id = LinkId(i);
        let state = LinkState::new(
            id,
            LinkAddrs {
                local,
                peer: addrs.peer,
            },
        );
        info!(link = i, %local, peer = %addrs.peer, "heartbeat link bound");
        links.push(LinkShared {
            id,
            peer: addrs.peer,
            socket,
            state: Mutex::new(state),
        });
    }
    let links: Arc<[LinkShared]> = links.into();
    let cfg = Arc::new(cfg);
    let mut tasks = Vec::with_capacity(links.len() + 1);
    tasks.push(tokio::spawn(send_loop(
        links.clone(),
        cfg.clone(),
        key.clone(),
        summary,
    )));
    for i in 0..links.len() {
        tasks.push(tokio::spawn(recv_loop(
            links.clone(),
            i,
            cfg.clone(),
            key.clone(),
            out.clone(),
        )));
    }
    Ok(HeartbeatHandle { links, tasks })
}

async fn send_loop(
    links: Arc<[LinkShared]>,
    cfg: Arc<HeartbeatConfig>,
    key: HeartbeatKey,
    mut summary: watch::Receiver<Summary>,
) {
    let mut counter = 0u64;
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let current = summary.borrow_and_update().clone();
        for link in links.iter() {
            counter += 1;
            let now = Instant::now();
            let echo = link.lock().echo(now);
            let dg = HeartbeatDatagram {
                link: link.id,
                heartbeat: Heartbeat {
                    from: cfg.me,
                    boot: cfg.boot,
                    counter,
                    summary: current.clone(),
                },
                echo,
            };
            let result = match encode_heartbeat(&key, &dg) {
                Ok(bytes) => link.socket.send_to(&bytes, link.peer).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let mut st = link.lock();
            match result {
                Ok(_) => {
                    st.stats.sent += 1;
                    st.record_sent(counter, now);
                }
                Err(error) => {
                    st.stats.send_errors += 1;
                    // Powers of two only: a dead link must not flood the log.
                    if st.stats.send_errors.is_power_of_two() {
                        warn!(link = link.id.0, peer = %link.peer, %error, errors = st.stats.send_errors, "heartbeat not sent");
                    }
                }
            }
        }
    }
}

async fn recv_loop(
    links: Arc<[LinkShared]>,
    index: usize,
    cfg: Arc<HeartbeatConfig>,
    key: HeartbeatKey,
    out: mpsc::Sender<(LinkId, Heartbeat)>,
) {
    let Some(link) = links.get(index) else { return };
    // One byte more than allowed, so an oversized datagram is seen as such
    // instead of being silently cut to a valid-looking length.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let (n, from) = match link.socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(error) => {
                let errors = {
                    let mut st = link.lock();
                    st.stats.recv_errors += 1;
                    st.stats.recv_errors
                };
                if errors.is_power_of_two() {
                    warn!(link = link.id.0, %error, errors, "heartbeat receive failed");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let data = buf.get(..n).unwrap_or(&buf[..]);
        let result = link.lock().receive(&cfg, &key, data, Instant::now());
        match result {
            Ok(hb) => match out.try_send((link.id, hb)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let n = {
                        let mut st = link.lock();
                        st.stats.drops.overflow += 1;
                        st.stats.drops.overflow
                    };
                    if n.is_power_of_two() {
                        warn!(
                            link = link.id.0,
                            dropped = n,
                            "core heartbeat queue full, heartbeat dropped"
                        );
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    debug!(link = link.id.0, "heartbeat consumer gone, receiver stops");
                    return;
                }
            },
            Err((reason, count)) => {
                if count.is_power_of_two() {
                    warn!(link = link.id.0, %from, %reason, count, "heartbeat dropped");
                } else {
                    debug!(link = link.id.0, %from, %reason, count, "heartbeat dropped");
                }
            }
        }
    }
}
