//! The xenstore tree, kept in one JSON file, and the rules `xenstored` applies
//! to paths and values.
//!
//! The file holds the root node: `{"value": "...", "children": [["name", node], ...]}`.
//! Values are stored in `xenstore-read`'s quoted form ([`sanitise`]), which is
//! lossless and keeps the file readable; children keep their creation order, as
//! `xenstored` lists them. Every change replaces the file atomically (write +
//! rename) under an exclusive `flock(2)` of `FILE.lock`; readers take it shared.

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The home of the connection's domain: relative paths are resolved against it.
/// The stand-in always plays dom0 (hotplug scripts run there).
pub const DOM0_HOME: &str = "/local/domain/0";
/// `XENSTORE_ABS_PATH_MAX`.
pub const ABS_PATH_MAX: usize = 3072;
/// `XENSTORE_PAYLOAD_MAX`: a write's path, its NUL and its value must fit.
pub const PAYLOAD_MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: cannot lock: {errno}", path.display())]
    Lock { path: PathBuf, errno: nix::errno::Errno },
    #[error("{}: not a xenstore tree: {source}", path.display())]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

/// Why one operation failed, as `xenstored` would answer (`EINVAL`, `ENOENT`, `E2BIG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpError {
    Invalid,
    NotFound,
    TooBig,
}

/// One node: a value (possibly empty) and children, in creation order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    #[serde(with = "quoted")]
    pub value: Vec<u8>,
    #[serde(default)]
    pub children: Vec<(String, Node)>,
}

mod quoted {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::sanitise(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        Ok(super::unsanitise(&s))
    }
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    fn child_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.children.iter_mut().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    fn get(&self, parts: &[&str]) -> Option<&Node> {
        parts.iter().try_fold(self, |node, part| node.child(part))
    }

    /// The node's value, if it exists.
    pub fn read(&self, path: &str) -> Result<&[u8], OpError> {
        let parts = split(path)?;
        self.get(&parts).map(|n| n.value.as_slice()).ok_or(OpError::NotFound)
    }

    /// The names of the node's children.
    pub fn list(&self, path: &str) -> Result<Vec<String>, OpError> {
        let parts = split(path)?;
        let node = self.get(&parts).ok_or(OpError::NotFound)?;
        Ok(node.children.iter().map(|(n, _)| n.clone()).collect())
    }

    /// Sets the value, creating missing ancestors with empty values.
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), OpError> {
        let parts = split(path)?;
        if path.len() + 1 + value.len() > PAYLOAD_MAX {
            return Err(OpError::TooBig);
        }
        let mut node = self;
        for part in parts {
            if node.child(part).is_none() {
                node.children.push((part.to_owned(), Node::default()));
            }
            node = node.child_mut(part).ok_or(OpError::NotFound)?;
        }
        node.value = value.to_vec();
        Ok(())
    }

    /// Removes the node and everything below it. A missing node is fine when its
    /// parent exists; the root cannot be removed.
    pub fn rm(&mut self, path: &str) -> Result<(), OpError> {
        let parts = split(path)?;
        let Some((last, parents)) = parts.split_last() else {
            return Err(OpError::Invalid);
        };
        let mut node = self;
        for part in parents {
            node = node.child_mut(part).ok_or(OpError::NotFound)?;
        }
        node.children.retain(|(n, _)| n != last);
        Ok(())
    }
}

/// The absolute form of `path` (relative paths live under [`DOM0_HOME`]), checked
/// as `xenstored`'s `is_valid_nodename` does: it starts with `/`, does not end
/// with one (unless it is `/`), has no `//`, only `A-Za-z0-9-/_@`, and is not too long.
pub fn canonical(path: &str) -> Result<String, OpError> {
    let abs = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{DOM0_HOME}/{path}")
    };
    let chars_ok = abs
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'@'));
    let ok = chars_ok && (abs == "/" || !abs.ends_with('/')) && !abs.contains("//") && abs.len() <= ABS_PATH_MAX;
    if ok {
        Ok(abs)
    } else {
        Err(OpError::Invalid)
    }
}

fn split(path: &str) -> Result<Vec<&str>, OpError> {
    if path == "/" {
        return Ok(Vec::new());
    }
    // `canonical` has run: an absolute path without empty elements.
    let rest = path.strip_prefix('/').ok_or(OpError::Invalid)?;
    Ok(rest.split('/').collect())
}

