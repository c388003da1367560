//! Property tests ("fuzzing" with proptest): nothing the hook reads can make it
//! panic, and whatever parses gives well-formed --explain JSON.
//!
//! Executions per `cargo test` run (the `cases` below; proptest adds shrinking
//! runs only after a failure):
//! - arbitrary bytes as domain XML: 20 000
//! - XML-ish token soup (tags, attributes, entities, CDATA, comments): 20 000
//! - mutated corpus files (byte flips, cuts, insertions, splices): 10 000
//! - mutated `drbdadm dump-xml` samples: 5 000
//! - arbitrary hook arguments through `plan`: 10 000
//! - arbitrary source paths through the path reader and `drbd_disks`: 20 000
//!
//! 85 000 executions in 6-10 s in a debug build on the development machine (2
//! CPUs). `PROPTEST_CASES` overrides every count for a longer soak: with
//! `PROPTEST_CASES=200000 cargo test --release -p tandem-hooks --test fuzz`,
//! 1 200 000 executions passed in 12 s.

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use proptest::prelude::*;
use std::sync::OnceLock;
use tandem_hooks::drbd::{needs_drbd_map, parse_device_path};
use tandem_hooks::explain::to_json;
use tandem_hooks::{drbd_disks, parse_domain_xml, parse_domain_xml_bytes, plan, DomainInfo, DrbdMap, XmlError};

fn corpus() -> &'static Vec<(String, String)> {
    static CORPUS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    CORPUS.get_or_init(common::corpus)
}

fn map() -> &'static DrbdMap {
    static MAP: OnceLock<DrbdMap> = OnceLock::new();
    MAP.get_or_init(common::two_node_map)
}

fn cases(n: u32) -> ProptestConfig {
    // An explicit PROPTEST_CASES wins over the per-test default.
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// What must hold for any outcome of a parse.
fn check(result: Result<DomainInfo, XmlError>, input_len: usize) {
    match result {
        Ok(info) => {
            let _ = needs_drbd_map(&info);
            for m in [&DrbdMap::empty(), map()] {
                let json = to_json(&drbd_disks(&info, m));
                let value: serde_json::Value = serde_json::from_str(&json).expect("--explain JSON parses");
                assert!(value.is_array());
            }
        }
        Err(XmlError::Empty) => {}
        Err(XmlError::At {
            line,
            column,
            offset,
            message,
        }) => {
            assert!(line >= 1 && column >= 1);
            assert!(offset <= input_len, "offset {offset} past the input ({input_len})");
            assert!(!message.is_empty() && !message.contains('\n'), "{message:?}");
        }
    }
}

const TOKENS: &[&str] = &[
    "<domain>",
    "</domain>",
    "<domain type='kvm'>",
    "<devices>",
    "</devices>",
    "<devices/>",
    "<disk type='block' device='disk'>",
    "<disk>",
    "</disk>",
    "<source dev='/dev/drbd/by-res/r0/1'/>",
    "<source file='/dev/drbd3'/>",
    "<source dev='/dev/drbd/by-disk/vg0/lv7'/>",
    "<source dev='drbd:r1'/>",
    "<source dev=\"/dev/drbd/by-res/a&amp;b\">",
    "</source>",
    "<target dev='vda' bus='virtio'/>",
    "<driver name='drbd'/>",
    "<backingStore>",
    "</backingStore>",
    "<name>",
    "</name>",
    "<uuid>",
    "</uuid>",
    "<qemu:commandline>",
    "</qemu:commandline>",
    "<metadata>",
    "</metadata>",
    "<!-- c -->",
    "<!--",
    "-->",
    "<![CDATA[",
    "]]>",
    "<?xml version='1.0'?>",
    "<!DOCTYPE domain>",
    "&amp;",
    "&#x41;",
    "&#0;",
    "&bogus;",
    "&",
    "<",
    ">",
    "/>",
    "='",
    "\"",
    " a='1'",
    " a='1' a='2'",
    "\n",
    " ",
    "é",
    "\u{feff}",
    "text",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..60).prop_map(|t| t.concat())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize, usize),
    Insert(usize, Vec<u8>),
    Truncate(usize),
    Splice(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let any_pos = any::<usize>();
    prop_oneof![
        (any_pos, any::<u8>()).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any_pos, 0usize..200).prop_map(|(p, n)| Mutation::Cut(p, n)),
        (
            any_pos,
            prop_oneof![
                prop::sample::select(TOKENS).prop_map(|t| t.as_bytes().to_vec()),
                prop::collection::vec(any::<u8>(), 1..8)
            ]
        )
            .prop_map(|(p, b)| Mutation::Insert(p, b)),
        any_pos.prop_map(Mutation::Truncate),
        (any_pos, any_pos, 1usize..300).prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Flip(p, b) => {
                if let Some(x) = bytes.get_mut(p % len) {
                    *x ^= b | 1;
                }
            }
            Mutation::Cut(p, n) => {
                let start = (p % len).min(bytes.len());
                let end = (start + n).min(bytes.len());
                bytes.drain(start..end);
            }
            Mutation::Insert(p, ins) => {
                let at = (p % len).min(bytes.len());
                bytes.splice(at..at, ins.iter().copied());
            }
            Mutation::Truncate(p) => bytes.truncate(p % len),
            Mutation::Splice(from, to, n) => {
                let from = (from % len).min(bytes.len());
                let end = (from + n).min(bytes.len());
                let piece = bytes[from..end].to_vec();
                let at = (to % len).min(bytes.len());
                bytes.splice(at..at, piece);
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(cases(20_000))]
    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(parse_domain_xml_bytes(&bytes), bytes.len());
    }

    #[test]
    fn token_soup_parses_or_fails_cleanly(xml in token_soup()) {
        check(parse_domain_xml(&xml), xml.len());
    }

    #[test]
    fn arbitrary_source_paths(path in "(/dev/drbd|/dev/drbd/by-res/|/dev/drbd/by-disk/|drbd:|/)?[a-z0-9/._-]{0,20}") {
        let _ = parse_device_path(&path);
        let xml = format!("<domain><devices><disk><source dev='{path}'/><target dev='vda'/></disk></devices></domain>");
        check(parse_domain_xml(&xml), xml.len());
    }
}

