//! The two engines side by side. Generated request heads, sent through the
//! fast HTTP/1 engine and through the general (hyper) engine, must reach
//! the site as the same request: the same method, target, headers (names
//! compared without case, as HTTP compares them, as a multiset) and body.
//! Only the framing headers (`Content-Length`, `Transfer-Encoding`) and the
//! provenance token's value (a nonce and a MAC) may differ.
//!
//! Each case is also held, on both engines, to what the pipeline promises
//! whichever engine serves it: no inbound `x-commons-*` header, credential,
//! client address or hop-by-hop header reaches the site; the gateway's own
//! identity headers are there once; one `Host`, the one the request was
//! routed by; the body whole.

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use common::{Engine, Seen, engine};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

/// The runtime of the sites and clients (the gateways run their own).
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
});

/// One gateway of each engine, each in front of a site of its own.
static ENGINES: LazyLock<[Engine; 2]> =
    LazyLock::new(|| RUNTIME.block_on(async { [engine(true).await, engine(false).await] }));

/// The same, for the odd requests (the two properties run at once).
static ODD_ENGINES: LazyLock<[Engine; 2]> =
    LazyLock::new(|| RUNTIME.block_on(async { [engine(true).await, engine(false).await] }));

/// A generated request.
#[derive(Debug, Clone)]
struct Generated {
    method: &'static str,
    path: String,
    host: String,
    /// Every header line, `Host` and framing included, in order.
    headers: Vec<(String, String)>,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    None,
    Length(Vec<u8>),
    /// Sent in these chunks.
    Chunked(Vec<Vec<u8>>),
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::None => Vec::new(),
            Body::Length(bytes) => bytes.clone(),
            Body::Chunked(chunks) => chunks.concat(),
        }
    }
}

