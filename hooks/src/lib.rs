//! tandem's libvirt hook, as a library: everything the `tandem-libvirt-hook`
//! binary decides, kept pure so it can be tested without libvirt or a daemon.
//!
//! - [`xml`]: reads the domain XML libvirt passes on stdin ([`parse_domain_xml`]).
//! - [`drbd`]: recognises DRBD-backed disks by their source path ([`drbd_disks`]),
//!   with [`DrbdMap`] (from `drbdadm dump-xml`) for `/dev/drbdN` and
//!   `/dev/drbd/by-disk/...` paths.
//! - [`loader`]: runs `drbdadm dump-xml` with a timeout to build the map.
//! - [`mod@plan`]: what a hook invocation (`DOMAIN OPERATION SUBOP EXTRA`) asks of tandem.
//! - [`explain`]: the `--explain` JSON.
//! - [`daemon_call`]: the call into tandemd for the plans that need it.
//! - [`fence_handler`]: the `tandem-drbd-handler` binary's logic (DRBD's
//!   fence-peer / unfence-peer handler).
//! - [`xen`]: Xen's disk targets and migration names, shared with block-drbd and the xl driver.
//! - [`client`]: the one D-Bus call both binaries make (`org.tandem.Tandem1.Hooks`).
//!
//! The crate does not depend on `tandemd`: that would link the crypto stack and
//! the IPMI client into a program that must finish in a few milliseconds. It
//! links `tandem-api` (zbus on a current-thread Tokio runtime), whose code only
//! runs once a plan needs the daemon. [`DomainName`] and [`ResourceName`] mirror `tandem::core`'s.

use std::fmt;

pub mod client;
pub mod daemon_call;
pub mod drbd;
pub mod explain;
pub mod fence_handler;
pub mod loader;
pub mod plan;
pub mod xen;
pub mod xml;

pub use drbd::{drbd_disks, DrbdDisk, DrbdMap, DumpXmlError, MapVolume};
pub use plan::{plan, ArgError, HookPlan, HookRequest, Skip};
pub use xml::{parse_domain_xml, parse_domain_xml_bytes, Disk, DiskSource, DomainInfo, XmlError};

/// A hypervisor domain name (as `tandem::core::DomainName`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainName(pub String);

/// A DRBD resource name (as `tandem::core::ResourceName`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceName(pub String);

/// `text` fit for one line of a log: control characters (newlines included)
/// escaped, and cut at `max` characters. Error messages quote the input (quick-xml
/// quotes whole tags), and libvirt shows a hook's stderr as one message.
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 8));
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for DomainName {
    fn from(s: &str) -> Self {
        DomainName(s.to_owned())
    }
}

impl From<&str> for ResourceName {
    fn from(s: &str) -> Self {
        ResourceName(s.to_owned())
    }
}
