//! Xen's own notices of domains coming and going, as a wake-up for the
//! watcher: one `xenstore-watch` child per path (`@introduceDomain`,
//! `@releaseDomain`, and `/local/domain`, which sees renames such as xl's
//! `NAME--incoming` becoming `NAME`). Every line a child prints wakes the
//! watcher, which then lists the domains; nothing is read from the lines, so
//! a missed or doubled notice costs one list, never a wrong state.
//!
//! A child that exits (xenstored restarted) is started again after a pause
//! that grows to 30 s; children are killed when the [`XenstoreWatch`] drops.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// The paths watched: a domain created or destroyed, and any change under
/// the domains' own trees.
pub const PATHS: [&str; 3] = ["@introduceDomain", "@releaseDomain", "/local/domain"];

/// The watch children, alive while this lives.
#[derive(Debug)]
pub struct XenstoreWatch {
    tasks: Vec<JoinHandle<()>>,
}

impl XenstoreWatch {
    /// Starts one `program PATH` per path; each line it prints notifies `wake`.
    /// Must be called inside a Tokio runtime.
    pub fn spawn(program: PathBuf, wake: Arc<Notify>) -> Self {
        let tasks = PATHS
            .iter()
            .map(|path| tokio::spawn(watch(program.clone(), (*path).to_owned(), wake.clone())))
            .collect();
        XenstoreWatch { tasks }
    }
}

impl Drop for XenstoreWatch {
    fn drop(&mut self) {
        // Each task owns its child with kill_on_drop: aborting kills it.
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn watch(program: PathBuf, path: String, wake: Arc<Notify>) {
    let mut pause = Duration::from_secs(1);
    let mut warned = false;
    loop {
        let spawned = tokio::process::Command::new(&program)
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        match spawned {
            Ok(mut child) => {
                let mut seen = false;
                if let Some(out) = child.stdout.take() {
                    let mut lines = tokio::io::BufReader::new(out).lines();
                    while let Ok(Some(_)) = lines.next_line().await {
                        if !seen {
                            debug!(%path, "xenstore watch set");
                            seen = true;
                            warned = false;
                            pause = Duration::from_secs(1);
                        }
                        wake.notify_one();
                    }
                }
                let status = child.wait().await;
                if !warned {
                    warn!(program = %program.display(), %path, ?status, "xenstore watch ended; the domain list is read every resync until it is back");
                    warned = true;
                }
            }
            Err(e) => {
                if !warned {
                    warn!(program = %program.display(), %path, error = %e, "cannot watch xenstore; the domain list is read every resync");
                    warned = true;
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
        // A notice may have been missed while no child ran.
        wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `xenstore-watch` stand-in: prints its path, as the real one does
    /// when the watch is set, notes its pid and waits.
    fn fake_watch(dir: &std::path::Path) -> PathBuf {
        let p = dir.join("xenstore-watch");
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\necho \"$1\"\necho $$ >> {}/pids\nexec sleep 600\n",
                dir.display()
            ),
        )
        .unwrap();
        std::process::Command::new("chmod").arg("+x").arg(&p).status().unwrap();
        p
    }

    #[tokio::test]
    async fn every_path_wakes_and_the_children_die_with_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let wake = Arc::new(Notify::new());
        let watch = XenstoreWatch::spawn(fake_watch(dir.path()), wake.clone());
        tokio::time::timeout(Duration::from_secs(20), wake.notified())
            .await
            .unwrap();
        let pids_file = dir.path().join("pids");
        let mut pids = Vec::new();
        for _ in 0..200 {
            pids = std::fs::read_to_string(&pids_file)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect();
            if pids.len() == PATHS.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(pids.len(), PATHS.len(), "one child per path");
        drop(watch);
        for pid in &pids {
            let pid = nix::unistd::Pid::from_raw(pid.parse().unwrap());
            let mut gone = false;
            for _ in 0..200 {
                // Killed and not yet reaped counts as gone.
                let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.rsplit(')').next().is_some_and(|t| t.trim_start().starts_with('Z')));
                if zombie || nix::sys::signal::kill(pid, None).is_err() {
                    gone = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(gone, "xenstore-watch {pid} outlived the watch");
        }
    }
}
