//! Logging in, tried as an attacker would, over real sockets: where a
//! handoff code may go, forged login forms, cookies over https, password
//! guessing from many addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::{
    Gateway, GatewayConfig, Identities, ManualClock, Routes, RunningGateway, SessionStore, SiteRoute, StoredSession,
    hash_password,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

const NOW_MS: u64 = 1_795_000_000_000;
/// The platform session alice already has.
const ALICE_SESSION: &str = "alice-platform-session-token";
const PLATFORM: &str = "commons.localhost:8080";

/// A site that answers `ok` to anything.
async fn site() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Sessions as a store would keep them.
#[derive(Default)]
struct Kept(Mutex<Vec<StoredSession>>);

impl SessionStore for Kept {
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
    running: RunningGateway,
    kept: Arc<Kept>,
    clock: ManualClock,
}

/// A gateway for `notes` (login needed; also at `notes.example.org`) with
/// alice's account, alice logged in on the platform (`ALICE_SESSION`).
async fn setup(config: GatewayConfig) -> Setup {
    let mut routes = Routes::new("commons.localhost");
    routes.add_site(SiteRoute::new("notes", &[site().await], false), &["notes.example.org"]);
    let clock = ManualClock::new(NOW_MS);
    let kept = Arc::new(Kept::default());
    let alice = StoredSession {
        token_sha256: sha256(ALICE_SESSION),
        user: "alice".into(),
        site: None,
        created_ms: NOW_MS,
        expires_ms: NOW_MS + 86_400_000,
    };
    let gateway =
        Gateway::with_sessions(config, routes, None, Arc::new(clock.clone()), Some(kept.clone()), vec![alice]);
    let mut identities = Identities::default();
    identities.add_password("alice", &hash_password("alice's password").unwrap());
    gateway.set_identities(identities);
    let running = gateway.serve("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    Setup { running, kept, clock }
}

fn sha256(text: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).into()
}

/// An answer as a client read it.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The whole `Set-Cookie` line of cookie `name`.
    fn set_cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .find(|v| v.split_once('=').is_some_and(|(k, _)| k == name))
    }

    /// The value cookie `name` is set to.
    fn cookie(&self, name: &str) -> Option<&str> {
        self.set_cookie(name)?.split(';').next()?.split_once('=').map(|(_, v)| v)
    }
}

/// One request on its own connection from address `from`.
async fn send(
    s: &Setup,
    from: Ipv4Addr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    let mut stream = socket.connect(s.running.addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut buf)).await.unwrap().unwrap();
    let mut parsed = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut parsed);
    let head = match response.parse(&buf).unwrap() {
        httparse::Status::Complete(head) => head,
        httparse::Status::Partial => panic!("a partial answer: {}", String::from_utf8_lossy(&buf)),
    };
    Reply {
        status: response.code.unwrap(),
        headers: response
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
            .collect(),
        body: String::from_utf8_lossy(&buf[head..]).into_owned(),
    }
}

const HOME: Ipv4Addr = Ipv4Addr::LOCALHOST;
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The login form's hidden token, and the cookie it is bound to, as a
/// browser gets them from `GET /login`.
async fn form_token(s: &Setup, from: Ipv4Addr) -> (String, String) {
    let form = send(s, from, "GET", PLATFORM, "/login", &[], "").await;
    assert_eq!(form.status, 200, "{}", form.body);
    // (Read leniently, so that the tests of other rules fail by those rules.)
    let cookie = form.cookie("commons_login").unwrap_or_default().to_owned();
    let token = form.body.split("name=\"csrf\" value=\"").nth(1).and_then(|t| t.split('"').next()).unwrap_or("");
    (token.to_owned(), format!("commons_login={cookie}"))
}

/// A login form as the platform's own page posts it.
async fn log_in(s: &Setup, from: Ipv4Addr, password: &str, next: &str) -> Reply {
    let (token, cookie) = form_token(s, from).await;
    let body = format!("user=alice&password={}&next={}&csrf={token}", encode(password), encode(next));
    let headers = [FORM, ("cookie", &cookie), ("origin", "http://commons.localhost:8080")];
    send(s, from, "POST", PLATFORM, "/login", &headers, &body).await
}