/// `xenstore-read`'s quoting of a value: printable ASCII as it is, `\t \n \r \\`,
/// other bytes below 8 as `\NNN` (octal), the rest as `\xNN`.
pub fn sanitise(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &c in value {
        match c {
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\\' => out.push_str("\\\\"),
            b' '..=b'~' => out.push(char::from(c)),
            0..=7 => out.push_str(&format!("\\{c:03o}")),
            _ => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out
}

/// The inverse, as `xenstore-write` reads a value: `\t \n \r \\`, `\xNN` (up to
/// two hex digits), `\NNN` (up to three octal digits); any other escaped
/// character stands for itself, and a trailing `\` becomes a NUL byte.
pub fn unsanitise(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = bytes.get(i) else {
            // As the C loop does: the NUL after the backslash is copied.
            out.push(0);
            break;
        };
        i += 1;
        match e {
            b't' => out.push(b'\t'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b'x' => {
                let (v, used) = digits(&bytes[i..], 16, 2);
                out.push(v);
                i += used;
            }
            b'0'..=b'7' => {
                let (v, used) = digits(&bytes[i - 1..], 8, 3);
                out.push(v);
                i += used - 1;
            }
            other => out.push(other),
        }
    }
    out
}

/// Up to `max` digits of `radix` at the start of `bytes`, as sscanf's `%2x`/`%3o`
/// read them (the value wraps to a byte); no digit gives the escaped letter's
/// own byte, as the C code leaves it.
fn digits(bytes: &[u8], radix: u32, max: usize) -> (u8, usize) {
    let mut value: u32 = 0;
    let mut used = 0;
    for &b in bytes.iter().take(max) {
        match char::from(b).to_digit(radix) {
            Some(d) => {
                value = value * radix + d;
                used += 1;
            }
            None => break,
        }
    }
    if used == 0 {
        return (if radix == 16 { b'x' } else { 0 }, 0);
    }
    (u8::try_from(value & 0xff).unwrap_or(0), used)
}

/// The tree file, locked for the lifetime of this value.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    _lock: Flock<File>,
    pub root: Node,
}

impl Store {
    /// Opens (or starts) the tree at `path`, locked exclusively when `write`.
    pub fn open(path: &Path, write: bool) -> Result<Store, StoreError> {
        let lock_path = with_suffix(path, ".lock");
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StoreError::Io { path: p, source }
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        let arg = if write {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        let lock = Flock::lock(file, arg).map_err(|(_, errno)| StoreError::Lock {
            path: lock_path.clone(),
            errno,
        })?;
        let root = match fs::read(path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Node::default(),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: path.to_path_buf(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Node::default(),
            Err(e) => return Err(io(path)(e)),
        };
        Ok(Store {
            path: path.to_path_buf(),
            _lock: lock,
            root,
        })
    }

    /// Replaces the file with the tree (the lock must be exclusive).
    pub fn save(&self) -> Result<(), StoreError> {
        let tmp = with_suffix(&self.path, &format!(".tmp.{}", std::process::id()));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StoreError::Io { path: p, source }
        };
        let mut text = serde_json::to_vec_pretty(&self.root).map_err(|source| StoreError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        text.push(b'\n');
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&text).map_err(io(&tmp))?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(io(&self.path))
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unsanitise(&sanitise(&all)), all);
        assert_eq!(sanitise(b"a\\b\n\x01\x7f"), "a\\\\b\\n\\001\\x7f");
        assert_eq!(unsanitise("\\x4g\\101\\q\\"), b"\x04gAq\0");
    }

    #[test]
    fn paths_follow_xenstored() {
        assert_eq!(
            canonical("backend/vbd/1/51712").unwrap(),
            "/local/domain/0/backend/vbd/1/51712"
        );
        assert_eq!(canonical("/").unwrap(), "/");
        for bad in ["", "/a/", "/a//b", "/a b", "/a.b", "a/"] {
            assert_eq!(canonical(bad), Err(OpError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn writes_create_parents_and_rm_takes_subtrees() {
        let mut root = Node::default();
        root.write("/a/b/c", b"1").unwrap();
        assert_eq!(root.read("/a/b").unwrap(), b"");
        assert_eq!(root.list("/a").unwrap(), vec!["b".to_owned()]);
        root.rm("/a/b").unwrap();
        assert_eq!(root.read("/a/b/c"), Err(OpError::NotFound));
        root.rm("/a/missing").unwrap();
        assert_eq!(root.rm("/x/y"), Err(OpError::NotFound));
        assert_eq!(root.rm("/"), Err(OpError::Invalid));
    }
}
