//! `tandemd` as systemd runs it: a notification socket the test binds
//! (`NOTIFY_SOCKET`), `WATCHDOG_USEC`, stderr as the journal stream
//! (`JOURNAL_STREAM`), and SIGHUP reloads. One daemon on the loopback (its
//! peer never answers), with a private system bus started late, so that
//! readiness can be seen waiting for the D-Bus name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_tests::bus::SystemBus;
use tandem_tests::daemon::{random_key, write_authkey};
use tandem_tests::{read_status, tandemd_bin, wait_for};

/// Every datagram the daemon sent, with when it arrived.
#[derive(Clone, Default)]
struct Notifications(Arc<Mutex<Vec<(Instant, String)>>>);

impl Notifications {
    /// Receives on `socket` in a thread until the socket's owner is gone.
    fn listen(socket: UnixDatagram) -> Notifications {
        let n = Notifications::default();
        let all = n.0.clone();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while Arc::strong_count(&all) > 1 {
                if let Ok(len) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                    all.lock().unwrap().push((Instant::now(), text));
                }
            }
        });
        n
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.0.lock().unwrap().clone()
    }

    /// Messages with a line equal to `line` (e.g. `READY=1`).
    fn with_line(&self, line: &str) -> Vec<(Instant, String)> {
        self.all()
            .into_iter()
            .filter(|(_, m)| m.lines().any(|l| l == line))
            .collect()
    }

    /// Waits for the `n`th message (from 1) with `line`; returns it.
    fn wait_line(&self, line: &str, n: usize, timeout: Duration) -> String {
        let got = wait_for(timeout, Duration::from_millis(20), || self.with_line(line).len() >= n);
        assert!(got.is_ok(), "no {line} #{n} within {timeout:?}; got {:?}", self.texts());
        self.with_line(line)[n - 1].1.clone()
    }

    fn texts(&self) -> Vec<String> {
        self.all().into_iter().map(|(_, m)| m).collect()
    }
}

/// The daemon, stopped (SIGTERM, then SIGKILL) by its pid on drop.
struct Tandemd {
    child: Child,
    stderr: PathBuf,
}

