//! The bar `tandemctl migrate` draws while tandemd migrates: libvirt's job
//! statistics, as the daemon's status document shows them for the domain
//! (`domains[].migration`). On a terminal one line redrawn in place, otherwise
//! a line each time another tenth is done.

use serde_json::Value;

const WIDTH: usize = 30;

/// (bytes moved, bytes still to move) of `domain`'s migration in status `v`.
pub fn of(v: &Value, domain: &str) -> Option<(u64, u64)> {
    let d = v
        .get("domains")?
        .as_array()?
        .iter()
        .find(|d| d.get("name").and_then(Value::as_str) == Some(domain))?;
    let m = d.get("migration")?;
    Some((m.get("processed_bytes")?.as_u64()?, m.get("remaining_bytes")?.as_u64()?))
}

/// Percent done, 0 to 100.
pub fn percent(processed: u64, remaining: u64) -> u64 {
    let total = processed.saturating_add(remaining).max(1);
    processed.min(total) * 100 / total
}

/// One progress line: the bar, percent and MiB moved of the current estimate.
pub fn line(domain: &str, processed: u64, remaining: u64) -> String {
    let pct = percent(processed, remaining);
    let filled = usize::try_from(pct).unwrap_or(100) * WIDTH / 100;
    format!(
        "{domain}: [{}{}] {pct:>3}%  {}/{} MiB",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        processed >> 20,
        processed.saturating_add(remaining) >> 20
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn the_bar_reads_at_a_glance() {
        assert_eq!(
            line("vm1", 32 << 20, 32 << 20),
            "vm1: [###############---------------]  50%  32/64 MiB"
        );
        assert_eq!(line("vm1", 0, 0), "vm1: [------------------------------]   0%  0/0 MiB");
        assert!(line("vm1", 64 << 20, 0).contains("100%  64/64 MiB"));
    }

    #[test]
    fn progress_comes_from_the_domain_in_the_status() {
        let v = json!({"domains": [
            {"name": "vm0", "migration": null},
            {"name": "vm1", "migration": {"processed_bytes": 10, "remaining_bytes": 30}}
        ]});
        assert_eq!(of(&v, "vm1"), Some((10, 30)));
        assert_eq!(of(&v, "vm0"), None);
        assert_eq!(of(&v, "vm9"), None);
        assert_eq!(of(&json!({}), "vm1"), None);
        assert_eq!(percent(10, 30), 25);
    }
}
