//! [`Hypervisor`] over libvirt (crate virt, which links libvirt.so).

use super::{Hypervisor, HypervisorError, MigrationBoard, MigrationProgress};
use crate::core::{DomainName, DomainRun};
use std::sync::{Mutex, Once};
use tandem_hooks::DomainInfo;
use virt::connect::Connect;
use virt::domain::{Domain, DomainState, DomainStateEnum};
use virt::enumutil::Enum;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::sys::{VIR_DOMAIN_XML_INACTIVE, VIR_DOMAIN_XML_SECURE, VIR_MIGRATE_LIVE};

/// A libvirt connection that is opened on first use and reopened when it died
/// (libvirtd restarted, or was not up yet when tandemd started): the daemon must
/// not depend on the order services start in, and every caller retries anyway
/// (the watcher every poll, the core by its own rules).
#[derive(Debug)]
pub struct Libvirt {
    uri: String,
    conn: Mutex<Option<Connect>>,
    peer: Option<PeerLibvirt>,
    board: MigrationBoard,
}

/// Where live migrations started by tandem go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLibvirt {
    /// The peer's libvirtd, as this host reaches it (`qemu+ssh://root@beta/system`).
    pub uri: String,
    /// Where QEMU sends the migration's data (`tcp://192.0.2.2`); `None`: libvirt's choice.
    pub migration_uri: Option<String>,
    /// MiB/s; 0: unlimited.
    pub bandwidth_mib: u64,
}

/// Every 250 ms until `stopped` says the migration call returned: libvirt's
/// job statistics of `dom` onto the board (none while libvirt reports no job
/// or no data yet, as in the migration's first phase).
fn watch_progress(dom: &Domain, name: &str, board: &MigrationBoard, stopped: &std::sync::mpsc::Receiver<()>) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stopped.recv_timeout(std::time::Duration::from_millis(250))
    {
        let Ok(job) = dom.job_info() else { continue };
        if let (Some(processed), Some(remaining)) = (job.data_processed, job.data_remaining) {
            if job.r#type != 0 && processed.saturating_add(remaining) > 0 {
                board.set(
                    name,
                    MigrationProgress {
                        processed_bytes: processed,
                        remaining_bytes: remaining,
                    },
                );
            }
        }
    }
}

/// libvirt's default error handler prints every error to stderr, including the
/// ones tandem handles (a poll before libvirtd is up): silence it, once per process.
fn silence_libvirt_stderr() {
    static ONCE: Once = Once::new();
    ONCE.call_once(virt::error::clear_error_callback);
}

fn code(e: &VirtError) -> String {
    match e.code() {
        Enum::Known(k) => format!("{k:?}"),
        Enum::Unknown(n) => n.to_string(),
    }
}

fn no_domain(e: &VirtError) -> bool {
    e.code() == Enum::Known(ErrorNumber::NoDomain)
}

impl Libvirt {
    /// A driver for `uri` that connects on first use.
    pub fn new(uri: impl Into<String>) -> Self {
        silence_libvirt_stderr();
        Libvirt {
            uri: uri.into(),
            conn: Mutex::new(None),
            peer: None,
            board: MigrationBoard::default(),
        }
    }

    /// Connects now; fails if libvirt is not reachable.
    pub fn connect(uri: impl Into<String>) -> Result<Self, HypervisorError> {
        let lv = Libvirt::new(uri);
        lv.conn()?;
        Ok(lv)
    }

    /// A driver over a connection the caller opened. `test:///default` keeps its
    /// domains per connection, so a test that defines domains through its own
    /// connection must hand the same one here.
    pub fn from_connect(uri: impl Into<String>, conn: Connect) -> Self {
        silence_libvirt_stderr();
        Libvirt {
            uri: uri.into(),
            conn: Mutex::new(Some(conn)),
            peer: None,
            board: MigrationBoard::default(),
        }
    }

    /// Lets [`Hypervisor::migrate`] move domains to the peer's libvirtd.
    pub fn with_peer(mut self, peer: PeerLibvirt) -> Self {
        self.peer = Some(peer);
        self
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Where [`Hypervisor::migrate`] reports how far a migration got.
    pub fn migration_board(&self) -> MigrationBoard {
        self.board.clone()
    }

    /// A live connection, reopened if the last one died. Returned as a clone (a
    /// reference count) so a long call (a start) never holds the lock the next
    /// poll needs.
    fn conn(&self) -> Result<Connect, HypervisorError> {
        // A poisoned lock only means another call panicked; the Option inside is
        // still either a connection or nothing.
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = guard.as_ref() {
            if c.is_alive().unwrap_or(false) {
                return Ok(c.clone());
            }
        }
        *guard = None;
        let c = Connect::open(Some(&self.uri)).map_err(|e| HypervisorError::Connect {
            uri: self.uri.clone(),
            message: e.message().to_owned(),
            code: code(&e),
        })?;
        *guard = Some(c.clone());
        Ok(c)
    }

    fn lookup(&self, domain: &DomainName) -> Result<Domain, HypervisorError> {
        let conn = self.conn()?;
        conn.lookup_domain_by_name(&domain.0)
            .map_err(|e| domain_error(domain, &e))
    }
}

fn domain_error(domain: &DomainName, e: &VirtError) -> HypervisorError {
    if no_domain(e) {
        HypervisorError::NoSuchDomain { domain: domain.clone() }
    } else {
        HypervisorError::Domain {
            domain: domain.clone(),
            message: e.message().to_owned(),
            code: code(e),
        }
    }
}

/// libvirt's state as the core sees it. Anything tandem cannot be sure is not
/// running counts as Paused, never Stopped: a false Stopped would let the peer
/// start the same domain (safety invariant 1).
pub fn run_of(state: DomainStateEnum) -> DomainRun {
    match state {
        // Blocked is running but waiting on I/O; Shutdown is running while the
        // guest shuts down.
        Enum::Known(DomainState::Running | DomainState::Blocked | DomainState::Shutdown) => DomainRun::Running,
        Enum::Known(DomainState::Shutoff | DomainState::Crashed) => DomainRun::Stopped,
        Enum::Known(DomainState::Paused | DomainState::PMSuspended | DomainState::NoState) | Enum::Unknown(_) => {
            DomainRun::Paused
        }
    }
}

impl Hypervisor for Libvirt {
    fn domains(&self) -> Result<Vec<(DomainName, DomainRun)>, HypervisorError> {
        let conn = self.conn()?;
        // 0: active and inactive, persistent and transient (an incoming migration
        // is transient until it finishes).
        let list = conn.list_all_domains(0).map_err(|e| HypervisorError::List {
            message: e.message().to_owned(),
            code: code(&e),
        })?;
        let mut out = Vec::with_capacity(list.len());
        for dom in list {
            let name = match dom.name() {
                Ok(n) => DomainName(n),
                Err(e) if no_domain(&e) => continue,
                Err(e) => {
                    return Err(HypervisorError::List {
                        message: e.message().to_owned(),
                        code: code(&e),
                    })
                }
            };
            // info(), not state(): virt's state() swallows errors into an
            // unknown state, and a domain that vanished since the list must be
            // told apart from one whose state failed to read.
            match dom.info() {
                Ok(info) => out.push((name, run_of(info.state))),
                // Undefined (or a transient domain gone) since the list: not here.
                Err(e) if no_domain(&e) => continue,
                Err(e) => return Err(domain_error(&name, &e)),
            }
        }
        Ok(out)
    }

