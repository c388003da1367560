//! `drbdsetup events2`: the current state as `exists` lines and `exists -`,
//! then (without `--now`) every change as it happens, found by polling the
//! state file, printed the way drbd-utils 9.22 prints them: only the changed
//! fields (`--full`: all), `create`/`destroy` for objects that appear or go,
//! `call helper`/`response helper` around fence-peer handler runs.
//!
//! Each follower registers as `events2/<node>-<pid>` in the state directory so
//! `tandem-drbd-standin kill-events2` can end it (a test of the daemon's
//! restart); it exits on its own when the state directory disappears.

use crate::render::{objects, Object};
use crate::state::{self, HelperRecord, State};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub now: bool,
    pub statistics: bool,
    pub full: bool,
    pub timestamps: bool,
}

const POLL: Duration = Duration::from_millis(5);
const GONE_AFTER: Duration = Duration::from_secs(2);

fn stamp(flags: &Flags) -> String {
    if !flags.timestamps {
        return String::new();
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    // UTC, in drbdsetup's layout: 2024-01-02T03:04:05.123456+00:00.
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}+00:00 ",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn helper_line(st: &State, h: &HelperRecord) -> Option<String> {
    let res = st.resources.get(&h.resource)?;
    let peer = 1 - h.node;
    let mut l = format!(
        "{} helper name:{} peer-node-id:{peer} conn-name:{} helper:{}",
        if h.status.is_some() { "response" } else { "call" },
        h.resource,
        res.config.hosts[peer],
        h.helper
    );
    if let Some(s) = h.status {
        l.push_str(&format!(" status:{s}"));
    }
    Some(l)
}

pub fn events2(dir: &Path, node: usize, only: Option<&str>, flags: &Flags) -> i32 {
    // Which version of the file the dump comes from, taken before reading it:
    // a change that lands in between is then seen as a change.
    let mut seen_mtime = mtime(dir);
    let Some(mut st) = state::read(dir).ok().flatten() else {
        eprintln!("{}: no stand-in state (run tandem-drbd-standin init)", dir.display());
        return 20;
    };
    // Registered before the first line, so whoever saw a line can find it.
    let registration = if flags.now { None } else { register(dir, node) };
    let mut out = std::io::stdout().lock();
    let mut text = String::new();
    let mut last = objects(&st, node, only);
    for o in &last {
        if let Some(l) = o.line("exists", None, true, flags.statistics) {
            text.push_str(&stamp(flags));
            text.push_str(&l);
            text.push('\n');
        }
    }
    text.push_str(&stamp(flags));
    text.push_str("exists -\n");
    let written = out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_ok();
    if flags.now || !written {
        if let Some(p) = registration {
            let _ = std::fs::remove_file(p);
        }
        return 0;
    }
    let mut helpers_seen = st.helpers.last().map_or(0, |h| h.seq);
    let mut missing_since: Option<Instant> = None;
    let code = loop {
        std::thread::sleep(POLL);
        let m = mtime(dir);
        if m.is_none() {
            let since = *missing_since.get_or_insert_with(Instant::now);
            if since.elapsed() > GONE_AFTER {
                break 0;
            }
            continue;
        }
        missing_since = None;
        if m == seen_mtime {
            continue;
        }
        seen_mtime = m;
        let Ok(Some(new)) = state::read(dir) else { continue };
        if new.seq == st.seq {
            continue;
        }
        let objs = objects(&new, node, only);
        let mut text = String::new();
        let mine: Vec<&HelperRecord> = new
            .helpers
            .iter()
            .filter(|h| h.seq > helpers_seen && h.node == node && only.is_none_or_eq(&h.resource))
            .collect();
        // A handler's response comes before the state change it causes, its
        // call after the change that caused it.
        for h in mine.iter().filter(|h| h.status.is_some()) {
            if let Some(l) = helper_line(&new, h) {
                text.push_str(&format!("{}{l}\n", stamp(flags)));
            }
        }
        for l in diff(&last, &objs, flags) {
            text.push_str(&format!("{}{l}\n", stamp(flags)));
        }
        for h in mine.iter().filter(|h| h.status.is_none()) {
            if let Some(l) = helper_line(&new, h) {
                text.push_str(&format!("{}{l}\n", stamp(flags)));
            }
        }
        helpers_seen = new.helpers.last().map_or(helpers_seen, |h| h.seq.max(helpers_seen));
        last = objs;
        st = new;
        if !text.is_empty() && out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_err() {
            break 0;
        }
    };
    if let Some(p) = registration {
        let _ = std::fs::remove_file(p);
    }
    code
}

trait OptEq {
    fn is_none_or_eq(&self, v: &str) -> bool;
}

impl OptEq for Option<&str> {
    fn is_none_or_eq(&self, v: &str) -> bool {
        match self {
            None => true,
            Some(o) => *o == v,
        }
    }
}

/// Lines for the objects that appeared, changed or went, in drbdsetup's order.
fn diff(old: &[Object], new: &[Object], flags: &Flags) -> Vec<String> {
    let before: BTreeMap<String, &Object> = old.iter().map(|o| (o.key(), o)).collect();
    let after: BTreeMap<String, &Object> = new.iter().map(|o| (o.key(), o)).collect();
    let mut lines = Vec::new();
    for o in new {
        let line = match before.get(&o.key()) {
            Some(prev) => o.line("change", Some(prev), flags.full, flags.statistics),
            None => o.line("create", None, true, flags.statistics),
        };
        lines.extend(line);
    }
    for o in old.iter().rev() {
        if !after.contains_key(&o.key()) {
            let ids: Vec<String> = o.ids.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            lines.push(format!("destroy {} {}", o.kind, ids.join(" ")));
        }
    }
    lines
}

/// Identifies one version of state.json. Every commit renames a new file over
/// it, created while the old one still exists, so the inode always differs
/// (mtime alone is jiffy-coarse and could repeat).
fn mtime(dir: &Path) -> Option<(u64, SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir.join("state.json")).ok()?;
    Some((m.ino(), m.modified().ok()?, m.len()))
}

fn register(dir: &Path, node: usize) -> Option<PathBuf> {
    let d = dir.join("events2");
    std::fs::create_dir_all(&d).ok()?;
    let p = d.join(format!("{node}-{}", std::process::id()));
    std::fs::write(&p, b"").ok()?;
    Some(p)
}

/// Ends the registered events2 followers (of one node, or all).
pub fn kill_followers(dir: &Path, node: Option<usize>) -> usize {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let Ok(entries) = std::fs::read_dir(dir.join("events2")) else {
        return 0;
    };
    let mut killed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((n, pid)) = name.split_once('-') else { continue };
        if node.is_some_and(|want| n != want.to_string()) {
            continue;
        }
        let Ok(pid) = pid.parse::<i32>() else { continue };
        // Only a process that still is an events2 follower: pids get reused.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let is_follower = String::from_utf8_lossy(&cmdline).contains("events2");
        if is_follower && kill(Pid::from_raw(pid), Signal::SIGTERM).is_ok() {
            killed += 1;
        }
        let _ = std::fs::remove_file(e.path());
    }
    killed
}