impl Generated {
    fn wire(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        match &self.body {
            Body::None => {}
            Body::Length(bytes) => out.extend_from_slice(bytes),
            Body::Chunked(chunks) => {
                for chunk in chunks {
                    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
        }
        out
    }
}

/// `name` with each letter in either case.
fn spelled(name: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<bool>(), name.len()).prop_map(move |upper| {
        name.chars().zip(upper).map(|(c, up)| if up { c.to_ascii_uppercase() } else { c }).collect()
    })
}

fn one_of(names: &[&'static str]) -> impl Strategy<Value = String> + use<> {
    select(names.to_vec()).prop_flat_map(spelled)
}

/// Any header but `Host` and the framing ones.
fn header() -> impl Strategy<Value = (String, String)> {
    let cookie_pairs = ["theme=dark", "commons_site=abc", "commons_session=def", "lang=en", "x=1"];
    let connection_tokens = [
        "close",
        "keep-alive",
        "content-length",
        "transfer-encoding",
        "host",
        "cookie",
        "accept",
        "authorization",
        "user-agent",
        "x-custom-1",
        "x-commons-user",
        "x-commons-tier",
        "x_commons_user",
        "te",
        "upgrade",
        "http2-settings",
    ];
    prop_oneof![
        (one_of(&["accept"]), select(vec!["*/*", "text/html", "application/json"]).prop_map(str::to_owned)),
        (one_of(&["user-agent", "cache-control"]), "[a-z0-9/.]{1,10}"),
        (one_of(&["x-custom-1", "x-custom-2", "x-commonsense"]), "[a-z0-9]([a-z0-9 ]{0,10}[a-z0-9])?"),
        (one_of(&["cookie"]), prop::collection::vec(select(cookie_pairs.to_vec()), 1..4).prop_map(|p| p.join("; "))),
        (
            one_of(&["authorization"]),
            select(vec!["Bearer alice-token", "Bearer bob-token", "Bearer wrong", "Basic Zm9vOmJhcg=="])
                .prop_map(str::to_owned)
        ),
        (
            one_of(&[
                "x-commons-user",
                "x-commons-tier",
                "x-commons-provenance",
                "x-commons-fault",
                "x-commons-x",
                "x_commons_user",
                "x-commons_tier",
                "x.commons.provenance",
            ]),
            Just("forged".to_owned())
        ),
        (
            one_of(&["keep-alive", "te", "trailer", "proxy-authorization", "proxy-authenticate", "http2-settings"]),
            "[a-z]{1,6}"
        ),
        (
            one_of(&[
                "content_length",
                "content.length",
                "transfer_encoding",
                "keep_alive",
                "proxy_authorization",
                "http2_settings",
            ]),
            select(vec!["0", "5", "chunked"]).prop_map(str::to_owned)
        ),
        (
            one_of(&["upgrade"]),
            select(vec!["h2c", "websocket", "WebSocket", "h2c, websocket", "foo"]).prop_map(str::to_owned)
        ),
        (
            one_of(&[
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x_forwarded_for",
                "forwarded",
                "x-real-ip",
                "x_real_ip",
                "true-client-ip",
                "x-original-url",
            ]),
            Just("6.6.6.6".to_owned())
        ),
        (
            one_of(&["connection"]),
            prop::collection::vec(select(connection_tokens.to_vec()).prop_flat_map(spelled), 1..4)
                .prop_map(|tokens| tokens.join(", "))
        ),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        2 => Just(Body::None),
        3 => prop::collection::vec(any::<u8>(), 0..3000).prop_map(Body::Length),
        1 => prop::collection::vec(prop::collection::vec(any::<u8>(), 1..700), 0..4).prop_map(Body::Chunked),
    ]
}

fn request() -> impl Strategy<Value = Generated> {
    let method = select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]);
    let path = "/([a-z0-9_~-][a-zA-Z0-9._~-]{0,6}/){0,3}(\\?[a-z0-9=&]{0,10})?";
    let host = select(vec!["wiki.commons.localhost", "wiki.commons.localhost:8080", "WIKI.commons.localhost"]);
    let headers = prop::collection::vec(header(), 0..8);
    (method, path, host, one_of(&["host"]), headers, body(), any::<prop::sample::Index>(), any::<bool>()).prop_map(
        |(method, path, host, host_name, mut headers, body, at, expect)| {
            let mut framing = Vec::new();
            match &body {
                Body::None => {}
                Body::Length(bytes) => framing.push(("Content-Length".to_owned(), bytes.len().to_string())),
                Body::Chunked(_) => framing.push(("Transfer-Encoding".to_owned(), "chunked".to_owned())),
            }
            if expect && !matches!(body, Body::None) {
                framing.push(("Expect".to_owned(), "100-continue".to_owned()));
            }
            headers.insert(at.index(headers.len() + 1), (host_name, host.to_owned()));
            for line in framing {
                headers.insert(at.index(headers.len() + 1), line);
            }
            Generated { method, path, host: host.to_owned(), headers, body }
        },
    )
}

/// The request through one engine, as its site saw it.
async fn through(engine: &Engine, request: &Generated) -> Result<Seen, TestCaseError> {
    prop_assert!(engine.seen.lock().await.try_recv().is_err(), "the site saw a request nobody sent");
    let answer = common::exchange(engine.gateway.addr, &request.wire()).await;
    prop_assert_eq!(answer.map(|a| a.status), Some(200));
    match tokio::time::timeout(Duration::from_secs(10), engine.seen.lock().await.recv()).await {
        Ok(Some(seen)) => Ok(seen),
        _ => Err(TestCaseError::fail("the site saw nothing")),
    }
}