    fn document(&self, domain: &DomainName) -> Result<String, HypervisorError> {
        self.lookup(domain)?.xml_desc(0).map_err(|e| domain_error(domain, &e))
    }

    fn read_document(&self, document: &str) -> Result<DomainInfo, String> {
        tandem_hooks::parse_domain_xml(document).map_err(|e| format!("unreadable domain XML: {e}"))
    }

    fn start(&self, domain: &DomainName) -> Result<(), HypervisorError> {
        let dom = self.lookup(domain)?;
        // The core may ask again after a lost answer or a daemon restart; a
        // domain that already runs is what it asked for.
        if let Ok(info) = dom.info() {
            if run_of(info.state) == DomainRun::Running {
                return Ok(());
            }
        }
        dom.create().map_err(|e| HypervisorError::Start {
            domain: domain.clone(),
            message: e.message().to_owned(),
        })
    }

    fn stop(&self, domain: &DomainName, force: bool) -> Result<(), HypervisorError> {
        let dom = self.lookup(domain)?;
        if dom.info().is_ok_and(|i| run_of(i.state) == DomainRun::Stopped) {
            return Ok(());
        }
        let done = if force {
            dom.destroy()
        } else {
            dom.shutdown().map(|_| ())
        };
        done.map_err(|e| HypervisorError::Stop {
            domain: domain.clone(),
            message: e.message().to_owned(),
        })
    }

    fn definition(&self, domain: &DomainName) -> Result<Option<String>, HypervisorError> {
        let dom = self.lookup(domain)?;
        if !dom.is_persistent().map_err(|e| domain_error(domain, &e))? {
            return Ok(None);
        }
        dom.xml_desc(VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE)
            .map(Some)
            .map_err(|e| domain_error(domain, &e))
    }

    fn define(&self, domain: &DomainName, xml: &str) -> Result<(), HypervisorError> {
        let failed = |message: String| HypervisorError::Define {
            domain: domain.clone(),
            message,
        };
        match tandem_hooks::parse_domain_xml(xml) {
            Ok(info) if info.name.as_deref() == Some(domain.0.as_str()) => {}
            Ok(info) => return Err(failed(format!("the definition names domain {:?}", info.name))),
            Err(e) => return Err(failed(format!("the definition is not domain XML: {e}"))),
        }
        let conn = self.conn()?;
        conn.define_domain_xml(xml)
            .map(|_| ())
            .map_err(|e| failed(e.message().to_owned()))
    }

    fn migrate(&self, domain: &DomainName) -> Result<(), HypervisorError> {
        let Some(peer) = &self.peer else {
            return Err(HypervisorError::MigrationNotConfigured);
        };
        let dom = self.lookup(domain)?;
        let failed = |message: String| HypervisorError::Migrate {
            domain: domain.clone(),
            peer: peer.uri.clone(),
            message,
        };
        // A connection per migration: migrations are rare, and a connection
        // kept open to a peer that may die would only go stale.
        let dconn = Connect::open(Some(&peer.uri)).map_err(|e| failed(format!("cannot connect: {}", e.message())))?;
        // What `virsh migrate --live` does: the hooks on both sides run as for
        // an admin's migration, so tandem opens and closes the window itself.
        // The connection closes when `dconn` drops. Meanwhile a second thread
        // reads libvirt's job statistics for the status (and tandemctl's bar).
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let result = std::thread::scope(|s| {
            let (dom, board) = (&dom, &self.board);
            s.spawn(move || watch_progress(dom, &domain.0, board, &stopped));
            let r = dom.migrate(
                &dconn,
                VIR_MIGRATE_LIVE,
                None,
                peer.migration_uri.as_deref(),
                peer.bandwidth_mib,
            );
            // Wakes the watcher at once.
            drop(stop);
            r
        });
        self.board.clear(&domain.0);
        result.map(|_| ()).map_err(|e| failed(e.message().to_owned()))
    }
}
