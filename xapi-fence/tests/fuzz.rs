//! A fuzz of the reply parser (proptest): random bytes, valid replies mutated
//! byte by byte, and random well-formed values that must come back equal.
//! Nothing may panic; everything that is not a valid reply must be an error.
//! `XAPI_FUZZ_CASES` sets the cases per property (default 2000); each test
//! prints how many parser executions it made.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use std::cell::Cell;
use xapi_fence::xmlrpc::{envelope, parse_response, Response, Value};

fn cases() -> u32 {
    std::env::var("XAPI_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

thread_local! {
    /// Parser runs on this thread (each test runs on its own).
    static RUNS: Cell<u64> = const { Cell::new(0) };
}

fn parse(bytes: &[u8]) -> Result<Response, String> {
    RUNS.with(|r| r.set(r.get() + 1));
    let r = parse_response(bytes).map_err(|e| e.to_string())?;
    if let Response::Value(v) = &r {
        let _ = envelope(v.clone());
    }
    Ok(r)
}

const SEEDS: &[&str] = &[
    "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success\
     </value></member><member><name>Value</name><value><array><data><value>OpaqueRef:1</value><value><boolean>1\
     </boolean></value><value><int>7</int></value></data></array></value></member></struct></value></param></params>\
     </methodResponse>",
    "<methodResponse><params><param><value><struct><member><name>Status</name><value>Failure</value></member><member>\
     <name>ErrorDescription</name><value><array><data><value>VM_BAD_POWER_STATE</value><value>OpaqueRef:a&amp;b\
     </value><value>halted</value></data></array></value></member></struct></value></param></params></methodResponse>",
    "<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>1</int></value></member><member>\
     <name>faultString</name><value><string>x &lt; y</string></value></member></struct></value></fault></methodResponse>",
    "<methodResponse><params><param><value><![CDATA[a<b]]>&#65;<!-- c --></value></param></params></methodResponse>",
];

fn value_strategy() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        "[ -~]{0,12}".prop_map(Value::String),
        any::<i64>().prop_map(Value::Int),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Nil),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-zA-Z_]{1,8}", inner), 0..6).prop_map(Value::Struct),
        ]
    })
}

/// Writes a value the way xapi does (strings untyped) or typed, by `typed`.
fn write(v: &Value, typed: bool, out: &mut String) {
    out.push_str("<value>");
    match v {
        Value::String(s) if typed => out.push_str(&format!("<string>{}</string>", quick_xml::escape::escape(s))),
        Value::String(s) => out.push_str(&quick_xml::escape::escape(s)),
        Value::Int(i) => out.push_str(&format!("<i8>{i}</i8>")),
        Value::Bool(b) => out.push_str(&format!("<boolean>{}</boolean>", u8::from(*b))),
        Value::Nil => out.push_str("<nil/>"),
        Value::Array(items) => {
            out.push_str("<array><data>\n");
            items.iter().for_each(|i| write(i, !typed, out));
            out.push_str("</data></array>");
        }
        Value::Struct(members) => {
            out.push_str("<struct>");
            for (k, v) in members {
                out.push_str(&format!("<member>\n <name>{k}</name>"));
                write(v, typed, out);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
        other => panic!("not generated: {other:?}"),
    }
    out.push_str("</value>");
}

/// Whitespace-only untyped strings read back as-is, but xapi never sends
/// them, and a value that is only whitespace before a type is ambiguous.
fn has_blank_string(v: &Value) -> bool {
    match v {
        Value::String(s) => !s.is_empty() && s.trim().is_empty(),
        Value::Array(items) => items.iter().any(has_blank_string),
        Value::Struct(m) => m.iter().any(|(_, v)| has_blank_string(v)),
        _ => false,
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Flip(usize, u8),
    Duplicate(usize, usize),
}

fn mutate(seed: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for m in muts {
        let n = b.len().max(1);
        match m {
            Mutation::Truncate(at) => b.truncate(at % n),
            Mutation::Delete(at, len) => {
                let at = at % n;
                let end = (at + len).min(b.len());
                if at < end {
                    b.drain(at..end);
                }
            }
            Mutation::Insert(at, bytes) => {
                let at = (at % n).min(b.len());
                b.splice(at..at, bytes.iter().copied());
            }
            Mutation::Flip(at, x) => {
                if let Some(c) = b.get_mut(at % n) {
                    *c ^= x;
                }
            }
            Mutation::Duplicate(at, len) => {
                let at = (at % n).min(b.len());
                let end = (at + len).min(b.len());
                let part: Vec<u8> = b.get(at..end).map(<[u8]>::to_vec).unwrap_or_default();
                b.splice(at..at, part);
            }
        }
    }
    b
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let tokens = prop::sample::select(vec![
        b"<value>".to_vec(),
        b"</value>".to_vec(),
        b"<array><data>".to_vec(),
        b"<struct>".to_vec(),
        b"<member>".to_vec(),
        b"&".to_vec(),
        b"&#x110000;".to_vec(),
        b"\xff\xfe".to_vec(),
        b"<!DOCTYPE x [<!ENTITY a \"b\">]>".to_vec(),
        b"<nil/>".to_vec(),
        b"<int>".to_vec(),
    ]);
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 0usize..40).prop_map(|(a, l)| Mutation::Delete(a, l)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), tokens).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), 1u8..=255).prop_map(|(a, x)| Mutation::Flip(a, x)),
        (any::<usize>(), 0usize..200).prop_map(|(a, l)| Mutation::Duplicate(a, l)),
    ]
}

fn runner() -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

fn report(name: &str, before: u64) {
    let n = RUNS.with(Cell::get) - before;
    println!("fuzz {name}: {n} reply parser executions");
}

#[test]
fn random_bytes_never_panic() {
    let before = RUNS.with(Cell::get);
    runner()
        .run(&prop::collection::vec(any::<u8>(), 0..2048), |bytes| {
            let _ = parse(&bytes);
            Ok(())
        })
        .unwrap();
    report("random bytes", before);
}

#[test]
fn mutated_replies_never_panic() {
    let before = RUNS.with(Cell::get);
    runner()
        .run(
            &(0..SEEDS.len(), prop::collection::vec(mutation(), 1..6)),
            |(seed, muts)| {
                let _ = parse(&mutate(SEEDS[seed].as_bytes(), &muts));
                Ok(())
            },
        )
        .unwrap();
    report("mutated replies", before);
}

#[test]
fn well_formed_values_read_back_equal() {
    let before = RUNS.with(Cell::get);
    runner()
        .run(&(value_strategy(), any::<bool>()), |(v, typed)| {
            prop_assume!(!has_blank_string(&v));
            let mut body = String::from("<?xml version=\"1.0\"?>\n<methodResponse><params><param>");
            write(&v, typed, &mut body);
            body.push_str("</param></params></methodResponse>\n");
            prop_assert_eq!(parse(body.as_bytes()), Ok(Response::Value(v)));
            Ok(())
        })
        .unwrap();
    report("well-formed values", before);
}
