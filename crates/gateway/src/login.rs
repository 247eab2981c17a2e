//! Logging in: the platform's own pages on the platform domain, and the
//! redirect handoff that carries a session to each site.
//!
//! 1. A browser asks a site that needs a login without a site session; the
//!    gateway redirects it to the site's `/.commons/login?next=<path>`,
//!    which sets a random state cookie on the site's host (host-only) and
//!    redirects to `http://<domain>/login?next=<url>&state=<its SHA-256>`.
//! 2. The login page checks the password (Argon2id, off the event loop),
//!    sets the platform session cookie on the platform domain and
//!    redirects to `<site>/.commons/handoff?code=<one-time code>&next=<path>`,
//!    the code bound to `state`. A browser that already has a platform
//!    session skips the form. With no `state` (a browser that came to the
//!    login page by itself) it goes to the site's `/.commons/login` first.
//!    The handoff's origin is never taken from `next`: it is the public
//!    scheme, one of the hosts the platform serves for that site, and the
//!    port the platform itself was reached on; `next` gives only the site
//!    and a path (see [`next_page`]). A `next` that is no site's page is
//!    a page of the platform, or its home page.
//! 3. The gateway, on the site's host, redeems the code (once, within a
//!    minute, for that site only, and only in a browser whose state cookie
//!    hashes to the code's `state`: an attacker's own code sent to a victim
//!    logs nobody in), sets a session cookie for that host only and
//!    redirects to the page first asked for.
//!
//! No app ever sees a password, a session or a code: the cookies are removed
//! before a request is passed on (by the pipeline), and `/.commons/` paths
//! are the gateway's.
//!
//! Forged forms (CSRF) are refused with 403 twice over: a request a browser
//! says comes from elsewhere (`Sec-Fetch-Site` other than `same-origin` or
//! `none`, or an `Origin` that is not the platform's) is refused before
//! anything else; and the login form carries a token that must equal its
//! `commons_login` cookie (`SameSite=Strict`). The first holds against the
//! sites themselves, which are subdomains of the platform and so could set
//! that cookie; the second against browsers that send neither header.
//!
//! Every cookie is `HttpOnly` and, when the public scheme is https,
//! `Secure`.
//!
//! In Pingora's terms these pages are a hook that answers a request itself:
//! the general engine calls [`Portal`] when the pipeline routes a request
//! here. They share the pipeline's state (users, sessions, limits).
//!
//! # Deliberately absent
//! Any engine: the portal knows requests and answers, not connections.

use std::collections::HashMap;
use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, LOCATION, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode, Uri};

use crate::body::{Body, full};
use crate::error::html_escape as escape;
use crate::identity::{Handoffs, SessionStore, StoredSession, cookie, random_token, sha256, verify_password};
use crate::limits::{LoginGuard, Refusal, TierPolicy, attempts_key};
use crate::pipeline::Pipeline;
use crate::routes::{Routes, SiteRoute};

/// How long a login form may wait to be sent.
const FORM_LIFETIME_S: u64 = 3600;

/// Largest login form accepted.
const FORM_LIMIT_BYTES: usize = 16 << 10;

/// Password attempts per client address (IPv6: per /64) per minute.
static LOGIN_ATTEMPTS: TierPolicy =
    TierPolicy { free_requests_per_minute: Some(10), free_concurrent_requests: None, premium_prefixes: Vec::new() };

/// The platform's pages and the handoff, with what they keep: the
/// one-time codes in flight, and where sessions are kept.
pub(crate) struct Portal {
    handoffs: Handoffs,
    session_store: Option<Arc<dyn SessionStore>>,
    guard: LoginGuard,
    /// One permit per password check that may run at once.
    checks: Arc<tokio::sync::Semaphore>,
}

/// How long a login waits for a password check to be free.
const CHECK_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

impl Portal {
    /// `checks`: how many password checks may run at once
    /// ([`crate::GatewayConfig::password_checks_max`]).
    pub(crate) fn new(session_store: Option<Arc<dyn SessionStore>>, checks: usize) -> Portal {
        let checks = Arc::new(tokio::sync::Semaphore::new(checks));
        Portal { handoffs: Handoffs::default(), session_store, guard: LoginGuard::new(), checks }
    }

