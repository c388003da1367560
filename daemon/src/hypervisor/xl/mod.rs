//! [`Hypervisor`] over Xen's `xl` toolstack, by running `xl`: libxl has no
//! daemon to talk to, and `xl` is what a Xen admin runs and trusts.
//!
//! - domains: the configuration files in the configured directory (`*.cfg`,
//!   each named by its `name =`), stopped unless `xl list` lists them;
//! - a domain's document is its configuration file, byte for byte (what the
//!   peer gets, and what a failover starts there); for a running domain with
//!   no file in the directory, the JSON of `xl list -l`, which has no
//!   definition to share;
//! - start `xl create FILE`, stop `xl shutdown` / `xl destroy`, migrate
//!   `xl migrate` to the peer over ssh or a TCP `xl migrate-receive` listener.
//!
//! The watcher lists the domains again whenever xenstore says a domain came,
//! went or changed ([`XenstoreWatch`]), and every few seconds besides.

mod cfg;
mod command;
mod disk;
mod events;
mod list;

pub use cfg::{CfgError, Value, XlConfig};
pub use disk::{domain_of, DiskSpec};
pub use events::XenstoreWatch;
pub use list::{base_name, domain_of_json, parse_list};

use super::{Hypervisor, HypervisorError};
use crate::config::XlTransport;
use crate::core::{DomainName, DomainRun};
use command::{run, Ran};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tandem_hooks::DomainInfo;
use tracing::warn;

const LIST_TIMEOUT: Duration = Duration::from_secs(20);
/// `xl create` runs the hotplug scripts, which wait for tandem's answer.
const CREATE_TIMEOUT: Duration = Duration::from_secs(300);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// A live migration copies the guest's memory at the link's speed.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(1800);

/// Where migrations tandem starts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XlPeer {
    /// The peer's address for `xl migrate` (`[node.PEER] migration_host`).
    pub host: String,
    pub transport: XlTransport,
}

#[derive(Debug)]
pub struct Xl {
    xl: PathBuf,
    config_dir: PathBuf,
    peer: XlPeer,
    /// The configuration file of each domain, as of the last list.
    files: Mutex<BTreeMap<DomainName, PathBuf>>,
    /// Files already warned about (unreadable, malformed, a name twice).
    warned: Mutex<BTreeSet<String>>,
}

impl Xl {
    pub fn new(xl: PathBuf, config_dir: PathBuf, peer: XlPeer) -> Self {
        Xl {
            xl,
            config_dir,
            peer,
            files: Mutex::new(BTreeMap::new()),
            warned: Mutex::new(BTreeSet::new()),
        }
    }

    fn warn_once(&self, key: String, what: &str) {
        let mut w = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if w.len() > 1000 {
            w.clear();
        }
        if w.insert(key.clone()) {
            warn!(file = %key, problem = %what, "xl configuration file ignored");
        }
    }

