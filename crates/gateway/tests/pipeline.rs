//! Attacks on the request pipeline, each tried on both engines (the fast
//! HTTP/1 engine, and the general one that serves HTTP/2, chunked bodies,
//! `Expect` and everything the fast one hands over): headers that claim an
//! identity, that try to strip the framing or the host, that name two
//! hosts, or that would tell a site the client's address.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::{Engine, Seen, engine, exchange};
use gateway::{Routes, SiteRoute};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A gateway of each engine.
async fn engines() -> [(&'static str, Engine); 2] {
    [("fast", engine(true).await), ("general", engine(false).await)]
}

/// What a site may see of a request that carried forged identity headers
/// and credentials: the gateway's identity headers, once each, for `tier`.
fn assert_only_the_gateways_identity(seen: &Seen, tier: &str, engine: &str) {
    assert_eq!(seen.values("x-commons-tier"), [tier], "{engine}: {seen:?}");
    let users = seen.values("x-commons-user");
    assert!(
        users.len() == usize::from(tier != "anonymous") && users.iter().all(|u| u.len() == 32),
        "{engine}: {seen:?}"
    );
    assert!(seen.values("x-commons-provenance").iter().all(|t| t != "forged"), "{engine}: {seen:?}");
    for (name, value) in &seen.headers {
        let value = String::from_utf8_lossy(value);
        assert!(!value.contains("forged") && !value.contains("someone-else"), "{engine}: {name}: {value}");
        assert!(!value.contains("6.6.6.6") && !value.contains("alice-token"), "{engine}: {name}: {value}");
    }
    assert!(seen.values("authorization").is_empty(), "{engine}: {seen:?}");
}

const FORGED: &str = "x-commons-user: someone-else\r\nX-Commons-Tier: premium\r\nX-COMMONS-PROVENANCE: forged\r\n\
                      x-commons-extra: forged\r\nX-Forwarded-For: 6.6.6.6\r\n";

#[tokio::test]
async fn a_connection_header_cannot_strip_the_framing_of_a_body() {
    // Were Content-Length dropped, the site would read this body as a
    // request of its own, with the gateway's checks and rewrites skipped.
    let smuggled = format!("GET /smuggled HTTP/1.1\r\nHost: wiki.commons.localhost\r\n{FORGED}\r\n");
    for (name, engine) in engines().await {
        let request = format!(
            "POST /form HTTP/1.1\r\nHost: wiki.commons.localhost\r\nContent-Length: {}\r\nConnection: content-length\r\n\r\n{smuggled}",
            smuggled.len()
        );
        let answer = exchange(engine.gateway.addr, request.as_bytes()).await;
        assert_eq!(answer.map(|a| a.status), Some(200), "{name}");
        let seen = engine.next_seen().await.expect("the site saw the request");
        assert_eq!((seen.method.as_str(), seen.target.as_str()), ("POST", "/form"), "{name}");
        assert_eq!(String::from_utf8_lossy(&seen.body), smuggled, "{name}: the body is a body");
        assert!(engine.saw_nothing_more().await, "{name}: a request was smuggled in a body");
    }
}

#[tokio::test]
async fn a_chunked_body_reaches_the_site_whole_whatever_the_method_and_the_connection_header() {
    for (name, engine) in engines().await {
        for method in ["GET", "POST", "DELETE"] {
            let request = format!(
                "{method} /chunked HTTP/1.1\r\nHost: wiki.commons.localhost\r\nTransfer-Encoding: chunked\r\n\
                 Connection: transfer-encoding\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            );
            let answer = exchange(engine.gateway.addr, request.as_bytes()).await;
            assert_eq!(answer.map(|a| a.status), Some(200), "{name} {method}");
            let seen = engine.next_seen().await.expect("the site saw the request");
            assert_eq!(String::from_utf8_lossy(&seen.body), "hello world", "{name} {method}: {seen:?}");
        }
    }
}

#[tokio::test]
async fn a_connection_header_cannot_strip_the_host() {
    for (name, engine) in engines().await {
        let request = "GET / HTTP/1.1\r\nHost: wiki.commons.localhost\r\nConnection: host, keep-alive\r\n\r\n";
        assert_eq!(exchange(engine.gateway.addr, request.as_bytes()).await.map(|a| a.status), Some(200), "{name}");
        let seen = engine.next_seen().await.expect("the site saw the request");
        assert_eq!(seen.values("host"), ["wiki.commons.localhost"], "{name}");
    }
}

#[tokio::test]
async fn a_request_naming_two_hosts_is_refused() {
    // The gateway routes by one; a site could read the other.
    for (name, engine) in engines().await {
        let request = "GET / HTTP/1.1\r\nHost: wiki.commons.localhost\r\nHost: chat.commons.localhost\r\n\r\n";
        let answer = exchange(engine.gateway.addr, request.as_bytes()).await.expect("an answer");
        assert_eq!(answer.status, 400, "{name}: {answer:?}");
        assert!(engine.saw_nothing_more().await, "{name}");
    }
}

#[tokio::test]
async fn identity_headers_are_the_gateways_whatever_the_connection_header_names() {
    for (name, engine) in engines().await {
        let request = format!(
            "GET / HTTP/1.1\r\nHost: wiki.commons.localhost\r\nAuthorization: Bearer alice-token\r\n{FORGED}\
             Connection: x-commons-user, X-Commons-Tier, x-commons-provenance, authorization\r\n\r\n"
        );
        assert_eq!(exchange(engine.gateway.addr, request.as_bytes()).await.map(|a| a.status), Some(200), "{name}");
        let seen = engine.next_seen().await.expect("the site saw the request");
        assert_only_the_gateways_identity(&seen, "free", name);
        assert_eq!(seen.values("x-commons-provenance").len(), 1, "{name}");
    }
}

#[tokio::test]
async fn no_client_address_reaches_a_site_in_any_spelling() {
    for (name, engine) in engines().await {
        let request = "GET / HTTP/1.1\r\nHost: wiki.commons.localhost\r\nX-Forwarded-For: 6.6.6.6\r\n\
                       x-forwarded-host: 6.6.6.6\r\nForwarded: for=6.6.6.6;proto=http\r\nX-Real-IP: 6.6.6.6\r\n\r\n";
        assert_eq!(exchange(engine.gateway.addr, request.as_bytes()).await.map(|a| a.status), Some(200), "{name}");
        let seen = engine.next_seen().await.expect("the site saw the request");
        for (header, value) in &seen.headers {
            assert!(!String::from_utf8_lossy(value).contains("6.6.6.6"), "{name}: {header} reached the site");
        }
    }
}

#[tokio::test]
async fn forged_identity_headers_are_replaced_on_chunked_and_expect_requests() {
    for (name, engine) in engines().await {
        let chunked = format!(
            "POST /c HTTP/1.1\r\nHost: wiki.commons.localhost\r\nAuthorization: Bearer alice-token\r\n{FORGED}\
             Transfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n"
        );
        let expect = format!(
            "PUT /e HTTP/1.1\r\nHost: wiki.commons.localhost\r\n{FORGED}Expect: 100-continue\r\nContent-Length: 4\r\n\r\nbody"
        );
        for (request, tier) in [(chunked, "free"), (expect, "anonymous")] {
            assert_eq!(exchange(engine.gateway.addr, request.as_bytes()).await.map(|a| a.status), Some(200), "{name}");
            let seen = engine.next_seen().await.expect("the site saw the request");
            assert_only_the_gateways_identity(&seen, tier, name);
            assert_eq!(seen.body, b"body", "{name}");
        }
    }
}

#[tokio::test]
async fn forged_identity_headers_are_replaced_on_http2_and_split_cookies_are_joined() {
    for (name, engine) in engines().await {
        let stream = tokio::net::TcpStream::connect(engine.gateway.addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method("POST")
            .uri("http://wiki.commons.localhost/h2?x=1")
            .header("authorization", "Bearer bob-token")
            .header("cookie", "theme=dark")
            .header("cookie", "commons_site=abc")
            .header("cookie", "lang=en");
        for line in FORGED.split("\r\n").filter(|l| !l.is_empty()) {
            let (header, value) = line.split_once(": ").unwrap();
            request = request.header(header, value);
        }
        let response =
            sender.send_request(request.body(Full::new(Bytes::from_static(b"body"))).unwrap()).await.unwrap();
        assert_eq!(response.status(), 200, "{name}");
        let _ = response.into_body().collect().await;
        let seen = engine.next_seen().await.expect("the site saw the request");
        assert_only_the_gateways_identity(&seen, "premium", name);
        assert_eq!((seen.target.as_str(), seen.body.as_slice()), ("/h2?x=1", &b"body"[..]), "{name}");
        // HTTP/1.1 allows one Cookie line: HTTP/2's are joined.
        assert_eq!(seen.values("cookie"), ["theme=dark; lang=en"], "{name}");
        assert_eq!(seen.values("host"), ["wiki.commons.localhost"], "{name}: the host named");
    }
}

/// A site whose answers carry `Connection: content-length` (on `/length`)
/// or `Connection: transfer-encoding` (on `/chunked`).
async fn site_naming_its_framing() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).into_owned();
                        seen.drain(..end + 4);
                        let answer: &[u8] = if head.contains(" /chunked ") {
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                        } else {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\nhello"
                        };
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut buf).await {
                        Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_sites_connection_header_cannot_strip_the_framing_of_its_answer() {
    let site = site_naming_its_framing().await;
    for (name, engine) in engines().await {
        let mut routes = Routes::new("commons.localhost");
        routes.add_site(SiteRoute::new("odd", &[site], true), &[]);
        engine.handle.set_routes(routes);
        for (path, framing) in [("/length", "content-length: 5"), ("/chunked", "transfer-encoding: chunked")] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: odd.commons.localhost\r\n\r\n");
            let answer = exchange(engine.gateway.addr, request.as_bytes()).await;
            let answer = answer.unwrap_or_else(|| panic!("{name} {path}: no answer the client can frame"));
            assert!(answer.head.contains(framing), "{name} {path}: {}", answer.head);
            assert!(String::from_utf8_lossy(&answer.body).contains("hello"), "{name} {path}");
        }
    }
}