    /// A request to the platform domain itself: its pages.
    pub(crate) async fn platform(&self, pipeline: &Pipeline, request: Request<Incoming>, peer: &str) -> Response<Body> {
        let now = pipeline.clock.now_ms();
        let query = query(request.uri());
        let session = cookie(request.headers(), pipeline.cookies.platform).map(str::to_owned);
        let user = session.as_deref().and_then(|token| pipeline.sessions.user(token, None, now));
        let host = host_of(&request).to_owned();
        if request.method() == Method::POST && from_elsewhere(pipeline, request.headers(), &host) {
            return page(
                StatusCode::FORBIDDEN,
                "Refused",
                "<p>This form was not sent from the platform's own page.</p>",
            );
        }
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/") => match user {
                Some(user) => page(
                    StatusCode::OK,
                    "OneCommons",
                    &format!(
                        "<p>You are logged in as <b>{}</b>{}.</p>{}",
                        escape(&user),
                        if is_premium(pipeline, &user) { ", a subscriber" } else { "" },
                        LOGOUT_FORM
                    ),
                ),
                None => page(StatusCode::OK, "OneCommons", "<p><a href=\"/login\">Log in</a></p>"),
            },
            (&Method::GET, "/login") => {
                let next = query.get("next").map(String::as_str).unwrap_or("");
                let state = query.get("state").map(String::as_str).unwrap_or("");
                match (user, session) {
                    (Some(user), Some(token)) => {
                        let expires = pipeline.sessions.expiry(&token).unwrap_or(now);
                        self.hand_off(pipeline, &user, expires, next, state, &host, Vec::new())
                    }
                    _ => login_form(pipeline, request.headers(), StatusCode::OK, next, state, None),
                }
            }
            (&Method::POST, "/login") => self.log_in(pipeline, request, peer, &host, now).await,
            (&Method::GET, "/sessions") => match (user, session) {
                (Some(user), Some(token)) => self.sessions_page(pipeline, &user, &token).await,
                _ => redirect("/login?next=%2Fsessions", Vec::new()),
            },
            (&Method::POST, "/sessions") => match (user, session) {
                (Some(user), Some(token)) => self.revoke(pipeline, request, &user, &token).await,
                _ => page(StatusCode::FORBIDDEN, "Refused", "<p>Log in first.</p>"),
            },
            (&Method::POST, "/logout") => {
                if let Some(user) = user {
                    self.end_sessions(pipeline, &user).await;
                }
                redirect("/login", vec![expire_cookie(pipeline, pipeline.cookies.platform)])
            }
            (&Method::GET, "/subscribe") => page(
                StatusCode::OK,
                "Subscribe",
                "<p>One subscription unlocks the premium tier of every site on OneCommons, and is shared \
                 among the sites you use, the machines they run on and the projects they are built from, \
                 by your own use.</p><p>Subscriptions are sold by the platform's custodians.</p>",
            ),
            _ => page(StatusCode::NOT_FOUND, "Not found", "<p>There is no such page.</p>"),
        }
    }

    /// `POST /login`: checks the password, starts a platform session and
    /// hands it on to the page asked for.
    async fn log_in(
        &self,
        pipeline: &Pipeline,
        request: Request<Incoming>,
        peer: &str,
        host: &str,
        now: u64,
    ) -> Response<Body> {
        let headers = request.headers().clone();
        let form = match Limited::new(request.into_body(), FORM_LIMIT_BYTES).collect().await {
            Ok(body) => form_urlencoded::parse(&body.to_bytes()).into_owned().collect::<HashMap<String, String>>(),
            Err(_) => {
                return login_form(
                    pipeline,
                    &headers,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "",
                    "",
                    Some("The form is too large."),
                );
            }
        };
        let next = form.get("next").cloned().unwrap_or_default();
        let state = form.get("state").cloned().unwrap_or_default();
        let sent = form.get("csrf").map(String::as_str).unwrap_or("");
        if !cookie(&headers, pipeline.cookies.form).is_some_and(|bound| !bound.is_empty() && same(bound, sent)) {
            let again = "This form has expired, or was not sent from the login page. Please log in again.";
            return login_form(pipeline, &headers, StatusCode::FORBIDDEN, &next, &state, Some(again));
        }
        let user = form.get("user").cloned().unwrap_or_default();
        let wait = |retry_after_s: u64| {
            let mut response = login_form(
                pipeline,
                &headers,
                StatusCode::TOO_MANY_REQUESTS,
                &next,
                &state,
                Some("Too many attempts; please wait."),
            );
            response.headers_mut().insert(hyper::header::RETRY_AFTER, retry_after_s.into());
            response
        };
        let peer = attempts_key(peer);
        if let Err(Refusal::Rate { retry_after_s }) = pipeline.limiter.admit(&LOGIN_ATTEMPTS, "", &peer, now) {
            return wait(retry_after_s);
        }
        // Each check holds 19 MiB and a core: as many at once as there
        // are cores, whatever the user names (an unknown one is checked
        // against a decoy). None free soon: try again, nothing charged.
        let Ok(Ok(permit)) = tokio::time::timeout(CHECK_WAIT, self.checks.clone().acquire_owned()).await else {
            let mut response = login_form(
                pipeline,
                &headers,
                StatusCode::SERVICE_UNAVAILABLE,
                &next,
                &state,
                Some("Too many logins at once; please try again in a moment."),
            );
            response.headers_mut().insert(hyper::header::RETRY_AFTER, 1u64.into());
            return response;
        };
        let attempt = match self.guard.attempt(&user, &peer, now) {
            Ok(attempt) => attempt,
            Err(retry_after_s) => return wait(retry_after_s),
        };
        let hash = pipeline.identities.load().password_hash(&user).map(str::to_owned);
        let password = form.get("password").cloned().unwrap_or_default();
        let valid = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify_password(&password, hash.as_deref())
        })
        .await;
        if !valid.unwrap_or(false) {
            pipeline.metrics.login(false);
            return login_form(
                pipeline,
                &headers,
                StatusCode::UNAUTHORIZED,
                &next,
                &state,
                Some("Wrong user name or password."),
            );
        }
        self.guard.succeeded(&user, &peer, attempt, now);
        let token = random_token();
        let expires = now.saturating_add(pipeline.config.session_lifetime.as_millis() as u64);
        let session = StoredSession {
            token_sha256: sha256(&token),
            user: user.clone(),
            site: None,
            created_ms: now,
            expires_ms: expires,
        };
        if let Err(e) = self.keep_session(pipeline, session).await {
            tracing::warn!(error = %e, "cannot keep a session");
            return page(StatusCode::SERVICE_UNAVAILABLE, "Try again", "<p>Sessions cannot be kept right now.</p>");
        }
        pipeline.metrics.login(true);
        let set =
            set_cookie(pipeline, pipeline.cookies.platform, &token, pipeline.config.session_lifetime.as_secs(), "Lax");
        self.hand_off(pipeline, &user, expires, &next, &state, host, vec![set])
    }

    /// Redirects a logged-in user to `next`: to a site's page through a
    /// one-time code on an origin the platform serves for that site (the
    /// port is the one the platform was reached on, `host`'s), else to a
    /// page of the platform. The code is bound to `state` (the SHA-256, in
    /// hex, of the state cookie the site's host set in this browser); with
    /// none, the browser goes to the site's `/.commons/login` first, which
    /// sets one and sends it back here.
    #[allow(clippy::too_many_arguments)]
    fn hand_off(
        &self,
        pipeline: &Pipeline,
        user: &str,
        expires_ms: u64,
        next: &str,
        state: &str,
        host: &str,
        cookies: Vec<String>,
    ) -> Response<Body> {
        let (route, site_host, path) = match next_page(next, &pipeline.routes.load()) {
            Next::Platform(path) => return redirect(path, cookies),
            Next::Site { route, host, path } => (route, host, path),
        };
        let port = port_of(host).map_or(String::new(), |port| format!(":{port}"));
        let origin = format!("{}://{site_host}{port}", pipeline.config.public_scheme);
        let Some(state) = state_hash(state) else {
            return redirect(&format!("{origin}/.commons/login?next={}", encode(path)), cookies);
        };
        let code = self.handoffs.issue(user, &route.site, state, expires_ms, pipeline.clock.now_ms());
        redirect(&format!("{origin}/.commons/handoff?code={code}&next={}", encode(path)), cookies)
    }

    /// A request on a site's host under `/.commons/`: the gateway's own.
    pub(crate) async fn site_endpoint(
        &self,
        pipeline: &Pipeline,
        request: &Request<Incoming>,
        route: &SiteRoute,
        host: &str,
    ) -> Response<Body> {
        let now = pipeline.clock.now_ms();
        let login_url = |next: &str| pipeline.routes.load().login_url(&pipeline.config.public_scheme, host, next);
        let query = query(request.uri());
        if request.method() == Method::POST && from_elsewhere(pipeline, request.headers(), host) {
            return page(StatusCode::FORBIDDEN, "Refused", "<p>This form was not sent from this site.</p>");
        }
        match request.uri().path() {
            "/.commons/handoff" => {
                // Whoever sent the browser here, the code is redeemed only
                // with the state cookie it was issued for. (Not refused by
                // `Sec-Fetch-Site`: a browser says `cross-site` for every
                // login begun from a link elsewhere, and for every handoff
                // once the domain is on the Public Suffix List.)
                let code = query.get("code").map(String::as_str).unwrap_or("");
                let state = cookie(request.headers(), pipeline.cookies.state);
                let Some((user, expires)) = self.handoffs.redeem(code, &route.site, state, now) else {
                    return page(
                        StatusCode::BAD_REQUEST,
                        "This login link has expired",
                        &format!(
                            "<p>It was used already, is too old, or was meant for another browser. \
                             <a href=\"{}\">Log in again</a>.</p>",
                            "/.commons/login?next=%2F"
                        ),
                    );
                };
                let token = random_token();
                let session = StoredSession {
                    token_sha256: sha256(&token),
                    user,
                    site: Some(route.site.clone()),
                    created_ms: now,
                    expires_ms: expires,
                };
                if let Err(e) = self.keep_session(pipeline, session).await {
                    tracing::warn!(error = %e, "cannot keep a session");
                    return page(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Try again",
                        "<p>Sessions cannot be kept right now.</p>",
                    );
                }
                let set =
                    set_cookie(pipeline, pipeline.cookies.site, &token, expires.saturating_sub(now) / 1000, "Lax");
                redirect(local_path(query.get("next").map(String::as_str)), vec![set])
            }
            "/.commons/login" => {
                // The state a handoff code to this host will be bound to:
                // the browser's, if it has one already (another tab may be
                // logging in), else a new one.
                let state = match cookie(request.headers(), pipeline.cookies.state) {
                    Some(state) if is_token(state) => state.to_owned(),
                    _ => random_token(),
                };
                let next = local_path(query.get("next").map(String::as_str));
                let set = set_cookie(pipeline, pipeline.cookies.state, &state, FORM_LIFETIME_S, "Lax");
                redirect(&format!("{}&state={}", login_url(next), hex::encode(sha256(&state))), vec![set])
            }
            "/.commons/logout" if request.method() == Method::POST => {
                if let Some(user) = cookie(request.headers(), pipeline.cookies.site)
                    .and_then(|t| pipeline.sessions.user(t, Some(&route.site), now))
                {
                    self.end_sessions(pipeline, &user).await;
                }
                redirect("/", vec![expire_cookie(pipeline, pipeline.cookies.site)])
            }
            _ => page(StatusCode::NOT_FOUND, "Not found", "<p>There is no such page.</p>"),
        }
    }

    /// `GET /sessions`: the user's sessions and API tokens, each with a
    /// button that revokes it.
    async fn sessions_page(&self, pipeline: &Pipeline, user: &str, current: &str) -> Response<Body> {
        let now = pipeline.clock.now_ms();
        let csrf = account_csrf(current);
        let current = sha256(current);
        let button = |what: &str, id: &str, label: &str| {
            format!(
                "<form method=\"post\" action=\"/sessions\"><input type=\"hidden\" name=\"revoke\" value=\"{what}\">\
                 <input type=\"hidden\" name=\"id\" value=\"{id}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button>{label}</button></form>"
            )
        };
        let mut sessions = String::new();
        for session in pipeline.sessions.of_user(user, now) {
            let id = hex::encode(session.token_sha256);
            let this = session.token_sha256 == current;
            sessions.push_str(&format!(
                "<li><code>{}</code> {}: since {}, until {}{}</li>",
                &id[..8],
                escape(session.site.as_deref().unwrap_or("the platform")),
                utc(session.created_ms),
                utc(session.expires_ms),
                if this { " <b>(this one)</b>".to_owned() } else { button("session", &id, "Revoke") }
            ));
        }
        let tokens = match self.session_store.clone() {
            None => Ok(Vec::new()),
            Some(store) => {
                let user = user.to_owned();
                tokio::task::spawn_blocking(move || store.tokens_of(&user)).await.unwrap_or_else(|e| Err(e.to_string()))
            }
        };
        let tokens = match tokens {
            Ok(tokens) if tokens.is_empty() => "<p>None.</p>".to_owned(),
            Ok(tokens) => tokens
                .iter()
                .filter(|t| t.token_sha256.len() >= 8 && t.token_sha256.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(|t| {
                    format!(
                        "<li><code>{}</code>: since {}{}</li>",
                        &t.token_sha256[..8],
                        utc(t.created_ms),
                        button("token", &t.token_sha256, "Revoke")
                    )
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list tokens");
                "<p>Tokens cannot be listed right now.</p>".to_owned()
            }
        };
        page(
            StatusCode::OK,
            "Your sessions",
            &format!(
                "<h2>Sessions</h2><ul>{sessions}</ul>{}<h2>API tokens</h2><ul>{tokens}</ul>",
                button("others", "", "Revoke all other sessions")
            ),
        )
    }

    /// `POST /sessions`: revokes one of the user's sessions, all but this
    /// one, or one of their API tokens; in the store first, then live.
    async fn revoke(
        &self,
        pipeline: &Pipeline,
        request: Request<Incoming>,
        user: &str,
        current: &str,
    ) -> Response<Body> {
        let form = match Limited::new(request.into_body(), FORM_LIMIT_BYTES).collect().await {
            Ok(body) => form_urlencoded::parse(&body.to_bytes()).into_owned().collect::<HashMap<String, String>>(),
            Err(_) => return page(StatusCode::PAYLOAD_TOO_LARGE, "Refused", "<p>The form is too large.</p>"),
        };
        if !same(&account_csrf(current), form.get("csrf").map(String::as_str).unwrap_or("")) {
            return page(StatusCode::FORBIDDEN, "Refused", "<p>This form was not sent from your sessions page.</p>");
        }
        let id = form.get("id").cloned().unwrap_or_default();
        let current = sha256(current);
        let ended: Vec<[u8; 32]> = match form.get("revoke").map(String::as_str) {
            Some("others") => pipeline
                .sessions
                .of_user(user, pipeline.clock.now_ms())
                .into_iter()
                .map(|s| s.token_sha256)
                .filter(|t| *t != current)
                .collect(),
            Some("session") => state_hash(&id).into_iter().collect(),
            Some("token") => {
                let (owner, hash) = (user.to_owned(), id.clone());
                if let Err(refused) = self.in_store("Tokens", move |store| store.revoke_token(&owner, &hash)).await {
                    return refused;
                }
                // Read-copy-update: a registry reload that lands meanwhile
                // is kept, not overwritten by an older copy.
                pipeline.identities.rcu(|current| {
                    let mut identities = (**current).clone();
                    identities.remove_token_sha256(&id, user);
                    identities
                });
                return redirect("/sessions", Vec::new());
            }
            _ => return page(StatusCode::BAD_REQUEST, "Refused", "<p>Nothing to revoke.</p>"),
        };
        for token in ended {
            if !pipeline.sessions.of_user(user, 0).iter().any(|s| s.token_sha256 == token) {
                continue;
            }
            let (owner, hash) = (user.to_owned(), hex::encode(token));
            if let Err(refused) = self.in_store("Sessions", move |store| store.revoke_session(&owner, &hash)).await {
                return refused;
            }
            pipeline.sessions.end_one(user, &token);
        }
        redirect("/sessions", Vec::new())
    }

    /// Revokes something of the user's in the session store (if any), off
    /// the event loop; when the store fails, the page saying that `what`
    /// cannot be revoked right now.
    async fn in_store<T: Send + 'static>(
        &self,
        what: &'static str,
        revoke: impl FnOnce(&dyn SessionStore) -> Result<T, String> + Send + 'static,
    ) -> Result<(), Response<Body>> {
        let Some(store) = self.session_store.clone() else { return Ok(()) };
        let revoked = tokio::task::spawn_blocking(move || revoke(&*store).map(drop)).await;
        if let Err(e) = revoked.map_err(|e| e.to_string()).and_then(|r| r) {
            tracing::warn!(error = %e, what, "cannot revoke");
            let body = format!("<p>{what} cannot be revoked right now.</p>");
            return Err(page(StatusCode::SERVICE_UNAVAILABLE, "Try again", &body));
        }
        Ok(())
    }

    /// Keeps a new session: in the session store first (if any), then live.
    async fn keep_session(&self, pipeline: &Pipeline, session: StoredSession) -> Result<(), String> {
        if let Some(store) = self.session_store.clone() {
            let saved = session.clone();
            tokio::task::spawn_blocking(move || store.save(&saved)).await.map_err(|e| e.to_string())??;
        }
        pipeline.sessions.insert(session, pipeline.clock.now_ms());
        Ok(())
    }

    /// Logs `user` out everywhere.
    async fn end_sessions(&self, pipeline: &Pipeline, user: &str) {
        pipeline.sessions.end(user, pipeline.clock.now_ms());
        if let Some(store) = self.session_store.clone() {
            let user = user.to_owned();
            match tokio::task::spawn_blocking(move || store.end(&user)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot end stored sessions"),
                Err(e) => tracing::warn!(error = %e, "cannot end stored sessions"),
            }
        }
    }
}

