//! Unit tests of the pure parts, on captured and documented outputs in
//! `daemon/tests/data/drbd/` (see its README for where each file comes from).

mod devices;
mod fold;
mod parse;

/// A sample file's text, read at compile time.
macro_rules! sample {
    ($name:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/drbd/", $name))
    };
}
pub(crate) use sample;
