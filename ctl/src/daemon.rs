//! The commands that go through the running daemon's D-Bus API (the system bus,
//! or `DBUS_SYSTEM_BUS_ADDRESS`): what the daemon does has the same checks as
//! the hooks, and the daemon's own arbiter and history see it.

use anyhow::{anyhow, bail, Context, Result};
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
        ApiError::ZBus(zbus::Error::MethodError(name, _, _))
            if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown"
                || name.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner" =>
        {
            anyhow!("tandemd is not running on this host (nobody owns org.tandem.Tandem1 on the system bus); start it, or use --direct")
        }
        other => anyhow!("{}", other.reason()),
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
        c.migrate(domain).await.map_err(explain)?;
        println!("{domain}: migrated in {} ms", started.elapsed().as_millis());
        Ok(ExitCode::SUCCESS)
    })
}