/// Held whatever the engine.
fn check_promises(request: &Generated, seen: &Seen) -> Result<(), TestCaseError> {
    prop_assert_eq!(&seen.method, request.method);
    prop_assert_eq!(&seen.target, &request.path);
    prop_assert_eq!(&seen.body, &request.body.bytes(), "the body, whole");
    let values =
        |name: &str| seen.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    prop_assert_eq!(values("host"), vec![request.host.clone().into_bytes()], "one host, the one routed by");
    prop_assert_eq!(values("x-commons-tier").len(), 1);
    prop_assert!(values("x-commons-user").len() <= 1 && values("x-commons-provenance").len() <= 1);
    prop_assert_eq!(values("x-forwarded-proto"), vec![b"http".to_vec()], "the gateway's own scheme");
    for (name, value) in &seen.headers {
        prop_assert!(value.as_slice() != b"forged" && value.as_slice() != b"6.6.6.6", "{}: forged", name);
        // A WebSocket upgrade, and no other, is asked of the site.
        let websocket = (name == "connection" && value == b"upgrade") || (name == "upgrade" && value == b"websocket");
        let hop_by_hop = [
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "proxy-authorization",
            "proxy-authenticate",
            "upgrade",
            "http2-settings",
        ];
        prop_assert!(
            websocket || (!hop_by_hop.contains(&name.as_str()) && name != "authorization"),
            "{} reached the site",
            name
        );
        prop_assert!(!folds_to_framing(name), "{} reached the site", name);
        if name == "cookie" {
            let value = String::from_utf8_lossy(value);
            prop_assert!(!value.contains("commons_site") && !value.contains("commons_session"), "{}", value);
        }
    }
    let framing = values("content-length").len() + values("transfer-encoding").len();
    prop_assert!(framing <= 1, "one framing header at most");
    Ok(())
}

/// Whether `name` is a framing or hop-by-hop name spelled with another
/// separator (`content_length`): an app server may fold it into the name.
fn folds_to_framing(name: &str) -> bool {
    ["content-length", "transfer-encoding", "keep-alive", "proxy-authorization", "proxy-authenticate", "http2-settings"]
        .iter()
        .any(|to| {
            !name.eq_ignore_ascii_case(to)
                && name.len() == to.len()
                && name.bytes().zip(to.bytes()).all(|(n, t)| {
                    if t.is_ascii_alphanumeric() { n.eq_ignore_ascii_case(&t) } else { !n.is_ascii_alphanumeric() }
                })
        })
}

/// What both engines must agree on: all but framing and the token's value.
fn comparable(seen: &Seen) -> Seen {
    let headers = seen
        .headers
        .iter()
        .filter(|(name, _)| name != "content-length" && name != "transfer-encoding")
        .map(|(name, value)| {
            let value = if name == "x-commons-provenance" { b"<token>".to_vec() } else { value.clone() };
            (name.clone(), value)
        })
        .collect();
    Seen { headers, ..seen.clone() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 256, ..ProptestConfig::default() })]

    #[test]
    fn both_engines_send_the_site_the_same_request(request in request()) {
        let [fast, general] = &*ENGINES;
        let (by_fast, by_general) = RUNTIME.block_on(async {
            Ok::<_, TestCaseError>((through(fast, &request).await?, through(general, &request).await?))
        })?;
        check_promises(&request, &by_fast).map_err(|e| TestCaseError::fail(format!("fast engine: {e}")))?;
        check_promises(&request, &by_general).map_err(|e| TestCaseError::fail(format!("general engine: {e}")))?;
        prop_assert_eq!(comparable(&by_fast), comparable(&by_general));
    }
}

