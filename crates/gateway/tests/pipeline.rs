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

#[tokio::test]
async fn a_smuggled_body_cannot_capture_the_next_users_request_on_the_pooled_connection() {
    // Were the body read as a request, its declared length would swallow
    // the next request sent on the same upstream connection: bob's.
    let smuggled = "GET /captured HTTP/1.1\r\nHost: wiki.commons.localhost\r\nX-Commons-User: forged\r\n\
                    Content-Length: 300\r\n\r\n";
    for (name, engine) in engines().await {
        let request = format!(
            "POST /form HTTP/1.1\r\nHost: wiki.commons.localhost\r\nContent-Length: {}\r\n\
             Connection: content-length, x-commons-user\r\n\r\n{smuggled}",
            smuggled.len()
        );
        assert_eq!(exchange(engine.gateway.addr, request.as_bytes()).await.map(|a| a.status), Some(200), "{name}");
        let bob = "GET /bob HTTP/1.1\r\nHost: wiki.commons.localhost\r\nAuthorization: Bearer bob-token\r\n\r\n";
        assert_eq!(exchange(engine.gateway.addr, bob.as_bytes()).await.map(|a| a.status), Some(200), "{name}");
        let form = engine.next_seen().await.expect("the site saw the form");
        assert_eq!((form.target.as_str(), form.body.as_slice()), ("/form", smuggled.as_bytes()), "{name}");
        let seen = engine.next_seen().await.expect("the site saw bob's request");
        assert_eq!((seen.method.as_str(), seen.target.as_str()), ("GET", "/bob"), "{name}: {seen:?}");
        assert_eq!(seen.values("x-commons-tier"), ["premium"], "{name}");
        assert!(engine.saw_nothing_more().await, "{name}: a request was smuggled in a body");
    }
}

#[tokio::test]
async fn only_websocket_upgrades_reach_a_site_and_any_other_goes_as_a_plain_request() {
    // h2c would take every later request on the connection past the
    // gateway; no other protocol is known to be safe either.
    for (name, engine) in engines().await {
        for (connection, upgrade) in [
            ("Upgrade, HTTP2-Settings", "h2c"),
            ("upgrade", "H2C"),
            ("Upgrade", "websocket, h2c"),
            ("Upgrade", "TLS/1.2"),
            ("keep-alive, Upgrade", "foo"),
        ] {
            let request = format!(
                "GET /up HTTP/1.1\r\nHost: wiki.commons.localhost\r\nConnection: {connection}\r\nUpgrade: {upgrade}\r\n\
                 HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
            );
            let answer = exchange(engine.gateway.addr, request.as_bytes()).await;
            assert_eq!(answer.map(|a| a.status), Some(200), "{name} {upgrade}");
            let seen = engine.next_seen().await.expect("the site saw the request");
            for header in ["upgrade", "http2-settings", "connection"] {
                assert!(seen.values(header).is_empty(), "{name} {upgrade}: {header} reached the site: {seen:?}");
            }
        }
        let websocket = "GET /ws HTTP/1.1\r\nHost: wiki.commons.localhost\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\
                         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        // The recording site declines it (200): what matters is what it was asked.
        assert_eq!(exchange(engine.gateway.addr, websocket.as_bytes()).await.map(|a| a.status), Some(200), "{name}");
        let seen = engine.next_seen().await.expect("the site saw the request");
        assert_eq!(seen.values("upgrade"), ["websocket"], "{name}: {seen:?}");
        assert_eq!(seen.values("connection"), ["upgrade"], "{name}: {seen:?}");
    }
}

