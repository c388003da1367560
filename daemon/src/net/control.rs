//! The control channel: one Noise-encrypted TCP connection to the peer, over
//! the first link that works.
//!
//! **Who connects.** The node with the lower `NodeId` is the connector and never
//! listens; the other only listens, on every link. So both sides can never
//! race to open two connections, and the listener simply adopts every newly
//! authenticated connection, replacing the old one (the connector only opens a
//! new one once it gave the old one up).
//!
//! **Which link.** The connector tries the links in order and stays on the one
//! that works. When a connect or handshake fails, or the connection breaks
//! (error, or nothing heard for `dead_after` despite keepalives), it moves to
//! the next link, round robin, pausing `retry_delay` after each full round. It
//! does not move back to an earlier link while the current one works.
//!
//! **Delivery.** [`ControlHandle::send`] queues; the queue is flushed whenever a
//! connection is up. While none is, messages wait in a bounded queue: when it is
//! full the oldest is dropped, and messages older than `queue_max_age` are
//! dropped when their turn comes (a request that old has timed out in the core
//! anyway). Both are counted. A message whose write fails is put back at the
//! head of the queue; one already handed to the kernel when the connection
//! broke may be lost. Requests are idempotent and carry `(boot, seq)`, so the
//! core's retries and duplicate detection cover both cases. Inbound messages
//! are handed to the core's channel with backpressure: a core that stops
//! reading for longer than `dead_after` stalls keepalives and so costs the
//! connection, not the message being delivered.

use super::keyfile::NoisePsk;
use super::noise::{self, HandshakeError, PeerHello};
use super::session::{run_session, Outbox, Session, SessionEnd};
use crate::core::{LinkId, NodeId, PeerMessage};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::{debug, info, warn};

/// One link of the control channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlLink {
    /// This node's address on the link: the listener binds it; the connector
    /// connects from its IP (port chosen by the kernel), which pins the link.
    pub local: SocketAddr,
    /// The peer's control address on the link.
    pub peer: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    pub me: NodeId,
    pub peer: NodeId,
    pub boot: u64,
    /// In configuration order: index `i` is `LinkId(i)`.
    pub links: Vec<ControlLink>,
    pub connect_timeout: Duration,
    /// Bounds the whole handshake, including the initiator's confirmation.
    pub handshake_timeout: Duration,
    /// A keepalive is sent this often.
    pub keepalive: Duration,
    /// The connection counts as broken after this long without any frame, and
    /// a write blocked for this long breaks it.
    pub dead_after: Duration,
    /// Pause after every link failed once in a row.
    pub retry_delay: Duration,
    pub queue_capacity: usize,
    pub queue_max_age: Duration,
}

impl ControlConfig {
    /// A configuration with the default timings.
    pub fn new(me: NodeId, peer: NodeId, boot: u64, links: Vec<ControlLink>) -> ControlConfig {
        ControlConfig {
            me,
            peer,
            boot,
            links,
            connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(1),
            keepalive: Duration::from_millis(500),
            dead_after: Duration::from_secs(2),
            retry_delay: Duration::from_millis(500),
            queue_capacity: 256,
            queue_max_age: Duration::from_secs(30),
        }
    }

