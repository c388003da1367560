//! Invariants over `history.jsonl`, for tests and the bench: a resource is
//! Primary on both nodes only while connected, with allow-two-primaries on
//! both and protocol C (DESIGN.md, safety invariant 2, as far as DRBD sees it).

use serde_json::Value;

/// One message per history line that breaks an invariant.
pub fn violations(history: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, line) in history.lines().enumerate() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            out.push(format!("line {}: not JSON", i + 1));
            continue;
        };
        let Some(after) = v.get("after") else { continue };
        let both = |key: &str, want: &Value| {
            after
                .get(key)
                .and_then(Value::as_array)
                .is_some_and(|a| a.len() == 2 && a.iter().all(|x| x == want))
        };
        if !both("roles", &Value::from("Primary")) {
            continue;
        }
        let connected = after.get("connected") == Some(&Value::Bool(true));
        let allowed = both("allow_two_primaries", &Value::Bool(true));
        let proto_c = both("protocol", &Value::from("C"));
        if !(connected && allowed && proto_c) {
            out.push(format!(
                "line {}: {} Primary on both nodes (connected {connected}, allow-two-primaries on both {allowed}, \
                 protocol C on both {proto_c}) after {}",
                i + 1,
                v.get("resource").and_then(Value::as_str).unwrap_or("?"),
                v.get("event").and_then(Value::as_str).unwrap_or("?"),
            ));
        }
    }
    out
}