#[tokio::test]
async fn identity_headers_are_dropped_in_every_spelling_that_frameworks_fold_together() {
    // WSGI, CGI and PHP read `X_Commons_User`, `X-Commons_User` and
    // `X-Commons-User` as one HTTP_X_COMMONS_USER; PHP folds `.` too.
    let spellings = "X_Commons_User: forged\r\nx_commons_tier: forged\r\nX-Commons_Provenance: forged\r\n\
                     X.Commons.User: forged\r\nx-commons+user: forged\r\nX_Forwarded_For: 6.6.6.6\r\n\
                     X-Forwarded-Proto: forged\r\nX_Forwarded_Proto: forged\r\nX-Forwarded-Port: forged\r\n\
                     X-Forwarded-Prefix: forged\r\nX-Forwarded-Server: forged\r\nX-Forwarded-Ssl: forged\r\n\
                     X-Real_IP: 6.6.6.6\r\nX-Client-IP: 6.6.6.6\r\nTrue-Client-IP: 6.6.6.6\r\nClient-IP: 6.6.6.6\r\n\
                     X-Cluster-Client-IP: 6.6.6.6\r\nX-Original-URL: /forged\r\nX-Rewrite-URL: /forged\r\n\
                     forwarded: for=6.6.6.6\r\nX_Custom: kept\r\n";
    for (name, engine) in engines().await {
        for auth in ["", "Authorization: Bearer alice-token\r\n"] {
            let request = format!("GET / HTTP/1.1\r\nHost: wiki.commons.localhost\r\n{auth}{spellings}\r\n");
            assert_eq!(exchange(engine.gateway.addr, request.as_bytes()).await.map(|a| a.status), Some(200), "{name}");
            let seen = engine.next_seen().await.expect("the site saw the request");
            assert_only_the_gateways_identity(&seen, if auth.is_empty() { "anonymous" } else { "free" }, name);
            assert_eq!(seen.values("x-forwarded-proto"), ["http"], "{name}: the gateway's own");
            assert_eq!(seen.values("x_custom"), ["kept"], "{name}: other underscores pass");
        }
    }
}

#[tokio::test]
async fn premium_paths_are_matched_however_they_are_spelled_and_ambiguous_paths_are_refused() {
    use gateway::TierPolicy;
    let premium = [
        "/export",
        "/export/x",
        "//export",
        "///export/",
        "/./export",
        "/a/../export",
        "/a/b/../../export",
        "/%65xport",
        "/exp%6Frt",
        "/%2e/export",
        "/%2E/export",
        "/free/%2e%2e/export",
        "/EXPORT",
        "/Export/x",
        "/;x/export",
        "/export;jsessionid=1",
        "/export?x=1",
        "/export/../free",
    ];
    let ambiguous = [
        "/export%2F..",
        "/export%2f",
        "/%2fexport",
        "/a%5Cb",
        "/x\\..\\export",
        "/export%00",
        "/a%1F",
        "/a%7f",
        "/../export",
        "/a/../../export",
        "/.%2e/export",
        "/%2e%2e/export",
        "/%zz",
        "/a%4",
        "/%2565xport",
        "/..;/export",
    ];
    let free = ["/", "/free", "/free?/export", "/free/export", "/%41bc", "/a/./b", "/.well-known/x", "/free;export"];
    for (name, engine) in engines().await {
        let mut routes = Routes::new("commons.localhost");
        let policy = TierPolicy { premium_prefixes: vec!["/export".into()], ..TierPolicy::default() };
        routes.add_site(SiteRoute::new("wiki", &[engine.site], true).with_policy(policy), &[]);
        engine.handle.set_routes(routes);
        let cases = premium.iter().map(|p| (*p, 402)).chain(ambiguous.iter().map(|p| (*p, 400)));
        for (path, status) in cases.chain(free.iter().map(|p| (*p, 200))) {
            let request = format!("GET {path} HTTP/1.1\r\nHost: wiki.commons.localhost\r\n\r\n");
            let answer = exchange(engine.gateway.addr, request.as_bytes()).await;
            assert_eq!(answer.map(|a| a.status), Some(status), "{name}: {path}");
            if status == 200 {
                let seen = engine.next_seen().await.expect("the site saw the request");
                assert_eq!(seen.target, path, "{name}: the path as it came");
            }
        }
        assert!(engine.saw_nothing_more().await, "{name}: a refused request reached the site");
        // A subscriber gets the premium pages, however spelled.
        for path in ["/export", "//export", "/%65xport"] {
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: wiki.commons.localhost\r\nAuthorization: Bearer bob-token\r\n\r\n"
            );
            assert_eq!(exchange(engine.gateway.addr, request.as_bytes()).await.map(|a| a.status), Some(200), "{name}");
            assert!(engine.next_seen().await.is_some(), "{name}");
        }
    }
}

