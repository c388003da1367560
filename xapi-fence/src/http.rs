//! Just enough HTTP/1.1 for XML-RPC: `POST` with a body, a reply with
//! `Content-Length`, chunked encoding or read to the close; keep-alive within
//! one XenAPI session. Every read is bounded in size; the caller bounds time.

use crate::error::Error;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::fmt;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest status or header line.
const MAX_LINE: usize = 8 * 1024;
const MAX_HEADERS: usize = 100;

/// Where a XenAPI server listens: `http[s]://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    /// Without brackets, for IPv6 too.
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, Error> {
        let bad = |detail: &str| Error::Url {
            url: url.to_string(),
            detail: detail.to_string(),
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("it must start with https:// or http://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(bad("user names go in the username option, not in the URL"));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = split_host_port(authority, default_port).ok_or_else(|| bad("bad host or port"))?;
        if path.chars().any(|c| c.is_control() || c == ' ') {
            return Err(bad("the path holds spaces or control characters"));
        }
        Ok(Endpoint {
            tls,
            host,
            port,
            path: path.to_string(),
        })
    }

    /// The endpoint HOST_IS_SLAVE points at: the master's address (xapi names
    /// a bare address; `address:port` is taken too), same scheme and path, and
    /// this endpoint's port unless the address names one.
    pub fn with_address(&self, address: &str) -> Option<Endpoint> {
        let (host, port) = split_host_port(address.trim(), self.port)?;
        Some(Endpoint {
            host,
            port,
            ..self.clone()
        })
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.tls { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.host_header(), self.path)
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address.
fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    let valid_host = |h: &str| {
        !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'))
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        (h.to_string(), port)
    } else if s.matches(':').count() > 1 {
        (s.to_string(), default_port)
    } else if let Some((h, p)) = s.split_once(':') {
        (h.to_string(), p.parse().ok()?)
    } else {
        (s.to_string(), default_port)
    };
    (valid_host(&host) && port != 0).then_some((host, port))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// One open connection to an endpoint.
pub(crate) struct Connection {
    endpoint: Endpoint,
    stream: BufReader<Box<dyn Io>>,
    /// Whether the server may still take another request on it.
    reusable: bool,
    /// Whether an earlier request on it got its answer.
    used: bool,
    /// Whether the current request got the start of an answer.
    answered: bool,
    max_reply: usize,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint.to_string())
            .finish()
    }
}

impl Connection {
    /// Connects (and for https, completes the handshake). Unbounded in time:
    /// the caller wraps it in a timeout.
    pub(crate) async fn open(
        endpoint: &Endpoint,
        tls: Option<&Arc<ClientConfig>>,
        max_reply: usize,
    ) -> Result<Connection, Error> {
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| Error::Connect {
                endpoint: endpoint.to_string(),
                detail: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = if endpoint.tls {
            let config = tls.ok_or_else(|| Error::TlsSetup {
                detail: "an https:// endpoint without a TLS configuration".into(),
            })?;
            let name = ServerName::try_from(endpoint.host.clone()).map_err(|e| Error::Url {
                url: endpoint.to_string(),
                detail: format!("not a host name for TLS ({e})"),
            })?;
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let tls = connector.connect(name, tcp).await.map_err(|e| Error::Tls {
                endpoint: endpoint.to_string(),
                detail: e.to_string(),
            })?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        Ok(Connection {
            endpoint: endpoint.clone(),
            stream: BufReader::new(stream),
            reusable: true,
            used: false,
            answered: false,
            max_reply,
        })
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub(crate) fn reusable(&self) -> bool {
        self.reusable
    }

    /// The last request failed on a kept-alive connection before any answer:
    /// the server had closed it meanwhile and never saw the request, so sending
    /// it again on a new connection is safe.
    pub(crate) fn retryable(&self) -> bool {
        self.used && !self.answered
    }

    fn broken(&self, detail: impl fmt::Display) -> Error {
        Error::Connection {
            endpoint: self.endpoint.to_string(),
            detail: detail.to_string(),
        }
    }

    /// Sends one request and reads the whole reply body. `method` names the
    /// call in errors. A reply other than 200 is an error.
    pub(crate) async fn post(&mut self, method: &str, body: &[u8]) -> Result<Vec<u8>, Error> {
        self.reusable = false;
        self.answered = false;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tandem-xapi-fence/{}\r\nContent-Type: text/xml\r\n\
             Content-Length: {}\r\n\r\n",
            self.endpoint.path,
            self.endpoint.host_header(),
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        let stream = self.stream.get_mut();
        let sent = match stream.write_all(&request).await {
            Ok(()) => stream.flush().await,
            Err(e) => Err(e),
        };
        sent.map_err(|e| self.broken(format!("sending {method}: {e}")))?;

        let status_line = self.line(method, "the status line").await?;
        self.answered = true;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        let status: u16 = match (version.starts_with("HTTP/1."), parts.next().map(str::parse)) {
            (true, Some(Ok(s))) => s,
            _ => return Err(self.broken(format!("the answer to {method} is not HTTP"))),
        };
        let reason: String = parts.next().unwrap_or_default().chars().take(100).collect();
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut close = version == "HTTP/1.0";
        for n in 0.. {
            let line = self.line(method, "the headers").await?;
            if line.is_empty() {
                break;
            }
            if n >= MAX_HEADERS {
                return Err(self.broken(format!(
                    "more than {MAX_HEADERS} header lines in the answer to {method}"
                )));
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(self.broken(format!("a header line without a colon in the answer to {method}")));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    let n = value
                        .parse()
                        .map_err(|_| self.broken(format!("a bad Content-Length in the answer to {method}")))?;
                    if length.is_some_and(|l| l != n) {
                        return Err(self.broken(format!("two different Content-Lengths in the answer to {method}")));
                    }
                    length = Some(n);
                }
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "connection" => {
                    let v = value.to_ascii_lowercase();
                    if v.contains("close") {
                        close = true;
                    } else if v.contains("keep-alive") {
                        close = false;
                    }
                }
                _ => {}
            }
        }
        let too_large = || Error::TooLarge {
            method: method.to_string(),
            limit: self.max_reply,
        };
        let body = if chunked {
            self.chunked(method).await?
        } else if let Some(len) = length {
            if len > self.max_reply {
                return Err(too_large());
            }
            let mut buf = vec![0u8; len];
            self.stream.read_exact(&mut buf).await.map_err(|e| {
                self.broken(format!(
                    "the answer to {method} ended before its {len} bytes ({})",
                    short_io(&e)
                ))
            })?;
            buf
        } else {
            close = true;
            let mut buf = Vec::new();
            let limit = u64::try_from(self.max_reply).unwrap_or(u64::MAX).saturating_add(1);
            (&mut self.stream)
                .take(limit)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| self.broken(format!("reading the answer to {method}: {}", short_io(&e))))?;
            if buf.len() > self.max_reply {
                return Err(too_large());
            }
            buf
        };
        if status != 200 {
            return Err(Error::Http {
                endpoint: self.endpoint.to_string(),
                status,
                reason,
            });
        }
        self.reusable = !close;
        self.used = true;
        Ok(body)
    }

    async fn line(&mut self, method: &str, what: &str) -> Result<String, Error> {
        let mut buf = Vec::new();
        let n = (&mut self.stream)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| self.broken(format!("reading {what} of the answer to {method}: {}", short_io(&e))))?;
        if n == 0 {
            return Err(self.broken(format!(
                "the server closed the connection before {what} of the answer to {method}"
            )));
        }
        if buf.last() != Some(&b'\n') {
            return Err(if buf.len() >= MAX_LINE {
                self.broken(format!(
                    "a line longer than {MAX_LINE} bytes in {what} of the answer to {method}"
                ))
            } else {
                self.broken(format!(
                    "the server closed the connection in {what} of the answer to {method}"
                ))
            });
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        String::from_utf8(buf).map_err(|_| self.broken(format!("{what} of the answer to {method} is not text")))
    }

    async fn chunked(&mut self, method: &str) -> Result<Vec<u8>, Error> {
        let mut body = Vec::new();
        loop {
            let line = self.line(method, "a chunk header").await?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| self.broken(format!("a bad chunk size in the answer to {method}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line(method, "the trailers").await?.is_empty() {}
                return Ok(body);
            }
            if body.len().saturating_add(size) > self.max_reply {
                return Err(Error::TooLarge {
                    method: method.to_string(),
                    limit: self.max_reply,
                });
            }
            let start = body.len();
            body.resize(start + size, 0);
            let chunk = body.get_mut(start..).unwrap_or_default();
            self.stream
                .read_exact(chunk)
                .await
                .map_err(|e| self.broken(format!("a chunk of the answer to {method} was cut: {}", short_io(&e))))?;
            let end = self.line(method, "a chunk end").await?;
            if !end.is_empty() {
                return Err(self.broken(format!("a chunk longer than its size in the answer to {method}")));
            }
        }
    }
}

fn short_io(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        "the server closed the connection".to_string()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_master_addresses() {
        let e = Endpoint::parse("https://pool.example").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.path.as_str()),
            (true, "pool.example", 443, "/")
        );
        let e = Endpoint::parse("http://127.0.0.1:8080/RPC2").unwrap();
        assert_eq!((e.port, e.path.as_str()), (8080, "/RPC2"));
        let e = Endpoint::parse("https://[::1]:9443").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9443));
        assert_eq!(e.to_string(), "https://[::1]:9443/");
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("https://u:p@x").is_err());
        assert!(Endpoint::parse("https://x:0").is_err());
        assert!(Endpoint::parse("https://").is_err());
        let m = Endpoint::parse("https://10.0.0.2")
            .unwrap()
            .with_address("10.0.0.1")
            .unwrap();
        assert_eq!(m.to_string(), "https://10.0.0.1/");
        let m = Endpoint::parse("http://127.0.0.1:1000")
            .unwrap()
            .with_address("127.0.0.1:2000")
            .unwrap();
        assert_eq!(m.port, 2000);
        assert!(Endpoint::parse("https://x").unwrap().with_address("").is_none());
    }
}
