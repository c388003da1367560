//! A XenAPI test server: a pool with a master and slaves, users, sessions that
//! expire, VMs with power states, over XML-RPC as xapi speaks it. Tests start
//! one with [`Standin::start`]; it runs on its own thread (so tests may block
//! on a child process while it answers) and stops when dropped.
//!
//! It is checked against the official Python `XenAPI` package and Debian's
//! `fence_xenapi` (tests/official_clients.rs). Where it differs from xapi on
//! purpose:
//! - HOST_IS_SLAVE names the master as `127.0.0.1:PORT`: every host here
//!   listens on its own port of 127.0.0.1, where real pool members share
//!   port 443 and xapi names only the address.
//! - Power changes happen at once (after any configured delay), as xapi
//!   answers `VM.hard_shutdown` and `VM.start` only when they are done.
//! - Only the classes and methods fencing and the clients use exist; others
//!   get MESSAGE_METHOD_UNKNOWN.

pub mod config;
pub mod pool;
mod server;
pub mod xml;

pub use config::{ConfigError, PoolConfig, User, VmSpec};
pub use pool::Stats;
pub use server::Tls;

use pool::Pool;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum StandinError {
    #[error("invalid pool: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on 127.0.0.1: {0}")]
    Listen(#[source] std::io::Error),
    #[error("cannot make the TLS certificate: {0}")]
    Tls(String),
    #[error("cannot start the server thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A running stand-in. Dropping it stops the server and joins its thread.
#[derive(Debug)]
pub struct Standin {
    addrs: Vec<SocketAddr>,
    pool: Arc<Mutex<Pool>>,
    tls: Option<Tls>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Standin {
    /// Listens on 127.0.0.1, port 0, one port per host.
    pub fn start(config: PoolConfig) -> Result<Standin, StandinError> {
        config.validate()?;
        let tls = if config.tls {
            Some(Tls::generate().map_err(StandinError::Tls)?)
        } else {
            None
        };
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..config.hosts {
            let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(StandinError::Listen)?;
            l.set_nonblocking(true).map_err(StandinError::Listen)?;
            addrs.push(l.local_addr().map_err(StandinError::Listen)?);
            listeners.push(l);
        }
        let mut pool = Pool::new(&config);
        for (host, addr) in pool.hosts.iter_mut().zip(&addrs) {
            host.address = addr.to_string();
        }
        let pool = Arc::new(Mutex::new(pool));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StandinError::Thread)?;
        let (p, t) = (pool.clone(), tls.clone());
        let thread = std::thread::Builder::new()
            .name("xapi-standin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut tasks = Vec::new();
                    for (i, l) in listeners.into_iter().enumerate() {
                        match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => tasks.push(tokio::spawn(server::serve(l, i, p.clone(), t.clone()))),
                            Err(e) => tracing::error!(error = %e, "cannot use the listener"),
                        }
                    }
                    let _ = stopped.await;
                    tasks.iter().for_each(|t| t.abort());
                });
            })
            .map_err(StandinError::Thread)?;
        Ok(Standin {
            addrs,
            pool,
            tls,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The master's port (host 0 unless [`Standin::set_master`] moved it).
    pub fn port(&self) -> u16 {
        let master = self.lock().master;
        self.host_port(master)
    }

    pub fn host_port(&self, host: usize) -> u16 {
        self.addrs.get(host).map(SocketAddr::port).unwrap_or(0)
    }

    pub fn host_url(&self, host: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.host_port(host))
    }

    /// The master's URL.
    pub fn url(&self) -> String {
        let master = self.lock().master;
        self.host_url(master)
    }

    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        match self.pool.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// The power state of the VM with this name label.
    pub fn power_state(&self, name: &str) -> Option<String> {
        self.lock().vm_by_name(name).map(|v| v.power_state.clone())
    }

    pub fn uuid(&self, name: &str) -> Option<String> {
        self.lock().vm_by_name(name).map(|v| v.uuid.clone())
    }

    pub fn set_power_state(&self, name: &str, state: &str) {
        if let Some(v) = self.lock().vm_by_name_mut(name) {
            v.power_state = state.to_string();
        }
    }

    pub fn add_vm(&self, spec: &VmSpec) {
        self.lock().add_vm(spec);
    }

    /// Every session becomes invalid, as after a xapi restart.
    pub fn expire_sessions(&self) {
        self.lock().expire_all_sessions();
    }

    /// Makes `host` the master (a pool failover).
    pub fn set_master(&self, host: usize) {
        let mut p = self.lock();
        if host < p.hosts.len() {
            p.master = host;
        }
    }

    /// Answers `method` (or every method, with "*") `ms` late.
    pub fn set_delay(&self, method: &str, ms: u64) {
        self.lock().delays.insert(method.to_string(), ms);
    }

    pub fn set_session_ttl(&self, ttl: std::time::Duration) {
        self.lock().session_ttl = ttl;
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
