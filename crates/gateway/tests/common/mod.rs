//! What the tests of both engines share: a site that records what it is
//! sent, a gateway in front of it with either engine, and a client that
//! writes requests byte for byte.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway::{Gateway, GatewayConfig, Identities, ManualClock, Routes, RunningGateway, SiteRoute};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};

/// A request as the site saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// Lower-case names, sorted: a multiset.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Seen {
    /// The values of header `name` (lower case), in order.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned()).collect()
    }
}

/// A site that records every request it is sent and answers `ok`.
pub async fn recording_site() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (record, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let record = record.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = match body.collect().await {
                            Ok(body) => body.to_bytes().to_vec(),
                            Err(e) => format!("<the body broke off: {e}>").into_bytes(),
                        };
                        let mut headers: Vec<(String, Vec<u8>)> =
                            parts.headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect();
                        headers.sort();
                        let seen =
                            Seen { method: parts.method.to_string(), target: parts.uri.to_string(), headers, body };
                        let _ = record.send(seen);
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (addr, seen)
}

/// A gateway with one engine in front of a recording site `wiki`
/// (anonymous users welcome); alice is a free user, bob a subscriber.
pub struct Engine {
    pub gateway: RunningGateway,
    /// The recording site's address.
    pub site: SocketAddr,
    pub handle: Gateway,
    /// What the site received, in order.
    pub seen: Mutex<mpsc::UnboundedReceiver<Seen>>,
}

pub async fn engine(fast_path: bool) -> Engine {
    engine_with(GatewayConfig { fast_path, ..GatewayConfig::default() }).await
}

/// [`engine`] with this configuration (its `fast_path` says which engine).
pub async fn engine_with(config: GatewayConfig) -> Engine {
    let (site, seen) = recording_site().await;
    let mut routes = Routes::new("commons.localhost");
    routes.add_site(SiteRoute::new("wiki", &[site], true), &[]);
    let handle = Gateway::new(config, routes, None, Arc::new(ManualClock::new(1_795_000_000_000)));
    let mut identities = Identities::default();
    identities.add_token("alice-token", "alice");
    identities.add_user("bob", true);
    identities.add_token("bob-token", "bob");
    handle.set_identities(identities);
    let gateway = handle.serve("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    Engine { gateway, site, handle, seen: Mutex::new(seen) }
}

impl Engine {
    /// The next request the site saw, if one comes within a few seconds.
    pub async fn next_seen(&self) -> Option<Seen> {
        tokio::time::timeout(Duration::from_secs(5), self.seen.lock().await.recv()).await.ok().flatten()
    }

    /// Whether the site saw nothing more (after a moment for stragglers).
    pub async fn saw_nothing_more(&self) -> bool {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.seen.lock().await.try_recv().is_err()
    }
}

/// An answer as the client read it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The head, lower-cased.
    pub head: String,
    pub body: Vec<u8>,
}

/// Writes `request` as it is on a new connection and reads the final
/// answer (after any 1xx), framed by its `Content-Length` or chunked (no
/// body for a `HEAD`); None if none comes whole within a few seconds.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Option<Answer> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(request).await.ok()?;
    let head_only = request.starts_with(b"HEAD ");
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = response.parse(&buf) {
            let status = response.code.unwrap_or(0);
            let length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok());
            if (100..200).contains(&status) {
                buf.drain(..head);
                continue;
            }
            let chunked = response
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding") && h.value.eq_ignore_ascii_case(b"chunked"));
            if chunked && !head_only {
                // Whole at its last chunk (good enough for these answers).
                if buf[head..].ends_with(b"0\r\n\r\n") {
                    let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
                    return Some(Answer { status, head: text, body: buf[head..].to_vec() });
                }
            } else if let Some(whole) = if head_only { Some(head) } else { length.map(|n| head + n) }
                && buf.len() >= whole
            {
                let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
                return Some(Answer { status, head: text, body: buf[head..whole].to_vec() });
            }
        }
        let mut more = [0u8; 8192];
        match tokio::time::timeout_at(deadline, stream.read(&mut more)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&more[..n]),
            _ => return None,
        }
    }
}