/// Whether an answer hands a code to anywhere, and where: the origin and
/// path of its Location.
fn handed_to(reply: &Reply) -> Option<String> {
    let location = reply.header("location")?;
    location.contains("code=").then(|| location.split('?').next().unwrap().to_owned())
}

#[tokio::test]
async fn a_handoff_code_goes_only_to_an_origin_the_platform_serves_for_the_site() {
    let s = setup(GatewayConfig::default()).await;
    let cookie = format!("commons_session={ALICE_SESSION}");
    let served =
        ["http://notes.commons.localhost:8080/.commons/handoff", "http://notes.example.org:8080/.commons/handoff"];
    // Where `next` may point, and where the code must go then (None: nowhere).
    let cases: &[(&str, Option<&str>)] = &[
        ("http://notes.commons.localhost:8080/page", Some(served[0])),
        ("http://notes.commons.localhost:9999/", Some(served[0])),
        ("http://NOTES.commons.localhost.:9999/page", Some(served[0])),
        ("https://notes.commons.localhost/", Some(served[0])),
        ("http://notes.example.org:9999/", Some(served[1])),
        ("http://notes.commons.localhost@evil.example/", None),
        ("http://evil.example@notes.commons.localhost:9999/", None),
        ("http://notes.commons.localhost:9999@evil.example/", None),
        ("//notes.commons.localhost:9999/", None),
        ("//evil.example/", None),
        ("/\\evil.example/", None),
        ("http:\\\\evil.example/", None),
        ("http://notes.commons.localhost\\@evil.example/", None),
        ("http://notes.commons.localhost:9999\\.evil.example/", None),
        ("ftp://notes.commons.localhost/", None),
        ("javascript://notes.commons.localhost/%0aalert(1)", None),
        ("http://evil.example/", None),
        ("http://notes.commons.localhost.evil.example/", None),
        ("http://commons.localhost:9999/", None),
        ("http://notes.commons.localhost:9999/%0d%0aset-cookie:x=1", Some(served[0])),
    ];
    for (next, expected) in cases {
        let path = format!("/login?next={}", encode(next));
        let reply = send(&s, HOME, "GET", PLATFORM, &path, &[("cookie", &cookie)], "").await;
        assert_eq!(reply.status, 303, "{next}: {}", reply.body);
        assert_eq!(handed_to(&reply).as_deref(), *expected, "{next}: to {:?}", reply.header("location"));
        let location = reply.header("location").unwrap();
        if expected.is_none() {
            assert_eq!(location, "/", "{next}: only to the platform's own page");
        }
        assert!(!location.contains('\\') && !location.contains("evil"), "{next}: {location}");
    }
    // The path `next` names comes along, and comes back on the site.
    let next = encode("http://notes.commons.localhost:9999/page?x=1");
    let reply = send(&s, HOME, "GET", PLATFORM, &format!("/login?next={next}"), &[("cookie", &cookie)], "").await;
    let location = reply.header("location").unwrap();
    assert!(location.ends_with("&next=%2Fpage%3Fx%3D1"), "{location}");
}

#[tokio::test]
async fn a_handoff_goes_on_the_public_scheme_to_the_port_the_platform_was_reached_on() {
    let s = setup(GatewayConfig::default()).await;
    let cookie = format!("commons_session={ALICE_SESSION}");
    let next = format!("/login?next={}", encode("http://notes.commons.localhost:9999/"));
    let reply = send(&s, HOME, "GET", "commons.localhost", &next, &[("cookie", &cookie)], "").await;
    assert_eq!(handed_to(&reply).as_deref(), Some("http://notes.commons.localhost/.commons/handoff"));

    let s = setup(GatewayConfig { public_scheme: "https".into(), ..GatewayConfig::default() }).await;
    let reply = send(&s, HOME, "GET", "commons.localhost", &next, &[("cookie", &cookie)], "").await;
    assert_eq!(handed_to(&reply).as_deref(), Some("https://notes.commons.localhost/.commons/handoff"));
}

