//! Tests that run the peer link for real, on 127.0.0.1 with ephemeral ports,
//! and the fuzz properties for every decoder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod control;
mod fuzz;
mod heartbeat;

use crate::net::keyfile::ClusterKey;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

pub(crate) fn cluster_key(b: u8) -> ClusterKey {
    ClusterKey::from_bytes(&[b; 48]).unwrap()
}

/// Addresses that were free a moment ago (bound together, so distinct).
pub(crate) fn free_udp_addrs(n: usize) -> Vec<SocketAddr> {
    let socks: Vec<_> = (0..n)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    socks.iter().map(|s| s.local_addr().unwrap()).collect()
}

/// A TCP address where nothing listens: connecting is refused at once.
pub(crate) fn dead_tcp_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Polls `cond` every 10 ms until it holds or `within` passed.
pub(crate) async fn eventually<F: FnMut() -> bool>(within: Duration, what: &str, mut cond: F) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) async fn within<T>(d: Duration, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(d, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}
