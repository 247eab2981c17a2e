//! The gateway over real sockets: a real upstream, a real client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use commons_core::Period;
use gateway::{
    Gateway, GatewayConfig, Identities, ManualClock, Routes, RunningGateway, SessionStore, SiteRoute, StoredSession,
    TierPolicy, hash_password,
};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metering::Meter;
use metering::wal::Checkpoint;
use tokio::net::TcpListener;

/// An upstream that answers with the headers it received (one per line),
/// sleeps on /slow, and echoes the body on /echo.
async fn upstream(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| async move {
                        if request.headers().contains_key("upgrade") {
                            // Agree to any upgrade, then echo bytes back.
                            let upgraded = hyper::upgrade::on(&mut request);
                            tokio::spawn(async move {
                                if let Ok(upgraded) = upgraded.await {
                                    let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
                                    let _ = tokio::io::copy(&mut read, &mut write).await;
                                }
                            });
                            let mut response = Response::new(Full::new(Bytes::new()).boxed());
                            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                            response.headers_mut().insert("connection", "upgrade".parse().unwrap());
                            response.headers_mut().insert("upgrade", "websocket".parse().unwrap());
                            return Ok::<_, Infallible>(response);
                        }
                        if request.uri().path() == "/chunked" {
                            // No length known in advance: sent chunked, as
                            // it is made.
                            let (mut sender, body) = http_body_util::channel::Channel::<Bytes>::new(2);
                            tokio::spawn(async move {
                                for i in 0..50 {
                                    let _ = sender.send_data(Bytes::from(format!("chunk {i};"))).await;
                                    if i % 10 == 0 {
                                        tokio::time::sleep(Duration::from_millis(5)).await;
                                    }
                                }
                            });
                            return Ok(Response::new(body.boxed()));
                        }
                        if request.uri().path() == "/big" {
                            return Ok(Response::new(Full::new(Bytes::from(vec![b'z'; 3 << 20])).boxed()));
                        }
                        if request.uri().path() == "/missing" {
                            let mut response = Response::new(Full::new(Bytes::from_static(b"no such page")).boxed());
                            *response.status_mut() = StatusCode::NOT_FOUND;
                            return Ok(response);
                        }
                        if request.uri().path() == "/slow" {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                        let mut text = format!("upstream {name}\npath {}\n", request.uri());
                        let mut headers: Vec<_> = request
                            .headers()
                            .iter()
                            .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
                            .collect();
                        headers.sort();
                        text.extend(headers);
                        if request.uri().path() == "/echo" {
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            text.push_str(&String::from_utf8_lossy(&body));
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text)).boxed()))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Sessions as a store would keep them.
#[derive(Default)]
struct KeptSessions(Mutex<Vec<StoredSession>>);

impl SessionStore for KeptSessions {
    fn save(&self, session: &StoredSession) -> Result<(), String> {
        self.0.lock().unwrap().push(session.clone());
        Ok(())
    }

    fn end(&self, user: &str) -> Result<(), String> {
        self.0.lock().unwrap().retain(|s| s.user != user);
        Ok(())
    }
}

struct Setup {
    gateway: RunningGateway,
    handle: Gateway,
    sessions: Arc<KeptSessions>,
    meter: Arc<Meter>,
    clock: ManualClock,
    _wal: tempfile::TempDir,
}

