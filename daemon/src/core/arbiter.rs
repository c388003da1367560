//! Who fences whom, and when. On peer loss: wait this node's fence delay, re-check,
//! then walk the peer's fence levels until one confirms power off; on failure back
//! off and start over. Nothing here ever declares the peer dead on a guess: the only
//! way to `Fenced` is a device's confirmation.

use super::types::{ActionId, Millis};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArbiterPhase {
    Idle,
    /// Peer lost; fencing starts at `until` if it is still lost then (or in
    /// any case when an operator asked for it).
    Delay {
        until: Millis,
        forced: bool,
    },
    /// Level `level` is being tried; `action` is the fence the driver runs.
    Fencing {
        level: usize,
        action: ActionId,
        deadline: Millis,
    },
    /// Every level failed; the next round starts at `until`.
    Backoff {
        until: Millis,
    },
    /// A device confirmed the peer off.
    Fenced {
        at: Millis,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArbiterTimings {
    /// This node's wait between peer loss and the first fence. The preferred node
    /// has 0; the other must wait longer than the preferred node needs to fence,
    /// so a symmetric partition ends with exactly one survivor.
    pub fence_delay_ms: u64,
    /// A fence not answered within this is counted as failed.
    pub fence_timeout_ms: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

/// What the arbiter asks of the rest of the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArbiterOut {
    /// Run fence level `level` against the peer.
    Fence { action: ActionId, level: usize },
    /// The peer is confirmed off: take over.
    Confirmed,
    /// Level `level` failed (or timed out).
    LevelFailed { level: usize, reason: String },
    /// All levels failed; retrying at `retry_at`.
    RoundFailed { round: u32, retry_at: Millis },
    /// The peer came back before fencing started.
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct Arbiter {
    timings: ArbiterTimings,
    levels: usize,
    phase: ArbiterPhase,
    round: u32,
}

impl Arbiter {
    pub fn new(timings: ArbiterTimings, levels: usize) -> Self {
        Arbiter {
            timings,
            levels,
            phase: ArbiterPhase::Idle,
            round: 0,
        }
    }

    pub fn phase(&self) -> ArbiterPhase {
        self.phase
    }

    /// New timings and number of fence levels (a reloaded configuration):
    /// a delay, fence or backoff under way keeps its deadline; a round under
    /// way goes on with the new number of levels.
    pub fn reconfigure(&mut self, timings: ArbiterTimings, levels: usize) {
        self.timings = timings;
        self.levels = levels;
    }

    pub fn levels(&self) -> usize {
        self.levels
    }

    /// Failed rounds since the peer was lost.
    pub fn failed_rounds(&self) -> u32 {
        self.round
    }

    /// The peer went silent on every link. `seen_since_boot` false means
    /// wait-for-all: a node that never saw its peer fences nobody by itself.
    pub fn peer_lost(&mut self, now: Millis, seen_since_boot: bool) {
        if !seen_since_boot {
            return;
        }
        if matches!(self.phase, ArbiterPhase::Idle | ArbiterPhase::Fenced { .. }) {
            self.round = 0;
            self.phase = ArbiterPhase::Delay {
                until: now.plus(self.timings.fence_delay_ms),
                forced: false,
            };
        }
    }

    /// An operator says the peer is to be fenced now, whatever the membership says.
    pub fn operator_fence(&mut self, now: Millis) {
        // Even a peer that looks online: the operator knows something we do not.
        if !matches!(self.phase, ArbiterPhase::Fencing { .. }) {
            self.round = 0;
            self.phase = ArbiterPhase::Delay {
                until: now,
                forced: true,
            };
        }
    }

    /// The peer is heard again. A fence already running, or one an operator
    /// asked for, is not cancelled.
    pub fn peer_online(&mut self) -> Option<ArbiterOut> {
        match self.phase {
            ArbiterPhase::Delay { forced: true, .. } => None,
            ArbiterPhase::Delay { .. } | ArbiterPhase::Backoff { .. } => {
                self.phase = ArbiterPhase::Idle;
                self.round = 0;
                Some(ArbiterOut::Cancelled)
            }
            ArbiterPhase::Fenced { .. } => {
                self.phase = ArbiterPhase::Idle;
                self.round = 0;
                None
            }
            ArbiterPhase::Idle | ArbiterPhase::Fencing { .. } => None,
        }
    }

    /// Advances by time. `peer_still_lost` is the membership's current view,
    /// re-checked at the end of the delay.
    pub fn tick(
        &mut self,
        now: Millis,
        peer_still_lost: bool,
        next_action: impl FnOnce() -> ActionId,
    ) -> Vec<ArbiterOut> {
        match self.phase {
            ArbiterPhase::Delay { until, forced } if now >= until => {
                self.start_round(now, peer_still_lost || forced, next_action)
            }
            ArbiterPhase::Backoff { until } if now >= until => self.start_round(now, peer_still_lost, next_action),
            ArbiterPhase::Fencing { level, deadline, .. } if now >= deadline => {
                let mut out = vec![ArbiterOut::LevelFailed {
                    level,
                    reason: format!("no answer within {} ms", self.timings.fence_timeout_ms),
                }];
                out.push(self.next_level_or_round(now, level, next_action));
                out
            }
            _ => Vec::new(),
        }
    }

    fn start_round(&mut self, now: Millis, go: bool, next_action: impl FnOnce() -> ActionId) -> Vec<ArbiterOut> {
        if !go {
            self.phase = ArbiterPhase::Idle;
            self.round = 0;
            return vec![ArbiterOut::Cancelled];
        }
        if self.levels == 0 {
            // No device: never fenced, never taken over. Shown as a failed round.
            return vec![self.fail_round(now)];
        }
        vec![self.start_level(now, 0, next_action())]
    }

    /// Whether `action` is the fence this arbiter waits for.
    pub fn awaits(&self, action: ActionId) -> bool {
        matches!(self.phase, ArbiterPhase::Fencing { action: a, .. } if a == action)
    }

    /// The driver's answer for the pending fence. The caller checks `awaits` first.
    pub fn fence_result(
        &mut self,
        now: Millis,
        result: Result<(), String>,
        next_action: impl FnOnce() -> ActionId,
    ) -> Vec<ArbiterOut> {
        let ArbiterPhase::Fencing { level, .. } = self.phase else {
            return Vec::new();
        };
        match result {
            Ok(()) => {
                self.phase = ArbiterPhase::Fenced { at: now };
                self.round = 0;
                vec![ArbiterOut::Confirmed]
            }
            Err(reason) => vec![
                ArbiterOut::LevelFailed { level, reason },
                self.next_level_or_round(now, level, next_action),
            ],
        }
    }

    fn start_level(&mut self, now: Millis, level: usize, action: ActionId) -> ArbiterOut {
        self.phase = ArbiterPhase::Fencing {
            level,
            action,
            deadline: now.plus(self.timings.fence_timeout_ms),
        };
        ArbiterOut::Fence { action, level }
    }

    fn next_level_or_round(&mut self, now: Millis, level: usize, next_action: impl FnOnce() -> ActionId) -> ArbiterOut {
        if level + 1 < self.levels {
            self.start_level(now, level + 1, next_action())
        } else {
            self.fail_round(now)
        }
    }

    fn fail_round(&mut self, now: Millis) -> ArbiterOut {
        self.round = self.round.saturating_add(1);
        let shift = self.round.saturating_sub(1).min(16);
        let wait = self
            .timings
            .backoff_initial_ms
            .saturating_mul(1u64 << shift)
            .min(self.timings.backoff_max_ms);
        let retry_at = now.plus(wait);
        self.phase = ArbiterPhase::Backoff { until: retry_at };
        ArbiterOut::RoundFailed {
            round: self.round,
            retry_at,
        }
    }

    pub fn next_deadline(&self) -> Option<Millis> {
        match self.phase {
            ArbiterPhase::Delay { until, .. } | ArbiterPhase::Backoff { until } => Some(until),
            ArbiterPhase::Fencing { deadline, .. } => Some(deadline),
            ArbiterPhase::Idle | ArbiterPhase::Fenced { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings(delay: u64) -> ArbiterTimings {
        ArbiterTimings {
            fence_delay_ms: delay,
            fence_timeout_ms: 5000,
            backoff_initial_ms: 1000,
            backoff_max_ms: 8000,
        }
    }

    #[test]
    fn waits_the_delay_then_fences_level_zero() {
        let mut a = Arbiter::new(timings(2000), 2);
        a.peer_lost(Millis(100), true);
        assert!(a.tick(Millis(2099), true, || ActionId(1)).is_empty());
        assert_eq!(
            a.tick(Millis(2100), true, || ActionId(1)),
            vec![ArbiterOut::Fence {
                action: ActionId(1),
                level: 0
            }]
        );
    }

    #[test]
    fn never_seen_peer_is_never_fenced() {
        let mut a = Arbiter::new(timings(0), 1);
        a.peer_lost(Millis(0), false);
        assert!(a.tick(Millis(100_000), true, || ActionId(1)).is_empty());
        assert_eq!(a.phase(), ArbiterPhase::Idle);
    }

    #[test]
    fn failing_level_moves_to_the_next_then_backs_off() {
        let mut a = Arbiter::new(timings(0), 2);
        a.peer_lost(Millis(0), true);
        a.tick(Millis(0), true, || ActionId(1));
        let out = a.fence_result(Millis(10), Err("bmc down".into()), || ActionId(2));
        assert_eq!(
            out[1],
            ArbiterOut::Fence {
                action: ActionId(2),
                level: 1
            }
        );
        let out = a.fence_result(Millis(20), Err("agent failed".into()), || ActionId(3));
        assert_eq!(
            out[1],
            ArbiterOut::RoundFailed {
                round: 1,
                retry_at: Millis(1020)
            }
        );
        // Backoff doubles, capped.
        a.tick(Millis(1020), true, || ActionId(4));
        a.fence_result(Millis(1030), Err("x".into()), || ActionId(5));
        let out = a.fence_result(Millis(1040), Err("x".into()), || ActionId(6));
        assert_eq!(
            out[1],
            ArbiterOut::RoundFailed {
                round: 2,
                retry_at: Millis(3040)
            }
        );
    }

    #[test]
    fn hung_fence_times_out_as_a_failure() {
        let mut a = Arbiter::new(timings(0), 1);
        a.peer_lost(Millis(0), true);
        a.tick(Millis(0), true, || ActionId(1));
        let out = a.tick(Millis(5000), true, || ActionId(2));
        assert!(matches!(out[0], ArbiterOut::LevelFailed { level: 0, .. }));
        assert!(matches!(out[1], ArbiterOut::RoundFailed { .. }));
        assert!(!a.awaits(ActionId(1)));
    }

    #[test]
    fn peer_back_during_delay_cancels() {
        let mut a = Arbiter::new(timings(2000), 1);
        a.peer_lost(Millis(0), true);
        assert_eq!(a.peer_online(), Some(ArbiterOut::Cancelled));
        assert!(a.tick(Millis(5000), true, || ActionId(1)).is_empty());
    }

    #[test]
    fn reconfigured_timings_and_levels_apply_from_the_next_deadline() {
        let mut a = Arbiter::new(timings(2000), 2);
        a.peer_lost(Millis(0), true);
        a.reconfigure(timings(500), 1);
        // The delay under way keeps its deadline.
        assert!(a.tick(Millis(1999), true, || ActionId(1)).is_empty());
        assert_eq!(a.tick(Millis(2000), true, || ActionId(1)).len(), 1);
        // One level now: its failure ends the round.
        let out = a.fence_result(Millis(2010), Err("bmc down".into()), || ActionId(2));
        assert!(matches!(out[1], ArbiterOut::RoundFailed { round: 1, .. }), "{out:?}");
        a.peer_online();
        a.peer_lost(Millis(10_000), true);
        assert_eq!(a.next_deadline(), Some(Millis(10_500)));
    }
}