#[tokio::test]
async fn after_a_login_the_browser_goes_only_to_a_platform_page_or_a_site_the_platform_serves() {
    let s = setup(GatewayConfig::default()).await;
    for (next, to) in [
        ("/subscribe", "/subscribe"),
        ("http://commons.localhost:8080/subscribe?x=1", "/subscribe?x=1"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("http://evil.example/", "/"),
        ("http://notes.commons.localhost@evil.example/", "/"),
        ("", "/"),
    ] {
        let reply = log_in(&s, HOME, "alice's password", next).await;
        assert_eq!((reply.status, reply.header("location")), (303, Some(to)), "{next}: {}", reply.body);
    }
    let reply = log_in(&s, HOME, "alice's password", "http://notes.commons.localhost:9999/x").await;
    assert_eq!(handed_to(&reply).as_deref(), Some("http://notes.commons.localhost:8080/.commons/handoff"));
}

#[tokio::test]
async fn a_cross_site_login_post_is_refused_and_logs_nobody_in() {
    let s = setup(GatewayConfig::default()).await;
    let body = "user=alice&password=alice%27s+password&next=%2F";
    let (token, cookie) = form_token(&s, HOME).await;
    let with_token = format!("{body}&csrf={token}");
    let other_token = format!("{body}&csrf={}", "0".repeat(token.len()));
    let forged: &[(&str, Vec<(&str, &str)>, &str)] = &[
        ("no token, no cookie", vec![FORM], body),
        ("no token", vec![FORM, ("cookie", &cookie)], body),
        ("a token without its cookie", vec![FORM], &with_token),
        ("another token", vec![FORM, ("cookie", &cookie)], &other_token),
        ("a foreign origin", vec![FORM, ("cookie", &cookie), ("origin", "http://evil.example")], &with_token),
        ("an opaque origin", vec![FORM, ("cookie", &cookie), ("origin", "null")], &with_token),
        ("a cross-site fetch", vec![FORM, ("cookie", &cookie), ("sec-fetch-site", "cross-site")], &with_token),
        // A site is a sibling of the platform: it could have set the cookie.
        ("from a site", vec![FORM, ("cookie", &cookie), ("sec-fetch-site", "same-site")], &with_token),
        (
            "from a site's origin",
            vec![FORM, ("cookie", &cookie), ("origin", "http://notes.commons.localhost:8080")],
            &with_token,
        ),
    ];
    for (what, headers, body) in forged {
        let reply = send(&s, HOME, "POST", PLATFORM, "/login", headers, body).await;
        assert_eq!(reply.status, 403, "{what}: {}", reply.body);
        assert!(reply.set_cookie("commons_session").is_none(), "{what}");
    }
    assert!(s.kept.0.lock().unwrap().is_empty(), "nobody logged in");
    // Logging out is refused across sites too.
    let logout = [("cookie", &*format!("commons_session={ALICE_SESSION}")), ("sec-fetch-site", "cross-site")];
    assert_eq!(send(&s, HOME, "POST", PLATFORM, "/logout", &logout, "").await.status, 403);
    let home = send(&s, HOME, "GET", PLATFORM, "/", &logout[..1], "").await;
    assert!(home.body.contains("logged in as <b>alice</b>"), "{}", home.body);

    // The platform's own form, from a browser that says where it is.
    let headers =
        [FORM, ("cookie", &cookie), ("origin", "http://commons.localhost:8080"), ("sec-fetch-site", "same-origin")];
    let reply = send(&s, HOME, "POST", PLATFORM, "/login", &headers, &with_token).await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert!(reply.set_cookie("commons_session").is_some());
    // A program that says nothing of where it is, with the form's token.
    let reply = send(&s, HOME, "POST", PLATFORM, "/login", &headers[..2], &with_token).await;
    assert_eq!(reply.status, 303, "{}", reply.body);
}

/// Every cookie a login, a handoff and a logout set.
async fn cookies_of_a_login(s: &Setup) -> Vec<String> {
    let (token, cookie) = form_token(s, HOME).await;
    let form = send(s, HOME, "GET", PLATFORM, "/login", &[], "").await;
    let mut lines: Vec<String> = form.set_cookie("commons_login").map(str::to_owned).into_iter().collect();
    let next = encode("http://notes.commons.localhost:8080/");
    let body = format!("user=alice&password=alice%27s+password&next={next}&csrf={token}");
    let login = send(s, HOME, "POST", PLATFORM, "/login", &[FORM, ("cookie", &cookie)], &body).await;
    lines.push(login.set_cookie("commons_session").expect("a platform session").to_owned());
    let location = login.header("location").unwrap();
    let path = &location[location.find("/.commons/").unwrap()..];
    let handed = send(s, HOME, "GET", "notes.commons.localhost:8080", path, &[], "").await;
    lines.push(handed.set_cookie("commons_site").expect("a site session").to_owned());
    let site_cookie = format!("commons_site={}", handed.cookie("commons_site").unwrap());
    let out =
        send(s, HOME, "POST", "notes.commons.localhost:8080", "/.commons/logout", &[("cookie", &site_cookie)], "")
            .await;
    lines.push(out.set_cookie("commons_site").expect("the site session ended").to_owned());
    let platform_cookie = format!("commons_session={}", login.cookie("commons_session").unwrap());
    let out = send(s, HOME, "POST", PLATFORM, "/logout", &[("cookie", &platform_cookie)], "").await;
    lines.push(out.set_cookie("commons_session").expect("the platform session ended").to_owned());
    lines
}

#[tokio::test]
async fn cookies_are_secure_when_the_public_scheme_is_https() {
    let s = setup(GatewayConfig { public_scheme: "https".into(), ..GatewayConfig::default() }).await;
    for line in cookies_of_a_login(&s).await {
        assert!(line.split("; ").any(|a| a == "Secure"), "{line}");
        assert!(line.split("; ").any(|a| a == "HttpOnly"), "{line}");
    }
}

#[tokio::test]
async fn cookies_are_not_secure_when_the_public_scheme_is_http() {
    // A browser drops a Secure cookie sent over plain HTTP.
    let s = setup(GatewayConfig::default()).await;
    for line in cookies_of_a_login(&s).await {
        assert!(!line.contains("Secure"), "{line}");
        assert!(line.split("; ").any(|a| a == "HttpOnly"), "{line}");
    }
}

/// Address `n` of the loopback network (127.0.1.n).
fn address(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1, n)
}

