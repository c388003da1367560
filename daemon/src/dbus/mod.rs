//! The D-Bus service: DESIGN.md "D-Bus API" over the runtime's [`Handle`]. The
//! names, errors, shared types and client proxies are in the `tandem-api` crate;
//! the policy is packaging/dbus/org.tandem.Tandem1.conf.
//!
//! Decisions:
//! - The bus is the system bus, or `DBUS_SYSTEM_BUS_ADDRESS` when it is set.
//! - Every object is registered before `org.tandem.Tandem1` is requested, so no
//!   call can reach the name before its object exists.
//! - The name is requested without queueing and without replacement: a second
//!   tandemd cannot take it over, and neither can anyone else.
//! - No bus, the name taken, or the bus going away: tandemd keeps running and
//!   retries (1 s, doubling to 30 s), warning once per distinct failure.
//!   Heartbeats, fencing and failover do not need the bus; a hook that cannot
//!   reach tandemd fails, which refuses the start or migration (the safe side).
//! - Properties are read from the status JSON (the same data as the status
//!   file); a watcher diffs each new status and sends `PropertiesChanged` for
//!   what changed, and turns the runtime's events into signals.

mod interfaces;
mod snapshot;

use crate::core::ResourceName;
use crate::runtime::Handle;
use interfaces::{Cluster, DomainObject, Hooks, ResourceObject, Shared};
use serde_json::Value;
use snapshot::{event_kind, Snapshot};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tandem_api::{domain_path, resource_path, BUS_NAME, ROOT_PATH};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use zbus::object_server::SignalEmitter;
use zbus::Connection;

/// Which bus the service is offered on (`tandemd --dbus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Bus {
    /// The system bus, or `DBUS_SYSTEM_BUS_ADDRESS` when it is set.
    System,
    /// No D-Bus service (hooks and tandemctl cannot reach this daemon).
    None,
}

