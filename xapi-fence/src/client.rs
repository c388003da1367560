//! Sessions with a pool: log in (following HOST_IS_SLAVE to the master, and
//! remembering it), call, log in again once on SESSION_INVALID, and always log
//! out, even when the caller gives up half way (the guard's `Drop` sends the
//! logout in the background). xapi keeps a bounded number of sessions and
//! evicts the oldest past it, possibly another client's, so a fence agent that
//! never logs out (fence_xenapi does not) is a nuisance to the whole pool.

use crate::error::{Error, Result};
use crate::http::{Connection, Endpoint};
use crate::tls::{self, TlsMode};
use crate::xmlrpc::{self, Outcome, Response, Value};
use rustls::ClientConfig;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The XenAPI version sent at login.
pub const API_VERSION: &str = "1.0";
/// The originator sent at login; xapi counts sessions per originator.
pub const ORIGINATOR: &str = "tandem";
/// Largest reply read (a `VM.get_all_records` of a large pool fits).
pub const DEFAULT_MAX_REPLY: usize = 32 * 1024 * 1024;
/// HOST_IS_SLAVE answers followed before giving up.
const MAX_REDIRECTS: usize = 3;

/// A password. Prints as `<redacted>`; wiped from memory when dropped.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn new(s: impl Into<String>) -> Password {
        Password(Zeroizing::new(s.into()))
    }

    /// The password itself, for the login call only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Where the pool is and how to talk to it.
#[derive(Debug, Clone)]
pub struct Config {
    /// `https://host[:port]` (or `http://`).
    pub url: String,
    pub username: String,
    pub password: Password,
    /// How an https:// server is checked; ignored for http://.
    pub tls: TlsMode,
    /// The longest one XML-RPC call may take, connecting included.
    pub call_timeout: Duration,
    /// The longest a power change may take to be confirmed.
    pub power_timeout: Duration,
    /// How often the power state is read while waiting for it.
    pub poll_interval: Duration,
    /// A pause after a power call returns, before reading the state back
    /// (fence-agents' power_wait); none by default, as xapi answers when done.
    pub power_wait: Duration,
    pub max_reply: usize,
}

impl Config {
    pub fn new(url: impl Into<String>, username: impl Into<String>, password: Password) -> Config {
        Config {
            url: url.into(),
            username: username.into(),
            password,
            tls: TlsMode::SystemRoots,
            call_timeout: Duration::from_secs(5),
            power_timeout: Duration::from_secs(20),
            poll_interval: Duration::from_millis(250),
            power_wait: Duration::ZERO,
            max_reply: DEFAULT_MAX_REPLY,
        }
    }
}

/// A pool. Cheap to keep; it remembers the master it was sent to.
#[derive(Debug)]
pub struct Client {
    pub(crate) config: Config,
    configured: Endpoint,
    tls: Option<Arc<ClientConfig>>,
    master: Mutex<Option<Endpoint>>,
}

impl Client {
    /// Checks the URL and prepares TLS (reading a CA file now); contacts nobody.
    pub fn new(config: Config) -> Result<Client> {
        let configured = Endpoint::parse(&config.url)?;
        let tls = if configured.tls {
            Some(tls::client_config(&config.tls)?)
        } else {
            None
        };
        Ok(Client {
            config,
            configured,
            tls,
            master: Mutex::new(None),
        })
    }

    /// Replaces the password (read again before each use, so a rotated one is
    /// picked up).
    pub fn set_password(&mut self, password: Password) {
        self.config.password = password;
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The master a HOST_IS_SLAVE answer sent this client to, if any.
    pub fn remembered_master(&self) -> Option<String> {
        self.master
            .lock()
            .ok()
            .and_then(|m| m.as_ref().map(ToString::to_string))
    }

    fn remember(&self, endpoint: Option<Endpoint>) {
        if let Ok(mut m) = self.master.lock() {
            *m = endpoint;
        }
    }

    fn ms(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection> {
        let t = self.config.call_timeout;
        match tokio::time::timeout(t, Connection::open(endpoint, self.tls.as_ref(), self.config.max_reply)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                ms: Self::ms(t),
                what: format!("connecting to {endpoint}"),
            }),
        }
    }

