//! The commands that go through the running daemon's D-Bus API (the system bus,
//! or `DBUS_SYSTEM_BUS_ADDRESS`): what the daemon does has the same checks as
//! the hooks, and the daemon's own arbiter and history see it.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tandem_api::zbus;
use tandem_api::{ClusterProxy, Error as ApiError};

/// The one line for a daemon that cannot be reached or that refused.
fn explain(e: ApiError) -> anyhow::Error {
    if e.is_access_denied() {
        return anyhow!(
            "D-Bus denied access to tandemd: run tandemctl as root (members of group tandem may only read)"
        );
    }
    match e {
        ApiError::ZBus(ref z) if no_daemon(z) => {
            anyhow!("tandemd is not running on this host (nobody owns org.tandem.Tandem1 on the system bus); start it, or use --direct")
        }
        other => anyhow!("{}", other.reason()),
    }
}

/// Whether the bus said nobody owns tandem's name: a method call gets it as
/// a method error, a property read as a typed `org.freedesktop.DBus` error.
fn no_daemon(e: &zbus::Error) -> bool {
    match e {
        zbus::Error::MethodError(name, _, _) => {
            name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown"
                || name.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner"
        }
        zbus::Error::FDO(f) => matches!(
            **f,
            zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_)
        ),
        _ => false,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn cluster(timeout: Duration) -> Result<ClusterProxy<'static>> {
    let conn = tandem_api::connect(Some(timeout))
        .await
        .map_err(|e| anyhow!("cannot reach the system bus ({e}); is dbus running?"))?;
    ClusterProxy::new(&conn).await.map_err(|e| explain(ApiError::ZBus(e)))
}

/// `tandemctl fence NODE` (action off): the daemon fences its peer through its
/// fence levels; waits for the outcome in its fence history.
pub fn fence(node: &str, wait: Duration) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let c = cluster(wait).await?;
        let me = c.node().await.map_err(|e| explain(ApiError::ZBus(e)))?;
        let peer = c.peer().await.map_err(|e| explain(ApiError::ZBus(e)))?;
        if node == me {
            bail!("{node} is this host: a daemon does not fence its own host; run `tandemctl fence {node}` on {peer}, or use --direct");
        }
        if node != peer {
            bail!("no node {node:?} in this cluster (this host is {me}, its peer {peer})");
        }
        let before = c.fence_history().await.map_err(|e| explain(ApiError::ZBus(e)))?.len();
        c.fence().await.map_err(explain)?;
        let end = Instant::now() + wait;
        loop {
            let history = c.fence_history().await.map_err(|e| explain(ApiError::ZBus(e)))?;
            if let Some(r) = history.iter().skip(before).find(|r| r.node == peer && r.result == "off") {
                println!(
                    "{peer}: powered off, confirmed by fence level {} ({} {}, {} ms)",
                    r.level, r.kind, r.device, r.duration_ms
                );
                return Ok(ExitCode::SUCCESS);
            }
            if Instant::now() >= end {
                let tried: Vec<String> = history
                    .iter()
                    .skip(before)
                    .map(|r| format!("level {} {}: {}", r.level, r.kind, r.result))
                    .collect();
                bail!(
                    "{peer} was not confirmed off within {} s; tandemd keeps trying. Attempts: {}",
                    wait.as_secs(),
                    if tried.is_empty() { "none yet".to_string() } else { tried.join("; ") }
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// `tandemctl start DOMAIN`: the daemon checks, then libvirt starts it here.
pub fn start(domain: &str, wait: Duration) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let c = cluster(wait).await?;
        c.start(domain).await.map_err(explain)?;
        println!("{domain}: started");
        Ok(ExitCode::SUCCESS)
    })
}

