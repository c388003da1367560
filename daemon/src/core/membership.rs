//! Who is alive: per-link liveness from authenticated heartbeat receipts, and the
//! peer's state derived from all links together.

use super::error::CoreError;
use super::protocol::{Heartbeat, Summary};
use super::types::{LinkId, Millis, NodeId};

/// The peer as this node knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Not heard since this daemon started (wait-for-all applies).
    Unknown,
    /// Heard on at least one link within `dead_after`.
    Online,
    /// Silent on every link for `dead_after`; was online before.
    Lost { since: Millis },
    /// A fence device confirmed the peer powered off.
    Fenced { at: Millis },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    pub last_seen: Option<Millis>,
    pub up: bool,
    /// Boot id and counter of the newest heartbeat on this link: a duplicate on
    /// the same link is refused, while the same heartbeat counter may come
    /// first on another link.
    last: Option<(u64, u64)>,
}

/// A change in the peer's state that the rest of the core reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipChange {
    PeerOnline { rejoined_after_fence: bool },
    PeerLost,
}

#[derive(Debug, Clone)]
pub struct Membership {
    me: NodeId,
    dead_after_ms: u64,
    links: Vec<LinkState>,
    state: PeerState,
    peer_boot: Option<u64>,
    last_counter: u64,
    last_summary: Option<Summary>,
    seen_since_boot: bool,
}

impl Membership {
    pub fn new(me: NodeId, links: usize, dead_after_ms: u64) -> Self {
        Membership {
            me,
            dead_after_ms,
            links: vec![
                LinkState {
                    last_seen: None,
                    up: false,
                    last: None,
                };
                links.max(1)
            ],
            state: PeerState::Unknown,
            peer_boot: None,
            last_counter: 0,
            last_summary: None,
            seen_since_boot: false,
        }
    }

    /// A new silence limit (a reloaded configuration); it counts from each
    /// link's last heartbeat, as the old one did.
    pub fn set_dead_after_ms(&mut self, dead_after_ms: u64) {
        self.dead_after_ms = dead_after_ms;
    }

    pub fn state(&self) -> PeerState {
        self.state
    }

    pub fn links(&self) -> &[LinkState] {
        &self.links
    }

    /// Whether a heartbeat of the peer arrived since this daemon started.
    pub fn seen_since_boot(&self) -> bool {
        self.seen_since_boot
    }

    /// The peer's most recent summary, if it was ever heard.
    pub fn peer_summary(&self) -> Option<&Summary> {
        self.last_summary.as_ref()
    }

    pub fn peer_boot(&self) -> Option<u64> {
        self.peer_boot
    }

    /// Checks a heartbeat without changing anything.
    pub fn check(&self, link: LinkId, hb: &Heartbeat) -> Result<(), CoreError> {
        if hb.from != self.me.other() {
            return Err(CoreError::NotThePeer(hb.from));
        }
        if usize::from(link.0) >= self.links.len() {
            return Err(CoreError::UnknownLink(link));
        }
        if let Some((boot, last)) = self.links[usize::from(link.0)].last {
            if boot == hb.boot && hb.counter <= last {
                return Err(CoreError::StaleHeartbeat {
                    boot: hb.boot,
                    counter: hb.counter,
                    last,
                });
            }
        }
        if let PeerState::Fenced { .. } = self.state {
            if self.peer_boot == Some(hb.boot) {
                // A fenced peer comes back only as a new incarnation.
                return Err(CoreError::FencedIncarnation { boot: hb.boot });
            }
        }
        Ok(())
    }

    /// Records an already checked heartbeat.
    pub fn record(&mut self, now: Millis, link: LinkId, hb: Heartbeat) -> Option<MembershipChange> {
        let l = &mut self.links[usize::from(link.0)];
        l.last_seen = Some(now);
        l.up = true;
        l.last = Some((hb.boot, hb.counter));
        // The summary only moves forward: a heartbeat overtaken on another link
        // proves the link works but carries older news.
        if self.peer_boot != Some(hb.boot) || hb.counter > self.last_counter {
            self.peer_boot = Some(hb.boot);
            self.last_counter = hb.counter;
            self.last_summary = Some(hb.summary);
        }
        self.seen_since_boot = true;
        match self.state {
            PeerState::Online => None,
            PeerState::Fenced { .. } => {
                self.state = PeerState::Online;
                Some(MembershipChange::PeerOnline {
                    rejoined_after_fence: true,
                })
            }
            PeerState::Unknown | PeerState::Lost { .. } => {
                self.state = PeerState::Online;
                Some(MembershipChange::PeerOnline {
                    rejoined_after_fence: false,
                })
            }
        }
    }

