//! The cluster key file (`/etc/tandem/authkey`) and the subkeys derived from it.
//!
//! The raw key is only ever used as HKDF input: heartbeats and the control
//! channel each get their own derived key, so a weakness in one use cannot be
//! turned against the other.

use hkdf::Hkdf;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use std::fmt;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Shortest key file accepted: 256 bits.
pub const MIN_KEY_LEN: usize = 32;
/// Longest key file accepted; anything bigger is almost certainly the wrong file.
pub const MAX_KEY_LEN: usize = 4096;
/// Length of a key made by [`write_new_key`].
pub const NEW_KEY_LEN: usize = 64;

const HKDF_SALT: &[u8] = b"tandem cluster key v1";
const LABEL_HEARTBEAT: &[u8] = b"tandem heartbeat hmac-sha256 v1";
const LABEL_NOISE_PSK: &[u8] = b"tandem control noise psk v1";
const LABEL_FINGERPRINT: &[u8] = b"tandem key fingerprint v1";

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cluster key file {path}: does not exist")]
    Missing { path: PathBuf },
    #[error("cluster key file {path}: is a {kind}, not a regular file")]
    NotRegularFile { path: PathBuf, kind: &'static str },
    #[error("cluster key file {path}: mode {mode:04o} gives group or others access; it must be 0600 or stricter")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("cluster key file {path}: {len} bytes is too short, at least {MIN_KEY_LEN} are needed")]
    TooShort { path: PathBuf, len: usize },
    #[error("cluster key file {path}: longer than {MAX_KEY_LEN} bytes, this is not a key file")]
    TooLong { path: PathBuf },
    #[error("cluster key file {path}: already exists; refusing to overwrite it")]
    AlreadyExists { path: PathBuf },
    #[error("cluster key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A key given as bytes (not from a file) was too short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster key of {len} bytes is too short, at least {MIN_KEY_LEN} are needed")]
pub struct KeyTooShort {
    pub len: usize,
}

/// The shared cluster secret. Its bytes never appear in `Debug` output and are
/// wiped from memory when it is dropped.
#[derive(Clone)]
pub struct ClusterKey {
    bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterKey")
            .field("len", &self.bytes.len())
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl ClusterKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<ClusterKey, KeyTooShort> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyTooShort { len: bytes.len() });
        }
        Ok(ClusterKey {
            bytes: Zeroizing::new(bytes.to_vec()),
        })
    }

    fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), &self.bytes);
        let mut okm = Zeroizing::new([0u8; 32]);
        if hk.expand(label, okm.as_mut()).is_err() {
            // HKDF-SHA256 only refuses outputs longer than 255 * 32 bytes.
            unreachable!("HKDF-SHA256 refused a 32-byte output");
        }
        okm
    }

    /// The key that authenticates heartbeat datagrams.
    pub fn heartbeat_key(&self) -> HeartbeatKey {
        HeartbeatKey(self.derive(LABEL_HEARTBEAT))
    }

    /// The pre-shared key of the control channel's Noise handshake.
    pub fn noise_psk(&self) -> NoisePsk {
        NoisePsk(self.derive(LABEL_NOISE_PSK))
    }

    /// A short public name of the key, so operators can compare both nodes'
    /// keys in logs and status without revealing anything about them.
    pub fn fingerprint(&self) -> String {
        let d = self.derive(LABEL_FINGERPRINT);
        d.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// HMAC-SHA256 key for heartbeats, derived from the [`ClusterKey`].
#[derive(Clone)]
pub struct HeartbeatKey(Zeroizing<[u8; 32]>);

impl HeartbeatKey {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_ref()
    }
}

impl fmt::Debug for HeartbeatKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeartbeatKey(<redacted>)")
    }
}

/// Noise PSK for the control channel, derived from the [`ClusterKey`].
#[derive(Clone)]
pub struct NoisePsk(Zeroizing<[u8; 32]>);

impl NoisePsk {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_ref()
    }
}

impl fmt::Debug for NoisePsk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoisePsk(<redacted>)")
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyFileError + '_ {
    move |source| {
        if source.kind() == io::ErrorKind::NotFound {
            KeyFileError::Missing { path: path.to_owned() }
        } else {
            KeyFileError::Io {
                path: path.to_owned(),
                source,
            }
        }
    }
}

