//! A serde deserializer over the placed tree that reports every error instead of
//! the first.
//!
//! A derived `Deserialize` stops at the first bad field and its visitor cannot be
//! run twice, so the retry happens from the outside: when an attempt fails, the
//! innermost table entry or array element that caused it is recorded as excluded
//! and the whole value is deserialized again without it. Each attempt excludes
//! one more entry, so this ends; a "missing field" caused by an exclusion is not
//! reported again. A value that needed any exclusion (or had unknown keys) is
//! never used: the caller gets `None`, so later checks never run on half a value
//! and cannot produce errors that are only echoes of the first.

use super::source::{join_key, Diag, Key, Raw, RawValue};
use serde::de::{
    self, value::BorrowedStrDeserializer, value::UsizeDeserializer, DeserializeOwned, DeserializeSeed, Deserializer,
    IntoDeserializer, MapAccess, SeqAccess, Unexpected, Visitor,
};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;

/// Collects what one load reports.
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    diags: RefCell<Vec<Diag>>,
    seen: RefCell<HashSet<(usize, String)>>,
    /// Counts every report, repeats included, so a caller can tell that something
    /// went wrong while it ran even when the message was already known.
    reports: Cell<usize>,
    excluded: RefCell<HashSet<u32>>,
}

impl Ctx {
    pub(crate) fn report(&self, offset: usize, message: String) {
        self.reports.set(self.reports.get() + 1);
        if self.seen.borrow_mut().insert((offset, message.clone())) {
            self.diags.borrow_mut().push(Diag::at(offset, message));
        }
    }

    pub(crate) fn reports(&self) -> usize {
        self.reports.get()
    }

    pub(crate) fn into_diags(self) -> Vec<Diag> {
        self.diags.into_inner()
    }

    fn is_excluded(&self, raw: &Raw) -> bool {
        self.excluded.borrow().contains(&raw.id)
    }

    /// Reports the keys of `table` that are not in `known`. Returns false if any.
    pub(crate) fn unknown_keys(&self, table: &Raw, path: &str, known: &[&str]) -> bool {
        let mut ok = true;
        for (key, value) in table.entries() {
            if !known.contains(&key.name.as_str()) && !self.is_excluded(value) {
                self.report(key.span.start, unknown_key_message(path, key, known));
                ok = false;
            }
        }
        ok
    }
}

