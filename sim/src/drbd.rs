//! Simulated DRBD for two nodes: the role rules real DRBD enforces, the
//! connection, resync, I/O freezing under `fencing resource-and-stonith`, and a
//! record of which side holds data the other lacks (to catch stale promotions
//! and split brains, which real DRBD would only reveal as lost writes).

use tandem::core::{DiskState, ResourceObservation, Role};

#[derive(Debug, Clone)]
pub struct DrbdSide {
    /// The host is powered and DRBD is loaded.
    pub up: bool,
    pub role: Role,
    pub disk: DiskState,
    pub allow_two_primaries: bool,
    /// I/O suspended while the fence-peer handler decides.
    pub frozen: bool,
    /// Holds writes the other side lacks.
    pub ahead: bool,
}

impl DrbdSide {
    fn new() -> Self {
        DrbdSide {
            up: true,
            role: Role::Secondary,
            disk: DiskState::UpToDate,
            allow_two_primaries: false,
            frozen: false,
            ahead: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DrbdResource {
    pub name: String,
    pub sides: [DrbdSide; 2],
    pub connected: bool,
    /// Resync target finishes at this time.
    pub sync_until: Option<u64>,
    /// Split brain detected: DRBD refuses to connect.
    pub standalone: bool,
    /// After a link break, a side that notices it only at its next ping (a
    /// real 8.4 with the default `ping-int 10`): until this time it still
    /// reports itself connected, and `drbdadm outdate` there exits 0 and
    /// changes nothing.
    pub late_notice: Option<(usize, u64)>,
}

/// Why a DRBD operation failed, as drbdadm would say it.
pub type DrbdResult = Result<(), String>;

impl DrbdResource {
    pub fn new(name: &str) -> Self {
        DrbdResource {
            name: name.to_owned(),
            sides: [DrbdSide::new(), DrbdSide::new()],
            connected: true,
            sync_until: None,
            standalone: false,
            late_notice: None,
        }
    }

    /// Whether side `n` still believes the connection is up at `now`.
    fn sees_connected(&self, n: usize, now: u64) -> bool {
        self.connected || self.late_notice.is_some_and(|(side, until)| side == n && now < until)
    }

    pub fn observe(&self, n: usize, now: u64) -> ResourceObservation {
        let me = &self.sides[n];
        let peer = &self.sides[1 - n];
        let connected = self.sees_connected(n, now);
        ResourceObservation {
            role: me.role,
            disk: me.disk,
            connected,
            peer_role: if connected { peer.role } else { Role::Unknown },
            peer_disk: if connected { peer.disk } else { DiskState::Unknown },
        }
    }

    /// Whether promoting `n` now needs the fence-peer handler first: DRBD with
    /// resource-and-stonith does not become Primary while the peer's disk is
    /// unknown and not known to be outdated.
    pub fn promote_needs_fence_peer(&self, n: usize) -> bool {
        !self.connected && self.sides[n].role != Role::Primary
    }

    /// `drbdadm primary`. `peer_settled` is true when the fence-peer handler
    /// answered 4 or 7 for this promotion.
    pub fn promote(&mut self, n: usize, peer_settled: bool) -> DrbdResult {
        let (me, peer) = (&self.sides[n], &self.sides[1 - n]);
        if !me.up {
            return Err("drbd is not running".into());
        }
        if me.role == Role::Primary {
            return Ok(());
        }
        // A Consistent disk becomes UpToDate once the fence-peer handler
        // outdated or fenced the peer: DRBD trusts the handler here.
        let usable = me.disk == DiskState::UpToDate || (me.disk == DiskState::Consistent && peer_settled);
        if !usable {
            return Err(format!(
                "{}: State change failed: (-2) Need access to UpToDate data",
                self.name
            ));
        }
        if self.connected && peer.role == Role::Primary && !(me.allow_two_primaries && peer.allow_two_primaries) {
            return Err(format!(
                "{}: State change failed: (-1) Multiple primaries not allowed by config",
                self.name
            ));
        }
        if !self.connected && !peer_settled {
            return Err(format!(
                "{}: State change failed: (-7) Refusing to be Primary while peer is not outdated",
                self.name
            ));
        }
        self.sides[n].role = Role::Primary;
        self.sides[n].disk = DiskState::UpToDate;
        Ok(())
    }

    /// `drbdadm secondary`; `held` is whether a process has the device open.
    pub fn demote(&mut self, n: usize, held: bool) -> DrbdResult {
        let me = &self.sides[n];
        if !me.up {
            return Err("drbd is not running".into());
        }
        if me.role == Role::Secondary {
            return Ok(());
        }
        if held {
            return Err(format!(
                "{}: State change failed: (-12) Device is held open by someone",
                self.name
            ));
        }
        self.sides[n].role = Role::Secondary;
        Ok(())
    }

    /// `drbdadm net-options --protocol=C --allow-two-primaries=yes|no`.
    pub fn set_dual(&mut self, n: usize, allow: bool) -> DrbdResult {
        if !self.sides[n].up {
            return Err("drbd is not running".into());
        }
        self.sides[n].allow_two_primaries = allow;
        Ok(())
    }

    /// `drbdadm outdate`: only on a disconnected Secondary; as DRBD 8.4 on a
    /// side that has not noticed the broken link yet, exit 0 and no change.
    pub fn outdate(&mut self, n: usize, now: u64) -> DrbdResult {
        if !self.connected && self.sees_connected(n, now) && self.sides[n].role != Role::Primary {
            return Ok(());
        }
        let me = &self.sides[n];
        if !me.up {
            return Err("drbd is not running".into());
        }
        if me.role == Role::Primary {
            return Err(format!(
                "{}: State change failed: (-2) Refusing to outdate a Primary",
                self.name
            ));
        }
        if self.connected {
            return Err(format!(
                "{}: State change failed: (-10) State change was refused (connected)",
                self.name
            ));
        }
        if me.disk == DiskState::UpToDate {
            self.sides[n].disk = DiskState::Outdated;
        }
        Ok(())
    }

    /// Drops the connection; returns the sides that froze I/O (they now run the
    /// fence-peer handler).
    pub fn disconnect(&mut self) -> Vec<usize> {
        self.connected = false;
        self.late_notice = None;
        self.sync_until = None;
        let mut frozen = Vec::new();
        for (n, s) in self.sides.iter_mut().enumerate() {
            if s.disk == DiskState::Inconsistent {
                // An interrupted resync target stays Inconsistent.
                continue;
            }
            if s.up && s.role == Role::Primary {
                s.frozen = true;
                frozen.push(n);
            }
        }
        frozen
    }

    /// Connects; returns an error message on split brain.
    pub fn connect(&mut self, now: u64, sync_ms: u64) -> Result<(), String> {
        let both_ahead = self.sides[0].ahead && self.sides[1].ahead;
        let both_primary =
            self.sides.iter().all(|s| s.role == Role::Primary) && !self.sides.iter().all(|s| s.allow_two_primaries);
        if both_ahead || both_primary {
            self.standalone = true;
            return Err(format!("{}: split brain detected, connection refused", self.name));
        }
        self.connected = true;
        self.late_notice = None;
        let source = self.sides.iter().position(|s| s.ahead).or_else(|| {
            self.sides
                .iter()
                .position(|s| s.disk == DiskState::UpToDate)
                .filter(|&n| self.sides[1 - n].disk != DiskState::UpToDate)
        });
        for s in &mut self.sides {
            s.frozen = false;
            s.ahead = false;
        }
        match source {
            Some(src) => {
                self.sides[1 - src].disk = DiskState::Inconsistent;
                self.sides[src].disk = DiskState::UpToDate;
                self.sync_until = Some(now + sync_ms);
            }
            // Same data on both sides: the handshake makes both UpToDate.
            None => {
                for s in &mut self.sides {
                    if s.disk != DiskState::Inconsistent && s.disk != DiskState::Diskless {
                        s.disk = DiskState::UpToDate;
                    }
                }
            }
        }
        Ok(())
    }

    pub fn finish_sync(&mut self, now: u64) -> bool {
        match self.sync_until {
            Some(t) if now >= t && self.connected => {
                for s in &mut self.sides {
                    if matches!(
                        s.disk,
                        DiskState::Inconsistent | DiskState::Outdated | DiskState::Consistent
                    ) {
                        s.disk = DiskState::UpToDate;
                    }
                }
                self.sync_until = None;
                true
            }
            _ => false,
        }
    }

    /// The host went down: DRBD with it.
    pub fn host_down(&mut self, n: usize) {
        let s = &mut self.sides[n];
        s.up = false;
        s.role = Role::Secondary;
        s.frozen = false;
        s.allow_two_primaries = false;
    }

    /// Boot: DRBD attaches; without the peer it cannot know its data is the
    /// newest, so an UpToDate disk comes back Consistent.
    pub fn host_up(&mut self, n: usize) {
        let s = &mut self.sides[n];
        s.up = true;
        if s.disk == DiskState::UpToDate {
            s.disk = DiskState::Consistent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_primary_needs_allow_two_primaries_on_both() {
        let mut r = DrbdResource::new("r0");
        r.promote(0, false).unwrap();
        assert!(r.promote(1, false).unwrap_err().contains("Multiple primaries"));
        r.set_dual(1, true).unwrap();
        assert!(r.promote(1, false).is_err());
        r.set_dual(0, true).unwrap();
        r.promote(1, false).unwrap();
    }

    #[test]
    fn outdated_disk_cannot_be_promoted_and_demote_waits_for_holders() {
        let mut r = DrbdResource::new("r0");
        r.disconnect();
        r.outdate(1, 0).unwrap();
        assert!(r.promote(1, true).unwrap_err().contains("UpToDate"));
        r.promote(0, true).unwrap();
        assert!(r.demote(0, true).unwrap_err().contains("held open"));
        r.demote(0, false).unwrap();
    }

    #[test]
    fn reconnect_resyncs_from_the_side_that_wrote() {
        let mut r = DrbdResource::new("r0");
        r.promote(0, false).unwrap();
        assert_eq!(r.disconnect(), vec![0]);
        r.sides[0].ahead = true;
        r.connect(100, 50).unwrap();
        assert_eq!(r.sides[1].disk, DiskState::Inconsistent);
        assert!(r.finish_sync(150));
        assert_eq!(r.sides[1].disk, DiskState::UpToDate);
        r.disconnect();
        r.sides[0].ahead = true;
        r.sides[1].ahead = true;
        assert!(r.connect(200, 50).is_err());
    }
}