impl Tandemd {
    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Tandemd {
    fn drop(&mut self) {
        if self.running() {
            let _ = kill(self.pid(), Signal::SIGTERM);
            let end = Instant::now() + Duration::from_secs(3);
            while self.running() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- tandemd stderr:\n{}\n---", self.stderr());
        }
    }
}

/// A free port on 127.0.0.1 for both TCP and UDP (checked, then released).
fn free_port(not: u16) -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if port != not && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

struct Setup {
    key: PathBuf,
    hb: u16,
    ctl: u16,
}

impl Setup {
    /// `dead_after_ms` and beta's address are what the reloads change.
    fn config(&self, dead_after_ms: u64, beta: &str) -> String {
        format!(
            "[cluster]\nname = \"systemd-test\"\nauthkey = {:?}\npreferred = \"alpha\"\n\
             heartbeat_port = {}\ncontrol_port = {}\n\n\
             [timing]\ndead_after_ms = {dead_after_ms}\n\n\
             [node.alpha]\naddresses = [\"127.0.0.1\"]\nfence = []\n\n\
             [node.beta]\naddresses = [\"{beta}\"]\nfence = []\n\n\
             [drbd]\nresources = [\"r0\"]\n\n[hypervisor]\nkind = \"none\"\n",
            self.key.to_str().unwrap(),
            self.hb,
            self.ctl
        )
    }
}

fn name_owned(bus_address: &str) -> bool {
    let out = Command::new("dbus-send")
        .arg(format!("--bus={bus_address}"))
        .args([
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.NameHasOwner",
            "string:org.tandem.Tandem1",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("boolean true")
}

fn status(path: &Path) -> Value {
    read_status(path).unwrap()
}

/// The log line that contains `needle`.
fn log_line(stderr: &str, needle: &str) -> String {
    stderr
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no log line with {needle:?} in:\n{stderr}"))
        .to_owned()
}

#[test]
fn tandemd_tells_systemd_ready_watchdog_reload_and_stop() {
    let dir = tempfile::Builder::new().prefix("tandem-systemd-").tempdir().unwrap();
    let d = dir.path();
    let key = d.join("authkey");
    write_authkey(&key, &random_key(64), 0o600).unwrap();
    let hb = free_port(0);
    let setup = Setup {
        key,
        hb,
        ctl: free_port(hb),
    };
    let config = d.join("tandem.toml");
    std::fs::write(&config, setup.config(1000, "127.0.0.2")).unwrap();

    let notify_path = d.join("notify");
    let notes = Notifications::listen(UnixDatagram::bind(&notify_path).unwrap());
    // The bus's address is known before it runs: tandemd starts first and
    // must not report ready while it cannot own its name.
    let bus_dir = d.join("bus");
    let bus_address = format!("unix:path={}", bus_dir.join("system_bus_socket").display());

    let stderr_path = d.join("tandemd.stderr");
    let stderr = File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let status_file = d.join("status.json");
    let mut command = Command::new(tandemd_bin().unwrap());
    command
        .arg("--config")
        .arg(&config)
        .args(["--node", "alpha", "--dbus", "system"])
        .arg("--status-file")
        .arg(&status_file)
        .arg("--state-dir")
        .arg(d.join("state"))
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus_address)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("TANDEM_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let started = Instant::now();
    let mut daemon = Tandemd {
        child: command.spawn().unwrap(),
        stderr: stderr_path,
    };

    // Starting: the peer link is up, the bus is not there.
    let first = notes.wait_line(
        "STATUS=starting: waiting to own org.tandem.Tandem1 on the D-Bus system bus",
        1,
        Duration::from_secs(10),
    );
    assert!(!first.contains("READY=1"), "{first}");
    // Keep-alives come from the event loop, every 200 ms (half of 400 ms),
    // also while it waits for the bus.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        notes.with_line("READY=1").is_empty(),
        "ready without the bus: {:?}",
        notes.texts()
    );
    let beats = notes.with_line("WATCHDOG=1");
    assert!(
        beats.len() >= 5,
        "{} keep-alives in {:?}",
        beats.len(),
        started.elapsed()
    );
    assert!(daemon.running());

    // The bus comes: READY=1 once the name is owned (tandemd retries within 2 s).
    let bus = SystemBus::start(&bus_dir).unwrap();
    let ready = notes.wait_line("READY=1", 1, Duration::from_secs(15));
    assert!(name_owned(bus.address()), "READY=1 before org.tandem.Tandem1 was owned");
    assert!(ready.contains("STATUS=running"), "{ready}");
    let before = notes.with_line("WATCHDOG=1").len();
    std::thread::sleep(Duration::from_millis(1000));
    let after = notes.with_line("WATCHDOG=1").len();
    assert!(
        after - before >= 3,
        "keep-alives stopped after READY: {before} then {after}"
    );
    let spacing: Vec<u128> = notes
        .with_line("WATCHDOG=1")
        .windows(2)
        .map(|w| w[1].0.duration_since(w[0].0).as_millis())
        .collect();
    assert!(
        spacing.iter().all(|&ms| ms < 800),
        "a keep-alive came late: {spacing:?}"
    );

    // The status file shows the running configuration.
    let v = status(&status_file);
    assert_eq!(v["config"]["timing"]["dead_after_ms"], 1000);
    assert_eq!(v["config"]["reloads"], 0);

    // SIGHUP with another dead_after_ms: applied.
    std::fs::write(&config, setup.config(1500, "127.0.0.2")).unwrap();
    kill(daemon.pid(), Signal::SIGHUP).unwrap();
    let reloading = notes.wait_line("RELOADING=1", 1, Duration::from_secs(5));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let ready = notes.wait_line("READY=1", 2, Duration::from_secs(5));
    assert!(
        ready.contains("STATUS=configuration reloaded: timing.dead_after_ms"),
        "{ready}"
    );
    let applied = wait_for(Duration::from_secs(2), Duration::from_millis(20), || {
        let v = status(&status_file);
        v["config"]["timing"]["dead_after_ms"] == 1500 && v["config"]["last_reload"]["result"] == "applied"
    });
    assert!(applied.is_ok(), "{}", status(&status_file)["config"]);
    let line = log_line(&daemon.stderr(), "configuration change applied");
    assert!(line.starts_with("<6>"), "not a journal line: {line}");
    assert!(line.contains("timing.dead_after_ms") && line.contains("1500"), "{line}");

    // SIGHUP with beta's address changed (and dead_after_ms again): refused
    // whole, the field named, the running configuration kept, still running.
    std::fs::write(&config, setup.config(2000, "127.0.0.3")).unwrap();
    kill(daemon.pid(), Signal::SIGHUP).unwrap();
    notes.wait_line("RELOADING=1", 2, Duration::from_secs(5));
    let ready = notes.wait_line("READY=1", 3, Duration::from_secs(5));
    assert!(ready.contains("reload refused"), "{ready}");
    assert!(ready.contains("node.beta.addresses"), "{ready}");
    let refused = wait_for(Duration::from_secs(2), Duration::from_millis(20), || {
        status(&status_file)["config"]["last_reload"]["result"] == "refused"
    });
    assert!(refused.is_ok(), "{}", status(&status_file)["config"]);
    let v = status(&status_file);
    assert_eq!(v["config"]["last_reload"]["refused"][0]["field"], "node.beta.addresses");
    assert!(v["config"]["last_reload"]["refused"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("restart"));
    assert_eq!(
        v["config"]["timing"]["dead_after_ms"], 1500,
        "a refused reload changed the timing"
    );
    assert_eq!(v["config"]["reloads"], 2);
    let line = log_line(&daemon.stderr(), "reload refused: this change needs a restart");
    assert!(line.starts_with("<4>"), "not a journal warning: {line}");
    assert!(
        line.contains("node.beta.addresses") && line.contains("peer link"),
        "{line}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(daemon.running(), "tandemd exited after a refused reload");
    let t0 = status(&status_file)["unix_ms"].as_u64().unwrap();
    let fresh = wait_for(Duration::from_secs(2), Duration::from_millis(50), || {
        status(&status_file)["unix_ms"].as_u64().unwrap() > t0
    });
    assert!(fresh.is_ok(), "the status file is no longer updated");
    assert!(name_owned(bus.address()));

    // SIGTERM: STOPPING=1, then a clean exit.
    kill(daemon.pid(), Signal::SIGTERM).unwrap();
    notes.wait_line("STOPPING=1", 1, Duration::from_secs(5));
    let exited = wait_for(Duration::from_secs(5), Duration::from_millis(20), || !daemon.running());
    assert!(exited.is_ok(), "tandemd did not stop");
    let code = daemon.child.wait().unwrap();
    assert!(code.success(), "{code}");
    drop(bus);
}