    /// One call on `conn`, bounded by the call timeout. A reused connection that
    /// the server had closed meanwhile is reopened once.
    pub(crate) async fn raw_call(
        &self,
        conn: &mut Connection,
        method: &str,
        params: &[Value],
        t: Duration,
    ) -> Result<Value> {
        let body = xmlrpc::encode_call(method, params);
        let started = Instant::now();
        if !conn.reusable() {
            let endpoint = conn.endpoint().clone();
            *conn = self.connect(&endpoint).await?;
        }
        let name = conn_name(conn);
        let timeout = || Error::Timeout {
            ms: Self::ms(t),
            what: format!("{method} on {name}"),
        };
        let reply = match tokio::time::timeout(t, conn.post(method, body.as_bytes())).await {
            Ok(Ok(r)) => r,
            Ok(Err(Error::Connection { .. })) if conn.retryable() => {
                let fresh = self.connect(&conn.endpoint().clone()).await?;
                *conn = fresh;
                let left = t.saturating_sub(started.elapsed());
                match tokio::time::timeout(left, conn.post(method, body.as_bytes())).await {
                    Ok(r) => r?,
                    Err(_) => return Err(timeout()),
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(timeout()),
        };
        let malformed = |detail: String| Error::Malformed {
            method: method.to_string(),
            detail,
        };
        match xmlrpc::parse_response(&reply).map_err(|e| malformed(e.to_string()))? {
            Response::Fault { code, string } => Err(Error::Fault {
                method: method.to_string(),
                code,
                string,
            }),
            Response::Value(v) => match xmlrpc::envelope(v).map_err(malformed)? {
                Outcome::Success(v) => Ok(v),
                Outcome::Failure(mut description) => {
                    let code = description.remove(0);
                    Err(Error::Api {
                        method: method.to_string(),
                        code,
                        params: description,
                    })
                }
            },
        }
    }

    /// Logs in on `endpoint`; `Ok(Err(master))` for HOST_IS_SLAVE.
    async fn login_at(&self, endpoint: &Endpoint) -> Result<std::result::Result<(Connection, String), Endpoint>> {
        let mut conn = self.connect(endpoint).await?;
        let params = [
            Value::str(self.config.username.clone()),
            Value::str(self.config.password.expose()),
            Value::str(API_VERSION),
            Value::str(ORIGINATOR),
        ];
        match self
            .raw_call(
                &mut conn,
                "session.login_with_password",
                &params,
                self.config.call_timeout,
            )
            .await
        {
            Ok(Value::String(session)) if !session.is_empty() => Ok(Ok((conn, session))),
            Ok(other) => Err(Error::Malformed {
                method: "session.login_with_password".into(),
                detail: format!("the session reference is a {}, not a non-empty string", other.kind()),
            }),
            Err(Error::Api { code, params, .. }) if code == "HOST_IS_SLAVE" => {
                let address = params.first().cloned().unwrap_or_default();
                match endpoint.with_address(&address) {
                    Some(master) => Ok(Err(master)),
                    None => Err(Error::Malformed {
                        method: "session.login_with_password".into(),
                        detail: "HOST_IS_SLAVE without a usable master address".into(),
                    }),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Opens a session on the pool master: the remembered master first, then the
    /// configured URL, following HOST_IS_SLAVE.
    pub async fn login(&self) -> Result<Session<'_>> {
        let password = self.config.password.expose().to_string();
        let password = Zeroizing::new(password);
        self.login_inner().await.map_err(|e| e.redact(&password))
    }

    async fn login_inner(&self) -> Result<Session<'_>> {
        let remembered = self.master.lock().ok().and_then(|m| m.clone());
        let endpoint = match remembered {
            Some(m) => match self.follow(m.clone()).await {
                Ok(s) => return Ok(s),
                Err(e) if e.is_unreachable() || e.is_timeout() || e.is_protocol() => {
                    tracing::warn!(master = %m, error = %e, "the remembered pool master does not answer; trying the configured URL");
                    self.remember(None);
                    self.configured.clone()
                }
                Err(e) => return Err(e),
            },
            None => self.configured.clone(),
        };
        self.follow(endpoint).await
    }

    async fn follow(&self, mut endpoint: Endpoint) -> Result<Session<'_>> {
        for _ in 0..=MAX_REDIRECTS {
            match self.login_at(&endpoint).await? {
                Ok((conn, handle)) => {
                    if endpoint != self.configured {
                        self.remember(Some(endpoint.clone()));
                    } else {
                        self.remember(None);
                    }
                    tracing::debug!(endpoint = %endpoint, "logged in");
                    return Ok(Session {
                        client: self,
                        conn: Some(conn),
                        handle: Some(handle),
                    });
                }
                Err(master) => {
                    tracing::info!(from = %endpoint, master = %master, "HOST_IS_SLAVE: going to the pool master");
                    endpoint = master;
                }
            }
        }
        Err(Error::TooManyRedirects {
            hops: MAX_REDIRECTS,
            last: endpoint.to_string(),
        })
    }
}

fn conn_name(conn: &Connection) -> String {
    conn.endpoint().to_string()
}

/// A logged-in session. Call [`Session::logout`] when done; dropping it without
/// does the logout in the background.
#[derive(Debug)]
pub struct Session<'c> {
    client: &'c Client,
    conn: Option<Connection>,
    handle: Option<String>,
}

impl Session<'_> {
    /// `method(session, params...)`. On SESSION_INVALID (the session expired or
    /// was evicted), logs in again once and repeats the call.
    pub async fn call(&mut self, method: &str, params: &[Value]) -> Result<Value> {
        let t = self.client.config.call_timeout;
        self.call_with_timeout(method, params, t).await
    }

    /// [`Session::call`] with its own time limit, for calls that take as long as
    /// the work they do (`VM.hard_shutdown`, `VM.start`).
    pub async fn call_with_timeout(&mut self, method: &str, params: &[Value], t: Duration) -> Result<Value> {
        let password = Zeroizing::new(self.client.config.password.expose().to_string());
        self.call_inner(method, params, t)
            .await
            .map_err(|e| e.redact(&password))
    }

    pub fn client(&self) -> &Client {
        self.client
    }

    async fn call_inner(&mut self, method: &str, params: &[Value], t: Duration) -> Result<Value> {
        match self.call_once(method, params, t).await {
            Err(Error::Api { code, .. }) if code == "SESSION_INVALID" => {
                tracing::info!(method, "SESSION_INVALID: logging in again");
                self.handle = None;
                self.conn = None;
                let mut fresh = self.client.login_inner().await?;
                self.conn = fresh.conn.take();
                self.handle = fresh.handle.take();
                self.call_once(method, params, t).await
            }
            other => other,
        }
    }

    async fn call_once(&mut self, method: &str, params: &[Value], t: Duration) -> Result<Value> {
        let (Some(conn), Some(handle)) = (self.conn.as_mut(), self.handle.as_ref()) else {
            return Err(Error::Connection {
                endpoint: self.client.configured.to_string(),
                detail: "the session is closed".into(),
            });
        };
        let mut full = Vec::with_capacity(params.len() + 1);
        full.push(Value::str(handle.clone()));
        full.extend_from_slice(params);
        self.client.raw_call(conn, method, &full, t).await
    }

    /// Ends the session. A failed logout is logged, not returned: the work is
    /// done, and xapi expires the session on its own.
    pub async fn logout(mut self) {
        let (Some(mut conn), Some(handle)) = (self.conn.take(), self.handle.take()) else {
            return;
        };
        if let Err(e) = self
            .client
            .raw_call(
                &mut conn,
                "session.logout",
                &[Value::str(handle)],
                self.client.config.call_timeout,
            )
            .await
        {
            tracing::warn!(error = %e, "session.logout failed; xapi will expire the session");
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let (Some(conn), Some(handle)) = (self.conn.take(), self.handle.take()) else {
            return;
        };
        // Cancelled half way: log out in the background, bounded by the call timeout.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let endpoint = conn.endpoint().clone();
        let tls = self.client.tls.clone();
        let t = self.client.config.call_timeout;
        let max = self.client.config.max_reply;
        drop(conn);
        runtime.spawn(async move {
            let body = xmlrpc::encode_call("session.logout", &[Value::str(handle)]);
            let work = async {
                let mut conn = Connection::open(&endpoint, tls.as_ref(), max).await?;
                conn.post("session.logout", body.as_bytes()).await
            };
            match tokio::time::timeout(t, work).await {
                Ok(Ok(_)) => tracing::debug!(endpoint = %endpoint, "logged out in the background"),
                Ok(Err(e)) => tracing::warn!(error = %e, "background session.logout failed"),
                Err(_) => tracing::warn!("background session.logout timed out"),
            }
        });
    }
}
