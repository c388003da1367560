//! From files to one tree: every file is parsed into a tree that keeps the place of
//! each key and value, then the fragments are merged into the main file.
//!
//! Places are byte offsets into one address space shared by all files (each file
//! starts where the previous one ended, plus one), so a single `usize` says both
//! which file and where in it. That lets `serde_spanned::Spanned` carry positions
//! from any file through the typed structs without knowing about files.

use super::{ConfigError, ConfigErrors};
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem, placed in the shared address space.
#[derive(Debug, Clone)]
pub(crate) struct Diag {
    offset: usize,
    /// False for problems with a file as a whole (it cannot be read).
    positioned: bool,
    message: String,
}

impl Diag {
    pub(crate) fn at(offset: usize, message: String) -> Self {
        Diag {
            offset,
            positioned: true,
            message,
        }
    }

    /// A problem with the file that starts at `base`.
    pub(crate) fn file(base: usize, message: String) -> Self {
        Diag {
            offset: base,
            positioned: false,
            message,
        }
    }
}

#[derive(Debug)]
struct Source {
    path: PathBuf,
    /// None when the file could not be read.
    text: Option<String>,
    base: usize,
}

/// The files of one configuration, in reading order.
#[derive(Debug, Default)]
pub(crate) struct SourceMap {
    sources: Vec<Source>,
    end: usize,
}

impl SourceMap {
    /// Adds a file and returns where it starts in the shared address space.
    pub(crate) fn add(&mut self, path: PathBuf, text: Option<String>) -> usize {
        let base = self.end;
        // The +1 keeps an offset at the very end of a file (where a parser reports
        // "unexpected end of file") inside that file, and gives empty files a place.
        self.end = base + text.as_ref().map_or(0, String::len) + 1;
        self.sources.push(Source { path, text, base });
        base
    }

    /// Reads `path`; an unreadable file is recorded with an error.
    pub(crate) fn read(&mut self, path: &Path, diags: &mut Vec<Diag>) {
        match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => {
                    self.add(path.to_path_buf(), Some(text));
                }
                Err(e) => {
                    let base = self.add(path.to_path_buf(), None);
                    diags.push(Diag::file(
                        base,
                        format!(
                            "not UTF-8 text (invalid byte at offset {})",
                            e.utf8_error().valid_up_to()
                        ),
                    ));
                }
            },
            Err(e) => {
                let base = self.add(path.to_path_buf(), None);
                diags.push(Diag::file(base, format!("cannot read: {e}")));
            }
        }
    }

    /// The files that were read, in order.
    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        self.sources
            .iter()
            .filter(|s| s.text.is_some())
            .map(|s| s.path.clone())
            .collect()
    }

    fn source_of(&self, offset: usize) -> Option<&Source> {
        let i = self.sources.partition_point(|s| s.base <= offset);
        self.sources.get(i.checked_sub(1)?)
    }

    /// `file:line:column` of an offset, for messages that point at a second place.
    pub(crate) fn describe(&self, offset: usize) -> String {
        match self.source_of(offset) {
            Some(s) => {
                let (line, column) = line_col(s.text.as_deref().unwrap_or(""), offset - s.base);
                format!("{}:{line}:{column}", s.path.display())
            }
            None => "an unknown place".to_string(),
        }
    }

    /// Turns the diagnostics into the public errors, sorted by file and position.
    pub(crate) fn errors(&self, mut diags: Vec<Diag>) -> ConfigErrors {
        diags.sort_by_key(|d| (d.offset, d.positioned));
        let mut out: Vec<ConfigError> = Vec::with_capacity(diags.len());
        for d in diags {
            let (file, line, column) = match self.source_of(d.offset) {
                Some(s) => {
                    let (line, column) = match (&s.text, d.positioned) {
                        (Some(text), true) => line_col(text, d.offset - s.base),
                        _ => (0, 0),
                    };
                    (s.path.clone(), line, column)
                }
                None => (PathBuf::new(), 0, 0),
            };
            let e = ConfigError {
                file,
                line,
                column,
                message: d.message,
            };
            if !out.contains(&e) {
                out.push(e);
            }
        }
        ConfigErrors(out)
    }

    /// Parses every readable file and merges the fragments into the main file.
    /// None when any file could not be read or parsed: checking the rest would
    /// only produce errors about keys that are really in the broken file.
    pub(crate) fn parse_and_merge(&self, diags: &mut Vec<Diag>) -> Option<Raw> {
        let mut ids = 0u32;
        let mut root: Option<Raw> = None;
        let mut complete = true;
        for s in &self.sources {
            let Some(text) = &s.text else {
                complete = false;
                continue;
            };
            let Some(tree) = parse(text, s.base, &mut ids, diags) else {
                complete = false;
                continue;
            };
            match &mut root {
                None => root = Some(tree),
                Some(root) => merge(root, tree, "", self, diags),
            }
        }
        if complete {
            root
        } else {
            None
        }
    }
}

