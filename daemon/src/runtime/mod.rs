//! The daemon's event loop: the core in the middle, the peer link around it,
//! the drivers answering its actions, a status file for operators.

mod clock;
mod drivers;
mod reload;
mod requests;
mod status;

use crate::config::{self, Config};
use crate::core::{Action, Core, Event, Input, NodeId, Persisted};
use crate::net::{self, ControlConfig, ControlLink, HeartbeatConfig, LinkAddrs};
use crate::state;
use drivers::Drivers;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use requests::Requests;
pub use requests::{Call, Handle, HandleError, Reply};
pub use status::StatusFile;

/// How the daemon was started.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub fragments: Option<PathBuf>,
    pub node: Option<String>,
    pub status_file: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// Where the D-Bus service is offered.
    pub dbus: crate::dbus::Bus,
    /// systemd's notification socket (a no-op when not under systemd).
    pub notifier: Arc<crate::systemd::Notifier>,
}

/// The fragments directory, when it exists now (it may appear before a reload).
fn fragments_dir(opts: &Options) -> Option<PathBuf> {
    opts.fragments.clone().filter(|p| p.is_dir())
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    Config(#[from] config::ConfigErrors),
    #[error("{0}")]
    LocalNode(#[from] config::LocalNodeError),
    #[error("{0}")]
    Key(#[from] net::KeyFileError),
    #[error("{0}")]
    Heartbeat(#[from] net::HeartbeatError),
    #[error("{0}")]
    Control(#[from] net::ControlError),
    #[error("{0}")]
    State(#[from] state::StateError),
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
}

/// Runs until SIGTERM or SIGINT; SIGHUP reloads the configuration.
pub async fn run(opts: Options) -> Result<(), RuntimeError> {
    let mut cfg = config::load(&opts.config, fragments_dir(&opts).as_deref())?;
    let me = cfg.local(opts.node.as_deref())?;
    let key = net::load_key(&cfg.cluster.authkey)?;
    std::fs::create_dir_all(&opts.state_dir).map_err(|source| RuntimeError::StateDir {
        path: opts.state_dir.clone(),
        source,
    })?;
    let state_path = state::path_in(&opts.state_dir);
    let host_boot = clock::host_boot_id();
    let restored = restore(&state_path, &host_boot)?;
    let boot: u64 = rand::random::<u64>() | 1;
    let clock = clock::Clock::start();
    let mut core = Core::new(cfg.core_config(me), boot, restored);
    let peer = me.other();
    info!(node = %cfg.node(me).name, peer = %cfg.node(peer).name, boot = format_args!("{boot:x}"),
          links = cfg.links(), "tandemd starting");

    let (hb_tx, mut hb_rx) = mpsc::channel(256);
    let (peer_tx, mut peer_rx) = mpsc::channel(256);
    let (summary_tx, summary_rx) = watch::channel(core.summary());
    let heartbeats = net::spawn_heartbeats(
        HeartbeatConfig {
            me,
            peer,
            boot,
            interval: Duration::from_millis(cfg.timing.heartbeat_interval_ms),
            links: link_addrs(&cfg, me, cfg.cluster.heartbeat_port)
                .into_iter()
                .map(|(local, peer)| LinkAddrs { local, peer })
                .collect(),
        },
        key.heartbeat_key(),
        summary_rx,
        hb_tx,
    )
    .await?;
    let control = net::spawn_control(
        ControlConfig::new(
            me,
            peer,
            boot,
            link_addrs(&cfg, me, cfg.cluster.control_port)
                .into_iter()
                .map(|(local, peer)| ControlLink { local, peer })
                .collect(),
        ),
        key.noise_psk(),
        peer_tx,
    )
    .await?;
    drop(key);

    let (drv_tx, mut drv_rx) = mpsc::channel(256);
    let drivers = Drivers::new(&cfg, me, drv_tx);
    let drbd_watch = drivers.watch_drbd();
    // Polls the domains (every 500 ms) for as long as it is held.
    let hypervisor_watch = drivers.watch_hypervisor(&cfg);
    let (requests, handle) = Requests::new();
    let mut status =
        StatusFile::new(opts.status_file.clone(), &cfg, me, boot).with_migrations(drivers.migration_board());
    // Clients (the D-Bus service) reach the core through `handle`.
    let _dbus = crate::dbus::serve(handle, opts.dbus, &cfg.drbd.resources);
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(RuntimeError::Signal)?;
    let mut int =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map_err(RuntimeError::Signal)?;
    let mut hup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(RuntimeError::Signal)?;
    let mut status_tick = tokio::time::interval(Duration::from_millis(200));
    // systemd: READY=1 once the peer link listens (it does: both were bound
    // above) and the D-Bus name is owned; WATCHDOG=1 from this loop only.
    let notifier = opts.notifier.clone();
    let mut bus_ready = ctx_bus_ready(&requests, opts.dbus);
    let mut ready_sent = false;
    let mut watchdog = notifier.watchdog_interval().map(tokio::time::interval);
    let mut reloads = 0u64;
    if bus_ready.is_some() {
        notifier.status("starting: waiting to own org.tandem.Tandem1 on the D-Bus system bus");
    }
    let mut ctx = Ctx {
        state_path,
        host_boot,
        control: &control,
        status: &mut status,
        drivers: &drivers,
        requests,
    };
    loop {
        let wake = core
            .next_deadline()
            .map(|d| clock.instant_of(d))
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        let mut immediate = None;
        let input = tokio::select! {
            Some(req) = ctx.requests.rx.recv() => {
                let (input, reply) = ctx.requests.admit(req);
                immediate = reply;
                Some(input)
            }
            Some((link, heartbeat)) = hb_rx.recv() => Some(Input::Heartbeat { link, heartbeat }),
            Some(msg) = peer_rx.recv() => Some(Input::Peer(msg)),
            Some(result) = drv_rx.recv() => Some(result),
            _ = tokio::time::sleep_until(wake) => Some(Input::Tick),
            _ = status_tick.tick() => None,
            _ = watchdog_tick(&mut watchdog) => {
                notifier.watchdog();
                None
            }
            Some(()) = bus_changed(&mut bus_ready) => {
                if ready_sent {
                    notifier.status(&bus_status(&bus_ready));
                }
                None
            }
            _ = hup.recv() => {
                // Before the first READY=1 a reload is no systemd reload, and
                // must not report the start done.
                if ready_sent {
                    notifier.reloading();
                }
                let outcome = reload::reload(&opts, me, &mut cfg, &mut core, ctx.drivers);
                reloads += 1;
                ctx.status.set_config(&cfg, me, reloads, outcome.to_json(status::unix_ms()));
                if ready_sent {
                    notifier.ready(&outcome.summary());
                } else {
                    notifier.status(&outcome.summary());
                }
                None
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        let bus_ok = match &bus_ready {
            None => true,
            Some(r) => *r.borrow(),
        };
        if !ready_sent && bus_ok {
            ready_sent = true;
            info!("tandemd ready");
            notifier.ready(&bus_status(&bus_ready));
        }
        if let Some(input) = input {
            if input == Input::OperatorCleanup {
                drivers.fence_history().forget_failures();
            }
            match core.handle(clock.now(), input.clone()) {
                Ok(actions) => {
                    if let Some(reply) = immediate.take() {
                        let _ = reply.send(Reply::Done(Ok(())));
                    }
                    for a in actions {
                        ctx.exec(a);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "input refused by the core");
                    match immediate.take() {
                        Some(reply) => {
                            let _ = reply.send(Reply::Done(Err(e.to_string())));
                        }
                        None => ctx.requests.refused(&input, e.to_string()),
                    }
                }
            }
        }
        summary_tx.send_if_modified(|s| {
            let new = core.summary();
            let changed = *s != new;
            *s = new;
            changed
        });
        let v = ctx
            .status
            .update(&core, &heartbeats.stats(), &control.status(), drivers.fence_history());
        ctx.requests.status.send_replace(v);
    }
    info!("tandemd stopping");
    notifier.stopping();
    ctx.status
        .update(&core, &heartbeats.stats(), &control.status(), drivers.fence_history());
    drbd_watch.abort();
    drop(hypervisor_watch);
    drop(heartbeats);
    drop(control);
    Ok(())
}

/// Whether the D-Bus service owns its name, watched for readiness; `None`
/// without a D-Bus service.
fn ctx_bus_ready(requests: &Requests, bus: crate::dbus::Bus) -> Option<watch::Receiver<bool>> {
    match bus {
        crate::dbus::Bus::System => Some(requests.bus_ready.clone()),
        crate::dbus::Bus::None => None,
    }
}

/// `STATUS=` while running.
fn bus_status(bus_ready: &Option<watch::Receiver<bool>>) -> String {
    match bus_ready {
        None => "running; D-Bus service disabled (--dbus none)".into(),
        Some(r) if *r.borrow() => "running".into(),
        Some(_) => "running; D-Bus service unavailable, retrying (hooks and tandemctl cannot reach tandemd)".into(),
    }
}

/// The next watchdog keep-alive, or never.
async fn watchdog_tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The D-Bus service's readiness changed; never, without one (or once its
/// side is gone).
async fn bus_changed(bus_ready: &mut Option<watch::Receiver<bool>>) -> Option<()> {
    match bus_ready {
        Some(r) => match r.changed().await {
            Ok(()) => Some(()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Restores the state of a previous run on this same host boot. After a host
/// reboot DRBD has forgotten any dual-primary setting, so old windows are void.
fn restore(path: &std::path::Path, host_boot: &str) -> Result<Persisted, RuntimeError> {
    let saved = state::load(path)?;
    if saved.host_boot.as_deref() == Some(host_boot) {
        Ok(saved)
    } else {
        Ok(Persisted::default())
    }
}

/// (local, peer) socket addresses of every link for `port`.
fn link_addrs(cfg: &Config, me: NodeId, port: u16) -> Vec<(SocketAddr, SocketAddr)> {
    let mine = &cfg.node(me).addresses;
    let theirs = &cfg.node(me.other()).addresses;
    mine.iter()
        .zip(theirs.iter())
        .map(|(l, p)| (SocketAddr::new(*l, port), SocketAddr::new(*p, port)))
        .collect()
}

/// What the actions of the core reach.
struct Ctx<'a> {
    state_path: PathBuf,
    host_boot: String,
    control: &'a net::ControlHandle,
    status: &'a mut StatusFile,
    drivers: &'a Drivers,
    requests: Requests,
}

impl Ctx<'_> {
    fn exec(&mut self, action: Action) {
        match action {
            Action::Send(msg) => self.control.send(msg),
            Action::Persist(mut p) => {
                p.host_boot = Some(self.host_boot.clone());
                if let Err(e) = state::save(&self.state_path, &p) {
                    warn!(error = %e, "cannot persist state");
                }
            }
            Action::Event(e) => {
                log_event(&e);
                let record = self.status.event(&e);
                // No subscriber is fine.
                let _ = self.requests.events.send(record);
            }
            Action::Fence { action, level, .. } => self.drivers.fence(action, level),
            Action::Drbd { action, op } => self.drivers.drbd(action, op),
            Action::StartDomain { action, domain } => self.drivers.start_domain(action, domain),
            Action::MigrateDomain { action, domain } => self.drivers.migrate_domain(action, domain),
            Action::StopDomain { action, domain, force } => self.drivers.stop_domain(action, domain, force),
            Action::DefineDomain { domain, definition } => self.drivers.define_domain(domain, definition),
            Action::Answer { request, result } => self.requests.answer(request, Reply::Done(result)),
            Action::FencePeerAnswer { request, verdict } => self.requests.answer(request, Reply::FencePeer(verdict)),
        }
    }
}

fn log_event(e: &Event) {
    match e {
        Event::PeerLost
        | Event::FenceLevelFailed { .. }
        | Event::FenceRoundFailed { .. }
        | Event::FailoverSkipped { .. }
        | Event::PeerRequestRefused { .. } => warn!(event = ?e, "cluster event"),
        _ => info!(event = ?e, "cluster event"),
    }
}
