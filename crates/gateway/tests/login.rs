//! Logging in, tried as an attacker would, over real sockets: where a
//! handoff code may go, forged login forms, cookies over https, password
//! guessing from many addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::{
    Gateway, GatewayConfig, Identities, ManualClock, Routes, RunningGateway, SessionStore, SiteRoute, StoredSession,
    StoredToken, hash_password,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

const NOW_MS: u64 = 1_795_000_000_000;
/// The platform session alice already has.
const ALICE_SESSION: &str = "alice-platform-session-token";
/// Alice's session on `notes`.
const ALICE_ON_NOTES: &str = "alice-notes-session-token";
/// The platform session and the `notes` session of mallory, who wants
/// alice's browser to be his.
const MALLORY_SESSION: &str = "mallory-platform-session-token";
const MALLORY_ON_NOTES: &str = "mallory-notes-session-token";
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

/// Sessions as a store would keep them, and alice's API token.
#[derive(Default)]
struct Kept(Mutex<Vec<StoredSession>>, Mutex<Vec<(String, StoredToken)>>);

impl SessionStore for Kept {
    fn save(&self, session: &StoredSession) -> Result<(), String> {
        self.0.lock().unwrap().push(session.clone());
        Ok(())
    }

    fn end(&self, user: &str) -> Result<(), String> {
        self.0.lock().unwrap().retain(|s| s.user != user);
        Ok(())
    }

    fn revoke_session(&self, user: &str, token_sha256: &str) -> Result<(), String> {
        self.0.lock().unwrap().retain(|s| s.user != user || hex(&s.token_sha256) != token_sha256);
        Ok(())
    }

    fn tokens_of(&self, user: &str) -> Result<Vec<StoredToken>, String> {
        Ok(self.1.lock().unwrap().iter().filter(|(u, _)| u == user).map(|(_, t)| t.clone()).collect())
    }