fn unknown_key_message(path: &str, key: &Key, known: &[&str]) -> String {
    let full = join_key(path, &key.name);
    if key.name == "password" || key.name == "passwd" {
        return format!(
            "{full}: passwords are not written in the configuration, which is often \
             readable by more people than the password should be; put it in a file of \
             mode 0600 and name it with password_file, or use password_script"
        );
    }
    let known: Vec<&str> = known.iter().copied().filter(|k| !k.starts_with('$')).collect();
    let close = known
        .iter()
        .map(|k| (edit_distance(k, &key.name), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min();
    match close {
        Some((_, k)) => format!("{full} is not a known key; did you mean {k}?"),
        None if known.is_empty() => format!("{full} is not a known key"),
        None => format!("{full} is not a known key; known keys here: {}", known.join(", ")),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Deserializes `raw` (found at `path`) as a `T`, reporting every problem.
pub(crate) fn from_raw<T: DeserializeOwned>(raw: &Raw, path: &str, ctx: &Ctx) -> Option<T> {
    let before = ctx.reports();
    loop {
        match T::deserialize(De::new(raw, path.to_string(), ctx)) {
            Ok(value) => return (ctx.reports() == before).then_some(value),
            Err(e) => {
                if !e.handled {
                    ctx.report(raw.span.start, e.render(path));
                }
                match e.entry {
                    Some(id) if ctx.excluded.borrow_mut().insert(id) => continue,
                    _ => return None,
                }
            }
        }
    }
}

/// The entry `key` of `table`, deserialized; None (and nothing reported) when the
/// key is absent.
pub(crate) fn field<T: DeserializeOwned>(table: &Raw, path: &str, key: &str, ctx: &Ctx) -> Option<Result<T, ()>> {
    let (_, value) = table.get(key)?;
    Some(from_raw(value, &join_key(path, key), ctx).ok_or(()))
}

#[derive(Debug)]
enum Msg {
    /// Reads as a continuation of the path: "<path> must be ...".
    Phrase(String),
    /// Reads after the path and a colon.
    Custom(String),
    Missing(&'static str),
}

#[derive(Debug)]
pub(crate) struct DeError {
    msg: Msg,
    /// The entry whose value failed; it is excluded on the next attempt.
    entry: Option<u32>,
    /// Already reported (or deliberately not).
    handled: bool,
}

impl DeError {
    fn phrase(s: String) -> Self {
        DeError {
            msg: Msg::Phrase(s),
            entry: None,
            handled: false,
        }
    }

    fn render(&self, path: &str) -> String {
        match &self.msg {
            Msg::Phrase(p) => format!("{path} {p}"),
            Msg::Custom(c) => format!("{path}: {c}"),
            Msg::Missing(f) => format!("{} is required", join_key(path, f)),
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render("value"))
    }
}

impl std::error::Error for DeError {}

/// serde's names for what it expected, in the words of the documentation.
fn expected_words(exp: &dyn de::Expected) -> String {
    let s = exp.to_string();
    match s.as_str() {
        "u8" => "an integer from 0 to 255".into(),
        "u16" => "an integer from 0 to 65535".into(),
        "u32" => "an integer from 0 to 4294967295".into(),
        "u64" | "usize" => "a non-negative integer".into(),
        "i64" | "i32" => "an integer".into(),
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        _ if s.starts_with("struct ") => "a table".into(),
        _ => s,
    }
}

fn unexpected_words(u: &Unexpected<'_>) -> String {
    match u {
        Unexpected::Str(s) => format!("the string \"{s}\""),
        Unexpected::Signed(i) => format!("{i}"),
        Unexpected::Unsigned(i) => format!("{i}"),
        Unexpected::Float(f) => format!("the float {f}"),
        Unexpected::Bool(b) => format!("{b}"),
        Unexpected::Map => "a table".into(),
        Unexpected::Seq => "an array".into(),
        Unexpected::Other(o) => format!("a {o}"),
        other => other.to_string(),
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            msg: Msg::Custom(msg.to_string()),
            entry: None,
            handled: false,
        }
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::phrase(format!(
            "must be {}, not {}",
            expected_words(exp),
            unexpected_words(&unexp)
        ))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::invalid_type(unexp, exp)
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        Self::phrase(format!("has {len} elements; expected {exp}"))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::phrase(format!("is \"{variant}\"; it must be one of {}", quoted_list(expected)))
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            msg: Msg::Missing(field),
            entry: None,
            handled: false,
        }
    }
}

fn quoted_list(items: &[&str]) -> String {
    let q: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    match q.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

struct De<'a> {
    raw: &'a Raw,
    path: String,
    ctx: &'a Ctx,
}

impl<'a> De<'a> {
    fn new(raw: &'a Raw, path: String, ctx: &'a Ctx) -> Self {
        De { raw, path, ctx }
    }

    /// Reports a failure of the value of `raw` (an entry or element) once, and
    /// makes it the entry to exclude unless a deeper one already is.
    fn attribute(ctx: &Ctx, raw: &Raw, path: &str, mut e: DeError) -> DeError {
        if !e.handled {
            ctx.report(raw.span.start, e.render(path));
            e.handled = true;
        }
        if e.entry.is_none() {
            e.entry = Some(raw.id);
        }
        e
    }
}

impl<'de> Deserializer<'de> for De<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.raw.value {
            RawValue::Str(s) => visitor.visit_str(s),
            RawValue::Int(i) => visitor.visit_i64(*i),
            RawValue::Float(f) => visitor.visit_f64(*f),
            RawValue::Bool(b) => visitor.visit_bool(*b),
            RawValue::Datetime => Err(de::Error::invalid_type(Unexpected::Other("date-time"), &visitor)),
            RawValue::Array(items) => visitor.visit_seq(Seq {
                items,
                next: 0,
                path: &self.path,
                ctx: self.ctx,
            }),
            RawValue::Table(entries) => visitor.visit_map(Map {
                entries,
                known: None,
                next: 0,
                value: None,
                path: &self.path,
                ctx: self.ctx,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // A key that is present is Some; absence is handled by the derive.
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.raw.value {
            RawValue::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            _ => Err(DeError::phrase(format!(
                "must be one of {}, not {}",
                quoted_list(variants),
                self.raw.kind_name()
            ))),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if serde_spanned::__unstable::is_spanned(name, fields) {
            return visitor.visit_map(SpannedAccess { de: self, state: 0 });
        }
        let RawValue::Table(entries) = &self.raw.value else {
            return self.deserialize_any(visitor);
        };
        self.ctx.unknown_keys(self.raw, &self.path, fields);
        let map = Map {
            entries,
            known: Some(fields),
            next: 0,
            value: None,
            path: &self.path,
            ctx: self.ctx,
        };
        visitor.visit_map(map).map_err(|mut e| {
            if let (Msg::Missing(field), false) = (&e.msg, e.handled) {
                // A required key that was there but broken was reported already.
                let was_there = entries.iter().any(|(k, _)| k.name == *field);
                if !was_there {
                    self.ctx.report(self.raw.span.start, e.render(&self.path));
                }
                e.handled = true;
            }
            e
        })
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

/// The entries of a table; `known` limits them to a struct's fields (the others
/// were reported as unknown).
struct Map<'a> {
    entries: &'a [(Key, Raw)],
    known: Option<&'static [&'static str]>,
    next: usize,
    value: Option<&'a (Key, Raw)>,
    path: &'a str,
    ctx: &'a Ctx,
}

impl<'de> MapAccess<'de> for Map<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        while let Some(entry) = self.entries.get(self.next) {
            self.next += 1;
            let (key, value) = entry;
            // Written out rather than `is_none_or`, which needs Rust 1.82.
            let known = match self.known {
                Some(fields) => fields.contains(&key.name.as_str()),
                None => true,
            };
            if !known || self.ctx.is_excluded(value) {
                continue;
            }
            self.value = Some(entry);
            return seed.deserialize(KeyDe { key }).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, value)) = self.value.take() else {
            return Err(de::Error::custom("a value was asked for before its key"));
        };
        let path = join_key(self.path, &key.name);
        seed.deserialize(De::new(value, path.clone(), self.ctx))
            .map_err(|e| De::attribute(self.ctx, value, &path, e))
    }
}

struct Seq<'a> {
    items: &'a [Raw],
    next: usize,
    path: &'a str,
    ctx: &'a Ctx,
}

impl<'de> SeqAccess<'de> for Seq<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        while let Some(item) = self.items.get(self.next) {
            self.next += 1;
            if self.ctx.is_excluded(item) {
                continue;
            }
            // Counted from 1, as fence levels are in Pacemaker and in the docs.
            let path = format!("{}[{}]", self.path, self.next);
            return seed
                .deserialize(De::new(item, path.clone(), self.ctx))
                .map(Some)
                .map_err(|e| De::attribute(self.ctx, item, &path, e));
        }
        Ok(None)
    }
}