/// 1-based line and character column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = text.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The `*.toml` files of a fragments directory, sorted by name. Names starting
/// with a dot are skipped, as editors and package managers leave such files.
pub(crate) fn fragments(dir: &Path, diags: &mut Vec<Diag>, map: &mut SourceMap) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            let base = map.add(dir.to_path_buf(), None);
            diags.push(Diag::file(base, format!("cannot list the fragments directory: {e}")));
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let base = map.add(dir.to_path_buf(), None);
                diags.push(Diag::file(base, format!("cannot list the fragments directory: {e}")));
                continue;
            }
        };
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if name_str.starts_with('.') || !name_str.ends_with(".toml") {
            continue;
        }
        let path = entry.path();
        // Follows symlinks on purpose: linking a shared fragment in is common.
        if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        files.push((name, path));
    }
    files.sort();
    files.into_iter().map(|(_, path)| path).collect()
}

/// A configuration value with its place.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    /// Unique within one load; lets the deserializer remember entries it skips.
    pub id: u32,
    pub span: Range<usize>,
    pub value: RawValue,
}

#[derive(Debug, Clone)]
pub(crate) enum RawValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime,
    Array(Vec<Raw>),
    Table(Vec<(Key, Raw)>),
}

#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub name: String,
    pub span: Range<usize>,
}

impl Raw {
    pub(crate) fn entries(&self) -> &[(Key, Raw)] {
        match &self.value {
            RawValue::Table(entries) => entries,
            _ => &[],
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&(Key, Raw)> {
        self.entries().iter().find(|(k, _)| k.name == key)
    }

    pub(crate) fn is_table(&self) -> bool {
        matches!(self.value, RawValue::Table(_))
    }

    /// How the value is called in messages.
    pub(crate) fn kind_name(&self) -> &'static str {
        match self.value {
            RawValue::Str(_) => "a string",
            RawValue::Int(_) => "an integer",
            RawValue::Float(_) => "a float",
            RawValue::Bool(_) => "a boolean",
            RawValue::Datetime => "a date-time",
            RawValue::Array(_) => "an array",
            RawValue::Table(_) => "a table",
        }
    }
}

/// `path.key`, quoting keys that TOML would need quoted.
pub(crate) fn join_key(path: &str, key: &str) -> String {
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// Parses one file; its places are shifted by `base`.
fn parse(text: &str, base: usize, ids: &mut u32, diags: &mut Vec<Diag>) -> Option<Raw> {
    match toml::from_str::<Parsed>(text) {
        Ok(parsed) => Some(convert(parsed, base..base, base, ids)),
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            diags.push(Diag::at(base + offset, tidy(e.message())));
            None
        }
    }
}

/// The toml crate's messages may span lines ("invalid string\nexpected ..."); an
/// error is one line in tandem's output.
fn tidy(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn convert(p: Parsed, fallback: Range<usize>, base: usize, ids: &mut u32) -> Raw {
    let shift = |s: Range<usize>| s.start + base..s.end + base;
    let span = p.span.map(shift).unwrap_or(fallback);
    let id = *ids;
    *ids += 1;
    let value = match p.value {
        ParsedValue::Str(s) => RawValue::Str(s),
        ParsedValue::Int(i) => RawValue::Int(i),
        ParsedValue::Float(f) => RawValue::Float(f),
        ParsedValue::Bool(b) => RawValue::Bool(b),
        ParsedValue::Datetime => RawValue::Datetime,
        ParsedValue::Array(items) => {
            RawValue::Array(items.into_iter().map(|v| convert(v, span.clone(), base, ids)).collect())
        }
        ParsedValue::Table(entries) => RawValue::Table(
            entries
                .into_iter()
                .map(|(k, v)| {
                    // Implicit tables (`node` in `[node.alpha]`) have no place of
                    // their own; their key's place is the best there is.
                    let key_span = k.span.map(shift).unwrap_or_else(|| span.clone());
                    let v = convert(v, key_span.clone(), base, ids);
                    (
                        Key {
                            name: k.name,
                            span: key_span,
                        },
                        v,
                    )
                })
                .collect(),
        ),
    };
    Raw { id, span, value }
}

/// Merges fragment `from` into `into`. Tables merge key by key; any other value
/// (arrays of tables included: the order of fence levels must be visible in one
/// place) may be set in one file only.
fn merge(into: &mut Raw, from: Raw, path: &str, map: &SourceMap, diags: &mut Vec<Diag>) {
    let RawValue::Table(from_entries) = from.value else {
        return;
    };
    let RawValue::Table(into_entries) = &mut into.value else {
        return;
    };
    for (key, value) in from_entries {
        let here = join_key(path, &key.name);
        match into_entries.iter_mut().find(|(k, _)| k.name == key.name) {
            None => into_entries.push((key, value)),
            Some((_, existing)) if existing.is_table() && value.is_table() => {
                merge(existing, value, &here, map, diags);
            }
            Some((existing_key, _)) => diags.push(Diag::at(
                key.span.start,
                format!(
                    "{here} is set here and also at {}; a key may be set in one place only",
                    map.describe(existing_key.span.start)
                ),
            )),
        }
    }
}

// What the toml crate hands over, before places are made global. Spans are
// optional because implicit tables have none.

const SPANNED: &str = serde_spanned::__unstable::NAME;
const START: &str = serde_spanned::__unstable::START_FIELD;
const END: &str = serde_spanned::__unstable::END_FIELD;
const VALUE: &str = serde_spanned::__unstable::VALUE_FIELD;
const SPANNED_FIELDS: &[&str] = &[START, END, VALUE];
/// How the toml crate passes a date-time through serde.
const DATETIME_FIELD: &str = "$__toml_private_datetime";

#[derive(Debug)]
struct Parsed {
    span: Option<Range<usize>>,
    value: ParsedValue,
}

#[derive(Debug)]
enum ParsedValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime,
    Array(Vec<Parsed>),
    Table(Vec<(ParsedKey, Parsed)>),
}

#[derive(Debug)]
struct ParsedKey {
    name: String,
    span: Option<Range<usize>>,
}

impl<'de> Deserialize<'de> for ParsedKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED, SPANNED_FIELDS, KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = ParsedKey;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<ParsedKey, E> {
        Ok(ParsedKey {
            name: s.to_owned(),
            span: None,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<ParsedKey, A::Error> {
        let (mut start, mut end, mut name) = (None, None, None);
        while let Some(k) = m.next_key::<String>()? {
            match k.as_str() {
                START => start = Some(m.next_value::<usize>()?),
                END => end = Some(m.next_value::<usize>()?),
                VALUE => name = Some(m.next_value::<String>()?),
                other => return Err(de::Error::unknown_field(other, SPANNED_FIELDS)),
            }
        }
        let name = name.ok_or_else(|| de::Error::missing_field(VALUE))?;
        Ok(ParsedKey {
            name,
            span: start.zip(end).map(|(s, e)| s..e),
        })
    }
}

impl<'de> Deserialize<'de> for Parsed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED, SPANNED_FIELDS, ParsedVisitor { spanned: true })
    }
}

