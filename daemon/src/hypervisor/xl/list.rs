//! What `xl list` says runs here, and the disks `xl list -l` gives for a
//! running domain that has no configuration file tandem can read.
//!
//! `xl list` prints `Name ID Mem VCPUs State Time(s)`; the state is six flags
//! `rbpscd` (running, blocked, paused, shutdown, crashed, dying), `-` when
//! off. A domain xl is receiving is named `NAME--incoming` and paused until
//! the migration ends; the source is renamed `NAME--migratedaway` at the end:
//! both are `NAME`, paused, to the core, as libvirt's incoming domains are.

use super::disk::DiskSpec;
use crate::core::{DomainName, DomainRun};
use std::collections::BTreeMap;
use tandem_hooks::xen::{INCOMING_SUFFIX, MIGRATED_AWAY_SUFFIX};
use tandem_hooks::DomainInfo;

/// The domains of `xl list`'s output, Domain-0 left out, each under its own
/// name (migration suffixes removed); a domain listed twice that way runs if
/// either runs. `admitted(domid)` says whether a `NAME--incoming` domain
/// counts yet: one that does not is left out.
///
/// Why: xl creates the receiving domain before its disks' hotplug scripts
/// ask tandem to open the migration window, and the core refuses a window
/// for a domain it sees on this host already. Left out until a disk is
/// connected (tandem said yes), the receiving domain looks to the core as the
/// destination of a libvirt migration does: nothing until the window opens.
/// Until then it holds no DRBD device here, so a failover start of the same
/// domain meanwhile uses no disk twice (its own hotplug is then refused).
pub fn parse_list(output: &str, admitted: impl Fn(u32) -> bool) -> Result<Vec<(DomainName, DomainRun)>, String> {
    let mut out: BTreeMap<String, DomainRun> = BTreeMap::new();
    for line in output.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || fields[0] == "Name" {
            continue;
        }
        if fields.len() < 6 {
            return Err(format!("unexpected line in xl list's output: {line:?}"));
        }
        // Names may hold spaces: the last five columns are fixed.
        let (name_parts, cols) = fields.split_at(fields.len() - 5);
        let name = name_parts.join(" ");
        let id = cols[0];
        if !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("unexpected domain id {id:?} in xl list's output: {line:?}"));
        }
        if id == "0" {
            continue;
        }
        let (base, migrating) = base_name(&name);
        if name.ends_with(INCOMING_SUFFIX) && !admitted(id.parse().unwrap_or(0)) {
            continue;
        }
        let run = if migrating { DomainRun::Paused } else { run_of(cols[3])? };
        let entry = out.entry(base.to_owned()).or_insert(run);
        if run == DomainRun::Running {
            *entry = DomainRun::Running;
        }
    }
    Ok(out.into_iter().map(|(n, r)| (DomainName(n), r)).collect())
}

/// The domain's own name, and whether xl's name says it is in a migration.
pub fn base_name(name: &str) -> (&str, bool) {
    match name
        .strip_suffix(INCOMING_SUFFIX)
        .or_else(|| name.strip_suffix(MIGRATED_AWAY_SUFFIX))
    {
        Some(base) if !base.is_empty() => (base, true),
        _ => (name, false),
    }
}

/// A domain that is shut down, crashed or dying is no longer running, but
/// still holds its disks until xl destroys it: paused, so the core neither
/// counts it as running nor as gone.
fn run_of(flags: &str) -> Result<DomainRun, String> {
    if flags.len() != 6 || !flags.chars().zip("rbpscd".chars()).all(|(c, f)| c == f || c == '-') {
        return Err(format!("unexpected state {flags:?} in xl list's output"));
    }
    let has = |c: char| flags.contains(c);
    Ok(if has('p') || has('s') || has('c') || has('d') {
        DomainRun::Paused
    } else {
        DomainRun::Running
    })
}

