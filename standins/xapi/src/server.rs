//! HTTP/1.1 (keep-alive) and, when asked, TLS in front of the pool: one
//! listener per host, every one on 127.0.0.1. xapi takes XML-RPC as a POST
//! to `/` or `/RPC2` (Python's xmlrpc.client uses the latter).

use crate::pool::Pool;
use crate::xml;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const MAX_BODY: usize = 1024 * 1024;
const MAX_LINE: u64 = 8 * 1024;

/// A CA and a certificate it signed for `localhost` and 127.0.0.1.
#[derive(Clone)]
pub struct Tls {
    pub ca_pem: String,
    pub cert_pem: String,
    /// SHA-256 of the server certificate (DER).
    pub fingerprint: [u8; 32],
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Tls {
    pub fn generate() -> Result<Tls, String> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        use sha2::Digest;
        let e = |e: rcgen::Error| e.to_string();
        let ca_key = KeyPair::generate().map_err(e)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tandem XenAPI stand-in CA");
        let ca = ca_params.self_signed(&ca_key).map_err(e)?;
        let key = KeyPair::generate().map_err(e)?;
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).map_err(e)?;
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(e)?;
        let fingerprint: [u8; 32] = sha2::Sha256::digest(cert.der().as_ref()).into();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .map_err(|e| e.to_string())?;
        Ok(Tls {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            fingerprint,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// Accepts connections for host `host` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, host: usize, pool: Arc<Mutex<Pool>>, tls: Option<Tls>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(t) => match t.acceptor.accept(stream).await {
                    Ok(s) => connection(s, host, pool).await,
                    Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                },
                None => connection(stream, host, pool).await,
            }
        });
    }
}

async fn line<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Option<String> {
    let mut buf = Vec::new();
    let n = r.take(MAX_LINE).read_until(b'\n', &mut buf).await.ok()?;
    if n == 0 || buf.last() != Some(&b'\n') {
        return None;
    }
    Some(String::from_utf8_lossy(&buf).trim_end().to_string())
}

async fn reply<W: AsyncWrite + Unpin>(w: &mut W, status: &str, body: &str, close: bool) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nConnection: {}\r\nCache-Control: no-cache\r\nContent-Type: text/xml\r\n\
         Content-Length: {}\r\n\r\n",
        if close { "close" } else { "keep-alive" },
        body.len()
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(body.as_bytes()).await?;
    w.flush().await
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S, host: usize, pool: Arc<Mutex<Pool>>) {
    let mut r = BufReader::new(stream);
    // A TLS ClientHello on a plain-http port: answer 400, as web servers do,
    // rather than wait for a line that never comes.
    if matches!(r.fill_buf().await, Ok(b) if b.first() == Some(&0x16)) {
        let _ = reply(r.get_mut(), "400 Bad Request", "", true).await;
        return;
    }
    loop {
        let Some(request) = line(&mut r).await else { return };
        let mut parts = request.split_whitespace();
        let (method, path, version) = (parts.next(), parts.next(), parts.next().unwrap_or("HTTP/1.0"));
        let mut length = None;
        let mut close = version == "HTTP/1.0";
        loop {
            let Some(h) = line(&mut r).await else { return };
            if h.is_empty() {
                break;
            }
            let Some((k, v)) = h.split_once(':') else { return };
            let v = v.trim().to_ascii_lowercase();
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.parse::<usize>().ok(),
                "connection" if v.contains("close") => close = true,
                "connection" if v.contains("keep-alive") => close = false,
                "expect" if v.contains("100-continue") => {
                    let _ = r.get_mut().write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                }
                _ => {}
            }
        }
        if method != Some("POST") || !matches!(path, Some("/" | "/RPC2")) {
            let _ = reply(r.get_mut(), "404 Not Found", "", true).await;
            return;
        }
        let Some(length) = length.filter(|l| *l <= MAX_BODY) else {
            let _ = reply(r.get_mut(), "413 Request Entity Too Large", "", true).await;
            return;
        };
        let mut body = vec![0u8; length];
        if r.read_exact(&mut body).await.is_err() {
            return;
        }
        let answer = match xml::parse_call(&body) {
            Ok((name, params)) => {
                let delay = pool.lock().ok().and_then(|p| p.delay_for(&name));
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                match pool.lock() {
                    Ok(mut p) => {
                        let v = p.handle(host, &name, &params);
                        tracing::debug!(host, method = %name, "call");
                        xml::response(&v)
                    }
                    Err(_) => return,
                }
            }
            Err(e) => xml::response(&xml::failure("XMLRPC_UNMARSHAL_FAILURE", &[e])),
        };
        if reply(r.get_mut(), "200 OK", &answer, close).await.is_err() || close {
            return;
        }
    }
}
