//! Object paths of domains and resources.
//!
//! A D-Bus object path element may only hold `[A-Za-z0-9_]`, and domain names
//! hold almost anything (`web-1`, `db.prod`, UTF-8). They are escaped the way
//! systemd escapes unit names into paths (`sd_bus_path_encode`), so tools that
//! know that rule decode ours:
//!
//! - every byte of the UTF-8 name that is not an ASCII letter, nor an ASCII digit
//!   after the first byte, becomes `_` and two lowercase hex digits;
//! - the empty name becomes `_` alone.
//!
//! `web-1` is `web_2d1`, `1vm` is `_31vm`, `r0` stays `r0`. The mapping is
//! one-to-one, so [`unescape_path_element`] recovers the name.

use crate::{DOMAIN_PATH_PREFIX, RESOURCE_PATH_PREFIX};
use zbus::{ObjectPath, OwnedObjectPath};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Escapes `name` into one valid object path element (see the module docs).
pub fn escape_path_element(name: &str) -> String {
    if name.is_empty() {
        return "_".into();
    }
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()) {
            out.push(char::from(b));
        } else {
            out.push('_');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The name an element made by [`escape_path_element`] stands for; `None` when
/// `element` is not such an escape.
pub fn unescape_path_element(element: &str) -> Option<String> {
    if element == "_" {
        return Some(String::new());
    }
    let bytes = element.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => {
                let hi = hex_value(*bytes.get(i + 1)?)?;
                let lo = hex_value(*bytes.get(i + 2)?)?;
                out.push((hi << 4) | lo);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

fn under(prefix: &str, name: &str) -> OwnedObjectPath {
    // The prefix is a valid path and the escaped element holds only [A-Za-z0-9_]
    // and is never empty, so the result is a valid object path.
    ObjectPath::from_string_unchecked(format!("{prefix}/{}", escape_path_element(name))).into()
}

/// `/org/tandem/Tandem1/domain/<escaped name>`.
pub fn domain_path(name: &str) -> OwnedObjectPath {
    under(DOMAIN_PATH_PREFIX, name)
}

/// `/org/tandem/Tandem1/resource/<escaped name>`.
pub fn resource_path(name: &str) -> OwnedObjectPath {
    under(RESOURCE_PATH_PREFIX, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_like_systemd() {
        assert_eq!(escape_path_element("r0"), "r0");
        assert_eq!(escape_path_element("web-1"), "web_2d1");
        assert_eq!(escape_path_element("1vm"), "_31vm");
        assert_eq!(escape_path_element("a_b"), "a_5fb");
        assert_eq!(escape_path_element(""), "_");
        assert_eq!(escape_path_element("é"), "_c3_a9");
        assert_eq!(domain_path("web-1").as_str(), "/org/tandem/Tandem1/domain/web_2d1");
        assert_eq!(resource_path("r0").as_str(), "/org/tandem/Tandem1/resource/r0");
    }

    #[test]
    fn rejects_what_it_never_makes() {
        assert_eq!(unescape_path_element("a_"), None);
        assert_eq!(unescape_path_element("a_4"), None);
        assert_eq!(unescape_path_element("a_zz"), None);
        assert_eq!(unescape_path_element("a-b"), None);
        assert_eq!(unescape_path_element("_ff"), None, "not UTF-8");
    }

    proptest! {
        #[test]
        fn escaping_round_trips_and_makes_valid_paths(name in any::<String>()) {
            let e = escape_path_element(&name);
            prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            prop_assert_eq!(unescape_path_element(&e), Some(name.clone()));
            let p = format!("{DOMAIN_PATH_PREFIX}/{e}");
            prop_assert!(ObjectPath::try_from(p.as_str()).is_ok());
        }
    }
}