/// A request whose framing may be odd: lengths repeated, disagreeing or
/// signed, `Transfer-Encoding` spelled and listed in odd ways, beside a
/// `Content-Length`, or headers that only look like framing; its body a
/// request of its own that forges identity headers.
#[derive(Debug, Clone)]
struct Odd {
    wire: String,
    path: String,
    /// The body, if the request is let through.
    body: Vec<u8>,
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: wiki.commons.localhost\r\nX-Commons-User: forged\r\n\
                        X_Commons_User: forged\r\nContent-Length: 40\r\n\r\n";

fn odd() -> impl Strategy<Value = Odd> {
    let framing = prop_oneof![
        Just(vec!["Content-Length: {n}"]),
        Just(vec!["Content-Length: {n}", "Content-Length: {n}"]),
        Just(vec!["Content-Length: {n}", "content-length: {m}"]),
        Just(vec!["Content-Length: +{n}"]),
        Just(vec!["Content-Length: {n}, {n}"]),
        Just(vec!["Content-Length: {n}", "Content_Length: 0"]),
        Just(vec!["Content-Length: {n}", "Transfer_Encoding: chunked"]),
        Just(vec!["Transfer-Encoding: chunked", "Content-Length: {m}"]),
        Just(vec!["Transfer-Encoding: Chunked"]),
        Just(vec!["Transfer-Encoding: identity, chunked"]),
        Just(vec!["Transfer-Encoding: chunked, chunked"]),
        Just(vec!["Transfer-Encoding: gzip"]),
        Just(vec!["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"]),
    ];
    let path = select(vec!["/form", "//form", "/%2e/form", "/form%2F..", "/../form", "/a/../form"]);
    let tail = "[ -~]{0,40}";
    (
        select(vec!["POST", "PUT", "GET"]),
        path,
        framing,
        prop::collection::vec(header(), 0..6),
        tail,
        any::<prop::sample::Index>(),
    )
        .prop_map(|(method, path, framing, mut headers, tail, at)| {
            let body = format!("{SMUGGLED}{tail}").into_bytes();
            let chunked = framing.iter().any(|line| line.starts_with("Transfer-Encoding"));
            let n = body.len();
            for line in framing {
                let line = line.replace("{n}", &n.to_string()).replace("{m}", &(n / 2).to_string());
                let (name, value) = line.split_once(": ").expect("a header line");
                headers.insert(at.index(headers.len() + 1), (name.to_owned(), value.to_owned()));
            }
            headers.insert(at.index(headers.len() + 1), ("Host".to_owned(), "wiki.commons.localhost".to_owned()));
            let mut wire = format!("{method} {path} HTTP/1.1\r\n");
            for (name, value) in &headers {
                wire.push_str(&format!("{name}: {value}\r\n"));
            }
            wire.push_str("\r\n");
            let text = String::from_utf8_lossy(&body);
            if chunked {
                wire.push_str(&format!("{:x}\r\n{text}\r\n0\r\n\r\n", body.len()));
            } else {
                wire.push_str(&text);
            }
            Odd { wire, path: path.to_owned(), body }
        })
}

/// An odd request through one engine: its answer's status, and what the
/// site saw of it (nothing, if it was refused).
async fn odd_through(engine: &Engine, request: &Odd) -> Result<(u16, Option<Seen>), TestCaseError> {
    prop_assert!(engine.seen.lock().await.try_recv().is_err(), "the site saw a request nobody sent");
    let status = common::exchange(engine.gateway.addr, request.wire.as_bytes()).await.map(|a| a.status);
    let Some(status) = status else { return Err(TestCaseError::fail("no answer")) };
    if status != 200 {
        return Ok((status, None));
    }
    match tokio::time::timeout(Duration::from_secs(10), engine.seen.lock().await.recv()).await {
        Ok(Some(seen)) => Ok((status, Some(seen))),
        _ => Err(TestCaseError::fail("answered, but the site saw nothing")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 256, ..ProptestConfig::default() })]

    #[test]
    fn both_engines_agree_on_odd_framing_and_never_forward_a_second_request(request in odd()) {
        let [fast, general] = &*ODD_ENGINES;
        let (by_fast, by_general) = RUNTIME.block_on(async {
            Ok::<_, TestCaseError>((odd_through(fast, &request).await?, odd_through(general, &request).await?))
        })?;
        prop_assert_eq!(by_fast.0 == 200, by_general.0 == 200, "fast {} general {}", by_fast.0, by_general.0);
        for (engine, seen) in [("fast", by_fast.1), ("general", by_general.1)] {
            let Some(seen) = seen else { continue };
            prop_assert_eq!(&seen.target, &request.path, "{}", engine);
            prop_assert_eq!(&seen.body, &request.body, "{}: the body, whole, as a body", engine);
            let users = seen.values("x-commons-user");
            prop_assert!(users.len() <= 1 && users.iter().all(|u| u.len() == 32), "{}: {:?}", engine, users);
            for (name, value) in &seen.headers {
                prop_assert!(value.as_slice() != b"forged" && value.as_slice() != b"6.6.6.6", "{}: {}", engine, name);
                prop_assert!(!folds_to_framing(name), "{}: {} reached the site", engine, name);
            }
        }
    }
}
