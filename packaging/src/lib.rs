//! The packaging of tandem: no code, only the metadata in this crate's
//! Cargo.toml (`[package.metadata.deb]` for cargo-deb, and
//! `[package.metadata.generate-rpm]` for cargo-generate-rpm), the systemd
//! unit, the D-Bus policy, the maintainer scripts and the man page beside it.
//! docs/packaging.md explains the layout; `make deb`, `make rpm` build the
//! packages and scripts/package-test.sh installs and removes the .deb.
//!
//! The tests below keep the metadata honest: every binary of the workspace is
//! either packaged or listed as not shipped (the stand-ins and test tools), the
//! two package formats install the same files, and every file named exists.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// Binaries that are never packaged, and why.
    const NOT_SHIPPED: &[(&str, &str)] = &[
        ("drbdadm", "DRBD stand-in (standins/drbd): tests only"),
        ("drbdsetup", "DRBD stand-in (standins/drbd): tests only"),
        ("drbdmeta", "DRBD stand-in (standins/drbd): tests only"),
        ("tandem-drbd-standin", "DRBD stand-in (standins/drbd): tests only"),
        ("tandem-xenstore-standin", "xenstore stand-in: tests only"),
        ("tandem-xapi-standin", "XenAPI stand-in: tests only"),
        ("tandem-sim", "the simulator: a development tool"),
        ("tandem-lab", "make lab: a demonstration on one machine"),
        ("tandem-inject", "test harness"),
        ("bench-failover", "benchmark"),
        ("bench-failover-fence", "benchmark"),
        ("bench-migrate", "benchmark"),
        ("bench-peer-link", "benchmark"),
        ("bench-status", "benchmark"),
    ];

    fn crate_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn manifest() -> toml::Table {
        let text = std::fs::read_to_string(crate_dir().join("Cargo.toml")).unwrap();
        text.parse().unwrap()
    }

    fn metadata<'a>(m: &'a toml::Table, key: &str) -> &'a toml::Table {
        m["package"]["metadata"][key].as_table().unwrap()
    }

    /// (source, dest without leading '/', mode) of the deb assets.
    fn deb_assets(m: &toml::Table) -> Vec<(String, String, String)> {
        metadata(m, "deb")["assets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let a = a.as_array().unwrap();
                let s = |i: usize| a[i].as_str().unwrap().to_owned();
                (s(0), s(1), s(2))
            })
            .collect()
    }

    fn rpm_assets(m: &toml::Table) -> Vec<(String, String, String)> {
        metadata(m, "generate-rpm")["assets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let s = |k: &str| a[k].as_str().unwrap().to_owned();
                (s("source"), s("dest").trim_start_matches('/').to_owned(), s("mode"))
            })
            .collect()
    }

    /// The workspace's binaries, from `cargo metadata`.
    fn workspace_bins() -> BTreeSet<String> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
            .current_dir(crate_dir())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut bins = BTreeSet::new();
        for p in v["packages"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                if t["kind"].as_array().unwrap().iter().any(|k| k == "bin") {
                    bins.insert(t["name"].as_str().unwrap().to_owned());
                }
            }
        }
        bins
    }

    fn packaged_bins(assets: &[(String, String, String)]) -> BTreeSet<String> {
        assets
            .iter()
            .filter_map(|(src, _, _)| src.strip_prefix("target/release/"))
            .filter(|b| !b.contains('/'))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_binary_is_packaged_or_listed_as_not_shipped() {
        let m = manifest();
        let packaged = packaged_bins(&deb_assets(&m));
        let not_shipped: BTreeSet<String> = NOT_SHIPPED.iter().map(|(b, _)| (*b).to_owned()).collect();
        assert!(
            packaged.is_disjoint(&not_shipped),
            "a stand-in or test tool is packaged"
        );
        let all = workspace_bins();
        let decided: BTreeSet<String> = packaged.union(&not_shipped).cloned().collect();
        let undecided: Vec<&String> = all.difference(&decided).collect();
        assert!(
            undecided.is_empty(),
            "binaries neither packaged (packaging/Cargo.toml) nor listed in NOT_SHIPPED (packaging/src/lib.rs): {undecided:?}"
        );
        let gone: Vec<&String> = decided.difference(&all).collect();
        assert!(gone.is_empty(), "packaged or listed, but no such binary: {gone:?}");
        assert_eq!(
            packaged_bins(&rpm_assets(&m)),
            packaged,
            "the .deb and the .rpm ship other binaries"
        );
    }

    #[test]
    fn deb_and_rpm_install_the_same_files() {
        let m = manifest();
        // Where the two families differ on purpose.
        let rpm_only: BTreeMap<&str, &str> = [
            ("etc/sysconfig/tandemd", "etc/default/tandemd"),
            (
                "usr/share/zsh/site-functions/_tandemctl",
                "usr/share/zsh/vendor-completions/_tandemctl",
            ),
        ]
        .into_iter()
        .collect();
        let deb: BTreeSet<(String, String, String)> = deb_assets(&m).into_iter().collect();
        let mut rpm = BTreeSet::new();
        for (src, dest, mode) in rpm_assets(&m) {
            // cargo-deb installs these itself, from systemd-units.
            if src.starts_with("systemd/") {
                continue;
            }
            let dest = rpm_only.get(dest.as_str()).map_or(dest.clone(), |d| (*d).to_owned());
            rpm.insert((src, dest, mode));
        }
        assert_eq!(deb, rpm);
    }

    #[test]
    fn every_named_file_exists() {
        let m = manifest();
        let dir = crate_dir();
        for (src, _, _) in deb_assets(&m).into_iter().chain(rpm_assets(&m)) {
            if src.starts_with("target/") {
                continue;
            }
            assert!(dir.join(&src).is_file(), "{src} is missing");
        }
        let deb = metadata(&m, "deb");
        let scripts = dir.join(deb["maintainer-scripts"].as_str().unwrap());
        for s in ["postinst", "prerm", "postrm"] {
            let text = std::fs::read_to_string(scripts.join(s)).unwrap();
            assert!(text.contains("#DEBHELPER#"), "{s} lacks #DEBHELPER#");
            assert!(text.starts_with("#!/bin/sh\n"), "{s}");
            assert!(is_executable(&scripts.join(s)), "{s} is not executable");
        }
        let rpm = metadata(&m, "generate-rpm");
        for k in ["post_install_script", "pre_uninstall_script", "post_uninstall_script"] {
            assert!(dir.join(rpm[k].as_str().unwrap()).is_file(), "{k}");
        }
        let units = dir.join(deb["systemd-units"]["unit-scripts"].as_str().unwrap());
        assert!(units.join("tandemd.service").is_file());
        assert!(units.join("tandemd.tmpfile").is_file());
    }

    fn is_executable(p: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .map(|m| m.permissions().mode() & 0o111 == 0o111)
            .unwrap_or(false)
    }

    #[test]
    fn the_unit_runs_the_packaged_daemon_with_notify_watchdog_and_reload() {
        let m = manifest();
        let unit = std::fs::read_to_string(crate_dir().join("systemd/tandemd.service")).unwrap();
        let keys: Vec<(&str, &str)> = unit
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .collect();
        let get = |k: &str| keys.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        assert_eq!(get("Type"), Some("notify"));
        assert_eq!(get("NotifyAccess"), Some("main"));
        assert!(get("WatchdogSec").is_some());
        assert_eq!(get("ExecReload"), Some("/bin/kill -HUP $MAINPID"));
        let exec = get("ExecStart").unwrap();
        let daemon = deb_assets(&m)
            .into_iter()
            .find(|(src, _, _)| src == "target/release/tandemd")
            .map(|(_, dest, _)| format!("/{dest}"))
            .unwrap();
        assert!(exec.starts_with(&format!("{daemon} ")), "{exec}");
        // The tmpfiles snippet and the unit agree on the directories.
        let tmp = std::fs::read_to_string(crate_dir().join("systemd/tandemd.tmpfile")).unwrap();
        let tmp = tmp.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(exec.contains("--state-dir /var/lib/tandem") && tmp.contains("/var/lib/tandem 0700"));
        assert!(exec.contains("/run/tandem/") && tmp.contains("/run/tandem "));
    }
}