    fn revoke_token(&self, user: &str, token_sha256: &str) -> Result<bool, String> {
        let mut tokens = self.1.lock().unwrap();
        let before = tokens.len();
        tokens.retain(|(u, t)| u != user || t.token_sha256 != token_sha256);
        Ok(tokens.len() < before)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const ALICE_TOKEN: &str = "alice-api-token";

struct Setup {
    running: RunningGateway,
    kept: Arc<Kept>,
    clock: ManualClock,
    /// What the gateway's cookie names begin with: `__Host-` under https.
    prefix: &'static str,
}

impl Setup {
    /// The name of the gateway's cookie `name` as this gateway spells it.
    fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// A gateway for `notes` (login needed; also at `notes.example.org`) with
/// alice's account, alice logged in on the platform (`ALICE_SESSION`).
async fn setup(config: GatewayConfig) -> Setup {
    let mut routes = Routes::new("commons.localhost");
    routes.add_site(SiteRoute::new("notes", &[site().await], false), &["notes.example.org"]);
    let clock = ManualClock::new(NOW_MS);
    let kept = Arc::new(Kept::default());
    let session = |token: &str, user: &str, site: Option<&str>| StoredSession {
        token_sha256: sha256(token),
        user: user.into(),
        site: site.map(str::to_owned),
        created_ms: NOW_MS,
        expires_ms: NOW_MS + 86_400_000,
    };
    let sessions = vec![
        session(ALICE_SESSION, "alice", None),
        session(ALICE_ON_NOTES, "alice", Some("notes")),
        session(MALLORY_SESSION, "mallory", None),
        session(MALLORY_ON_NOTES, "mallory", Some("notes")),
    ];
    let prefix = if config.public_scheme == "https" { "__Host-" } else { "" };
    let gateway = Gateway::with_sessions(config, routes, None, Arc::new(clock.clone()), Some(kept.clone()), sessions);
    let mut identities = Identities::default();
    identities.add_password("alice", &hash_password("alice's password").unwrap());
    identities.add_user("mallory", false);
    identities.add_token(ALICE_TOKEN, "alice");
    kept.1
        .lock()
        .unwrap()
        .push(("alice".into(), StoredToken { token_sha256: hex(&sha256(ALICE_TOKEN)), created_ms: NOW_MS }));
    gateway.set_identities(identities);
    let running = gateway.serve("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    Setup { running, kept, clock, prefix }
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
/// A browser's state cookie, as a site's `/.commons/login` sets it, and
/// its SHA-256 in hex, as the login page gets it.
const STATE: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

fn state_hash() -> String {
    sha256(STATE).iter().map(|b| format!("{b:02x}")).collect()
}
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
    let name = s.name("commons_login");
    let cookie = form.cookie(&name).unwrap_or_default().to_owned();
    let token = form.body.split("name=\"csrf\" value=\"").nth(1).and_then(|t| t.split('"').next()).unwrap_or("");
    (token.to_owned(), format!("{name}={cookie}"))
}

/// A login form as the platform's own page posts it.
async fn log_in(s: &Setup, from: Ipv4Addr, password: &str, next: &str) -> Reply {
    let (token, cookie) = form_token(s, from).await;
    let body =
        format!("user=alice&password={}&next={}&state={}&csrf={token}", encode(password), encode(next), state_hash());
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
        let path = format!("/login?next={}&state={}", encode(next), state_hash());
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
    let path = format!("/login?next={next}&state={}", state_hash());
    let reply = send(&s, HOME, "GET", PLATFORM, &path, &[("cookie", &cookie)], "").await;
    let location = reply.header("location").unwrap();
    assert!(location.ends_with("&next=%2Fpage%3Fx%3D1"), "{location}");
}

#[tokio::test]
async fn a_handoff_goes_on_the_public_scheme_to_the_port_the_platform_was_reached_on() {
    let s = setup(GatewayConfig::default()).await;
    let cookie = format!("commons_session={ALICE_SESSION}");
    let next = format!("/login?next={}&state={}", encode("http://notes.commons.localhost:9999/"), state_hash());
    let reply = send(&s, HOME, "GET", "commons.localhost", &next, &[("cookie", &cookie)], "").await;
    assert_eq!(handed_to(&reply).as_deref(), Some("http://notes.commons.localhost/.commons/handoff"));

    let s = setup(GatewayConfig { public_scheme: "https".into(), ..GatewayConfig::default() }).await;
    let cookie = format!("__Host-{cookie}");
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
    let notes = "notes.commons.localhost:8080";
    let start = send(s, HOME, "GET", notes, "/.commons/login?next=%2F", &[], "").await;
    assert_eq!(start.status, 303, "{}", start.body);
    let mut lines: Vec<String> = vec![start.set_cookie(&s.name("commons_state")).expect("a state").to_owned()];
    let state_cookie = format!("{}={}", s.name("commons_state"), start.cookie(&s.name("commons_state")).unwrap());
    let to_login = start.header("location").unwrap();
    let state = to_login.split("&state=").nth(1).expect("the state's hash");
    let (token, cookie) = form_token(s, HOME).await;
    let form = send(s, HOME, "GET", PLATFORM, "/login", &[], "").await;
    lines.extend(form.set_cookie(&s.name("commons_login")).map(str::to_owned));
    let next = encode("http://notes.commons.localhost:8080/");
    let body = format!("user=alice&password=alice%27s+password&next={next}&state={state}&csrf={token}");
    let login = send(s, HOME, "POST", PLATFORM, "/login", &[FORM, ("cookie", &cookie)], &body).await;
    lines.push(login.set_cookie(&s.name("commons_session")).expect("a platform session").to_owned());
    let location = login.header("location").unwrap();
    let path = &location[location.find("/.commons/").unwrap()..];
    let handed = send(s, HOME, "GET", notes, path, &[("cookie", &state_cookie)], "").await;
    lines.push(handed.set_cookie(&s.name("commons_site")).expect("a site session").to_owned());
    let site_cookie = format!("{}={}", s.name("commons_site"), handed.cookie(&s.name("commons_site")).unwrap());
    let out =
        send(s, HOME, "POST", "notes.commons.localhost:8080", "/.commons/logout", &[("cookie", &site_cookie)], "")
            .await;
    lines.push(out.set_cookie(&s.name("commons_site")).expect("the site session ended").to_owned());
    let platform_name = s.name("commons_session");
    let platform_cookie = format!("{platform_name}={}", login.cookie(&platform_name).unwrap());
    let out = send(s, HOME, "POST", PLATFORM, "/logout", &[("cookie", &platform_cookie)], "").await;
    lines.push(out.set_cookie(&platform_name).expect("the platform session ended").to_owned());
    lines
}

#[tokio::test]
async fn cookies_are_secure_when_the_public_scheme_is_https() {
    let s = setup(GatewayConfig { public_scheme: "https".into(), ..GatewayConfig::default() }).await;
    for line in cookies_of_a_login(&s).await {
        assert!(line.split("; ").any(|a| a == "Secure"), "{line}");
        assert!(line.split("; ").any(|a| a == "HttpOnly"), "{line}");
        // What a browser holds a `__Host-` cookie to: no sibling can set one.
        assert!(line.starts_with("__Host-commons_"), "{line}");
        assert!(line.split("; ").any(|a| a == "Path=/") && !line.contains("Domain"), "{line}");
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

/// Mallory's platform session planted for alice's browser by a sibling
/// host (`Domain=<platform>; Path=/login`, sent ahead of hers), and his
/// site session for `notes`: neither is taken for hers.
#[tokio::test]
async fn a_gateway_cookie_sent_twice_counts_as_none() {
    let s = setup(GatewayConfig::default()).await;
    let next = format!("/login?next={}", encode("http://notes.commons.localhost:8080/"));
    let planted = format!("commons_session={MALLORY_SESSION}; commons_session={ALICE_SESSION}");
    let reply = send(&s, HOME, "GET", PLATFORM, &next, &[("cookie", &planted)], "").await;
    assert_eq!((reply.status, handed_to(&reply)), (200, None), "the login form, no code for anyone");
    let planted = [("cookie", &*format!("commons_session={MALLORY_SESSION}")), ("cookie", ALICE_COOKIE)];
    let reply = send(&s, HOME, "GET", PLATFORM, "/", &planted, "").await;
    assert!(!reply.body.contains("logged in"), "over two lines: {}", reply.body);

    let notes = "notes.commons.localhost:8080";
    let planted = format!("commons_site={MALLORY_ON_NOTES}; theme=dark; commons_site={ALICE_ON_NOTES}");
    assert_eq!(send(&s, HOME, "GET", notes, "/", &[("cookie", &planted)], "").await.status, 401);
    let planted = [("cookie", &*format!("commons_site={MALLORY_ON_NOTES}")), ("cookie", "commons_site=x")];
    assert_eq!(send(&s, HOME, "GET", notes, "/", &planted, "").await.status, 401);
    // Alone, each is good.
    let alone = format!("theme=dark; commons_site={ALICE_ON_NOTES}");
    assert_eq!(send(&s, HOME, "GET", notes, "/", &[("cookie", &alone)], "").await.status, 200);
}

const ALICE_COOKIE: &str = "commons_session=alice-platform-session-token";

/// Under https the gateway's cookies are `__Host-` ones, which a sibling
/// cannot set: one without the prefix (which a sibling can) is nobody's.
#[tokio::test]
async fn under_https_only_the_host_prefixed_cookies_count() {
    let s = setup(GatewayConfig { public_scheme: "https".into(), ..GatewayConfig::default() }).await;
    let next = format!("/login?next={}", encode("https://notes.commons.localhost/"));
    let plain = send(&s, HOME, "GET", PLATFORM, &next, &[("cookie", ALICE_COOKIE)], "").await;
    assert_eq!((plain.status, handed_to(&plain)), (200, None), "{:?}", plain.header("location"));
    let prefixed = format!("__Host-commons_session={ALICE_SESSION}");
    let reply = send(&s, HOME, "GET", "commons.localhost", "/", &[("cookie", &prefixed)], "").await;
    assert!(reply.body.contains("logged in as <b>alice</b>"), "{}", reply.body);

    let notes = "notes.commons.localhost";
    let plain = format!("commons_site={ALICE_ON_NOTES}");
    assert_eq!(send(&s, HOME, "GET", notes, "/", &[("cookie", &plain)], "").await.status, 401);
    let prefixed = format!("__Host-commons_site={ALICE_ON_NOTES}");
    assert_eq!(send(&s, HOME, "GET", notes, "/", &[("cookie", &prefixed)], "").await.status, 200);
}

/// A name that is the gateway's only once Unicode whitespace is trimmed
/// (which browsers do not do) is a sibling's cookie, set with `Domain=` as
/// any `__Host-` look-alike may be: never the gateway's own. And such a
/// cookie beside the real one hides nothing.
#[tokio::test]
async fn a_cookie_whose_name_only_looks_like_the_gateways_is_not_its_own() {
    let s = setup(GatewayConfig { public_scheme: "https".into(), ..GatewayConfig::default() }).await;
    let notes = "notes.commons.localhost";
    for space in ["\u{a0}", "\u{2003}", "\u{3000}"] {
        let planted = format!("{space}__Host-commons_site={MALLORY_ON_NOTES}");
        assert_eq!(send(&s, HOME, "GET", notes, "/", &[("cookie", &planted)], "").await.status, 401, "{planted:?}");
        let beside = format!("{space}th\u{e9}me=dark; __Host-commons_site={ALICE_ON_NOTES}");
        assert_eq!(send(&s, HOME, "GET", notes, "/", &[("cookie", &beside)], "").await.status, 200, "{beside:?}");
        let beside = format!("th\u{e9}me=dark; __Host-commons_session={ALICE_SESSION}");
        let reply = send(&s, HOME, "GET", "commons.localhost", "/", &[("cookie", &beside)], "").await;
        assert!(reply.body.contains("logged in as <b>alice</b>"), "{beside:?}: {}", reply.body);
    }
}

/// The handoff path of a code mallory has had issued for his own browser,
/// as he gets it by going through a site's login, and his state cookie.
async fn mallorys_code(s: &Setup) -> (String, String) {
    let start = send(s, HOME, "GET", "notes.commons.localhost:8080", "/.commons/login?next=%2F", &[], "").await;
    assert_eq!(start.status, 303, "{}", start.body);
    let state = format!("commons_state={}", start.cookie("commons_state").expect("a state cookie"));
    let location = start.header("location").unwrap();
    let login = location.strip_prefix("http://commons.localhost:8080").expect("to the platform's login");
    assert!(login.starts_with("/login?next=") && login.contains("&state="), "{login}");
    let mallory = format!("commons_session={MALLORY_SESSION}");
    let handed = send(s, HOME, "GET", PLATFORM, login, &[("cookie", &mallory)], "").await;
    let location = handed.header("location").unwrap();
    assert!(handed_to(&handed).is_some(), "{location}");
    (location[location.find("/.commons/").unwrap()..].to_owned(), state)
}

#[tokio::test]
async fn a_code_sent_to_another_browser_logs_nobody_in() {
    let s = setup(GatewayConfig::default()).await;
    let notes = "notes.commons.localhost:8080";
    let alices_own = format!("commons_state={}", "a".repeat(64));
    let sent: &[(&str, Vec<(&str, &str)>)] = &[
        ("no state cookie", vec![]),
        ("another state", vec![("cookie", &alices_own)]),
        ("a state planted twice", vec![("cookie", &alices_own)]),
    ];
    for (what, headers) in sent {
        let (path, mallorys) = mallorys_code(&s).await;
        let mut headers = headers.clone();
        if *what == "a state planted twice" {
            headers.push(("cookie", mallorys.as_str()));
        }
        let reply = send(&s, HOME, "GET", notes, &path, &headers, "").await;
        assert_eq!(reply.status, 400, "{what}: {}", reply.body);
        assert!(reply.set_cookie("commons_site").is_none(), "{what}");
    }
    // In the browser it was issued for it works, whoever sent the browser
    // there: a login begun from a link on another site arrives
    // `cross-site`, and so does every handoff once the domain is on the
    // Public Suffix List.
    for fetch_site in ["same-site", "cross-site"] {
        let (path, state) = mallorys_code(&s).await;
        let own = [("cookie", &*state), ("sec-fetch-site", fetch_site)];
        let reply = send(&s, HOME, "GET", notes, &path, &own, "").await;
        assert_eq!(reply.status, 303, "{fetch_site}: {}", reply.body);
        assert!(reply.set_cookie("commons_site").is_some(), "{fetch_site}");
    }
}

/// A browser that opened the login page by itself, then logs in for a
/// site: it goes by the site's `/.commons/login` for a state, and on.
#[tokio::test]
async fn a_login_begun_on_the_platform_reaches_the_site_by_way_of_its_state() {
    let s = setup(GatewayConfig::default()).await;
    let (token, cookie) = form_token(&s, HOME).await;
    let body = format!(
        "user=alice&password=alice%27s+password&next={}&csrf={token}",
        encode("http://notes.commons.localhost:8080/x")
    );
    let login = send(&s, HOME, "POST", PLATFORM, "/login", &[FORM, ("cookie", &cookie)], &body).await;
    assert_eq!(login.status, 303, "{}", login.body);
    assert_eq!(login.header("location"), Some("http://notes.commons.localhost:8080/.commons/login?next=%2Fx"));
    let platform = format!("commons_session={}", login.cookie("commons_session").unwrap());
    let notes = "notes.commons.localhost:8080";
    let start = send(&s, HOME, "GET", notes, "/.commons/login?next=%2Fx", &[], "").await;
    let state = format!("commons_state={}", start.cookie("commons_state").unwrap());
    let location = start.header("location").unwrap();
    let path = location.strip_prefix("http://commons.localhost:8080").unwrap();
    let handed = send(&s, HOME, "GET", PLATFORM, path, &[("cookie", &platform)], "").await;
    let location = handed.header("location").unwrap();
    let path = &location[location.find("/.commons/").expect("a handoff")..];
    let reply = send(&s, HOME, "GET", notes, path, &[("cookie", &state)], "").await;
    assert_eq!((reply.status, reply.header("location")), (303, Some("/x")), "{}", reply.body);
    let session = format!("commons_site={}", reply.cookie("commons_site").unwrap());
    assert_eq!(send(&s, HOME, "GET", notes, "/x", &[("cookie", &session)], "").await.status, 200);
    // A page of the site, in a browser, starts at the site's own login.
    let page = send(&s, HOME, "GET", notes, "/y", &[("accept", "text/html")], "").await;
    assert_eq!(page.header("location"), Some("http://notes.commons.localhost:8080/.commons/login?next=%2Fy"));
}

/// Every password check busy (none may run here): a login is answered
/// 503 at once, with the password unchecked and nothing charged.
#[tokio::test]
async fn with_every_password_check_busy_a_login_waits_unchecked() {
    let s = setup(GatewayConfig { password_checks_max: 0, ..GatewayConfig::default() }).await;
    for (n, password) in ["alice's password", "a guess"].into_iter().enumerate() {
        let reply = log_in(&s, address(n as u8 + 1), password, "/").await;
        assert_eq!(reply.status, 503, "{password}: {}", reply.body);
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert!(reply.set_cookie("commons_session").is_none());
    }
    // Not one of them counted against the account: more than its budget
    // of attempts from fresh addresses are all still waiting, not refused.
    for n in 10..32 {
        assert_eq!(log_in(&s, address(n), "a guess", "/").await.status, 503, "{n}");
    }
    assert!(s.kept.0.lock().unwrap().is_empty());
}

/// The csrf token of alice's `/sessions` page, read from it.
async fn sessions_page(s: &Setup, cookie: &str) -> (Reply, String) {
    let page = send(s, HOME, "GET", PLATFORM, "/sessions", &[("cookie", cookie)], "").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = page.body.split("name=\"csrf\" value=\"").nth(1).and_then(|t| t.split('"').next()).unwrap_or("");
    let csrf = csrf.to_owned();
    (page, csrf)
}

#[tokio::test]
async fn users_list_and_revoke_their_own_sessions_and_tokens() {
    let s = setup(GatewayConfig::default()).await;
    let notes = "notes.commons.localhost:8080";
    let bearer = format!("Bearer {ALICE_TOKEN}");
    assert_eq!(send(&s, HOME, "GET", notes, "/", &[("authorization", &bearer)], "").await.status, 200);
    let on_notes = format!("commons_site={ALICE_ON_NOTES}");
    assert_eq!(send(&s, HOME, "GET", notes, "/", &[("cookie", &on_notes)], "").await.status, 200);

    let (page, csrf) = sessions_page(&s, ALICE_COOKIE).await;
    let this = hex(&sha256(ALICE_SESSION));
    let other = hex(&sha256(ALICE_ON_NOTES));
    let token = hex(&sha256(ALICE_TOKEN));
    assert!(page.body.contains(&format!("<code>{}</code> the platform", &this[..8])), "{}", page.body);
    assert!(page.body.contains("(this one)") && page.body.contains(&format!("<code>{}</code> notes", &other[..8])));
    assert!(page.body.contains(&format!("<code>{}</code>: since 2026-11-18", &token[..8])), "{}", page.body);
    assert!(!page.body.contains(&hex(&sha256(MALLORY_SESSION))[..8]), "nobody else's");
    assert!(page.body.contains("Revoke all other sessions"));

    // Forged: from another site's page, or without the page's token.
    let body = format!("revoke=token&id={token}&csrf={csrf}");
    let forged: &[(&str, Vec<(&str, &str)>, String)] = &[
        ("cross-site", vec![FORM, ("cookie", ALICE_COOKIE), ("sec-fetch-site", "cross-site")], body.clone()),
        ("a foreign origin", vec![FORM, ("cookie", ALICE_COOKIE), ("origin", "http://evil.example")], body.clone()),
        ("no token", vec![FORM, ("cookie", ALICE_COOKIE)], format!("revoke=token&id={token}")),
        (
            "another token",
            vec![FORM, ("cookie", ALICE_COOKIE)],
            format!("revoke=token&id={token}&csrf={}", "0".repeat(64)),
        ),
        ("no session", vec![FORM], body.clone()),
    ];
    for (what, headers, body) in forged {
        let reply = send(&s, HOME, "POST", PLATFORM, "/sessions", headers, body).await;
        assert_eq!(reply.status, 403, "{what}: {}", reply.body);
    }
    assert_eq!(send(&s, HOME, "GET", notes, "/", &[("authorization", &bearer)], "").await.status, 200, "still good");

    // Revoked from the page: the token gets 401 at once, and is gone from the store.
    let reply = send(&s, HOME, "POST", PLATFORM, "/sessions", &[FORM, ("cookie", ALICE_COOKIE)], &body).await;
    assert_eq!((reply.status, reply.header("location")), (303, Some("/sessions")), "{}", reply.body);
    assert_eq!(send(&s, HOME, "GET", notes, "/", &[("authorization", &bearer)], "").await.status, 401);
    assert!(s.kept.1.lock().unwrap().is_empty());

    // One session: only her own.
    let mallorys = hex(&sha256(MALLORY_ON_NOTES));
    let body = format!("revoke=session&id={mallorys}&csrf={csrf}");
    assert_eq!(
        send(&s, HOME, "POST", PLATFORM, "/sessions", &[FORM, ("cookie", ALICE_COOKIE)], &body).await.status,
        303
    );
    let mallory = format!("commons_site={MALLORY_ON_NOTES}");
    assert_eq!(send(&s, HOME, "GET", notes, "/", &[("cookie", &mallory)], "").await.status, 200, "not hers");

    // All other sessions: the site session ends, this one stays.
    let body = format!("revoke=others&id=&csrf={csrf}");
    let reply = send(&s, HOME, "POST", PLATFORM, "/sessions", &[FORM, ("cookie", ALICE_COOKIE)], &body).await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert_eq!(send(&s, HOME, "GET", notes, "/", &[("cookie", &on_notes)], "").await.status, 401);
    let (page, _) = sessions_page(&s, ALICE_COOKIE).await;
    assert!(page.body.contains("(this one)") && !page.body.contains(&other[..8]), "{}", page.body);
    // Mallory's are his own.
    assert_eq!(send(&s, HOME, "GET", notes, "/", &[("cookie", &mallory)], "").await.status, 200);
}
