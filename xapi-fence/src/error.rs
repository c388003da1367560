//! Errors. Each says what failed in words an operator can act on, keeps the
//! XenAPI error code and its parameters as the server sent them, and never
//! holds the password (see [`Error::redact`]).

use crate::vm::PowerState;

/// Everything that can go wrong talking to a pool.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with `Status: Failure`.
    #[error("{method}: XenAPI error {code}{}", params_suffix(.params))]
    Api {
        method: String,
        /// `SESSION_AUTHENTICATION_FAILED`, `HANDLE_INVALID`, ...
        code: String,
        params: Vec<String>,
    },
    /// An XML-RPC fault (xapi itself answers with `Status: Failure`; a proxy may not).
    #[error("{method}: XML-RPC fault {code}: {string}")]
    Fault { method: String, code: i64, string: String },
    #[error("the URL {url:?} is not usable: {detail}")]
    Url { url: String, detail: String },
    #[error("cannot connect to {endpoint}: {detail}")]
    Connect { endpoint: String, detail: String },
    #[error("TLS with {endpoint} failed: {detail}")]
    Tls { endpoint: String, detail: String },
    #[error("cannot set up TLS: {detail}")]
    TlsSetup { detail: String },
    #[error("{endpoint} answered HTTP {status}{}", reason_suffix(.reason))]
    Http {
        endpoint: String,
        status: u16,
        reason: String,
    },
    /// The connection broke, or the server closed it before a whole reply.
    #[error("{endpoint}: {detail}")]
    Connection { endpoint: String, detail: String },
    #[error("{method}: the reply is larger than {limit} bytes")]
    TooLarge { method: String, limit: usize },
    /// The reply is not XML-RPC, or not what XenAPI answers to this call.
    #[error("{method}: malformed reply: {detail}")]
    Malformed { method: String, detail: String },
    #[error("timed out after {ms} ms: {what}")]
    Timeout { ms: u64, what: String },
    #[error("no VM has the UUID or name label {vm:?}")]
    NoSuchVm { vm: String },
    #[error("{count} VMs have the name label {vm:?}; name the VM by its UUID")]
    AmbiguousVm { vm: String, count: usize },
    #[error("{vm:?} is a template, not a VM; refusing to fence it")]
    Template { vm: String },
    #[error("{vm:?} is a control domain (dom0); refusing to fence it")]
    ControlDomain { vm: String },
    /// Asked for `wanted`; the pool still reports `seen`.
    #[error("VM {vm:?} is still {seen} after {action} (wanted {wanted}, waited {ms} ms)")]
    NotConfirmed {
        vm: String,
        action: &'static str,
        wanted: PowerState,
        seen: PowerState,
        ms: u64,
    },
    /// The VM is in a state the action will not change (a paused or suspended VM
    /// for `on`).
    #[error("VM {vm:?} is {state}; {detail}")]
    WrongState {
        vm: String,
        state: PowerState,
        detail: String,
    },
    #[error("HOST_IS_SLAVE more than {hops} times in a row (last: {last}); the pool has no reachable master")]
    TooManyRedirects { hops: usize, last: String },
}

fn params_suffix(params: &[String]) -> String {
    if params.is_empty() {
        String::new()
    } else {
        format!(" [{}]", params.join(", "))
    }
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" {reason}")
    }
}

impl Error {
    /// The XenAPI error code, for `Status: Failure` answers.
    pub fn api_code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The pool refused the user name or password.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self.api_code(), Some("SESSION_AUTHENTICATION_FAILED"))
    }

    /// The user may not do this (role-based access control).
    pub fn is_permission_denied(&self) -> bool {
        matches!(self.api_code(), Some("RBAC_PERMISSION_DENIED"))
    }

    /// No answer at all: refused, unreachable, or timed out.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Connect { .. })
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// A garbled or cut-off exchange, where trying again may help.
    pub fn is_protocol(&self) -> bool {
        matches!(
            self,
            Error::Http { .. }
                | Error::Connection { .. }
                | Error::TooLarge { .. }
                | Error::Malformed { .. }
                | Error::Fault { .. }
        )
    }

    /// Replaces every occurrence of `secret` in the text the server chose (error
    /// parameters, fault strings, details): a broken or hostile server could echo
    /// the password back.
    pub fn redact(self, secret: &str) -> Error {
        if secret.is_empty() {
            return self;
        }
        let r = |s: String| {
            if s.contains(secret) {
                s.replace(secret, "<redacted>")
            } else {
                s
            }
        };
        match self {
            Error::Api { method, code, params } => Error::Api {
                method,
                code: r(code),
                params: params.into_iter().map(r).collect(),
            },
            Error::Fault { method, code, string } => Error::Fault {
                method,
                code,
                string: r(string),
            },
            Error::Http {
                endpoint,
                status,
                reason,
            } => Error::Http {
                endpoint,
                status,
                reason: r(reason),
            },
            Error::Malformed { method, detail } => Error::Malformed {
                method,
                detail: r(detail),
            },
            Error::Connection { endpoint, detail } => Error::Connection {
                endpoint,
                detail: r(detail),
            },
            Error::TooManyRedirects { hops, last } => Error::TooManyRedirects { hops, last: r(last) },
            other => other,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