#[tokio::test]
async fn many_addresses_guessing_one_account_are_refused_once_its_budget_is_spent() {
    let s = setup(GatewayConfig::default()).await;
    // Alice logged in from home before.
    let home = address(250);
    assert_eq!(log_in(&s, home, "alice's password", "/").await.status, 303);

    // An attacker with an address per guess: each address is under its own
    // limit, the account's budget is not.
    let mut statuses = Vec::new();
    for n in 1..=25 {
        statuses.push(log_in(&s, address(n), &format!("guess {n}"), "/").await.status);
    }
    let refused = statuses.iter().position(|&status| status == 429).expect("guessing is refused");
    assert!(statuses[..refused].iter().all(|&status| status == 401), "{statuses:?}");
    assert!(statuses[refused..].iter().all(|&status| status == 429), "{statuses:?}");
    assert!(refused <= 20, "{statuses:?}");
    let refused = log_in(&s, address(26), "alice's password", "/").await;
    assert_eq!(refused.status, 429, "a fresh address waits too, even with the password");
    assert!(refused.header("retry-after").is_some());

    // Alice at home is not locked out by them.
    assert_eq!(log_in(&s, home, "alice's password", "/").await.status, 303);
}

#[tokio::test]
async fn the_real_user_from_a_fresh_address_is_not_locked_out_for_ever() {
    let s = setup(GatewayConfig::default()).await;
    let mut n = 1;
    while log_in(&s, address(n), "guess", "/").await.status != 429 {
        n += 1;
        assert!(n < 100, "the account's budget holds");
    }
    let fresh = address(200);
    let refused = log_in(&s, fresh, "alice's password", "/").await;
    assert_eq!(refused.status, 429);
    let wait_s: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    s.clock.advance_ms(wait_s * 1000);
    assert_eq!(log_in(&s, fresh, "alice's password", "/").await.status, 303, "after the wait it says");
}

#[tokio::test]
async fn password_guessing_is_still_limited_per_address() {
    let s = setup(GatewayConfig::default()).await;
    let from = address(7);
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(log_in(&s, from, "guess", "/").await.status);
    }
    assert!(statuses[..10].iter().all(|&status| status == 401), "{statuses:?}");
    assert_eq!(statuses[10], 429);
}
