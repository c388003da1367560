//! The `--explain` output: one line, a JSON array with one object per DRBD disk.
//!
//! ```text
//! [{"resource": "r0", "volume": 0, "source": "/dev/drbd/by-res/r0/0", "target": "vda"}]
//! ```
//!
//! `volume` is `null` when neither the path nor the DRBD configuration says. A
//! disk whose resource is not known has, instead of `resource`, `"minor": N`
//! (a `/dev/drbdN` path) or `"disk": "/dev/..."` (a by-disk path's backing
//! disk). `target` is `null` for a disk without `<target dev=>`. No DRBD disk: `[]`.
//! The separators are `", "` and `": "`, as in the example (and Python's `json.dumps`).

use crate::drbd::DrbdDisk;

fn string(s: &str) -> String {
    // serde_json escapes exactly what JSON requires; serialising a &str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| "null".to_owned())
}

fn opt_string(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_owned(), string)
}

fn opt_number(n: Option<u32>) -> String {
    n.map_or_else(|| "null".to_owned(), |n| n.to_string())
}

/// One disk as a JSON object.
pub fn disk_json(d: &DrbdDisk) -> String {
    let head = match (&d.resource, d.minor, &d.lower_disk) {
        (Some(r), _, _) => format!("\"resource\": {}", string(&r.0)),
        (None, Some(m), _) => format!("\"minor\": {m}"),
        (None, None, Some(disk)) => format!("\"disk\": {}", string(disk)),
        (None, None, None) => "\"resource\": null".to_owned(),
    };
    format!(
        "{{{head}, \"volume\": {}, \"source\": {}, \"target\": {}}}",
        opt_number(d.volume),
        string(&d.source),
        opt_string(d.target.as_deref())
    )
}

/// The whole array, without a trailing newline.
pub fn to_json(disks: &[DrbdDisk]) -> String {
    let items: Vec<String> = disks.iter().map(disk_json).collect();
    format!("[{}]", items.join(", "))
}