/// `tandemctl stop DOMAIN [--force]`.
pub fn stop(domain: &str, force: bool, wait: Duration) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let c = cluster(wait).await?;
        c.stop(domain, force).await.map_err(explain)?;
        if force {
            println!("{domain}: stopped");
        } else {
            println!("{domain}: asked to shut down");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `tandemctl migrate DOMAIN`: the daemon live-migrates it to the peer and
/// answers when the migration ended.
pub fn migrate(domain: &str, wait: Duration) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let c = cluster(wait).await?;
        let started = Instant::now();
        let call = c.migrate(domain);
        tokio::pin!(call);
        let tty = std::io::stdout().is_terminal();
        let (mut drawn, mut last_tenth) = (false, None);
        let done = loop {
            tokio::select! {
                r = &mut call => break r,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    let Ok(v) = status_document(&c).await else { continue };
                    let Some((processed, remaining)) = crate::progress::of(&v, domain) else { continue };
                    let text = crate::progress::line(domain, processed, remaining);
                    if tty {
                        print!("\r{text}");
                        drawn = true;
                    } else {
                        let tenth = crate::progress::percent(processed, remaining) / 10;
                        if last_tenth != Some(tenth) {
                            println!("{text}");
                            last_tenth = Some(tenth);
                        }
                    }
                    let _ = std::io::stdout().flush();
                }
            }
        };
        if drawn {
            println!();
        }
        done.map_err(explain)?;
        println!("{domain}: migrated in {} ms", started.elapsed().as_millis());
        Ok(ExitCode::SUCCESS)
    })
}

/// The daemon's status document (`Cluster.StatusJson`).
async fn status_document(c: &ClusterProxy<'_>) -> Result<serde_json::Value> {
    let text = c.status_json().await.map_err(|e| explain(ApiError::ZBus(e)))?;
    serde_json::from_str(&text).map_err(|e| anyhow!("tandemd sent a status that is not JSON: {e}"))
}

/// `tandemctl status [--json] [--watch]`.
pub fn status(json: bool, watch: bool, interval: Duration) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let c = cluster(Duration::from_secs(10)).await?;
        loop {
            let v = status_document(&c).await?;
            let text = if json {
                serde_json::to_string_pretty(&v).context("cannot render the status")?
            } else {
                crate::status::render(&v)
            };
            if !watch {
                print!("{text}");
                if json {
                    println!();
                }
                return Ok(ExitCode::SUCCESS);
            }
            // Home and clear, then the screen: one redraw per refresh.
            print!("\x1b[H\x1b[2J{text}");
            if json {
                println!();
            }
            let _ = std::io::stdout().flush();
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            }
        }
    })
}

fn running_here(v: &serde_json::Value) -> Vec<String> {
    v.get("domains")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter(|d| d.get("here").and_then(serde_json::Value::as_str) == Some("running"))
        .filter_map(|d| d.get("name").and_then(serde_json::Value::as_str).map(str::to_owned))
        .collect()
}

/// `tandemctl standby on|off`: on drains this host and waits until no domain
/// runs here any more.
pub fn standby(on: bool, wait: Duration) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let c = cluster(wait).await?;
        let before = running_here(&status_document(&c).await?);
        c.standby(on).await.map_err(explain)?;
        if !on {
            println!("standby off: this host takes domains again (nothing moves back by itself)");
            return Ok(ExitCode::SUCCESS);
        }
        if before.is_empty() {
            println!("standby on: nothing runs here");
            return Ok(ExitCode::SUCCESS);
        }
        println!("standby on: migrating {} to the peer", before.join(", "));
        let end = Instant::now() + wait;
        loop {
            let left = running_here(&status_document(&c).await?);
            if left.is_empty() {
                println!("drained: {} left this host", before.join(", "));
                return Ok(ExitCode::SUCCESS);
            }
            if Instant::now() >= end {
                bail!(
                    "still running here after {} s: {} (see `tandemctl status`; standby stays on)",
                    wait.as_secs(),
                    left.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// `tandemctl cleanup`.
pub fn cleanup() -> Result<ExitCode> {
    runtime()?.block_on(async {
        let c = cluster(Duration::from_secs(10)).await?;
        let v = status_document(&c).await?;
        let failures: Vec<String> = v
            .get("failures")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| f.get("domain").and_then(serde_json::Value::as_str).map(str::to_owned))
            .collect();
        c.cleanup().await.map_err(explain)?;
        if failures.is_empty() {
            println!("no failed domains on record; failed fence attempts forgotten");
        } else {
            println!(
                "forgot the failures of {} (tried again if the peer is still fenced); failed fence attempts forgotten",
                failures.join(", ")
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