    /// Expires links and the peer by time.
    pub fn tick(&mut self, now: Millis) -> Option<MembershipChange> {
        for l in &mut self.links {
            if let Some(seen) = l.last_seen {
                if now.since(seen) >= self.dead_after_ms {
                    l.up = false;
                }
            }
        }
        if self.state == PeerState::Online && self.links.iter().all(|l| !l.up) {
            self.state = PeerState::Lost { since: now };
            return Some(MembershipChange::PeerLost);
        }
        None
    }

    /// A fence device confirmed the peer off.
    pub fn mark_fenced(&mut self, now: Millis) {
        self.state = PeerState::Fenced { at: now };
        for l in &mut self.links {
            l.up = false;
        }
    }

    /// The earliest time at which `tick` could change something.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.links
            .iter()
            .filter(|l| l.up)
            .filter_map(|l| l.last_seen.map(|s| s.plus(self.dead_after_ms)))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(counter: u64) -> Heartbeat {
        Heartbeat {
            from: NodeId(1),
            boot: 7,
            counter,
            summary: Summary::default(),
        }
    }

    #[test]
    fn one_link_alive_keeps_the_peer_online() {
        let mut m = Membership::new(NodeId(0), 2, 1000);
        assert_eq!(
            m.record(Millis(0), LinkId(0), hb(1)),
            Some(MembershipChange::PeerOnline {
                rejoined_after_fence: false
            })
        );
        m.record(Millis(10), LinkId(1), hb(2));
        for t in (200..3000).step_by(200) {
            m.record(Millis(t), LinkId(1), hb(t));
            assert_eq!(m.tick(Millis(t)), None);
        }
        assert!(!m.links()[0].up);
        assert!(m.links()[1].up);
        assert_eq!(m.state(), PeerState::Online);
    }

    #[test]
    fn an_overtaken_heartbeat_refreshes_its_link_but_not_the_summary() {
        let mut m = Membership::new(NodeId(0), 2, 1000);
        let mut newer = hb(6);
        newer.summary.standby = true;
        m.record(Millis(0), LinkId(1), newer);
        m.record(Millis(5), LinkId(0), hb(5));
        assert_eq!(m.links()[0].last_seen, Some(Millis(5)));
        assert!(m.peer_summary().is_some_and(|s| s.standby));
    }

    #[test]
    fn silence_on_every_link_loses_the_peer_after_dead_after() {
        let mut m = Membership::new(NodeId(0), 2, 1000);
        m.record(Millis(0), LinkId(0), hb(1));
        assert_eq!(m.tick(Millis(999)), None);
        assert_eq!(m.tick(Millis(1000)), Some(MembershipChange::PeerLost));
        assert_eq!(m.state(), PeerState::Lost { since: Millis(1000) });
    }

    #[test]
    fn replayed_and_foreign_heartbeats_are_rejected_without_change() {
        let mut m = Membership::new(NodeId(0), 2, 1000);
        m.record(Millis(0), LinkId(0), hb(5));
        assert!(matches!(
            m.check(LinkId(0), &hb(5)),
            Err(CoreError::StaleHeartbeat { .. })
        ));
        assert!(matches!(
            m.check(LinkId(0), &hb(4)),
            Err(CoreError::StaleHeartbeat { .. })
        ));
        // The same heartbeat sent on the other link is not a replay there.
        assert!(m.check(LinkId(1), &hb(5)).is_ok());
        let mut foreign = hb(9);
        foreign.from = NodeId(0);
        assert!(matches!(m.check(LinkId(0), &foreign), Err(CoreError::NotThePeer(_))));
        assert!(matches!(m.check(LinkId(9), &hb(9)), Err(CoreError::UnknownLink(_))));
        assert!(m.check(LinkId(1), &hb(6)).is_ok());
    }
}