/// The field names of `serde_spanned`'s three-field protocol, in order.
fn spanned_field_key<'de, K: DeserializeSeed<'de>>(state: u8, seed: K) -> Result<Option<K::Value>, DeError> {
    let key = match state {
        0 => serde_spanned::__unstable::START_FIELD,
        1 => serde_spanned::__unstable::END_FIELD,
        2 => serde_spanned::__unstable::VALUE_FIELD,
        _ => return Ok(None),
    };
    seed.deserialize(BorrowedStrDeserializer::new(key)).map(Some)
}

/// Answers `serde_spanned`'s three-field protocol with the tree's places.
struct SpannedAccess<'a> {
    de: De<'a>,
    state: u8,
}

impl<'de> MapAccess<'de> for SpannedAccess<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        spanned_field_key(self.state, seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        self.state += 1;
        let span = &self.de.raw.span;
        match self.state {
            1 => seed.deserialize(UsizeDeserializer::new(span.start)),
            2 => seed.deserialize(UsizeDeserializer::new(span.end)),
            _ => seed.deserialize(De::new(self.de.raw, self.de.path.clone(), self.de.ctx)),
        }
    }
}

/// A table key, for struct fields and for map keys (plain or `Spanned<String>`).
struct KeyDe<'a> {
    key: &'a Key,
}

impl<'de> Deserializer<'de> for KeyDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str(&self.key.name)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if serde_spanned::__unstable::is_spanned(name, fields) {
            return visitor.visit_map(SpannedKey {
                key: self.key,
                state: 0,
            });
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct seq tuple tuple_struct map
        enum identifier ignored_any
    }
}

struct SpannedKey<'a> {
    key: &'a Key,
    state: u8,
}

impl<'de> MapAccess<'de> for SpannedKey<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        spanned_field_key(self.state, seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        self.state += 1;
        match self.state {
            1 => seed.deserialize(UsizeDeserializer::new(self.key.span.start)),
            2 => seed.deserialize(UsizeDeserializer::new(self.key.span.end)),
            _ => seed.deserialize(KeyDe { key: self.key }),
        }
    }
}