proptest! {
    #![proptest_config(cases(10_000))]
    #[test]
    fn mutated_corpus_files(index in any::<usize>(), mutations in prop::collection::vec(mutation(), 1..6)) {
        let files = corpus();
        let (_, text) = &files[index % files.len()];
        let bytes = mutate(text.as_bytes().to_vec(), &mutations);
        check(parse_domain_xml_bytes(&bytes), bytes.len());
    }

    #[test]
    fn arbitrary_hook_arguments(args in prop::collection::vec("[a-z -]{0,12}", 0..6), with_disk in any::<bool>()) {
        let xml = "<domain><devices><disk><source dev='/dev/drbd/by-res/r0'/></disk></devices></domain>";
        let disks = if with_disk {
            drbd_disks(&parse_domain_xml(xml).unwrap(), &DrbdMap::empty())
        } else {
            Vec::new()
        };
        if let Ok(p) = plan(&args, &disks) {
            let _ = p.warning();
            if let Some(r) = p.request() {
                prop_assert!(!r.disks.is_empty());
            }
        }
    }
}

proptest! {
    #![proptest_config(cases(5_000))]
    #[test]
    fn mutated_dump_xml(which in 0usize..3, mutations in prop::collection::vec(mutation(), 1..6)) {
        let file = ["drbd/dump-xml-two-node.xml", "drbd/dump-xml-edge.xml", "drbd/dump-xml-84.xml"][which];
        let bytes = mutate(common::read_data(file).into_bytes(), &mutations);
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(m) = DrbdMap::from_dump_xml(&text) {
            let _ = (m.resolve_minor(3), m.resolve_lower_disk("/dev/vg0/lv7"), m.resolve_device("/dev/drbd_lower"));
        }
    }
}
