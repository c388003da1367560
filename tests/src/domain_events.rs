//! libvirt's own account of where domains ran: a `virsh event --all --loop`
//! per test host, its lifecycle lines stamped on arrival by one clock, and
//! DESIGN.md's first invariant checked on the merged timeline: a domain never
//! runs unpaused on both hosts at once.
//!
//! A host that loses power takes its libvirtd with it: the `virsh event`
//! client (which runs outside the host's namespaces) then sees its connection
//! end, and every domain of that host counts as stopped from that moment, as
//! it is in reality (QEMU dies with libvirtd; the fencing node starts its copy
//! only after the BMC confirmed that).

use crate::lab::Node;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

/// What happened on one host, as libvirt told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEvent {
    /// `event 'lifecycle' for domain 'D': EVENT DETAIL`.
    Lifecycle {
        domain: String,
        event: String,
        detail: String,
    },
    /// The event stream of the host ended (its libvirtd is gone).
    Lost,
}

/// A [`HostEvent`] on the merged timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    pub unix_ms: u64,
    pub host: Node,
    pub event: HostEvent,
}

/// Parses one line of `virsh event` (without `--timestamp`); `None` for the
/// other event kinds (`reboot`, `device-added`, ...) and for anything else.
pub fn parse_line(line: &str) -> Option<HostEvent> {
    let rest = line.trim().strip_prefix("event 'lifecycle' for domain '")?;
    let (domain, rest) = rest.split_once("': ")?;
    let mut words = rest.split_whitespace();
    let event = words.next()?.to_owned();
    let detail = words.next().unwrap_or("").to_owned();
    Some(HostEvent::Lifecycle {
        domain: domain.to_owned(),
        event,
        detail,
    })
}

/// Whether a domain's vCPUs execute on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Running,
    Paused,
    Stopped,
}

fn next_state(event: &str, detail: &str) -> Option<Run> {
    Some(match event {
        // An incoming migration starts paused; the destination resumes it
        // only when the source has paused for good (`Resumed Migrated`).
        "Started" if detail == "Migrated" => Run::Paused,
        "Started" | "Resumed" => Run::Running,
        "Suspended" | "PMSuspended" => Run::Paused,
        "Stopped" | "Crashed" => Run::Stopped,
        _ => return None,
    })
}

