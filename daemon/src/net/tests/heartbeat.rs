use super::{cluster_key, eventually, free_udp_addrs, within};
use crate::core::{DomainName, Heartbeat, LinkId, NodeId, Summary};
use crate::net::heartbeat::{spawn_heartbeats, HeartbeatConfig, HeartbeatError, HeartbeatHandle, LinkAddrs};
use crate::net::keyfile::ClusterKey;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

const INTERVAL: Duration = Duration::from_millis(20);
const WAIT: Duration = Duration::from_secs(3);

struct Endpoint {
    handle: HeartbeatHandle,
    rx: mpsc::Receiver<(LinkId, Heartbeat)>,
    summary: watch::Sender<Summary>,
}

async fn endpoint(me: u8, boot: u64, key: &ClusterKey, links: Vec<(SocketAddr, SocketAddr)>) -> Endpoint {
    let cfg = HeartbeatConfig {
        me: NodeId(me),
        peer: NodeId(me ^ 1),
        boot,
        interval: INTERVAL,
        links: links
            .into_iter()
            .map(|(local, peer)| LinkAddrs { local, peer })
            .collect(),
    };
    let (summary, summary_rx) = watch::channel(Summary::default());
    let (tx, rx) = mpsc::channel(1024);
    let handle = spawn_heartbeats(cfg, key.heartbeat_key(), summary_rx, tx)
        .await
        .unwrap();
    Endpoint { handle, rx, summary }
}

#[tokio::test]
async fn two_endpoints_exchange_heartbeats_on_every_link() {
    let key = cluster_key(1);
    let a = free_udp_addrs(2);
    let b = free_udp_addrs(2);
    let mut ea = endpoint(0, 100, &key, vec![(a[0], b[0]), (a[1], b[1])]).await;
    let mut eb = endpoint(1, 200, &key, vec![(b[0], a[0]), (b[1], a[1])]).await;
    ea.summary.send_replace(Summary {
        domains: vec![DomainName::from("vm1")],
        primaries: vec![],
        standby: false,
    });

    let mut seen_links = [false; 2];
    let mut last_counter = 0;
    while seen_links != [true, true] {
        let (link, hb) = within(WAIT, "heartbeat from A", eb.rx.recv()).await.unwrap();
        assert_eq!(hb.from, NodeId(0));
        assert_eq!(hb.boot, 100);
        assert!(hb.counter > 0);
        assert_ne!(hb.counter, last_counter, "every datagram has its own counter");
        last_counter = hb.counter;
        if !hb.summary.domains.is_empty() {
            assert_eq!(hb.summary.domains, vec![DomainName::from("vm1")]);
            seen_links[usize::from(link.0)] = true;
        }
    }
    let (_, hb) = within(WAIT, "heartbeat from B", ea.rx.recv()).await.unwrap();
    assert_eq!((hb.from, hb.boot), (NodeId(1), 200));

    eventually(WAIT, "RTT measured on both links", || {
        ea.handle.stats().iter().all(|s| s.rtt_ms.is_some()) && eb.handle.stats().iter().all(|s| s.rtt_ms.is_some())
    })
    .await;
    for s in ea.handle.stats().into_iter().chain(eb.handle.stats()) {
        assert!(s.sent > 0 && s.received > 0, "{s:?}");
        assert!(s.last_seen.is_some());
        // At first contact a side may drop the other's first heartbeat, sent
        // before it could echo ours (the freshness proof of a new boot id).
        assert!(s.drops.unproven <= 1, "{s:?}");
        assert_eq!(s.drops.total(), s.drops.unproven, "{s:?}");
        let rtt = s.rtt_ms.unwrap();
        assert!((0.0..1000.0).contains(&rtt), "{rtt}");
    }
    assert_eq!(ea.handle.local_addrs(), a);
}

#[tokio::test]
async fn wrong_key_is_dropped_and_counted() {
    let a = free_udp_addrs(1);
    let b = free_udp_addrs(1);
    let _ea = endpoint(0, 1, &cluster_key(1), vec![(a[0], b[0])]).await;
    let mut eb = endpoint(1, 2, &cluster_key(2), vec![(b[0], a[0])]).await;
    eventually(WAIT, "bad_auth counted", || eb.handle.stats()[0].drops.bad_auth >= 3).await;
    let s = &eb.handle.stats()[0];
    assert_eq!(s.received, 0);
    assert!(s.last_seen.is_none());
    assert!(eb.rx.try_recv().is_err(), "nothing reaches the core");
}