    /// Every `*.cfg` of the directory, by the domain it names.
    fn scan(&self) -> BTreeMap<DomainName, PathBuf> {
        let mut out = BTreeMap::new();
        let entries = match std::fs::read_dir(&self.config_dir) {
            Ok(e) => e,
            Err(e) => {
                self.warn_once(
                    self.config_dir.display().to_string(),
                    &format!("cannot read the directory: {e}"),
                );
                return out;
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "cfg") && p.is_file())
            .collect();
        paths.sort();
        for path in paths {
            let shown = path.display().to_string();
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    self.warn_once(shown, &format!("cannot read it: {e}"));
                    continue;
                }
            };
            let name = match XlConfig::parse(&text)
                .map_err(|e| e.to_string())
                .and_then(|c| c.string("name"))
            {
                Ok(Some(n)) => n,
                Ok(None) => {
                    self.warn_once(shown, "it sets no name");
                    continue;
                }
                Err(e) => {
                    self.warn_once(shown, &format!("malformed: {e}"));
                    continue;
                }
            };
            let name = DomainName(name);
            if let Some(first) = out.get(&name) {
                let first: &PathBuf = first;
                self.warn_once(
                    shown,
                    &format!("domain {name} is already configured by {}", first.display()),
                );
                continue;
            }
            out.insert(name, path);
        }
        out
    }

    fn file_of(&self, domain: &DomainName) -> Option<PathBuf> {
        if let Some(p) = self.files.lock().unwrap_or_else(PoisonError::into_inner).get(domain) {
            return Some(p.clone());
        }
        let files = self.scan();
        let found = files.get(domain).cloned();
        *self.files.lock().unwrap_or_else(PoisonError::into_inner) = files;
        found
    }

    fn xl(&self, args: &[&str], timeout: Duration) -> Result<Ran, String> {
        run(&self.xl, args, timeout)
    }

    fn listed(&self) -> Result<Vec<(DomainName, DomainRun)>, HypervisorError> {
        let failed = |message: String| HypervisorError::List {
            message,
            code: "xl".into(),
        };
        let ran = self.xl(&["list"], LIST_TIMEOUT).map_err(failed)?;
        if !ran.status.success() {
            return Err(failed(format!("xl list failed: {}", ran.reason())));
        }
        parse_list(&ran.stdout, |domid| self.disk_connected(domid)).map_err(failed)
    }

    /// Whether a disk of domain `domid` is connected (its hotplug script,
    /// tandem's block-drbd for a DRBD disk, finished with success).
    fn disk_connected(&self, domid: u32) -> bool {
        let base = format!("/local/domain/0/backend/vbd/{domid}");
        let Ok(list) = run(Path::new("xenstore-list"), &[&base], LIST_TIMEOUT) else {
            return false;
        };
        list.stdout.split_whitespace().any(|dev| {
            run(
                Path::new("xenstore-read"),
                &[&format!("{base}/{dev}/hotplug-status")],
                LIST_TIMEOUT,
            )
            .is_ok_and(|r| r.status.success() && r.stdout.trim() == "connected")
        })
    }

    /// xl's own name of `domain` if it is listed: `NAME`, else `NAME--incoming`
    /// or `NAME--migratedaway`.
    fn xl_name(&self, domain: &DomainName) -> Result<Option<String>, HypervisorError> {
        for name in [
            domain.0.clone(),
            format!("{}{}", domain.0, tandem_hooks::xen::INCOMING_SUFFIX),
            format!("{}{}", domain.0, tandem_hooks::xen::MIGRATED_AWAY_SUFFIX),
        ] {
            let ran = self
                .xl(&["domid", &name], LIST_TIMEOUT)
                .map_err(|message| HypervisorError::Domain {
                    domain: domain.clone(),
                    message,
                    code: "xl".into(),
                })?;
            if ran.status.success() {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }

    fn run_of(&self, domain: &DomainName) -> Result<DomainRun, HypervisorError> {
        Ok(self
            .listed()?
            .into_iter()
            .find(|(d, _)| d == domain)
            .map_or(DomainRun::Stopped, |(_, r)| r))
    }
}

/// A domain name that is safe as a file name in the configuration directory.
fn file_name_for(domain: &DomainName) -> Result<String, String> {
    let n = &domain.0;
    if n.is_empty() || n.starts_with('.') || n.contains(['/', '\0']) || n.chars().any(char::is_control) {
        return Err(format!("{n:?} cannot be a configuration file's name"));
    }
    Ok(format!("{n}.cfg"))
}

/// Reads a document of this driver: a configuration file, or `xl list -l`'s JSON.
pub fn read_document(document: &str) -> Result<DomainInfo, String> {
    if document.trim_start().starts_with(['[', '{']) {
        return domain_of_json(document);
    }
    let cfg = XlConfig::parse(document).map_err(|e| format!("malformed xl configuration: {e}"))?;
    domain_of(&cfg).map_err(|e| format!("malformed xl configuration: {e}"))
}

/// Writes `text` to `path` through a file beside it, so a reader never sees
/// half a configuration.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("cfg.tandem-new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl Hypervisor for Xl {
    fn domains(&self) -> Result<Vec<(DomainName, DomainRun)>, HypervisorError> {
        let running = self.listed()?;
        let files = self.scan();
        let mut out: BTreeMap<DomainName, DomainRun> = files.keys().map(|d| (d.clone(), DomainRun::Stopped)).collect();
        out.extend(running);
        *self.files.lock().unwrap_or_else(PoisonError::into_inner) = files;
        Ok(out.into_iter().collect())
    }

    fn document(&self, domain: &DomainName) -> Result<String, HypervisorError> {
        let failed = |message: String| HypervisorError::Domain {
            domain: domain.clone(),
            message,
            code: "xl".into(),
        };
        if let Some(path) = self.file_of(domain) {
            match std::fs::read_to_string(&path) {
                Ok(t) => return Ok(t),
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(failed(format!("cannot read {}: {e}", path.display())))
                }
                // Removed since the scan: perhaps it still runs.
                Err(_) => {}
            }
        }
        let Some(name) = self.xl_name(domain)? else {
            return Err(HypervisorError::NoSuchDomain { domain: domain.clone() });
        };
        let ran = self.xl(&["list", "-l", &name], LIST_TIMEOUT).map_err(failed)?;
        if !ran.status.success() {
            return Err(failed(format!("xl list -l failed: {}", ran.reason())));
        }
        Ok(ran.stdout)
    }

    fn read_document(&self, document: &str) -> Result<DomainInfo, String> {
        read_document(document)
    }

    fn start(&self, domain: &DomainName) -> Result<(), HypervisorError> {
        let failed = |message: String| HypervisorError::Start {
            domain: domain.clone(),
            message,
        };
        let Some(path) = self.file_of(domain) else {
            return Err(HypervisorError::NoSuchDomain { domain: domain.clone() });
        };
        match self.run_of(domain)? {
            // Asked again after a lost answer or a restart: it is what was asked.
            DomainRun::Running => return Ok(()),
            DomainRun::Paused => {
                return Err(failed(
                    "it is still there, paused, shutting down or in a migration (xl list)".into(),
                ))
            }
            DomainRun::Stopped => {}
        }
        let path = path.to_string_lossy().into_owned();
        let ran = self.xl(&["create", &path], CREATE_TIMEOUT).map_err(failed)?;
        if ran.status.success() {
            Ok(())
        } else {
            Err(failed(ran.reason()))
        }
    }

    fn migrate(&self, domain: &DomainName) -> Result<(), HypervisorError> {
        let failed = |message: String| HypervisorError::Migrate {
            domain: domain.clone(),
            peer: self.peer.host.clone(),
            message,
        };
        if self.run_of(domain)? != DomainRun::Running {
            return Err(failed("it does not run here (xl list)".into()));
        }
        let ran = match self.peer.transport {
            XlTransport::Ssh => self.xl(&["migrate", &domain.0, &self.peer.host], MIGRATE_TIMEOUT),
            XlTransport::Tcp { port } => {
                let rune = format!("socat - TCP:{}:{port}", self.peer.host);
                self.xl(&["migrate", "-s", "", &domain.0, &rune], MIGRATE_TIMEOUT)
            }
        }
        .map_err(failed)?;
        if ran.status.success() {
            Ok(())
        } else {
            Err(failed(ran.reason()))
        }
    }

    fn stop(&self, domain: &DomainName, force: bool) -> Result<(), HypervisorError> {
        let Some(name) = self.xl_name(domain)? else {
            return Ok(());
        };
        let what = if force { "destroy" } else { "shutdown" };
        let ran = self
            .xl(&[what, &name], STOP_TIMEOUT)
            .map_err(|message| HypervisorError::Stop {
                domain: domain.clone(),
                message,
            })?;
        // Gone meanwhile is what was asked.
        if ran.status.success() || self.xl_name(domain)?.is_none() {
            Ok(())
        } else {
            Err(HypervisorError::Stop {
                domain: domain.clone(),
                message: ran.reason(),
            })
        }
    }

    fn definition(&self, domain: &DomainName) -> Result<Option<String>, HypervisorError> {
        let Some(path) = self.file_of(domain) else {
            return Ok(None);
        };
        match std::fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(HypervisorError::Domain {
                domain: domain.clone(),
                message: format!("cannot read {}: {e}", path.display()),
                code: "xl".into(),
            }),
        }
    }

    fn define(&self, domain: &DomainName, definition: &str) -> Result<(), HypervisorError> {
        let failed = |message: String| HypervisorError::Define {
            domain: domain.clone(),
            message,
        };
        let info = read_document(definition).map_err(failed)?;
        if definition.trim_start().starts_with(['[', '{']) {
            return Err(failed("the definition is not an xl configuration file".into()));
        }
        if info.name.as_deref() != Some(domain.0.as_str()) {
            return Err(failed(format!("the definition names domain {:?}", info.name)));
        }
        let path = match self.file_of(domain) {
            Some(p) => p,
            None => self.config_dir.join(file_name_for(domain).map_err(failed)?),
        };
        if std::fs::read_to_string(&path).is_ok_and(|t| t == definition) {
            return Ok(());
        }
        write_atomically(&path, definition).map_err(|e| failed(format!("cannot write {}: {e}", path.display())))?;
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(domain.clone(), path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver(dir: &Path) -> Xl {
        Xl::new(
            PathBuf::from("/nonexistent/xl"),
            dir.to_owned(),
            XlPeer {
                host: "192.0.2.2".into(),
                transport: XlTransport::Tcp { port: 8002 },
            },
        )
    }

    const G1: &str = "name = \"g1\"\ntype = \"pvh\"\ndisk = [ \"drbd:r0,xvda,w\" ]\n";

    #[test]
    fn the_directory_names_the_domains() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("g1.cfg"), G1).unwrap();
        std::fs::write(dir.path().join("other-name.cfg"), "name = 'g2'\n").unwrap();
        std::fs::write(dir.path().join("broken.cfg"), "name = 'g3\n").unwrap();
        std::fs::write(dir.path().join("xl.conf"), "autoballoon = 'off'\n").unwrap();
        std::fs::write(dir.path().join("zz-dup.cfg"), "name = 'g1'\n").unwrap();
        let xl = driver(dir.path());
        let files = xl.scan();
        let names: Vec<_> = files.keys().map(|d| d.0.as_str()).collect();
        assert_eq!(names, ["g1", "g2"]);
        assert_eq!(files[&DomainName("g1".into())], dir.path().join("g1.cfg"));
        assert_eq!(xl.definition(&DomainName("g1".into())).unwrap().as_deref(), Some(G1));
        assert_eq!(xl.definition(&DomainName("g9".into())).unwrap(), None);
        // Without xl, listing fails with a line that says so; nothing else changes.
        let e = xl.domains().unwrap_err().to_string();
        assert!(e.contains("cannot run /nonexistent/xl"), "{e}");
    }

    #[test]
    fn define_writes_the_peer_file_and_refuses_what_is_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let xl = driver(dir.path());
        let g1 = DomainName("g1".into());
        xl.define(&g1, G1).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("g1.cfg")).unwrap(), G1);
        for (bad, what) in [
            ("name = \"g2\"\n", "names domain"),
            ("name = \"g1\n", "malformed xl configuration: line 1"),
            (
                "name = \"g1\"\ndisk = [ 'drbd:/dev/sda,xvda,w' ]\n",
                "names no DRBD resource",
            ),
            (
                "[{\"config\": {\"c_info\": {\"name\": \"g1\"}}}]",
                "not an xl configuration file",
            ),
        ] {
            let e = xl.define(&g1, bad).unwrap_err().to_string();
            assert!(e.contains("g1") && e.contains(what), "{bad:?}: {e}");
            assert_eq!(
                std::fs::read_to_string(dir.path().join("g1.cfg")).unwrap(),
                G1,
                "changed by {bad:?}"
            );
        }
        let e = xl
            .define(&DomainName("../x".into()), "name = \"../x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be a configuration file's name"), "{e}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["g1.cfg"]);
    }

    #[test]
    fn a_file_is_read_as_its_disks() {
        let info = read_document(G1).unwrap();
        assert_eq!(info.name.as_deref(), Some("g1"));
        let drbd = tandem_hooks::drbd_disks(&info, &tandem_hooks::DrbdMap::empty());
        assert_eq!(drbd.len(), 1);
        assert_eq!(drbd[0].resource.as_ref().map(|r| r.0.as_str()), Some("r0"));
    }
}