/// A site whose every answer sets these cookies.
async fn site_setting_cookies(cookies: &'static [&'static str]) -> SocketAddr {
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
                        seen.drain(..end + 4);
                        let mut answer = String::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
                        for cookie in cookies {
                            answer.push_str(&format!("Set-Cookie: {cookie}\r\n"));
                        }
                        answer.push_str("\r\nok");
                        if stream.write_all(answer.as_bytes()).await.is_err() {
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
async fn site_cookies_are_host_only_and_never_the_gateways_own() {
    const COOKIES: &[&str] = &[
        "plain=1; Path=/; HttpOnly",
        "wide=1; Domain=commons.localhost; Path=/",
        "dotted=1; path=/; domain=.wiki.commons.localhost; Secure",
        "other=1; DOMAIN=chat.commons.localhost",
        "commons_session=evil; Path=/",
        "commons_site=evil; Path=/; Domain=commons.localhost",
        " commons_site =evil2",
        "__Host-a=1; Secure; Path=/",
        "__Secure-b=1; Secure",
        "__host-c=1; Secure; Path=/",
        "__Host-d=1; Secure; Path=/; Domain=wiki.commons.localhost",
        "__Secure-e=1",
        "__Host-f=1; Secure; Path=/x",
    ];
    let site = site_setting_cookies(COOKIES).await;
    let kept = ["plain=1; path=/; httponly", "wide=1; path=/", "dotted=1; path=/; secure", "other=1"];
    let honoured = ["__host-a=1; secure; path=/", "__secure-b=1; secure", "__host-c=1; secure; path=/"];
    for scheme in ["http", "https"] {
        for fast_path in [true, false] {
            let config = gateway::GatewayConfig { fast_path, public_scheme: scheme.into(), ..Default::default() };
            let engine = common::engine_with(config).await;
            let mut routes = Routes::new("commons.localhost");
            routes.add_site(SiteRoute::new("wiki", &[site], true), &[]);
            engine.handle.set_routes(routes);
            let request = "GET / HTTP/1.1\r\nHost: wiki.commons.localhost\r\n\r\n";
            let answer = exchange(engine.gateway.addr, request.as_bytes()).await.expect("an answer");
            assert_eq!(answer.status, 200, "{scheme} fast={fast_path}");
            let set: Vec<&str> = answer.head.lines().filter_map(|l| l.strip_prefix("set-cookie: ")).collect();
            let mut expected = kept.to_vec();
            if scheme == "https" {
                expected.extend(honoured);
            }
            assert_eq!(set, expected, "{scheme} fast={fast_path}");
        }
    }
}

#[tokio::test]
async fn a_provenance_token_reveals_nothing_about_its_user_or_site() {
    for (name, engine) in engines().await {
        let mut tokens = Vec::new();
        for token in ["alice-token", "alice-token", "bob-token"] {
            let request =
                format!("GET / HTTP/1.1\r\nHost: wiki.commons.localhost\r\nAuthorization: Bearer {token}\r\n\r\n");
            assert_eq!(exchange(engine.gateway.addr, request.as_bytes()).await.map(|a| a.status), Some(200), "{name}");
            let seen = engine.next_seen().await.expect("the site saw the request");
            tokens.push(seen.values("x-commons-provenance").pop().expect("a token"));
        }
        // Its bytes, read every way a site might: as text, and each part
        // decoded from hex or base64.
        let readings = |token: &str| -> Vec<Vec<u8>> {
            use base64::Engine as _;
            let mut readings = vec![token.as_bytes().to_vec()];
            for part in token.split(['.', ':', '-']) {
                readings.extend(hex::decode(part).ok());
                readings
                    .extend(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok());
                readings.extend(base64::engine::general_purpose::STANDARD.decode(part).ok());
            }
            readings
        };
        for token in &tokens {
            for bytes in readings(token) {
                for secret in [&b"alice"[..], b"bob", b"wiki"] {
                    assert!(!bytes.windows(secret.len()).any(|w| w == secret), "{name}: {token} carries {secret:?}");
                }
            }
        }
        assert_eq!(tokens[0].len(), tokens[2].len(), "{name}: the token's length tells the user name's");
        // Nothing in one request's token is found in the next one's.
        let (first, second) = (readings(&tokens[0]), readings(&tokens[1]));
        for a in &first {
            for b in &second {
                let shared = a.windows(4).find(|w| b.windows(4).any(|v| v == *w));
                assert!(shared.is_none(), "{name}: {} and {} share {shared:?}", tokens[0], tokens[1]);
            }
        }
    }
}

/// A site that answers every request by switching to h2c, unasked.
async fn site_switching_unasked() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let answer = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
                let _ = stream.write_all(answer).await;
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_site_that_switches_protocols_unasked_is_a_502() {
    let site = site_switching_unasked().await;
    for (name, engine) in engines().await {
        let mut routes = Routes::new("commons.localhost");
        routes.add_site(SiteRoute::new("odd", &[site], true), &[]);
        engine.handle.set_routes(routes);
        let request = "GET / HTTP/1.1\r\nHost: odd.commons.localhost\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
        let answer = exchange(engine.gateway.addr, request.as_bytes()).await;
        assert_eq!(answer.map(|a| a.status), Some(502), "{name}");
    }
}

/// A site whose apps authenticate on their own gets the `Authorization`
/// its clients send (CalDAV's Basic, an app's own bearer tokens), never a
/// platform token: not one the platform knows, not one in its form, not a
/// second `Authorization` line behind the first.
#[tokio::test]
async fn a_site_may_take_its_own_authorization_but_never_the_platforms_credentials() {
    for (name, engine) in engines().await {
        let mut routes = Routes::new("commons.localhost");
        routes.add_site(SiteRoute::new("wiki", &[engine.site], true).with_auth(true, None), &[]);
        routes.add_site(SiteRoute::new("blog", &[engine.site], true), &[]);
        engine.handle.set_routes(routes);
        let send = |host: &str, auth: &str| format!("GET / HTTP/1.1\r\nHost: {host}.commons.localhost\r\n{auth}\r\n");
        let cases = [
            ("wiki", "Authorization: Basic YWxpY2U6c2VjcmV0\r\n", vec!["Basic YWxpY2U6c2VjcmV0"], "anonymous"),
            ("wiki", "Authorization: Bearer the-apps-own\r\n", vec!["Bearer the-apps-own"], "anonymous"),
            // The platform's: a token it knows (alice's), or one in its form.
            ("wiki", "Authorization: Bearer alice-token\r\n", vec![], "free"),
            ("wiki", "Authorization: Bearer oc_00ff00ff\r\n", vec![], "anonymous"),
            ("wiki", "Authorization: bearer oc_00ff00ff\r\n", vec![], "anonymous"),
            ("wiki", "Authorization: Token   oc_00ff00ff\r\n", vec![], "anonymous"),
            ("wiki", "Authorization: bearer alice-token\r\n", vec![], "free"),
            // As git, npm and pip send a token: the password of Basic ("x:oc_00ff").
            ("wiki", "Authorization: Basic eDpvY18wMGZm\r\n", vec![], "anonymous"),
            // A second line behind a site's own goes nowhere.
            (
                "wiki",
                "Authorization: Basic eDp5\r\nAuthorization: Bearer alice-token\r\n",
                vec!["Basic eDp5"],
                "anonymous",
            ),
            // A site that does not take them gets none.
            ("blog", "Authorization: Basic YWxpY2U6c2VjcmV0\r\n", vec![], "anonymous"),
        ];
        for (site, auth, expected, tier) in cases {
            let answer = exchange(engine.gateway.addr, send(site, auth).as_bytes()).await;
            assert_eq!(answer.map(|a| a.status), Some(200), "{name}: {site} {auth:?}");
            let seen = engine.next_seen().await.expect("the site saw the request");
            assert_eq!(seen.values("authorization"), expected, "{name}: {site} {auth:?}: {seen:?}");
            assert_eq!(seen.values("x-commons-tier"), [tier], "{name}: {site} {auth:?}");
        }
    }
}

/// A site that reads its user from a header of its choosing gets the
/// user's per-site pseudonym there, and never what a client wrote there,
/// in any spelling a framework folds into it.
#[tokio::test]
async fn a_sites_user_header_holds_the_pseudonym_and_never_what_a_client_wrote() {
    let forged = "X-Remote-User: admin\r\nx_remote_user: admin\r\nX.Remote.User: admin\r\nx-remote+user: admin\r\n";
    for (name, engine) in engines().await {
        let mut routes = Routes::new("commons.localhost");
        let header = gateway::check_user_header("X-Remote-User").unwrap();
        routes.add_site(SiteRoute::new("wiki", &[engine.site], true).with_auth(false, Some(header)), &[]);
        engine.handle.set_routes(routes);
        for (auth, user) in [("", false), ("Authorization: Bearer alice-token\r\n", true)] {
            let request = format!("GET / HTTP/1.1\r\nHost: wiki.commons.localhost\r\n{auth}{forged}\r\n");
            assert_eq!(exchange(engine.gateway.addr, request.as_bytes()).await.map(|a| a.status), Some(200), "{name}");
            let seen = engine.next_seen().await.expect("the site saw the request");
            let pseudonym = seen.values("x-commons-user");
            assert_eq!(seen.values("x-remote-user"), pseudonym, "{name}: {seen:?}");
            assert_eq!(pseudonym.len(), usize::from(user), "{name}: {seen:?}");
            for (header, value) in &seen.headers {
                assert!(!String::from_utf8_lossy(value).contains("admin"), "{name}: {header} reached the site");
            }
        }
    }
    for refused in ["X-Commons-User", "x_forwarded_user", "Authorization", "Cookie", "Host", "X Remote", ""] {
        assert!(gateway::check_user_header(refused).is_err(), "{refused:?}");
    }
}
