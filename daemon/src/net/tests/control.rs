use super::{cluster_key, dead_tcp_addr, eventually, within};
use crate::core::{LinkId, NodeId, PeerBody, PeerMessage, ResourceName};
use crate::net::control::{spawn_control, ControlConfig, ControlError, ControlHandle, ControlLink, ControlRole};
use crate::net::keyfile::ClusterKey;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

const WAIT: Duration = Duration::from_secs(5);

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

struct Endpoint {
    handle: ControlHandle,
    rx: mpsc::Receiver<PeerMessage>,
}

fn config(me: u8, links: Vec<ControlLink>) -> ControlConfig {
    let mut cfg = ControlConfig::new(NodeId(me), NodeId(me ^ 1), 1000 + u64::from(me), links);
    // Short enough that every test finishes in well under a second or two.
    cfg.connect_timeout = Duration::from_millis(300);
    cfg.handshake_timeout = Duration::from_millis(300);
    cfg.keepalive = Duration::from_millis(50);
    cfg.dead_after = Duration::from_millis(400);
    cfg.retry_delay = Duration::from_millis(30);
    cfg
}

async fn start(cfg: ControlConfig, key: &ClusterKey) -> Endpoint {
    let (tx, rx) = mpsc::channel(64);
    let handle = spawn_control(cfg, key.noise_psk(), tx).await.unwrap();
    Endpoint { handle, rx }
}

/// The listener (node 1) on `n` links.
async fn listener(n: usize, key: &ClusterKey) -> Endpoint {
    let links = (0..n)
        .map(|_| ControlLink {
            local: any(),
            peer: any(),
        })
        .collect();
    start(config(1, links), key).await
}

/// The connector (node 0) towards these peer addresses.
async fn connector(peers: &[SocketAddr], key: &ClusterKey) -> Endpoint {
    let links = peers.iter().map(|&peer| ControlLink { local: any(), peer }).collect();
    start(config(0, links), key).await
}

fn msg(from: u8, seq: u64) -> PeerMessage {
    PeerMessage {
        from: NodeId(from),
        boot: 1000 + u64::from(from),
        seq,
        body: PeerBody::Outdate {
            token: seq,
            resource: ResourceName::from("r0"),
        },
    }
}

async fn expect_msgs(e: &mut Endpoint, from: u8, seqs: &[u64]) {
    for &seq in seqs {
        let m = within(WAIT, "control message", e.rx.recv()).await.unwrap();
        assert_eq!(m, msg(from, seq));
    }
}

async fn wait_connected(e: &Endpoint, link: u8) {
    eventually(WAIT, "connected", || {
        let s = e.handle.status();
        s.connected && s.link == Some(LinkId(link))
    })
    .await;
}

#[tokio::test]
async fn two_endpoints_exchange_messages() {
    let key = cluster_key(1);
    let mut b = listener(1, &key).await;
    let mut a = connector(b.handle.local_addrs(), &key).await;
    assert_eq!(a.handle.status().role, ControlRole::Connector);
    assert_eq!(b.handle.status().role, ControlRole::Listener);
    assert!(a.handle.local_addrs().is_empty());

    for seq in 1..=3 {
        a.handle.send(msg(0, seq));
        b.handle.send(msg(1, seq));
    }
    expect_msgs(&mut b, 0, &[1, 2, 3]).await;
    expect_msgs(&mut a, 1, &[1, 2, 3]).await;
    wait_connected(&a, 0).await;
    wait_connected(&b, 0).await;
    let (sa, sb) = (a.handle.status(), b.handle.status());
    assert_eq!(sa.peer_boot, Some(1001));
    assert_eq!(sb.peer_boot, Some(1000));
    assert_eq!((sa.counters.sent, sa.counters.received), (3, 3));
    assert_eq!(sa.counters.connects, 1);
    assert_eq!(sb.counters.refused, 0);
    assert_eq!(sa.queued, 0);

    // Keepalives hold an idle connection open past dead_after.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let sa = a.handle.status();
    assert!(sa.connected);
    assert_eq!(sa.counters.connects, 1, "{sa:?}");
}

#[tokio::test]
async fn wrong_key_fails_the_handshake_and_is_counted() {
    let mut b = listener(1, &cluster_key(1)).await;
    let mut a = connector(b.handle.local_addrs(), &cluster_key(2)).await;
    a.handle.send(msg(0, 1));
    eventually(WAIT, "failures counted on both sides", || {
        a.handle.status().counters.handshake_failures >= 2 && b.handle.status().counters.refused >= 2
    })
    .await;
    assert!(!a.handle.status().connected);
    assert!(!b.handle.status().connected);
    assert_eq!(b.handle.status().counters.connects, 0);
    assert!(b.rx.try_recv().is_err());
    assert!(a.rx.try_recv().is_err());
    assert_eq!(
        a.handle.status().queued,
        1,
        "the message waits for a working connection"
    );
}

