//! What must survive a daemon restart: the open migration windows. Written
//! crash-safe (temporary file, fsync, rename, fsync of the directory), so a
//! restart finds either the old or the new state, never a torn one.

use crate::core::Persisted;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is not valid tandem state: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The state file in `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// Reads the state; a missing file is an empty state (first start).
pub fn load(path: &Path) -> Result<Persisted, StateError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Persisted::default()),
        Err(source) => {
            return Err(StateError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    serde_json::from_str(&text).map_err(|source| StateError::Corrupt {
        path: path.to_owned(),
        source,
    })
}

/// Replaces the state atomically.
pub fn save(path: &Path, state: &Persisted) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    let json = serde_json::to_vec_pretty(state).map_err(|e| io(std::io::Error::other(e)))?;
    write_atomic(path, &json).map_err(io)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Ok(d) = File::open(dir) {
        // Makes the rename itself durable; not fatal where directories cannot be synced.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{DomainName, Millis, NodeId, PersistedWindow, ResourceName, WindowId};

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = path_in(dir.path());
        assert_eq!(load(&p).unwrap(), Persisted::default());
        let st = Persisted {
            windows: vec![PersistedWindow {
                id: WindowId {
                    opener: NodeId(1),
                    boot: 7,
                    n: 3,
                },
                domain: DomainName("vm1".into()),
                resources: vec![ResourceName("r1".into())],
                deadline: Millis(5000),
            }],
            host_boot: Some("b00t".into()),
        };
        save(&p, &st).unwrap();
        assert_eq!(load(&p).unwrap(), st);
    }

    #[test]
    fn corrupt_state_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = path_in(dir.path());
        fs::write(&p, "{not json").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("state.json") && e.contains("not valid"), "{e}");
    }
}