    pub fn role(&self) -> ControlRole {
        if self.me < self.peer {
            ControlRole::Connector
        } else {
            ControlRole::Listener
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRole {
    /// Lower `NodeId`: opens the connection.
    Connector,
    /// Higher `NodeId`: accepts it.
    Listener,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlCounters {
    /// Connections established (connector) or adopted (listener).
    pub connects: u64,
    /// Connector: TCP connect failed or timed out.
    pub connect_failures: u64,
    /// Connector: the listener failed our handshake (wrong key, wrong node, timeout).
    pub handshake_failures: u64,
    /// Listener: incoming connections refused (failed handshake, garbage,
    /// timeout, too many at once).
    pub refused: u64,
    pub disconnects: u64,
    pub sent: u64,
    pub received: u64,
    /// Frames that failed decryption or decoding; each also breaks the connection.
    pub bad_frames: u64,
    /// Authentic messages claiming another sender than the peer.
    pub wrong_sender: u64,
    /// Dropped from the queue because it was full.
    pub dropped_queue_full: u64,
    /// Dropped from the queue because they waited longer than `queue_max_age`.
    pub dropped_stale: u64,
    /// Messages too large for one frame, dropped.
    pub unsendable: u64,
}

/// What status shows about the control channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlStatus {
    pub role: ControlRole,
    pub connected: bool,
    /// The link of the current connection, or the last one if disconnected.
    pub link: Option<LinkId>,
    pub remote: Option<SocketAddr>,
    pub peer_boot: Option<u64>,
    /// Messages waiting to be sent.
    pub queued: usize,
    pub counters: ControlCounters,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control channel configuration: no links")]
    NoLinks,
    #[error("control channel configuration: {0} links, at most 256 are supported")]
    TooManyLinks(usize),
    #[error("control channel configuration: this node and the peer are both {0}")]
    SameNode(NodeId),
    #[error("control channel configuration: queue capacity must not be zero")]
    ZeroQueue,
    #[error("control channel link {link}: cannot listen on TCP {addr}: {source}")]
    Bind {
        link: u8,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) outbox: Mutex<Outbox>,
    pub(crate) notify: Notify,
    pub(crate) status: Mutex<ControlStatus>,
}

impl Shared {
    pub(crate) fn status(&self) -> MutexGuard<'_, ControlStatus> {
        // A panic elsewhere while holding the lock leaves only counters behind.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bumps a counter and returns its new value.
    pub(crate) fn count(&self, f: impl FnOnce(&mut ControlCounters) -> &mut u64) -> u64 {
        let mut st = self.status();
        let c = f(&mut st.counters);
        *c += 1;
        *c
    }
}

/// The running control channel. Dropping it closes it.
#[derive(Debug)]
pub struct ControlHandle {
    shared: Arc<Shared>,
    listen_addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl ControlHandle {
    /// Queues a message for the peer; never blocks. See the module docs for
    /// what happens while no connection is up.
    pub fn send(&self, msg: PeerMessage) {
        let dropped = self.shared.outbox().push(msg);
        if let Some(dropped) = dropped {
            let n = self.shared.count(|c| &mut c.dropped_queue_full);
            if n.is_power_of_two() {
                warn!(
                    seq = dropped.seq,
                    dropped_total = n,
                    "control queue full, oldest message dropped"
                );
            }
        }
        self.shared.notify.notify_one();
    }

    pub fn status(&self) -> ControlStatus {
        let queued = self.shared.outbox().len();
        let mut st = self.shared.status().clone();
        st.queued = queued;
        st
    }

    /// Where the listener role accepts connections (actual ports if 0 was
    /// configured); empty for the connector.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    pub fn shutdown(self) {}
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the control channel. Authentic messages from the peer go to
/// `inbound`; the channel closes itself once `inbound`'s receiver is gone.
pub async fn spawn_control(
    cfg: ControlConfig,
    psk: NoisePsk,
    inbound: mpsc::Sender<PeerMessage>,
) -> Result<ControlHandle, ControlError> {
    if cfg.links.is_empty() {
        return Err(ControlError::NoLinks);
    }
    if cfg.links.len() > 256 {
        return Err(ControlError::TooManyLinks(cfg.links.len()));
    }
    if cfg.me == cfg.peer {
        return Err(ControlError::SameNode(cfg.me));
    }
    if cfg.queue_capacity == 0 {
        return Err(ControlError::ZeroQueue);
    }
    let role = cfg.role();
    let shared = Arc::new(Shared {
        outbox: Mutex::new(Outbox::new(cfg.queue_capacity, cfg.queue_max_age)),
        notify: Notify::new(),
        status: Mutex::new(ControlStatus {
            role,
            connected: false,
            link: None,
            remote: None,
            peer_boot: None,
            queued: 0,
            counters: ControlCounters::default(),
        }),
    });
    let cfg = Arc::new(cfg);
    let mut tasks = Vec::new();
    let mut listen_addrs = Vec::new();
    let sessions = match role {
        ControlRole::Connector => None,
        ControlRole::Listener => {
            let (tx, rx) = mpsc::channel(4);
            // Bounds the handshakes in progress so a connection flood cannot
            // eat memory; legitimate peers make one at a time.
            let limit = Arc::new(Semaphore::new(16));
            let mut listeners = Vec::new();
            for (i, link) in (0u8..=u8::MAX).zip(&cfg.links) {
                let bind_err = |source| ControlError::Bind {
                    link: i,
                    addr: link.local,
                    source,
                };
                let listener = TcpListener::bind(link.local).await.map_err(bind_err)?;
                let addr = listener.local_addr().map_err(bind_err)?;
                info!(link = i, %addr, "control channel listening");
                listen_addrs.push(addr);
                listeners.push((LinkId(i), listener));
            }
            for (link, listener) in listeners {
                let ctx = AcceptCtx {
                    link,
                    cfg: cfg.clone(),
                    psk: psk.clone(),
                    shared: shared.clone(),
                    sessions: tx.clone(),
                    limit: limit.clone(),
                };
                tasks.push(tokio::spawn(accept_loop(listener, ctx)));
            }
            Some(rx)
        }
    };
    tasks.push(tokio::spawn(manage(cfg, psk, shared.clone(), inbound, sessions)));
    Ok(ControlHandle {
        shared,
        listen_addrs,
        tasks,
    })
}

/// Owns the current connection: gets one (connecting or from the listeners),
/// runs it until it ends, and starts over.
async fn manage(
    cfg: Arc<ControlConfig>,
    psk: NoisePsk,
    shared: Arc<Shared>,
    inbound: mpsc::Sender<PeerMessage>,
    mut sessions: Option<mpsc::Receiver<Session>>,
) {
    let mut next_link = 0usize;
    let mut pending: Option<Session> = None;
    loop {
        let session = match (pending.take(), sessions.as_mut()) {
            (Some(s), _) => s,
            (None, Some(rx)) => match rx.recv().await {
                Some(s) => s,
                None => return,
            },
            (None, None) => connect_any(&cfg, &psk, &shared, &mut next_link).await,
        };
        let link = session.link;
        let remote = session.remote;
        {
            let mut st = shared.status();
            st.connected = true;
            st.link = Some(link);
            st.remote = Some(remote);
            st.peer_boot = Some(session.peer_boot);
            st.counters.connects += 1;
        }
        info!(link = link.0, %remote, peer_boot = session.peer_boot, "control channel connected");
        let started = tokio::time::Instant::now();
        let end = run_session(session, &cfg, &shared, &inbound, sessions.as_mut()).await;
        {
            let mut st = shared.status();
            st.connected = false;
            st.counters.disconnects += 1;
        }
        match end {
            SessionEnd::Replaced(s) => {
                info!(link = link.0, %remote, new_link = s.link.0, new_remote = %s.remote, "control connection replaced by a newer one");
                pending = Some(s);
            }
            SessionEnd::InboundClosed => {
                debug!("control channel consumer gone, closing");
                return;
            }
            SessionEnd::Broken(reason) => {
                warn!(link = link.0, %remote, %reason, "control connection lost");
                next_link = usize::from(link.0) + 1;
                // A peer that accepts and then drops us at once must not
                // make the connector spin.
                if sessions.is_none() && started.elapsed() < cfg.dead_after {
                    tokio::time::sleep(cfg.retry_delay).await;
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("{0}")]
    Handshake(HandshakeError),
    #[error("handshake timed out")]
    HandshakeTimeout,
}

/// Tries the links round robin, starting at `next_link`, until one works.
async fn connect_any(cfg: &ControlConfig, psk: &NoisePsk, shared: &Shared, next_link: &mut usize) -> Session {
    let n = cfg.links.len().max(1);
    let mut failures = 0usize;
    loop {
        let i = *next_link % n;
        let Some(link) = cfg.links.get(i) else {
            // spawn_control refuses an empty link list, so this never waits.
            return std::future::pending().await;
        };
        let id = LinkId(u8::try_from(i).unwrap_or(u8::MAX));
        match connect_one(cfg, psk, id, link).await {
            Ok(s) => {
                *next_link = i;
                return s;
            }
            Err(error) => {
                let count = match error {
                    ConnectError::Connect(_) | ConnectError::ConnectTimeout => {
                        shared.count(|c| &mut c.connect_failures)
                    }
                    ConnectError::Handshake(_) | ConnectError::HandshakeTimeout => {
                        shared.count(|c| &mut c.handshake_failures)
                    }
                };
                if count.is_power_of_two() {
                    warn!(link = i, peer = %link.peer, %error, count, "control connect failed");
                } else {
                    debug!(link = i, peer = %link.peer, %error, count, "control connect failed");
                }
                *next_link = i + 1;
                failures += 1;
                if failures >= n {
                    failures = 0;
                    tokio::time::sleep(cfg.retry_delay).await;
                }
            }
        }
    }
}

async fn connect_one(
    cfg: &ControlConfig,
    psk: &NoisePsk,
    id: LinkId,
    link: &ControlLink,
) -> Result<Session, ConnectError> {
    let socket = if link.peer.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(ConnectError::Connect)?;
    socket
        .bind(SocketAddr::new(link.local.ip(), 0))
        .map_err(ConnectError::Connect)?;
    let mut stream = timeout(cfg.connect_timeout, socket.connect(link.peer))
        .await
        .map_err(|_| ConnectError::ConnectTimeout)?
        .map_err(ConnectError::Connect)?;
    stream.set_nodelay(true).map_err(ConnectError::Connect)?;
    let me = PeerHello {
        node: cfg.me,
        boot: cfg.boot,
    };
    let (transport, hello) = timeout(cfg.handshake_timeout, noise::initiate(&mut stream, psk, me, cfg.peer))
        .await
        .map_err(|_| ConnectError::HandshakeTimeout)?
        .map_err(ConnectError::Handshake)?;
    Ok(Session {
        stream,
        transport,
        link: id,
        remote: link.peer,
        peer_boot: hello.boot,
    })
}

struct AcceptCtx {
    link: LinkId,
    cfg: Arc<ControlConfig>,
    psk: NoisePsk,
    shared: Arc<Shared>,
    sessions: mpsc::Sender<Session>,
    limit: Arc<Semaphore>,
}

async fn accept_loop(listener: TcpListener, ctx: AcceptCtx) {
    let ctx = Arc::new(ctx);
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(r) => r,
            Err(error) => {
                // Usually EMFILE: back off instead of spinning.
                warn!(link = ctx.link.0, %error, "control accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = ctx.limit.clone().try_acquire_owned() else {
            let n = ctx.shared.count(|c| &mut c.refused);
            debug!(link = ctx.link.0, %remote, refused = n, "too many control handshakes in progress, connection refused");
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(error) = accept_one(stream, remote, &ctx).await {
                let n = ctx.shared.count(|c| &mut c.refused);
                if n.is_power_of_two() {
                    warn!(link = ctx.link.0, %remote, %error, refused = n, "control connection refused");
                } else {
                    debug!(link = ctx.link.0, %remote, %error, refused = n, "control connection refused");
                }
            }
        });
    }
}

async fn accept_one(mut stream: TcpStream, remote: SocketAddr, ctx: &AcceptCtx) -> Result<(), ConnectError> {
    stream.set_nodelay(true).map_err(ConnectError::Connect)?;
    let me = PeerHello {
        node: ctx.cfg.me,
        boot: ctx.cfg.boot,
    };
    let (transport, hello) = timeout(
        ctx.cfg.handshake_timeout,
        noise::respond(&mut stream, &ctx.psk, me, ctx.cfg.peer),
    )
    .await
    .map_err(|_| ConnectError::HandshakeTimeout)?
    .map_err(ConnectError::Handshake)?;
    let session = Session {
        stream,
        transport,
        link: ctx.link,
        remote,
        peer_boot: hello.boot,
    };
    // Fails only when the channel is shutting down.
    let _ = ctx.sessions.send(session).await;
    Ok(())
}