/// The running service; dropping it stops it (the connection closes and the bus
/// releases the name).
#[derive(Debug)]
pub struct Service {
    task: JoinHandle<()>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Connecting, authenticating and taking the name are local round trips; a bus
/// that takes longer than this is treated as absent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the service in a task of the current runtime. `resources` are the
/// managed DRBD resources (`[drbd] resources`), each an object.
pub fn serve(handle: Handle, bus: Bus, resources: &[ResourceName]) -> Option<Service> {
    match bus {
        Bus::None => {
            info!("D-Bus service disabled (--dbus none): hooks and tandemctl cannot reach this daemon");
            None
        }
        Bus::System => {
            let resources = resources.iter().map(|r| r.0.clone()).collect();
            Some(Service {
                task: tokio::spawn(run(handle, resources)),
            })
        }
    }
}

enum Ended {
    BusLost,
    DaemonStopping,
}

async fn run(handle: Handle, resources: BTreeSet<String>) {
    let mut status = handle.status();
    // Node, Peer and Boot are constant properties, so nothing is registered
    // before the first status (the event loop publishes it on its first turn).
    if status.wait_for(|v| !v.is_null()).await.is_err() {
        return;
    }
    let shared = Arc::new(Shared::new(handle, resources));
    let mut delay = RETRY_FIRST;
    let mut last_error: Option<String> = None;
    loop {
        shared.replace(Snapshot::from_status(&status.borrow_and_update()));
        let error = match tokio::time::timeout(CONNECT_TIMEOUT, connect(&shared)).await {
            Ok(Ok(conn)) => {
                info!(name = BUS_NAME, "D-Bus service ready");
                shared.handle.set_bus_ready(true);
                delay = RETRY_FIRST;
                last_error = None;
                let ended = watch(&conn, &shared, &mut status).await;
                shared.handle.set_bus_ready(false);
                match ended {
                    Ended::DaemonStopping => return,
                    Ended::BusLost => "the connection to the bus closed".to_string(),
                }
            }
            Ok(Err(zbus::Error::NameTaken)) => format!("{BUS_NAME} is owned by another process"),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer from the bus within {CONNECT_TIMEOUT:?}"),
        };
        if last_error.as_ref() != Some(&error) {
            warn!(error = %error, retry_in = ?delay,
                  "D-Bus service unavailable; tandemd keeps running, but hooks and tandemctl cannot reach it");
        } else {
            debug!(error = %error, retry_in = ?delay, "D-Bus service still unavailable");
        }
        last_error = Some(error);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// Connects, registers every object, then takes the name.
async fn connect(shared: &Arc<Shared>) -> zbus::Result<Connection> {
    let domains = shared.snap().domains();
    let mut builder = zbus::connection::Builder::system()
        .serve_at(ROOT_PATH, zbus::fdo::ObjectManager)
        .serve_at(ROOT_PATH, Cluster { shared: shared.clone() })
        .serve_at(ROOT_PATH, Hooks { shared: shared.clone() });
    for name in &shared.resources {
        builder = builder.serve_at(resource_path(name), ResourceObject { name: name.clone() });
    }
    for name in domains {
        let path = domain_path(&name);
        builder = builder.serve_at(
            path,
            DomainObject {
                name,
                shared: shared.clone(),
            },
        );
    }
    builder
        .name(BUS_NAME)
        .allow_name_replacements(false)
        .replace_existing_names(false)
        .build()
        .await
}

/// Publishes status changes and events until the bus or the daemon goes away.
async fn watch(conn: &Connection, shared: &Arc<Shared>, status: &mut watch::Receiver<Value>) -> Ended {
    let mut events = shared.handle.events();
    let emitter = SignalEmitter::from_parts(conn.clone(), zbus::ObjectPath::from_static_str_unchecked(ROOT_PATH));
    // The status may have moved on while connecting.
    status.mark_changed();
    loop {
        tokio::select! {
            _ = conn.closed() => return Ended::BusLost,
            changed = status.changed() => {
                if changed.is_err() {
                    return Ended::DaemonStopping;
                }
                let new = Snapshot::from_status(&status.borrow_and_update());
                if let Err(e) = publish(conn, shared, new).await {
                    debug!(error = %e, "cannot publish a status change on D-Bus");
                }
            }
            event = events.recv() => match event {
                Ok(record) => emit_event(&emitter, record).await,
                Err(RecvError::Lagged(missed)) => {
                    warn!(missed, "cluster events were dropped before D-Bus could signal them");
                }
                Err(RecvError::Closed) => return Ended::DaemonStopping,
            },
        }
    }
}

/// Installs `new` and signals what differs from the previous snapshot: domain
/// objects come and go, changed properties send `PropertiesChanged`.
async fn publish(conn: &Connection, shared: &Arc<Shared>, new: Snapshot) -> zbus::Result<()> {
    let old = shared.replace(new.clone());
    let server = conn.object_server();
    let (before, after) = (old.domains(), new.domains());
    for name in after.difference(&before) {
        let object = DomainObject {
            name: name.clone(),
            shared: shared.clone(),
        };
        server.at(domain_path(name), object).await?;
    }
    for name in before.difference(&after) {
        server.remove::<DomainObject, _>(domain_path(name)).await?;
    }
    for name in after.intersection(&before) {
        if old.window_of(name) != new.window_of(name) {
            let d = server.interface::<_, DomainObject>(domain_path(name)).await?;
            d.get().await.window_changed(d.signal_emitter()).await?;
        }
    }

    let iface = server.interface::<_, Cluster>(ROOT_PATH).await?;
    let em = iface.signal_emitter();
    let c = iface.get().await;
    if old.peer_state != new.peer_state {
        c.peer_state_changed(em).await?;
    }
    if old.peer_since != new.peer_since {
        c.peer_since_changed(em).await?;
    }
    if old.arbiter != new.arbiter {
        c.arbiter_changed(em).await?;
    }
    if old.control_connected != new.control_connected {
        c.control_connected_changed(em).await?;
    }
    if old.links != new.links {
        c.links_changed(em).await?;
    }
    if old.windows != new.windows {
        c.windows_changed(em).await?;
    }
    if old.fence_history != new.fence_history {
        c.fence_history_changed(em).await?;
    }
    if before != after {
        c.domains_changed(em).await?;
    }
    Ok(())
}

/// `Event` for every cluster event, and the specific signal for the kinds that have one.
async fn emit_event(emitter: &SignalEmitter<'_>, mut record: Value) {
    let kind = event_kind(&record).to_owned();
    if let Some(o) = record.as_object_mut() {
        o.insert("kind".into(), Value::String(kind.clone()));
    }
    let json = record.to_string();
    let mut result = Cluster::event(emitter, &json).await;
    if result.is_ok() {
        result = match kind.as_str() {
            "FenceConfirmed" => Cluster::fenced(emitter, &json).await,
            "FailoverPlanned" => Cluster::failover_started(emitter, &json).await,
            "MigrationFinished" => Cluster::migration_finished(emitter, &json).await,
            _ => Ok(()),
        };
    }
    if let Err(e) = result {
        debug!(error = %e, kind, "cannot signal a cluster event on D-Bus");
    }
}
