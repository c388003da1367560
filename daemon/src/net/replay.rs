//! Per-link replay filter for heartbeats.
//!
//! The core also refuses heartbeats whose counter does not grow, but across all
//! links together; this window runs per link, before the core, so the transport
//! can count replays per link and a lossy link that reorders a little still
//! shows as alive. Heartbeats it lets through out of order may still be refused
//! by the core as stale; that is harmless.

/// What [`ReplayWindow::accept`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Higher than anything seen so far in this boot.
    Fresh,
    /// Lower than the highest seen, inside the window, and not seen before.
    Reordered,
    /// A boot id other than the one tracked: the window restarted on it.
    NewBoot,
    /// Seen before.
    Duplicate,
    /// Too far behind the highest counter to tell whether it was seen.
    TooOld,
}

impl ReplayVerdict {
    pub fn accepted(self) -> bool {
        matches!(
            self,
            ReplayVerdict::Fresh | ReplayVerdict::Reordered | ReplayVerdict::NewBoot
        )
    }
}

/// Highest counter seen in the current boot, plus a bitmap of the
/// [`ReplayWindow::SIZE`] counters below and including it (bit `i` stands for
/// `highest - i`).
///
/// A new boot id always restarts the window: boot ids are random, so nothing
/// tells an old incarnation from a new one. A replayed datagram of an earlier
/// boot therefore gets through here; the core sees its boot id and counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    boot: Option<u64>,
    highest: u64,
    seen: u64,
}

impl ReplayWindow {
    pub const SIZE: u64 = 64;

    pub fn new() -> ReplayWindow {
        ReplayWindow::default()
    }

    /// The boot id currently tracked.
    pub fn boot(&self) -> Option<u64> {
        self.boot
    }

    /// Decides without recording.
    pub fn check(&self, boot: u64, counter: u64) -> ReplayVerdict {
        if self.boot != Some(boot) {
            return ReplayVerdict::NewBoot;
        }
        if counter > self.highest {
            return ReplayVerdict::Fresh;
        }
        let behind = self.highest - counter;
        if behind >= Self::SIZE {
            ReplayVerdict::TooOld
        } else if self.seen & (1u64 << behind) != 0 {
            ReplayVerdict::Duplicate
        } else {
            ReplayVerdict::Reordered
        }
    }

    /// Decides and, if accepted, records the counter.
    pub fn accept(&mut self, boot: u64, counter: u64) -> ReplayVerdict {
        let verdict = self.check(boot, counter);
        match verdict {
            ReplayVerdict::NewBoot => {
                self.boot = Some(boot);
                self.highest = counter;
                self.seen = 1;
            }
            ReplayVerdict::Fresh => {
                let ahead = counter - self.highest;
                self.seen = if ahead >= Self::SIZE { 0 } else { self.seen << ahead };
                self.seen |= 1;
                self.highest = counter;
            }
            ReplayVerdict::Reordered => {
                self.seen |= 1u64 << (self.highest - counter);
            }
            ReplayVerdict::Duplicate | ReplayVerdict::TooOld => {}
        }
        verdict
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use ReplayVerdict::*;

    #[test]
    fn duplicates_are_dropped() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(1, 10), NewBoot);
        assert_eq!(w.accept(1, 10), Duplicate);
        assert_eq!(w.accept(1, 11), Fresh);
        assert_eq!(w.accept(1, 11), Duplicate);
        assert_eq!(w.accept(1, 10), Duplicate);
        assert!(!Duplicate.accepted());
    }

    #[test]
    fn reordering_within_the_window_is_accepted_once() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(1, 100), NewBoot);
        assert_eq!(w.accept(1, 103), Fresh);
        assert_eq!(w.accept(1, 101), Reordered);
        assert_eq!(w.accept(1, 102), Reordered);
        assert_eq!(w.accept(1, 102), Duplicate);
        assert_eq!(w.accept(1, 103 - 63), Reordered);
        assert_eq!(w.accept(1, 103 - 63), Duplicate);
        assert!(Reordered.accepted());
    }

    #[test]
    fn too_old_is_dropped() {
        let mut w = ReplayWindow::new();
        w.accept(1, 1000);
        assert_eq!(w.accept(1, 1000 - 64), TooOld);
        assert_eq!(w.accept(1, 0), TooOld);
        // A jump past the whole window forgets everything below it.
        assert_eq!(w.accept(1, 5000), Fresh);
        assert_eq!(w.accept(1, 4999), Reordered);
        assert_eq!(w.accept(1, 1000), TooOld);
        assert_eq!(w.accept(1, u64::MAX), Fresh);
        assert_eq!(w.accept(1, u64::MAX), Duplicate);
    }

    #[test]
    fn new_boot_resets() {
        let mut w = ReplayWindow::new();
        w.accept(1, 500);
        assert_eq!(w.accept(2, 1), NewBoot);
        assert_eq!(w.boot(), Some(2));
        assert_eq!(w.accept(2, 1), Duplicate);
        assert_eq!(w.accept(2, 2), Fresh);
        assert_eq!(w.check(1, 501), NewBoot, "check does not record");
        assert_eq!(w.boot(), Some(2));
    }

    proptest! {
        // 512 cases, each feeding up to 200 counters: a few ms in total.
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn never_accepts_a_counter_twice(counters in proptest::collection::vec(0u64..300, 1..200)) {
            let mut w = ReplayWindow::new();
            let mut accepted = HashSet::new();
            for c in counters {
                let v = w.accept(9, c);
                if v.accepted() {
                    prop_assert!(accepted.insert(c), "counter {} accepted twice", c);
                } else if v == Duplicate {
                    prop_assert!(accepted.contains(&c));
                }
            }
        }
    }
}