#[tokio::test]
async fn forged_replayed_reflected_and_redirected_datagrams_are_dropped() {
    let key = cluster_key(1);
    let sniffer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a = free_udp_addrs(1);
    let b = free_udp_addrs(2);
    let nowhere = free_udp_addrs(1)[0];
    // A's heartbeats go to the sniffer, which decides what B gets. B's link 0
    // goes through the sniffer too, which relays it to A: A then echoes B's
    // heartbeats, and that echo is what proves A's new boot id fresh to B.
    let ea = endpoint(0, 1, &key, vec![(a[0], sniffer.local_addr().unwrap())]).await;
    let mut eb = endpoint(1, 2, &key, vec![(b[0], sniffer.local_addr().unwrap()), (b[1], nowhere)]).await;
    let stats = |e: &Endpoint, l: usize| e.handle.stats()[l].clone();

    let mut buf = vec![0u8; 9000];
    let mut from_a_after_echo = 0;
    let captured = loop {
        let (n, src) = within(WAIT, "datagram through the sniffer", sniffer.recv_from(&mut buf))
            .await
            .unwrap();
        if src == b[0] {
            sniffer.send_to(&buf[..n], a[0]).await.unwrap();
        } else if src == a[0] && stats(&ea, 0).drops.unproven >= 1 {
            // The first one may have left A before A heard B.
            from_a_after_echo += 1;
            if from_a_after_echo == 2 {
                break buf[..n].to_vec();
            }
        }
    };

    sniffer.send_to(&captured, b[0]).await.unwrap();
    let (link, hb) = within(WAIT, "forwarded heartbeat", eb.rx.recv()).await.unwrap();
    assert_eq!((link, hb.from), (LinkId(0), NodeId(0)));

    sniffer.send_to(&captured, b[0]).await.unwrap();
    eventually(WAIT, "replay counted", || stats(&eb, 0).drops.replayed == 1).await;

    sniffer.send_to(&captured, b[1]).await.unwrap();
    eventually(WAIT, "redirect counted", || stats(&eb, 1).drops.wrong_link == 1).await;

    sniffer.send_to(&captured, a[0]).await.unwrap();
    eventually(WAIT, "reflection counted", || stats(&ea, 0).drops.wrong_sender == 1).await;

    let mut forged = captured.clone();
    let mid = forged.len() / 2;
    forged[mid] ^= 0x40;
    sniffer.send_to(&forged, b[0]).await.unwrap();
    eventually(WAIT, "forgery counted", || stats(&eb, 0).drops.bad_auth == 1).await;

    sniffer.send_to(b"GET / HTTP/1.0\r\n\r\n--------", b[0]).await.unwrap();
    eventually(WAIT, "garbage counted", || stats(&eb, 0).drops.garbage == 1).await;
    sniffer.send_to(&captured[..10], b[0]).await.unwrap();
    eventually(WAIT, "truncation counted", || stats(&eb, 0).drops.truncated == 1).await;
    sniffer.send_to(&vec![0u8; 8193], b[0]).await.unwrap();
    eventually(WAIT, "oversize counted", || stats(&eb, 0).drops.oversized == 1).await;
    let mut other_version = captured.clone();
    other_version[4] = 9;
    sniffer.send_to(&other_version, b[0]).await.unwrap();
    eventually(WAIT, "version counted", || stats(&eb, 0).drops.bad_version == 1).await;

    let s = stats(&eb, 0);
    assert_eq!(s.received, 1, "{s:?}");
    assert_eq!(s.drops.total(), 6, "{s:?}");
    assert!(eb.rx.try_recv().is_err(), "only the first copy reached the core");
}

#[tokio::test]
async fn configuration_errors_are_named() {
    let key = cluster_key(1).heartbeat_key();
    let (_s, summary) = watch::channel(Summary::default());
    let (tx, _rx) = mpsc::channel(1);
    let a = free_udp_addrs(1)[0];
    let mut cfg = HeartbeatConfig {
        me: NodeId(0),
        peer: NodeId(0),
        boot: 1,
        interval: INTERVAL,
        links: vec![LinkAddrs { local: a, peer: a }],
    };
    let err = spawn_heartbeats(cfg.clone(), key.clone(), summary.clone(), tx.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, HeartbeatError::SameNode(NodeId(0))));
    cfg.peer = NodeId(1);
    let _taken = std::net::UdpSocket::bind(a).unwrap();
    let err = spawn_heartbeats(cfg, key, summary, tx).await.unwrap_err();
    assert!(matches!(err, HeartbeatError::Bind { link: 0, .. }));
    assert!(err.to_string().contains(&a.to_string()), "{err}");
}