/// The name and disks of `xl list -l NAME`'s JSON (libxl's domain config):
/// `[{"config": {"c_info": {"name": ..}, "disks": [{"pdev_path", "vdev",
/// "script"}]}}]`. The result reads as a configuration file's would.
pub fn domain_of_json(json: &str) -> Result<DomainInfo, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("xl list -l printed no JSON: {e}"))?;
    let first = match &v {
        serde_json::Value::Array(a) => a.first().ok_or("xl list -l printed no domain")?,
        other => other,
    };
    let config = first.get("config").ok_or("xl list -l's JSON has no config")?;
    let name = config
        .pointer("/c_info/name")
        .and_then(|n| n.as_str())
        .ok_or("xl list -l's JSON has no c_info.name")?;
    let mut disks = Vec::new();
    for d in config.get("disks").and_then(|d| d.as_array()).into_iter().flatten() {
        let field = |k: &str| d.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let spec = DiskSpec {
            target: field("pdev_path"),
            vdev: field("vdev"),
            script: field("script"),
            format: field("format"),
        };
        disks.push(spec.to_disk()?);
    }
    Ok(DomainInfo {
        name: Some(base_name(name).0.to_owned()),
        uuid: None,
        disks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "Name                                        ID   Mem VCPUs\tState\tTime(s)\n\
        Domain-0                                     0   512     1     r-----      21.4\n\
        g1                                           3   128     1     -b----       1.2\n\
        g2--incoming                                 4   128     1     --p---       0.0\n\
        web server                                   5   256     2     r-----       3.0\n\
        old                                          6   128     1     ---s--       9.9\n";

    #[test]
    fn reads_the_table() {
        let l = parse_list(LIST, |_| true).unwrap();
        assert!(parse_list(LIST, |id| id != 4).unwrap().iter().all(|(d, _)| d.0 != "g2"));
        let get = |n: &str| l.iter().find(|(d, _)| d.0 == n).map(|(_, r)| *r);
        assert_eq!(get("Domain-0"), None);
        assert_eq!(get("g1"), Some(DomainRun::Running));
        assert_eq!(get("g2"), Some(DomainRun::Paused));
        assert_eq!(get("web server"), Some(DomainRun::Running));
        assert_eq!(get("old"), Some(DomainRun::Paused));
        assert_eq!(l.len(), 4);
    }

    #[test]
    fn the_running_copy_wins_a_name_listed_twice() {
        let l = parse_list("g1--migratedaway 3 128 1 --p--- 1.0\ng1 4 128 1 -b---- 0.1\n", |_| {
            false
        })
        .unwrap();
        assert_eq!(l, vec![(DomainName("g1".into()), DomainRun::Running)]);
    }

    #[test]
    fn odd_output_is_an_error_naming_the_line() {
        assert!(parse_list("g1 3 128\n", |_| true).unwrap_err().contains("g1 3 128"));
        assert!(parse_list("g1 x 128 1 r----- 1.0\n", |_| true)
            .unwrap_err()
            .contains("domain id"));
        assert!(parse_list("g1 3 128 1 running 1.0\n", |_| true)
            .unwrap_err()
            .contains("state"));
        assert_eq!(parse_list("", |_| true).unwrap(), vec![]);
    }

    #[test]
    fn reads_xl_list_long() {
        let json = r#"[{"domid": 3, "config": {"c_info": {"type": "pvh", "name": "g1--incoming"},
            "disks": [{"pdev_path": "r0", "vdev": "xvda", "backend": "phy", "format": "raw",
                       "script": "block-drbd", "readwrite": 1},
                      {"pdev_path": "/dev/vg/swap", "vdev": "xvdb", "backend": "phy", "readwrite": 1}]}}]"#;
        let info = domain_of_json(json).unwrap();
        assert_eq!(info.name.as_deref(), Some("g1"));
        let devs: Vec<_> = info
            .disks
            .iter()
            .map(|d| d.source.as_ref().and_then(|s| s.dev.clone()))
            .collect();
        assert_eq!(
            devs,
            [Some("/dev/drbd/by-res/r0".to_owned()), Some("/dev/vg/swap".to_owned())]
        );
        assert!(domain_of_json("[]").unwrap_err().contains("no domain"));
        assert!(domain_of_json("not json").unwrap_err().contains("no JSON"));
        assert!(domain_of_json(r#"[{"config": {}}]"#)
            .unwrap_err()
            .contains("c_info.name"));
    }
}