fn is_premium(pipeline: &Pipeline, user: &str) -> bool {
    pipeline.identities.load().user(user).is_some_and(|i| i.premium)
}

const LOGOUT_FORM: &str = "<p><a href=\"/sessions\">Your sessions and tokens</a></p>\
    <form method=\"post\" action=\"/logout\"><button>Log out everywhere</button></form>";

/// The token the `/sessions` page's forms carry: derived from the
/// platform session, which only its browser holds (the cookie is
/// `HttpOnly`), so another page cannot know it.
fn account_csrf(session: &str) -> String {
    hex::encode(sha256(&format!("commons account form {session}")))
}

/// A time in milliseconds since the epoch as a UTC date and minute.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (year, month, day) = commons_core::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// The login form, with its token, bound to its cookie (the one the
/// browser has, if it is well formed; else a new one).
fn login_form(
    pipeline: &Pipeline,
    headers: &hyper::HeaderMap,
    status: StatusCode,
    next: &str,
    state: &str,
    error: Option<&str>,
) -> Response<Body> {
    let token = match cookie(headers, pipeline.cookies.form) {
        Some(token) if is_token(token) => token.to_owned(),
        _ => random_token(),
    };
    let state = if is_token(state) { state } else { "" };
    let error = error.map_or(String::new(), |e| format!("<p class=\"error\">{}</p>", escape(e)));
    let mut response = page(
        status,
        "Log in to OneCommons",
        &format!(
            "{error}<form method=\"post\" action=\"/login\">\
             <label>User <input name=\"user\" autocomplete=\"username\" required autofocus></label>\
             <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
             <input type=\"hidden\" name=\"next\" value=\"{}\">\
             <input type=\"hidden\" name=\"state\" value=\"{state}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
             <button>Log in</button></form>\
             <p>One account for every site. Sites never see your password.</p>",
            escape(next)
        ),
    );
    // Over http on the login page only; a `__Host-` cookie must have `Path=/`.
    let mut set = set_cookie(pipeline, pipeline.cookies.form, &token, FORM_LIFETIME_S, "Strict");
    if pipeline.config.public_scheme != "https" {
        set = set.replace("Path=/;", "Path=/login;");
    }
    if let Ok(value) = HeaderValue::from_str(&set) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

fn page(status: StatusCode, title: &str, body: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}\
         label{{display:block;margin:.5rem 0}}input{{display:block;width:100%;padding:.4rem;font:inherit}}\
         button{{margin-top:.8rem;padding:.4rem 1rem;font:inherit}}.error{{color:#b00}}</style>\
         <h1>{title}</h1>{body}</html>\n",
        title = escape(title)
    );
    let mut response = Response::new(full(html));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(hyper::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

/// A 303 to `location`, setting `cookies`.
pub(crate) fn redirect(location: &str, cookies: Vec<String>) -> Response<Body> {
    let mut response = Response::new(full(String::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(LOCATION, value);
    }
    headers.insert(hyper::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for set in cookies {
        if let Ok(value) = HeaderValue::from_str(&set) {
            headers.append(SET_COOKIE, value);
        }
    }
    response
}

/// A `Set-Cookie` value: host-only, `Path=/`, `HttpOnly` always, `Secure`
/// when the public scheme is https (when the names carry `__Host-`, which
/// asks exactly that of them).
fn set_cookie(pipeline: &Pipeline, name: &str, value: &str, max_age_s: u64, same_site: &str) -> String {
    let secure = if pipeline.config.public_scheme == "https" { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite={same_site}{secure}")
}

fn expire_cookie(pipeline: &Pipeline, name: &str) -> String {
    set_cookie(pipeline, name, "", 0, "Lax")
}

/// Whether a browser says this request comes from another origin than
/// `host` on the public scheme: by `Sec-Fetch-Site` (anything but
/// `same-origin` or `none`, a typed address; `same-site` is a site's
/// page, a sibling of the platform) or by `Origin`. A request with
/// neither is from a program or an old browser: the form token decides.
fn from_elsewhere(pipeline: &Pipeline, headers: &hyper::HeaderMap, host: &str) -> bool {
    let fetch_site =
        headers.get_all("sec-fetch-site").iter().any(|v| !matches!(v.as_bytes(), b"same-origin" | b"none"));
    let ours = format!("{}://{host}", pipeline.config.public_scheme);
    let origin =
        headers.get_all(hyper::header::ORIGIN).iter().any(|v| !v.as_bytes().eq_ignore_ascii_case(ours.as_bytes()));
    fetch_site || origin
}

/// Whether `text` is what [`random_token`] gives: 64 hex digits.
fn is_token(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A handoff's `state` (the SHA-256 of a state cookie, in hex) as bytes.
fn state_hash(state: &str) -> Option<[u8; 32]> {
    if !is_token(state) {
        return None;
    }
    hex::decode(state).ok().and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
}

/// Compares two tokens in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The Host a request was sent to.
fn host_of(request: &Request<Incoming>) -> &str {
    request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// The port a Host header names, if it names one.
fn port_of(host: &str) -> Option<&str> {
    host.rsplit_once(':').map(|(_, port)| port).filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Where a login goes on to.
enum Next<'n> {
    /// A page of the platform itself.
    Platform(&'n str),
    /// A page of a site, on `host`, one the platform serves it on (lower
    /// case, without port or trailing dot).
    Site { route: Arc<SiteRoute>, host: String, path: &'n str },
}

/// Reads `next`: a path of the platform, or an `http` or `https` URL whose
/// host is the platform's or one the platform serves a site on; anything
/// else (user info, backslashes, another scheme, an unknown host, a path
/// that is not plainly one) is the platform's home page. Only the host and
/// the path are taken: the scheme and port of a handoff are the
/// platform's own.
fn next_page<'n>(next: &'n str, routes: &Routes) -> Next<'n> {
    const HOME: Next<'static> = Next::Platform("/");
    if next.starts_with('/') {
        return Next::Platform(local_path(Some(next)));
    }
    let scheme = next.find("://").map_or("", |at| &next[..at]);
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return HOME;
    }
    let rest = &next[scheme.len() + 3..];
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let host = match authority.split_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return HOME,
        None => authority,
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') {
        return HOME;
    }
    let host = host.to_ascii_lowercase();
    let path = if path.starts_with('/') { local_path(Some(path)) } else { "/" };
    if routes.is_platform(&host) {
        return Next::Platform(path);
    }
    match routes.resolve(&host) {
        Some(route) => Next::Site { route: route.clone(), host, path },
        None => HOME,
    }
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `next` if it is a path on this host, else `/`: a handoff never
/// redirects anywhere else.
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && path.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            path
        }
        _ => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400_000 + 3_723_000), "2000-02-29 01:02 UTC");
        assert_eq!(utc(1_795_000_000_000), "2026-11-18 11:06 UTC");
    }

    #[test]
    fn a_handoff_only_ever_goes_to_a_path_on_the_same_host() {
        assert_eq!(local_path(Some("/page?x=1")), "/page?x=1");
        for bad in ["//evil.example/", "http://evil.example/", "/\\evil.example", "", "page", "/a\r\nb", "/a b"] {
            assert_eq!(local_path(Some(bad)), "/", "{bad}");
        }
        assert_eq!(local_path(None), "/");
    }
}
