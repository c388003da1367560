//! The configuration file: /etc/tandem/tandem.toml and tandem.d/*.toml.
//!
//! Loading has three stages, and every stage reports all it finds instead of
//! stopping at the first problem, because `tandemctl config check` is meant to
//! show an administrator everything to fix in one go:
//!
//! 1. each file is parsed into a tree that remembers where every key and value is
//!    (`source.rs`), and the fragments are merged into the main file;
//! 2. each section is deserialized into plain `serde` structs (`raw.rs`) by a
//!    deserializer over that tree which keeps going after a type error (`de.rs`);
//! 3. the values are checked against each other and turned into [`Config`]
//!    (`validate.rs`, `nodes.rs`, `fence.rs`).
//!
//! Every error carries the file, line and column it is about. The keys, their
//! defaults and the reasons for the limits are documented in
//! docs/configuration.md.

mod de;
mod fence;
mod model;
mod nodes;
mod raw;
pub mod reload;
mod secret;
mod source;
mod validate;

#[cfg(test)]
mod tests;

pub use model::{
    hostname, AgentDevice, Cluster, Config, Drbd, FenceDevice, FenceLevel, Hypervisor, IpmiDevice, IpmiPrivilege,
    LocalNodeError, Node, Timing, XapiDevice, XapiTls, XlTransport,
};
pub use secret::{read_private_file, Secret, SecretError, SecretString};

use source::{Diag, SourceMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the daemon and `tandemctl` look for the main file.
pub const DEFAULT_PATH: &str = "/etc/tandem/tandem.toml";
/// Where the daemon and `tandemctl` look for fragments.
pub const DEFAULT_FRAGMENTS_DIR: &str = "/etc/tandem/tandem.d";

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error is about the file as a whole (it cannot be read).
    pub line: usize,
    /// 1-based, counted in characters; 0 when `line` is 0.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found, in file order (main file first, then the fragments by
/// name), then by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Reads `main` and, when `fragments_dir` is given, every `*.toml` file in it in
/// name order. A missing fragments directory is the same as an empty one; a missing
/// main file is an error.
pub fn load(main: &Path, fragments_dir: Option<&Path>) -> Result<Config, ConfigErrors> {
    let mut map = SourceMap::default();
    let mut diags = Vec::new();
    map.read(main, &mut diags);
    if let Some(dir) = fragments_dir {
        for path in source::fragments(dir, &mut diags, &mut map) {
            map.read(&path, &mut diags);
        }
    }
    build(map, diags)
}

/// Checks one file's text, as if it were the whole configuration; `file_name` is
/// only used in the errors.
pub fn check_str(file_name: impl AsRef<Path>, text: &str) -> Result<Config, ConfigErrors> {
    let mut map = SourceMap::default();
    map.add(file_name.as_ref().to_path_buf(), Some(text.to_owned()));
    build(map, Vec::new())
}

fn build(map: SourceMap, mut diags: Vec<Diag>) -> Result<Config, ConfigErrors> {
    let root = map.parse_and_merge(&mut diags);
    let config = root.and_then(|root| validate::build(&root, &mut diags));
    match config {
        Some(mut config) if diags.is_empty() => {
            config.sources = map.paths();
            Ok(config)
        }
        _ => {
            if diags.is_empty() {
                // Cannot happen: every path that yields no config reports why. Still,
                // a silent failure would be the worst outcome for `config check`.
                diags.push(Diag::file(0, "the configuration could not be read".into()));
            }
            Err(map.errors(diags))
        }
    }
}
