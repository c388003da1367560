//! Bad answers from a "pool": a canned server on 127.0.0.1 answers each request
//! with the next reply of a script. Garbage, truncated, oversized, wrongly
//! typed and deeply nested XML-RPC, HTTP errors, a server that stops mid-reply
//! or never answers: each must give one clear error, and no panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use xapi_fence::{Client, Config, Error, Password};

#[derive(Clone)]
enum Reply {
    /// Raw bytes, then keep the connection.
    Raw(Vec<u8>),
    /// Raw bytes, then close.
    Close(Vec<u8>),
    /// Read the request and never answer.
    Stall,
}

fn http(body: &str) -> Reply {
    Reply::Raw(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

fn xmlrpc(value: &str) -> String {
    format!("<?xml version=\"1.0\"?><methodResponse><params><param>{value}</param></params></methodResponse>")
}

fn ok(value: &str) -> Reply {
    http(&xmlrpc(&format!(
        "<value><struct><member><name>Status</name><value>Success</value></member>\
         <member><name>Value</name>{value}</member></struct></value>"
    )))
}

fn login_ok() -> Reply {
    ok("<value>OpaqueRef:s1</value>")
}

/// Serves the script, one reply per request in order, over any number of
/// connections. Returns the URL; the server ends with the test's runtime.
async fn canned(script: Vec<Reply>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let next = Arc::new(AtomicUsize::new(0));
    let counter = next.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let script = script.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end().to_ascii_lowercase();
                        if l.is_empty() {
                            break;
                        }
                        if let Some(v) = l.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    if r.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    match script.get(i).cloned().unwrap_or_else(|| ok("<value></value>")) {
                        Reply::Raw(b) => {
                            if r.get_mut().write_all(&b).await.is_err() {
                                return;
                            }
                        }
                        Reply::Close(b) => {
                            let _ = r.get_mut().write_all(&b).await;
                            return;
                        }
                        Reply::Stall => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, counter)
}

async fn status_against(script: Vec<Reply>) -> Error {
    let (url, _) = canned(script).await;
    let mut cfg = Config::new(url, "root", Password::new("pw-never-shown"));
    cfg.call_timeout = Duration::from_millis(500);
    cfg.max_reply = 64 * 1024;
    let e = Client::new(cfg).unwrap().status("node-a").await.unwrap_err();
    let text = e.to_string();
    assert!(!text.contains("pw-never-shown"), "{text}");
    assert!(!text.is_empty() && !text.contains('\n'), "one line: {text:?}");
    e
}

fn assert_kind(e: &Error, want: fn(&Error) -> bool, words: &str) {
    assert!(want(e), "unexpected kind: {e:?}");
    assert!(e.to_string().contains(words), "{e} does not say {words:?}");
}

#[tokio::test]
async fn garbage_instead_of_xml() {
    let e = status_against(vec![http("\u{0}\u{1}garbage{{{<<")]).await;
    assert_kind(
        &e,
        |e| matches!(e, Error::Malformed { .. }),
        "session.login_with_password: malformed reply",
    );
}

#[tokio::test]
async fn truncated_xml() {
    let body = xmlrpc("<value><struct><member><name>Status</name><value>Succ");
    let e = status_against(vec![http(&body[..body.len() - 30])]).await;
    assert_kind(&e, |e| matches!(e, Error::Malformed { .. }), "malformed reply");
}

#[tokio::test]
async fn not_http_at_all() {
    let e = status_against(vec![Reply::Close(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec())]).await;
    assert_kind(&e, |e| matches!(e, Error::Connection { .. }), "is not HTTP");
}

#[tokio::test]
async fn oversized_replies_are_refused_before_reading_them() {
    let e = status_against(vec![Reply::Raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n".to_vec(),
    )])
    .await;
    assert_kind(&e, |e| matches!(e, Error::TooLarge { .. }), "larger than 65536 bytes");
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..100 {
        chunked.extend_from_slice(b"1000\r\n");
        chunked.extend(std::iter::repeat_n(b' ', 0x1000));
        chunked.extend_from_slice(b"\r\n");
    }
    let e = status_against(vec![Reply::Close(chunked)]).await;
    assert_kind(&e, |e| matches!(e, Error::TooLarge { .. }), "larger than");
    let mut endless = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
    endless.extend(std::iter::repeat_n(b'x', 100 * 1024));
    let e = status_against(vec![Reply::Close(endless)]).await;
    assert_kind(&e, |e| matches!(e, Error::TooLarge { .. }), "larger than");
    let mut long_header = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
    long_header.extend(std::iter::repeat_n(b'a', 20_000));
    let e = status_against(vec![Reply::Close(long_header)]).await;
    assert_kind(&e, |e| matches!(e, Error::Connection { .. }), "longer than 8192 bytes");
}

#[tokio::test]
async fn wrongly_typed_answers() {
    // Status is an int.
    let e = status_against(vec![http(&xmlrpc(
        "<value><struct><member><name>Status</name><value><int>1</int></value></member></struct></value>",
    ))])
    .await;
    assert_kind(
        &e,
        |e| matches!(e, Error::Malformed { .. }),
        "Status is a int, not a string",
    );
    // The session reference is an array.
    let e = status_against(vec![ok("<value><array><data/></array></value>")]).await;
    assert_kind(
        &e,
        |e| matches!(e, Error::Malformed { .. }),
        "session reference is a array",
    );
    // The VM list is a string; then is_a_template is a string.
    let e = status_against(vec![login_ok(), ok("<value>OpaqueRef:vm</value>")]).await;
    assert_kind(&e, |e| matches!(e, Error::Malformed { .. }), "VM.get_by_name_label");
    let record = "<value><struct><member><name>is_a_template</name><value>no</value></member></struct></value>";
    let e = status_against(vec![
        login_ok(),
        ok("<value><array><data><value>OpaqueRef:vm</value></data></array></value>"),
        ok(record),
    ])
    .await;
    assert_kind(
        &e,
        |e| matches!(e, Error::Malformed { .. }),
        "is_a_template is a string, not a boolean",
    );
    // A boolean that is neither 0 nor 1, an int that does not fit.
    let e = status_against(vec![ok("<value><boolean>2</boolean></value>")]).await;
    assert_kind(&e, |e| matches!(e, Error::Malformed { .. }), "neither 0 nor 1");
    let e = status_against(vec![ok("<value><int>99999999999999999999999</int></value>")]).await;
    assert_kind(&e, |e| matches!(e, Error::Malformed { .. }), "not a 64-bit integer");
    // Failure without a description.
    let e = status_against(vec![http(&xmlrpc(
        "<value><struct><member><name>Status</name><value>Failure</value></member></struct></value>",
    ))])
    .await;
    assert_kind(&e, |e| matches!(e, Error::Malformed { .. }), "no ErrorDescription");
}

#[tokio::test]
async fn deeply_nested_replies() {
    let depth = 100_000;
    let value = format!(
        "{}{}",
        "<value><array><data>".repeat(depth),
        "</data></array></value>".repeat(depth)
    );
    let (url, _) = canned(vec![ok(&value)]).await;
    let mut cfg = Config::new(url, "root", Password::new("pw"));
    cfg.max_reply = 8 * 1024 * 1024;
    let e = Client::new(cfg).unwrap().status("node-a").await.unwrap_err();
    assert_kind(
        &e,
        |e| matches!(e, Error::Malformed { .. }),
        "nested deeper than 32 levels",
    );
}

#[tokio::test]
async fn http_errors() {
    let e = status_against(vec![Reply::Raw(
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops!".to_vec(),
    )])
    .await;
    assert_kind(
        &e,
        |e| matches!(e, Error::Http { status: 500, .. }),
        "answered HTTP 500 Internal Server Error",
    );
    let e = status_against(vec![Reply::Close(b"HTTP/1.1 404 Not Found\r\n\r\n".to_vec())]).await;
    assert_kind(&e, |e| matches!(e, Error::Http { status: 404, .. }), "HTTP 404");
    let e = status_against(vec![http(
        "<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>4</int></value></member>\
         <member><name>faultString</name><value>Too many parameters.</value></member></struct></value></fault>\
         </methodResponse>",
    )])
    .await;
    assert_kind(
        &e,
        |e| matches!(e, Error::Fault { code: 4, .. }),
        "XML-RPC fault 4: Too many parameters.",
    );
}

#[tokio::test]
async fn a_server_that_stops_mid_reply() {
    let e = status_against(vec![Reply::Close(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n<?xml version=\"1.0\"?><methodResp".to_vec(),
    )])
    .await;
    assert_kind(
        &e,
        |e| matches!(e, Error::Connection { .. }),
        "ended before its 1000 bytes",
    );
    let e = status_against(vec![Reply::Close(b"HTTP/1.1 200 OK\r\nContent-Le".to_vec())]).await;
    assert_kind(&e, |e| matches!(e, Error::Connection { .. }), "closed the connection");
    let e = status_against(vec![Reply::Close(Vec::new())]).await;
    assert_kind(
        &e,
        |e| matches!(e, Error::Connection { .. }),
        "closed the connection before the status line",
    );
    let e = status_against(vec![Reply::Close(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nabc".to_vec(),
    )])
    .await;
    assert_kind(&e, |e| matches!(e, Error::Connection { .. }), "was cut");
}

#[tokio::test]
async fn a_server_that_never_answers() {
    let started = std::time::Instant::now();
    let e = status_against(vec![Reply::Stall]).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_kind(
        &e,
        |e| matches!(e, Error::Timeout { ms: 500, .. }),
        "session.login_with_password",
    );
}

#[tokio::test]
async fn a_password_echoed_back_by_the_server_is_redacted() {
    let e = status_against(vec![http(&xmlrpc(
        "<value><struct><member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription\
         </name><value><array><data><value>SESSION_AUTHENTICATION_FAILED</value><value>pw-never-shown</value>\
         </data></array></value></member></struct></value>",
    ))])
    .await;
    assert!(e.is_auth_failure(), "{e}");
    assert!(e.to_string().contains("<redacted>"), "{e}");
}

#[tokio::test]
async fn a_kept_alive_connection_closed_by_the_server_is_reopened_once() {
    // The server closes after the login answer although it did not say so.
    let (url, served) = canned(vec![
        Reply::Close(match login_ok() {
            Reply::Raw(b) => b,
            _ => unreachable!(),
        }),
        ok("<value><array><data><value>OpaqueRef:vm</value></data></array></value>"),
        ok(
            "<value><struct><member><name>is_a_template</name><value><boolean>0</boolean></value></member>\
            <member><name>is_control_domain</name><value><boolean>0</boolean></value></member></struct></value>",
        ),
        ok("<value>Halted</value>"),
    ])
    .await;
    let c = Client::new(Config::new(url, "root", Password::new("pw"))).unwrap();
    assert_eq!(c.status("node-a").await.unwrap(), xapi_fence::PowerState::Halted);
    assert_eq!(served.load(Ordering::SeqCst), 5, "login, 3 calls, logout");
}