/// Checks the timeline (in order): the first moment a domain runs unpaused on
/// both hosts is an error that shows the events leading to it.
pub fn check_exclusive(timeline: &[Stamped]) -> Result<()> {
    let mut state: BTreeMap<(String, usize), Run> = BTreeMap::new();
    for (i, e) in timeline.iter().enumerate() {
        match &e.event {
            HostEvent::Lost => {
                for ((_, host), run) in state.iter_mut() {
                    if *host == e.host.index() {
                        *run = Run::Stopped;
                    }
                }
            }
            HostEvent::Lifecycle { domain, event, detail } => {
                let Some(run) = next_state(event, detail) else {
                    continue;
                };
                state.insert((domain.clone(), e.host.index()), run);
                let other = state.get(&(domain.clone(), e.host.other().index()));
                if run == Run::Running && other == Some(&Run::Running) {
                    let recent: Vec<String> = timeline[i.saturating_sub(12)..=i]
                        .iter()
                        .map(|s| format!("{} {} {:?}", s.unix_ms, s.host, s.event))
                        .collect();
                    bail!(
                        "domain {domain} ran unpaused on both hosts from {} ms (libvirt events):\n{}",
                        e.unix_ms,
                        recent.join("\n")
                    );
                }
            }
        }
    }
    Ok(())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One `virsh event` client per host feeding a shared timeline. Dropping it
/// kills the clients (by the pids it started).
#[derive(Debug, Default)]
pub struct DomainEvents {
    timeline: Arc<Mutex<Vec<Stamped>>>,
    clients: Vec<(Child, JoinHandle<()>)>,
}

impl DomainEvents {
    pub fn new() -> DomainEvents {
        DomainEvents::default()
    }

    /// Follows the libvirtd at `uri` as `host` (again after a reboot).
    pub fn follow(&mut self, host: Node, uri: &str) -> Result<()> {
        let mut child = Command::new("virsh")
            .args(["-c", uri, "event", "--all", "--loop"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run `virsh event` (Debian: libvirt-clients)")?;
        let stdout = child.stdout.take().context("virsh event has no stdout")?;
        let timeline = Arc::clone(&self.timeline);
        let push = move |event: HostEvent| {
            let mut t = timeline.lock().unwrap_or_else(PoisonError::into_inner);
            // Stamped under the lock: the timeline stays in order.
            t.push(Stamped {
                unix_ms: unix_ms(),
                host,
                event,
            });
        };
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(e) = parse_line(&line) {
                    push(e);
                }
            }
            push(HostEvent::Lost);
        });
        self.clients.push((child, reader));
        Ok(())
    }

    /// The timeline so far.
    pub fn timeline(&self) -> Vec<Stamped> {
        self.timeline.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// [`check_exclusive`] on the timeline so far.
    pub fn check(&self) -> Result<()> {
        check_exclusive(&self.timeline())
    }

    /// The timeline as text, for a failed test's report.
    pub fn render(&self) -> String {
        self.timeline()
            .iter()
            .map(|s| format!("{} {} {:?}\n", s.unix_ms, s.host, s.event))
            .collect()
    }
}

impl Drop for DomainEvents {
    fn drop(&mut self) {
        for (child, reader) in self.clients.drain(..) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(unix_ms: u64, host: Node, line: &str) -> Stamped {
        Stamped {
            unix_ms,
            host,
            event: parse_line(line).unwrap_or(HostEvent::Lost),
        }
    }

    #[test]
    fn lifecycle_lines_parse_and_others_do_not() {
        assert_eq!(
            parse_line("event 'lifecycle' for domain 'vm 1': Started Booted"),
            Some(HostEvent::Lifecycle {
                domain: "vm 1".into(),
                event: "Started".into(),
                detail: "Booted".into()
            })
        );
        assert_eq!(parse_line("event 'reboot' for domain 'vm1'"), None);
        assert_eq!(parse_line("events received: 3"), None);
        assert_eq!(parse_line(""), None);
    }

    #[test]
    fn a_live_migration_never_runs_twice() {
        let (a, b) = (Node::Alpha, Node::Beta);
        let t = [
            at(1, a, "event 'lifecycle' for domain 'vm1': Started Booted"),
            at(2, b, "event 'lifecycle' for domain 'vm1': Started Migrated"),
            at(3, a, "event 'lifecycle' for domain 'vm1': Suspended Migrated"),
            at(4, b, "event 'lifecycle' for domain 'vm1': Resumed Migrated"),
            at(5, a, "event 'lifecycle' for domain 'vm1': Stopped Migrated"),
        ];
        check_exclusive(&t).unwrap();
    }

    #[test]
    fn a_resume_before_the_source_paused_is_caught() {
        let (a, b) = (Node::Alpha, Node::Beta);
        let t = [
            at(1, a, "event 'lifecycle' for domain 'vm1': Started Booted"),
            at(2, b, "event 'lifecycle' for domain 'vm1': Started Migrated"),
            at(3, b, "event 'lifecycle' for domain 'vm1': Resumed Migrated"),
        ];
        let e = check_exclusive(&t).unwrap_err().to_string();
        assert!(e.contains("vm1 ran unpaused on both hosts from 3 ms"), "{e}");
    }

    #[test]
    fn a_host_that_lost_power_runs_nothing() {
        let (a, b) = (Node::Alpha, Node::Beta);
        let mut t = vec![
            at(1, b, "event 'lifecycle' for domain 'vm1': Started Booted"),
            Stamped {
                unix_ms: 2,
                host: b,
                event: HostEvent::Lost,
            },
            at(3, a, "event 'lifecycle' for domain 'vm1': Started Booted"),
        ];
        check_exclusive(&t).unwrap();
        // Without the loss it is two copies.
        t.remove(1);
        assert!(check_exclusive(&t).is_err());
    }
}