#[tokio::test]
async fn garbage_and_silent_clients_are_refused() {
    let mut b = listener(1, &cluster_key(1)).await;
    let addr = b.handle.local_addrs()[0];

    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(b"\x00\x30GET / HTTP/1.0\r\n\r\n.............................")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = within(WAIT, "server closes on garbage", garbage.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "no answer to garbage");

    let mut zero = TcpStream::connect(addr).await.unwrap();
    zero.write_all(&[0, 0]).await.unwrap();
    let _silent = TcpStream::connect(addr).await.unwrap();

    eventually(WAIT, "three refusals", || b.handle.status().counters.refused == 3).await;
    assert!(!b.handle.status().connected);
    assert!(b.rx.try_recv().is_err());
}

#[tokio::test]
async fn uses_link_2_when_link_1_is_unreachable() {
    let key = cluster_key(1);
    let mut b = listener(2, &key).await;
    let mut a = connector(&[dead_tcp_addr(), b.handle.local_addrs()[1]], &key).await;
    a.handle.send(msg(0, 7));
    expect_msgs(&mut b, 0, &[7]).await;
    wait_connected(&a, 1).await;
    wait_connected(&b, 1).await;
    assert!(a.handle.status().counters.connect_failures >= 1);
    b.handle.send(msg(1, 8));
    expect_msgs(&mut a, 1, &[8]).await;
}

/// Forwards TCP connections to `to` until aborted, which cuts them all.
async fn proxy(to: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind(any()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let (mut inbound, _) = l.accept().await.unwrap();
            conns.spawn(async move {
                let mut out = TcpStream::connect(to).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_broken_connection_moves_to_the_next_link() {
    let key = cluster_key(1);
    let mut b = listener(2, &key).await;
    let (via, cut) = proxy(b.handle.local_addrs()[0]).await;
    let mut a = connector(&[via, b.handle.local_addrs()[1]], &key).await;
    a.handle.send(msg(0, 1));
    expect_msgs(&mut b, 0, &[1]).await;
    wait_connected(&a, 0).await;

    cut.abort();
    wait_connected(&a, 1).await;
    wait_connected(&b, 1).await;
    a.handle.send(msg(0, 2));
    b.handle.send(msg(1, 3));
    expect_msgs(&mut b, 0, &[2]).await;
    expect_msgs(&mut a, 1, &[3]).await;
    assert!(a.handle.status().counters.disconnects >= 1);
    assert_eq!(a.handle.status().counters.connects, 2);
}

#[tokio::test]
async fn messages_queued_before_the_peer_exists_are_delivered() {
    let key = cluster_key(1);
    let reserved = dead_tcp_addr();
    let a = connector(&[reserved], &key).await;
    for seq in 1..=3 {
        a.handle.send(msg(0, seq));
    }
    eventually(WAIT, "connect failures", || {
        a.handle.status().counters.connect_failures >= 2
    })
    .await;
    assert_eq!(a.handle.status().queued, 3);

    let mut cfg = config(
        1,
        vec![ControlLink {
            local: reserved,
            peer: any(),
        }],
    );
    cfg.queue_capacity = 4;
    let mut b = start(cfg, &key).await;
    expect_msgs(&mut b, 0, &[1, 2, 3]).await;
    assert_eq!(a.handle.status().queued, 0);
}

#[tokio::test]
async fn configuration_errors_are_named() {
    let key = cluster_key(1);
    let (tx, _rx) = mpsc::channel(1);
    let err = spawn_control(config(0, vec![]), key.noise_psk(), tx.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, ControlError::NoLinks));
    let mut same = config(
        0,
        vec![ControlLink {
            local: any(),
            peer: any(),
        }],
    );
    same.peer = NodeId(0);
    let err = spawn_control(same, key.noise_psk(), tx.clone()).await.unwrap_err();
    assert!(matches!(err, ControlError::SameNode(NodeId(0))));
    let taken = TcpListener::bind(any()).await.unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = config(
        1,
        vec![ControlLink {
            local: addr,
            peer: any(),
        }],
    );
    let err = spawn_control(cfg, key.noise_psk(), tx).await.unwrap_err();
    assert!(matches!(err, ControlError::Bind { link: 0, .. }), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()));
}