fn check_metadata(path: &Path, meta: &Metadata) -> Result<(), KeyFileError> {
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "directory"
        } else if ft.is_fifo() {
            "FIFO"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_char_device() {
            "character device"
        } else if ft.is_block_device() {
            "block device"
        } else {
            "special file"
        };
        return Err(KeyFileError::NotRegularFile {
            path: path.to_owned(),
            kind,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Loads the cluster key, refusing files others could read or change.
pub fn load_key(path: &Path) -> Result<ClusterKey, KeyFileError> {
    // Checked before opening so a FIFO named as key file is never opened (that
    // would block), and again on the open file in case the path was swapped.
    let meta = fs::metadata(path).map_err(io_err(path))?;
    check_metadata(path, &meta)?;
    let file = File::open(path).map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    check_metadata(path, &meta)?;

    // Allocated once at full size so no reallocation leaves key copies behind.
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_KEY_LEN + 1));
    file.take(MAX_KEY_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() > MAX_KEY_LEN {
        return Err(KeyFileError::TooLong { path: path.to_owned() });
    }
    if bytes.len() < MIN_KEY_LEN {
        return Err(KeyFileError::TooShort {
            path: path.to_owned(),
            len: bytes.len(),
        });
    }
    Ok(ClusterKey { bytes })
}

/// Creates a new random key of [`NEW_KEY_LEN`] bytes with mode 0600. Fails if
/// the file exists, unless `overwrite`; an overwrite replaces the file
/// atomically, so a crash leaves either the old or the new key.
pub fn write_new_key(path: &Path, overwrite: bool) -> Result<ClusterKey, KeyFileError> {
    let mut bytes = Zeroizing::new(vec![0u8; NEW_KEY_LEN]);
    OsRng.try_fill_bytes(&mut bytes).map_err(|e| KeyFileError::Io {
        path: path.to_owned(),
        source: io::Error::other(e),
    })?;
    if overwrite {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp-{:016x}", OsRng.next_u64()));
        let written = write_exclusive(&tmp, &bytes).and_then(|()| fs::rename(&tmp, path));
        if let Err(source) = written {
            let _ = fs::remove_file(&tmp);
            return Err(KeyFileError::Io {
                path: path.to_owned(),
                source,
            });
        }
        // The rename is only durable once the directory entry is on disk.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(path))?;
    } else {
        write_exclusive(path, &bytes).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                KeyFileError::AlreadyExists { path: path.to_owned() }
            } else {
                KeyFileError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
    }
    Ok(ClusterKey { bytes })
}

fn write_exclusive(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn write_file(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn loads_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400] {
            let p = write_file(dir.path(), "k", &[7u8; 48], mode);
            let k = load_key(&p).unwrap();
            assert_eq!(&**k.bytes, &[7u8; 48][..]);
            fs::remove_file(&p).unwrap();
        }
    }

    #[test]
    fn refuses_group_or_other_access() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604, 0o620, 0o602, 0o644, 0o666, 0o610] {
            let p = write_file(dir.path(), "k", &[7u8; 48], mode);
            match load_key(&p) {
                Err(KeyFileError::TooOpen { path, mode: m }) => {
                    assert_eq!(path, p);
                    assert_eq!(m, mode);
                }
                other => panic!("mode {mode:o}: {other:?}"),
            }
            let msg = load_key(&p).unwrap_err().to_string();
            assert!(msg.contains(&p.display().to_string()), "{msg}");
            fs::remove_file(&p).unwrap();
        }
    }

    #[test]
    fn refuses_short_long_missing_and_special_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_file(dir.path(), "short", &[1u8; 31], 0o600);
        assert!(matches!(load_key(&p), Err(KeyFileError::TooShort { len: 31, .. })));
        let p = write_file(dir.path(), "empty", b"", 0o600);
        assert!(matches!(load_key(&p), Err(KeyFileError::TooShort { len: 0, .. })));
        let p = write_file(dir.path(), "long", &vec![1u8; MAX_KEY_LEN + 1], 0o600);
        assert!(matches!(load_key(&p), Err(KeyFileError::TooLong { .. })));
        let p = write_file(dir.path(), "max", &vec![1u8; MAX_KEY_LEN], 0o600);
        assert!(load_key(&p).is_ok());

        let missing = dir.path().join("nope");
        match load_key(&missing) {
            Err(KeyFileError::Missing { path }) => assert_eq!(path, missing),
            other => panic!("{other:?}"),
        }
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            load_key(&sub),
            Err(KeyFileError::NotRegularFile { kind: "directory", .. })
        ));
        assert!(matches!(
            load_key(Path::new("/dev/null")),
            Err(KeyFileError::NotRegularFile {
                kind: "character device",
                ..
            })
        ));
    }

    #[test]
    fn write_new_key_is_private_and_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("authkey");
        let k = write_new_key(&p, false).unwrap();
        let meta = fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), NEW_KEY_LEN as u64);
        let loaded = load_key(&p).unwrap();
        assert_eq!(*loaded.bytes, *k.bytes);

        assert!(matches!(
            write_new_key(&p, false),
            Err(KeyFileError::AlreadyExists { .. })
        ));
        assert_eq!(
            *load_key(&p).unwrap().bytes,
            *k.bytes,
            "refused write must keep the old key"
        );

        let k2 = write_new_key(&p, true).unwrap();
        assert_ne!(*k2.bytes, *k.bytes);
        assert_eq!(*load_key(&p).unwrap().bytes, *k2.bytes);
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = ClusterKey::from_bytes(&[0xabu8; 32]).unwrap();
        let dbg = format!("{k:?} {:?} {:?}", k.heartbeat_key(), k.noise_psk());
        assert!(!dbg.contains("171"), "{dbg}");
        assert!(!dbg.to_lowercase().contains("abab"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn subkeys_are_distinct_and_deterministic() {
        let k = ClusterKey::from_bytes(&[1u8; 32]).unwrap();
        let hb = k.heartbeat_key();
        let psk = k.noise_psk();
        assert_ne!(hb.as_bytes(), psk.as_bytes());
        assert_ne!(hb.as_bytes(), &k.bytes[..]);
        assert_ne!(psk.as_bytes(), &k.bytes[..]);
        assert_eq!(hb.as_bytes(), k.heartbeat_key().as_bytes());
        let other = ClusterKey::from_bytes(&[2u8; 32]).unwrap();
        assert_ne!(other.heartbeat_key().as_bytes(), hb.as_bytes());
        assert_ne!(other.fingerprint(), k.fingerprint());
        assert_eq!(k.fingerprint().len(), 16);
        assert_eq!(ClusterKey::from_bytes(&[1u8; 31]).unwrap_err(), KeyTooShort { len: 31 });
    }
}