async fn setup(config: GatewayConfig) -> Setup {
    let wiki = upstream("wiki").await;
    let chat = upstream("chat").await;
    let mut routes = Routes::new("commons.localhost");
    routes.add_site(SiteRoute::new("wiki", &[wiki], true), &["wiki.example.org"]);
    routes.add_site(SiteRoute::new("chat", &[chat], false), &[]);
    routes.add_site(SiteRoute::new("down", &[closed_port().await], true), &[]);
    let policy = TierPolicy {
        free_requests_per_minute: Some(3),
        free_concurrent_requests: Some(1),
        premium_prefixes: vec!["/pro".into()],
    };
    routes.add_site(SiteRoute::new("tiered", &[wiki], true).with_policy(policy), &[]);
    routes.add_site(SiteRoute::new("pair", &[closed_port().await, wiki], true), &[]);
    let wal = tempfile::tempdir().unwrap();
    let (meter, _) = Meter::open(wal.path(), 4, &Checkpoint::default()).unwrap();
    let meter = Arc::new(meter);
    let clock = ManualClock::new(1_795_000_000_000);
    let sessions = Arc::new(KeptSessions::default());
    let gateway = Gateway::with_sessions(
        config,
        routes,
        Some(meter.clone()),
        Arc::new(clock.clone()),
        Some(sessions.clone()),
        Vec::new(),
    );
    let mut identities = Identities::default();
    identities.add_token("alice-token", "alice");
    identities.add_password("alice", &hash_password("alice's password").unwrap());
    identities.add_user("bob", true);
    identities.add_token("bob-token", "bob");
    gateway.set_identities(identities);
    let running = gateway.serve("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    Setup { gateway: running, handle: gateway, meter, clock, sessions, _wal: wal }
}

async fn get(
    setup: &Setup,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, hyper::HeaderMap, String) {
    send(setup, "GET", host, path, headers, Bytes::new()).await
}

async fn send(
    setup: &Setup,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (StatusCode, hyper::HeaderMap, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request =
        Request::builder().method(method).uri(format!("http://{}{path}", setup.gateway.addr)).header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client.request(request.body(Full::new(body)).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn requests_are_routed_by_host_and_custom_host() {
    let s = setup(GatewayConfig::default()).await;
    let (status, _, body) = get(&s, "wiki.commons.localhost", "/a?b=c", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("upstream wiki\npath /a?b=c\n"), "{body}");
    let (_, _, body) = get(&s, "WIKI.example.org:8080", "/", &[]).await;
    assert!(body.starts_with("upstream wiki\n"), "{body}");
    let (_, _, body) = get(&s, "chat.commons.localhost", "/", &[("authorization", "Bearer alice-token")]).await;
    assert!(body.starts_with("upstream chat\n"), "{body}");
}

#[tokio::test]
async fn an_unknown_host_is_a_404_that_says_it_is_the_requests_fault() {
    let s = setup(GatewayConfig::default()).await;
    let (status, headers, body) = get(&s, "nope.commons.localhost", "/", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["x-commons-fault"], "downstream");
    assert!(
        body.contains("there is no site at &quot;nope.commons.localhost&quot;") && body.contains("Fault: your request"),
        "{body}"
    );
}

#[tokio::test]
async fn a_site_that_is_down_is_a_502_that_blames_the_site() {
    let s = setup(GatewayConfig::default()).await;
    let (status, headers, body) = get(&s, "down.commons.localhost", "/", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["x-commons-fault"], "upstream");
    assert!(body.contains("Trying again later may help"), "{body}");
}

#[tokio::test]
async fn a_slow_site_is_a_504() {
    let s = setup(GatewayConfig { upstream_timeout: Duration::from_millis(300), ..GatewayConfig::default() }).await;
    let (status, headers, _) = get(&s, "wiki.commons.localhost", "/slow", &[]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(headers["x-commons-fault"], "upstream");
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413() {
    let s = setup(GatewayConfig { body_limit_bytes: 1000, ..GatewayConfig::default() }).await;
    let (status, _, body) =
        send(&s, "POST", "wiki.commons.localhost", "/echo", &[], Bytes::from(vec![b'x'; 1001])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let (status, _, body) =
        send(&s, "POST", "wiki.commons.localhost", "/echo", &[], Bytes::from(vec![b'y'; 1000])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.ends_with(&"y".repeat(1000)));
}

#[tokio::test]
async fn inbound_commons_headers_are_stripped_and_the_gateway_sets_its_own() {
    let s = setup(GatewayConfig::default()).await;
    let forged = [
        ("x-commons-user", "someone-else"),
        ("x-commons-tier", "premium"),
        ("x-commons-provenance", "forged"),
        ("x-forwarded-for", "6.6.6.6"),
    ];
    let (_, _, body) = get(&s, "wiki.commons.localhost", "/", &forged).await;
    assert!(body.contains("x-commons-tier: anonymous\n"), "{body}");
    // No client address reaches a site, forged or real.
    assert!(!body.contains("x-forwarded-for") && !body.contains("127.0.0.1") && !body.contains("6.6.6.6"), "{body}");
    assert!(body.contains("x-forwarded-proto: http\n"), "the gateway's own: {body}");
    assert!(body.contains("host: wiki.commons.localhost\n"), "{body}");
    assert!(!body.contains("someone-else") && !body.contains("forged") && !body.contains("x-commons-user"), "{body}");

    let with_token = [("authorization", "Bearer bob-token"), ("x-commons-user", "someone-else")];
    let (_, _, body) = get(&s, "wiki.commons.localhost", "/", &with_token).await;
    assert!(body.contains("x-commons-tier: premium\n"), "{body}");
    assert!(!body.contains("someone-else") && !body.contains("bob-token"), "the token must not reach the site: {body}");
    let pseudonym = gateway_pseudonym(&body);
    // Stable per (user, site), different across sites.
    let (_, _, again) = get(&s, "wiki.commons.localhost", "/", &with_token).await;
    assert_eq!(gateway_pseudonym(&again), pseudonym);
    let (_, _, chat) = get(&s, "chat.commons.localhost", "/", &with_token).await;
    assert_ne!(gateway_pseudonym(&chat), pseudonym);
}

fn gateway_pseudonym(body: &str) -> String {
    body.lines().find_map(|l| l.strip_prefix("x-commons-user: ")).expect("a pseudonym").to_owned()
}

#[tokio::test]
async fn a_site_without_anonymous_access_asks_to_log_in() {
    let s = setup(GatewayConfig::default()).await;
    let (status, _, _) = get(&s, "chat.commons.localhost", "/", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = get(&s, "chat.commons.localhost", "/", &[("authorization", "Bearer wrong")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn n_requests_across_m_minutes_meter_m_active_minutes() {
    let s = setup(GatewayConfig::default()).await;
    let alice = [("authorization", "Bearer alice-token")];
    // 7 requests a minute for 5 minutes to wiki, 3 in one minute to chat,
    // and anonymous requests, which are not metered.
    for _ in 0..5 {
        for _ in 0..7 {
            get(&s, "wiki.commons.localhost", "/", &alice).await;
        }
        s.clock.advance_ms(60_000);
    }
    for _ in 0..3 {
        get(&s, "chat.commons.localhost", "/", &alice).await;
    }
    get(&s, "wiki.commons.localhost", "/", &[]).await;
    let usage = s.meter.take().unwrap().usage;
    let period = Period::from_days_since_epoch(1_795_000_000_000 / 86_400_000);
    let minutes = |site: &str| {
        usage.direct[&metering::DirectKey { period, user: "alice".into(), site: site.into() }].minutes.count()
    };
    assert_eq!(minutes("wiki"), 5);
    assert_eq!(minutes("chat"), 1);
    assert_eq!(usage.direct.len(), 2);
    s.gateway.shutdown().await;
}

#[tokio::test]
async fn free_users_are_limited_per_minute_with_retry_after_and_premium_users_are_not() {
    let s = setup(GatewayConfig::default()).await;
    let alice = [("authorization", "Bearer alice-token")];
    for _ in 0..3 {
        assert_eq!(get(&s, "tiered.commons.localhost", "/", &alice).await.0, StatusCode::OK);
    }
    let (status, headers, body) = get(&s, "tiered.commons.localhost", "/", &alice).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // The clock stands 40 s into a minute: 20 s to wait.
    assert_eq!(headers["retry-after"], "20");
    // Other sites and other users are not affected; nor is the next minute.
    assert_eq!(get(&s, "wiki.commons.localhost", "/", &alice).await.0, StatusCode::OK);
    for _ in 0..10 {
        assert_eq!(
            get(&s, "tiered.commons.localhost", "/", &[("authorization", "Bearer bob-token")]).await.0,
            StatusCode::OK
        );
    }
    s.clock.advance_ms(20_000);
    assert_eq!(get(&s, "tiered.commons.localhost", "/", &alice).await.0, StatusCode::OK);
}

#[tokio::test]
async fn anonymous_users_are_limited_by_address() {
    let s = setup(GatewayConfig::default()).await;
    for _ in 0..3 {
        assert_eq!(get(&s, "tiered.commons.localhost", "/", &[]).await.0, StatusCode::OK);
    }
    assert_eq!(get(&s, "tiered.commons.localhost", "/", &[]).await.0, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn premium_only_routes_answer_402_with_a_link_to_subscribe() {
    let s = setup(GatewayConfig::default()).await;
    for headers in [&[][..], &[("authorization", "Bearer alice-token")][..]] {
        let (status, response, body) = get(&s, "tiered.commons.localhost", "/pro/report", headers).await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
        assert_eq!(response["link"], "http://commons.localhost/subscribe");
        assert!(body.contains("for subscribers"), "{body}");
    }
    let (status, _, _) =
        get(&s, "tiered.commons.localhost", "/pro/report", &[("authorization", "Bearer bob-token")]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_link_to_subscribe_is_on_the_public_scheme() {
    let s = setup(GatewayConfig { public_scheme: "https".into(), ..GatewayConfig::default() }).await;
    let (status, response, body) = get(&s, "tiered.commons.localhost", "/pro/report", &[]).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert_eq!(response["link"], "https://commons.localhost/subscribe");
}

#[tokio::test]
async fn free_users_may_have_one_request_in_flight() {
    let s = setup(GatewayConfig::default()).await;
    let alice = [("authorization", "Bearer alice-token")];
    let slow = get(&s, "tiered.commons.localhost", "/slow", &alice);
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        get(&s, "tiered.commons.localhost", "/", &alice).await
    };
    let ((slow_status, _, _), (status, headers, _)) = tokio::join!(slow, second);
    assert_eq!(slow_status, StatusCode::OK);
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "1");
}

#[tokio::test]
async fn websocket_upgrades_are_tunneled_both_ways() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup(GatewayConfig::default()).await;
    let mut stream = tokio::net::TcpStream::connect(s.gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /socket HTTP/1.1\r\nHost: wiki.commons.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for message in [&b"hello"[..], &b"frames go both ways"[..]] {
        stream.write_all(message).await.unwrap();
        let mut echo = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echo)).await.unwrap().unwrap();
        assert_eq!(echo, message);
    }
}

#[tokio::test]
async fn clients_may_speak_http2() {
    let s = setup(GatewayConfig::default()).await;
    let request = Request::builder()
        .uri(format!("http://wiki.commons.localhost:{}/h2?x=1", s.gateway.addr.port()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    // Connect to the gateway's address while naming the site in the authority.
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).http2_only(true).build(Fixed(s.gateway.addr, connector));
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).starts_with("upstream wiki\npath /h2?x=1\n"));
}

/// A connector that always dials one address, whatever the URI's host.
#[derive(Clone)]
struct Fixed(SocketAddr, hyper_util::client::legacy::connect::HttpConnector);

impl tower_service::Service<hyper::Uri> for Fixed {
    type Response =
        <hyper_util::client::legacy::connect::HttpConnector as tower_service::Service<hyper::Uri>>::Response;
    type Error = <hyper_util::client::legacy::connect::HttpConnector as tower_service::Service<hyper::Uri>>::Error;
    type Future = <hyper_util::client::legacy::connect::HttpConnector as tower_service::Service<hyper::Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.1.poll_ready(cx)
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        self.1.call(format!("http://{}", self.0).parse().unwrap())
    }
}

/// The value of the cookie a response sets.
fn set_cookie(headers: &hyper::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next()?.split_once('='))
        .find_map(|(k, v)| (k == name).then(|| v.to_owned()))
}

/// A Location header split into its path and its query parameters.
fn location(headers: &hyper::HeaderMap) -> (String, std::collections::HashMap<String, String>) {
    let uri: hyper::Uri = headers["location"].to_str().unwrap().parse().unwrap();
    let query = uri.query().unwrap_or("");
    let query = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    (format!("{}{}", uri.authority().map_or(String::new(), |a| format!("http://{a}")), uri.path()), query)
}

#[tokio::test]
async fn a_browser_logs_in_on_the_platform_and_its_session_is_handed_to_the_site() {
    let s = setup(GatewayConfig::default()).await;
    let html = ("accept", "text/html,application/xhtml+xml");

    // A page of a site that needs a login sends the browser to the site's
    // login, which gives it a state and sends it on to the platform.
    let (status, headers, _) = get(&s, "chat.commons.localhost:8080", "/page?x=1", &[html]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (start, query) = location(&headers);
    assert_eq!(start, "http://chat.commons.localhost:8080/.commons/login");
    assert_eq!(query["next"], "/page?x=1");
    let (status, headers, _) =
        get(&s, "chat.commons.localhost:8080", "/.commons/login?next=%2Fpage%3Fx%3D1", &[html]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let state_cookie = format!("commons_state={}", set_cookie(&headers, "commons_state").expect("a state"));
    let (login, query) = location(&headers);
    assert_eq!(login, "http://commons.localhost:8080/login");
    assert_eq!(query["next"], "http://chat.commons.localhost:8080/page?x=1");
    let state = query["state"].clone();
    let (status, headers, form) =
        get(&s, "commons.localhost:8080", &format!("/login?next=x&state={state}"), &[html]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(form.contains("type=\"password\"") && form.contains("name=\"next\" value=\"x\""), "{form}");
    assert!(form.contains(&format!("name=\"state\" value=\"{state}\"")), "{form}");
    let form_cookie = format!("commons_login={}", set_cookie(&headers, "commons_login").expect("the form's cookie"));
    let token = form.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();

    // A wrong password: 401, no session.
    let form = |password: &str| {
        let next = "http://chat.commons.localhost:8080/page?x=1";
        Bytes::from(
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs([
                    ("user", "alice"),
                    ("password", password),
                    ("next", next),
                    ("state", &state),
                    ("csrf", &token),
                ])
                .finish(),
        )
    };
    let post = [("content-type", "application/x-www-form-urlencoded"), ("cookie", &form_cookie)];
    let (status, headers, body) = send(&s, "POST", "commons.localhost:8080", "/login", &post, form("guess")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("Wrong user name or password") && set_cookie(&headers, "commons_session").is_none());

    // The right one: a platform session, and on to the site with a code.
    let (status, headers, _) =
        send(&s, "POST", "commons.localhost:8080", "/login", &post, form("alice's password")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let platform_session = set_cookie(&headers, "commons_session").expect("a platform session");
    let (handoff, query) = location(&headers);
    assert_eq!(handoff, "http://chat.commons.localhost:8080/.commons/handoff");
    assert_eq!(query["next"], "/page?x=1");
    let handoff_path = format!("/.commons/handoff?code={}&next=%2Fpage%3Fx%3D1", query["code"]);

    // The site's host turns the code into a session for that site only.
    let (status, headers, _) =
        get(&s, "chat.commons.localhost:8080", &handoff_path, &[html, ("cookie", &state_cookie)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/page?x=1");
    let site_session = set_cookie(&headers, "commons_site").expect("a site session");
    let (status, _, _) =
        get(&s, "chat.commons.localhost:8080", &handoff_path, &[html, ("cookie", &state_cookie)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a code works once");
    let (status, _, _) = get(&s, "chat.commons.localhost", "/.commons/handoff?code=forged", &[html]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // With it the user reaches the site as themselves; the site sees a
    // pseudonym and its own cookies, never the session.
    let cookie = format!("theme=dark; commons_site={site_session}");
    let (status, _, body) = get(&s, "chat.commons.localhost:8080", "/page?x=1", &[html, ("cookie", &cookie)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("x-commons-tier: free\n") && body.contains("cookie: theme=dark\n"), "{body}");
    assert!(!body.contains(&site_session) && !body.contains("commons_site"), "{body}");
    let (_, _, by_token) = get(&s, "chat.commons.localhost", "/", &[("authorization", "Bearer alice-token")]).await;
    assert_eq!(gateway_pseudonym(&body), gateway_pseudonym(&by_token), "the same user");
    // The site session is good for its own site only.
    let (_, _, wiki) = get(&s, "wiki.commons.localhost:8080", "/", &[("cookie", &cookie)]).await;
    assert!(wiki.contains("x-commons-tier: anonymous\n"), "{wiki}");

    // Logged in on the platform, the next site needs no password.
    let platform_cookie = format!("commons_session={platform_session}");
    let next = format!("/login?next=http%3A%2F%2Fwiki.commons.localhost%3A8080%2F&state={state}");
    let next = next.as_str();
    let (status, headers, _) = get(&s, "commons.localhost:8080", next, &[("cookie", &platform_cookie)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers).0, "http://wiki.commons.localhost:8080/.commons/handoff");
    assert_eq!(s.sessions.0.lock().unwrap().len(), 2, "platform and chat sessions kept");

    // Logging out ends every session of the user.
    let (status, _, _) =
        send(&s, "POST", "commons.localhost", "/logout", &[("cookie", &platform_cookie)], Bytes::new()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, _) = get(&s, "chat.commons.localhost", "/page", &[html, ("cookie", &cookie)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "back to the login page");
    assert!(s.sessions.0.lock().unwrap().is_empty());
    let metrics = s.handle.metrics();
    assert!(metrics.contains("commons_logins_total{outcome=\"failed\"} 1"), "{metrics}");
    assert!(metrics.contains("commons_logins_total{outcome=\"succeeded\"} 1"), "{metrics}");
}

#[tokio::test]
async fn a_program_without_credentials_gets_a_401_not_a_login_page() {
    let s = setup(GatewayConfig::default()).await;
    let (status, headers, _) = get(&s, "chat.commons.localhost", "/api", &[("accept", "application/json")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["x-commons-fault"], "downstream");
}

#[tokio::test]
async fn requests_without_a_body_go_to_the_next_instance_when_one_refuses_connections() {
    let s = setup(GatewayConfig::default()).await;
    for _ in 0..6 {
        let (status, _, body) = get(&s, "pair.commons.localhost", "/", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let pair = s.handle.routes().resolve("pair.commons.localhost").unwrap().clone();
    assert!(!pair.instances[0].is_healthy() && pair.instances[1].is_healthy());
}

#[tokio::test]
async fn health_checks_take_failing_instances_out_and_put_them_back() {
    let s = setup(GatewayConfig::default()).await;
    let up = upstream("again").await;
    let mut routes = Routes::new("commons.localhost");
    routes.add_site(SiteRoute::new("h", &[up, closed_port().await], true).with_health_path(Some("/ok".into())), &[]);
    routes.add_site(SiteRoute::new("sick", &[up], true).with_health_path(Some("/missing".into())), &[]);
    s.handle.set_routes(routes);
    let checker = s.handle.clone();
    let checks = tokio::spawn(async move { checker.check_health(Duration::from_millis(50)).await });
    let healthy = |site: &str| -> Vec<bool> {
        let routes = s.handle.routes();
        routes.resolve(&format!("{site}.commons.localhost")).unwrap().instances.iter().map(|i| i.is_healthy()).collect()
    };
    let mut waited = 0;
    while (healthy("h") != [true, false] || healthy("sick") != [false]) && waited < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    assert_eq!(healthy("h"), [true, false], "a closed port is down");
    assert_eq!(healthy("sick"), [false], "a 404 from the health path is down");
    // Reloading the same routes keeps what is known.
    let mut routes = Routes::new("commons.localhost");
    routes.add_site(SiteRoute::new("sick", &[up], true).with_health_path(Some("/ok".into())), &[]);
    s.handle.set_routes(routes);
    assert_eq!(healthy("sick"), [false]);
    let mut waited = 0;
    while healthy("sick") != [true] && waited < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    assert_eq!(healthy("sick"), [true], "back once its health path answers");
    checks.abort();
}

/// Requests written on one connection, as they are, and what came back.
async fn raw(s: &Setup, requests: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(s.gateway.addr).await.unwrap();
    stream.write_all(requests.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Writes one request on a kept-alive connection and reads its answer
/// (which must have a length).
async fn one_on(stream: &mut tokio::net::TcpStream, host: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|n| n.parse().unwrap()))
                .expect("a length");
            if answer.len() >= end + 4 + length {
                return text;
            }
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed after {text}");
        answer.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_kept_alive_connection_follows_the_registry_and_the_site_of_each_request() {
    let s = setup(GatewayConfig::default()).await;
    let mut stream = tokio::net::TcpStream::connect(s.gateway.addr).await.unwrap();
    let wiki = one_on(&mut stream, "wiki.commons.localhost", "alice-token").await;
    assert!(wiki.contains("x-commons-tier: free\n"), "{wiki}");
    let chat = one_on(&mut stream, "chat.commons.localhost", "alice-token").await;
    assert_ne!(gateway_pseudonym(&chat), gateway_pseudonym(&wiki), "one pseudonym per site");
    let bob = one_on(&mut stream, "wiki.commons.localhost", "bob-token").await;
    assert!(bob.contains("x-commons-tier: premium\n"), "{bob}");
    assert_ne!(gateway_pseudonym(&bob), gateway_pseudonym(&wiki), "one pseudonym per user");
    let again = one_on(&mut stream, "wiki.commons.localhost", "alice-token").await;
    assert_eq!(gateway_pseudonym(&again), gateway_pseudonym(&wiki));

    // Alice subscribes: her next request on the same connection is premium.
    let mut identities = Identities::default();
    identities.add_user("alice", true);
    identities.add_token("alice-token", "alice");
    s.handle.set_identities(identities);
    let premium = one_on(&mut stream, "wiki.commons.localhost", "alice-token").await;
    assert!(premium.contains("x-commons-tier: premium\n"), "{premium}");
    assert_eq!(gateway_pseudonym(&premium), gateway_pseudonym(&wiki));

    // Her token is revoked: refused at once, on the same connection.
    s.handle.set_identities(Identities::default());
    let refused = one_on(&mut stream, "chat.commons.localhost", "alice-token").await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
}

#[tokio::test]
async fn connections_are_spread_evenly_over_the_workers() {
    let s = setup(GatewayConfig::default()).await;
    let open = |metrics: &str| -> Vec<u64> {
        metrics
            .lines()
            .filter(|l| l.starts_with("commons_gateway_open_connections{listener=\"public\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect()
    };
    let mut streams = Vec::new();
    for _ in 0..40 {
        let mut stream = tokio::net::TcpStream::connect(s.gateway.addr).await.unwrap();
        let answer = one_on(&mut stream, "chat.commons.localhost", "alice-token").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        streams.push(stream);
    }
    // Whatever the addresses hash to, each of the two workers serves half.
    assert_eq!(open(&s.handle.metrics()), [20, 20]);
    // Connections handed over are served like any other.
    for stream in &mut streams {
        let answer = one_on(stream, "wiki.commons.localhost", "bob-token").await;
        assert!(answer.contains("x-commons-tier: premium\n"), "{answer}");
    }
    drop(streams);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while open(&s.handle.metrics()) != [0, 0] {
        assert!(std::time::Instant::now() < deadline, "{:?}", open(&s.handle.metrics()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn slow_and_idle_clients_are_let_go_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let timeout = Duration::from_millis(400);
    let s = setup(GatewayConfig { header_read_timeout: timeout, ..GatewayConfig::default() }).await;
    // A head trickled a byte at a time, each well within the timeout: the
    // whole head is what must arrive in time.
    let mut slow = tokio::net::TcpStream::connect(s.gateway.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut closed = false;
    for byte in b"GET / HTTP/1.1\r\nHost: wiki.commons.localhost\r\nX-Padding: 0123456789\r\n\r\n" {
        if slow.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await.expect("let go");
    assert!(closed || !String::from_utf8_lossy(&answer).contains("200 OK"), "a trickled head was served");
    assert!(started.elapsed() < Duration::from_secs(4), "held for {:?}", started.elapsed());

    // A kept-alive connection: served, then closed once idle that long.
    let mut idle = tokio::net::TcpStream::connect(s.gateway.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: wiki.commons.localhost\r\n\r\n").await.unwrap();
    let idle_since = std::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut answer))
        .await
        .expect("closed when idle")
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 OK"));
    assert!(idle_since.elapsed() >= timeout, "closed after {:?}", idle_since.elapsed());

    // A client that keeps up is served on one connection for longer than
    // the timeout.
    let mut steady = tokio::net::TcpStream::connect(s.gateway.addr).await.unwrap();
    for _ in 0..6 {
        let answer = one_on(&mut steady, "chat.commons.localhost", "alice-token").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        tokio::time::sleep(timeout / 4).await;
    }
}

#[tokio::test]
async fn chunked_and_large_answers_come_through_whole() {
    let s = setup(GatewayConfig::default()).await;
    let (status, headers, body) = get(&s, "wiki.commons.localhost", "/chunked", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["transfer-encoding"], "chunked");
    assert_eq!(body, (0..50).map(|i| format!("chunk {i};")).collect::<String>());
    let (status, _, body) = get(&s, "wiki.commons.localhost", "/big", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), 3 << 20);
    assert!(body.bytes().all(|b| b == b'z'));
    // HEAD: the length of what GET would give, and no body.
    let (status, headers, body) = send(&s, "HEAD", "wiki.commons.localhost", "/big", &[], Bytes::new()).await;
    assert_eq!((status, headers["content-length"].to_str().unwrap(), body.as_str()), (StatusCode::OK, "3145728", ""));
}

#[tokio::test]
async fn keep_alive_and_pipelined_requests_are_answered_in_order_and_close_is_honoured() {
    let s = setup(GatewayConfig::default()).await;
    let one = |path: &str, close: bool| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: wiki.commons.localhost\r\n{}\r\n",
            if close { "Connection: close\r\n" } else { "" }
        )
    };
    // Three requests in one write; the last asks to close.
    let answer = raw(&s, &(one("/first", false) + &one("/chunked", false) + &one("/third", true))).await;
    let first = answer.find("path /first").expect("first");
    let chunks = answer.find("chunk 49;").expect("second");
    let third = answer.find("path /third").expect("third");
    assert!(first < chunks && chunks < third, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 3, "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    // A POST body split across writes arrives whole.
    let body = "x".repeat(5000);
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: wiki.commons.localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = raw(&s, &request).await;
    assert!(answer.ends_with(&body), "{answer}");
}

#[tokio::test]
async fn a_pooled_connection_the_site_closed_is_not_an_error() {
    // A site that answers one request per connection, then closes it
    // without saying so.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nonce").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    let s = setup(GatewayConfig::default()).await;
    let mut routes = Routes::new("commons.localhost");
    routes.add_site(SiteRoute::new("once", &[addr], true), &[]);
    s.handle.set_routes(routes);
    for _ in 0..5 {
        let (status, _, body) = get(&s, "once.commons.localhost", "/", &[]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "once"));
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

#[tokio::test]
async fn malformed_and_oversized_heads_are_refused_not_hung() {
    let s = setup(GatewayConfig { header_limit_bytes: 4096, ..GatewayConfig::default() }).await;
    let answer = raw(&s, "NOT HTTP AT ALL\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let huge = format!("GET / HTTP/1.1\r\nHost: wiki.commons.localhost\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
    let answer = raw(&s, &huge).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_a_413_too() {
    let s = setup(GatewayConfig { body_limit_bytes: 1000, ..GatewayConfig::default() }).await;
    let chunk = "x".repeat(600);
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: wiki.commons.localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let answer = raw(&s, &request).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

/// A site that answers every request on a connection, and reports each
/// connection the gateway closes.
async fn site_reporting_closes() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed, closes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                    }
                    match stream.read(&mut buf).await {
                        Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                let _ = closed.send(());
            });
        }
    });
    (addr, closes)
}

#[tokio::test]
async fn the_pool_forgets_an_instance_once_the_routes_drop_it() {
    let s = setup(GatewayConfig::default()).await;
    let (gone, mut closes) = site_reporting_closes().await;
    let (kept, _) = site_reporting_closes().await;
    let mut routes = Routes::new("commons.localhost");
    routes.add_site(SiteRoute::new("moving", &[gone], true), &[]);
    s.handle.set_routes(routes);
    // Requests at once on several connections: several idle connections to
    // the instance in the pools.
    let one = || get(&s, "moving.commons.localhost", "/", &[]);
    let (a, b, c, d) = tokio::join!(one(), one(), one(), one());
    for (status, _, body) in [a, b, c, d] {
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(closes.try_recv().is_err(), "kept while the instance is routed");

    // An update moves the site to another instance: every idle connection
    // to the old one is closed.
    let mut routes = Routes::new("commons.localhost");
    routes.add_site(SiteRoute::new("moving", &[kept], true), &[]);
    s.handle.set_routes(routes);
    tokio::time::timeout(Duration::from_secs(5), closes.recv()).await.expect("the idle connection is closed");
    while let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(200), closes.recv()).await {}
    let (status, _, _) = get(&s, "moving.commons.localhost", "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
}