/// Reads the bare value inside the spanned wrapper.
struct Inner;

impl<'de> DeserializeSeed<'de> for Inner {
    type Value = Parsed;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Parsed, D::Error> {
        d.deserialize_any(ParsedVisitor { spanned: false })
    }
}

/// `spanned`: the deserializer may answer with the spanned wrapper. It does not
/// for implicit tables, and then the map is the table itself.
struct ParsedVisitor {
    spanned: bool,
}

fn bare(value: ParsedValue) -> Parsed {
    Parsed { span: None, value }
}

impl<'de> Visitor<'de> for ParsedVisitor {
    type Value = Parsed;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Parsed, E> {
        Ok(bare(ParsedValue::Str(s.to_owned())))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Parsed, E> {
        Ok(bare(ParsedValue::Int(i)))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Parsed, E> {
        i64::try_from(u)
            .map(|i| bare(ParsedValue::Int(i)))
            .map_err(|_| E::custom(format!("integer {u} is too large")))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Parsed, E> {
        Ok(bare(ParsedValue::Float(f)))
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Parsed, E> {
        Ok(bare(ParsedValue::Bool(b)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Parsed, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = s.next_element::<Parsed>()? {
            items.push(item);
        }
        Ok(bare(ParsedValue::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Parsed, A::Error> {
        let mut entries = Vec::new();
        let mut start = None;
        let mut end = None;
        while let Some(key) = m.next_key::<ParsedKey>()? {
            let first = entries.is_empty() && start.is_none();
            if first && key.name == DATETIME_FIELD {
                m.next_value::<de::IgnoredAny>()?;
                return Ok(bare(ParsedValue::Datetime));
            }
            if self.spanned && key.span.is_none() {
                match key.name.as_str() {
                    START if first => {
                        start = Some(m.next_value::<usize>()?);
                        continue;
                    }
                    END if start.is_some() => {
                        end = Some(m.next_value::<usize>()?);
                        continue;
                    }
                    VALUE if start.is_some() => {
                        let mut inner = m.next_value_seed(Inner)?;
                        inner.span = start.zip(end).map(|(s, e)| s..e);
                        return Ok(inner);
                    }
                    _ => {}
                }
            }
            let value = m.next_value::<Parsed>()?;
            entries.push((key, value));
        }
        Ok(bare(ParsedValue::Table(entries)))
    }
}
