//! Logging in: the platform's own pages on the platform domain, and the
//! redirect handoff that carries a session to each site.
//!
//! 1. A browser asks a site that needs a login without a site session; the
//!    gateway redirects it to `http://<domain>/login?next=<url>`.
//! 2. The login page checks the password (Argon2id, off the event loop),
//!    sets the platform session cookie on the platform domain and
//!    redirects to `<site>/.commons/handoff?code=<one-time code>&next=<path>`.
//!    A browser that already has a platform session skips the form.
//! 3. The gateway, on the site's host, redeems the code (once, within a
//!    minute, for that site only), sets a session cookie for that host only
//!    and redirects to the page first asked for.
//!
//! No app ever sees a password, a session or a code: the cookies are removed
//! before a request is passed on (by the pipeline), and `/.commons/` paths
//! are the gateway's.
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
use crate::identity::{
    Handoffs, PLATFORM_COOKIE, SITE_COOKIE, SessionStore, StoredSession, cookie, random_token, sha256, verify_password,
};
use crate::limits::{Refusal, TierPolicy};
use crate::pipeline::Pipeline;
use crate::routes::SiteRoute;

/// Largest login form accepted.
const FORM_LIMIT_BYTES: usize = 16 << 10;

/// Password attempts per client address per minute.
static LOGIN_ATTEMPTS: TierPolicy =
    TierPolicy { free_requests_per_minute: Some(10), free_concurrent_requests: None, premium_prefixes: Vec::new() };

/// The platform's pages and the handoff, with what they keep: the
/// one-time codes in flight, and where sessions are kept.
pub(crate) struct Portal {
    handoffs: Handoffs,
    session_store: Option<Arc<dyn SessionStore>>,
}

impl Portal {
    pub(crate) fn new(session_store: Option<Arc<dyn SessionStore>>) -> Portal {
        Portal { handoffs: Handoffs::default(), session_store }
    }

    /// A request to the platform domain itself: its pages.
    pub(crate) async fn platform(&self, pipeline: &Pipeline, request: Request<Incoming>, peer: &str) -> Response<Body> {
        let now = pipeline.clock.now_ms();
        let query = query(request.uri());
        let session = cookie(request.headers(), PLATFORM_COOKIE).map(str::to_owned);
        let user = session.as_deref().and_then(|token| pipeline.sessions.user(token, None, now));
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
                match (user, session) {
                    (Some(user), Some(token)) => {
                        let expires = pipeline.sessions.expiry(&token).unwrap_or(now);
                        self.hand_off(pipeline, &user, expires, next, Vec::new())
                    }
                    _ => login_form(StatusCode::OK, next, None),
                }
            }
            (&Method::POST, "/login") => self.log_in(pipeline, request, peer, now).await,
            (&Method::POST, "/logout") => {
                if let Some(user) = user {
                    self.end_sessions(pipeline, &user).await;
                }
                redirect("/login", vec![expire_cookie(PLATFORM_COOKIE)])
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
    async fn log_in(&self, pipeline: &Pipeline, request: Request<Incoming>, peer: &str, now: u64) -> Response<Body> {
        if let Err(Refusal::Rate { retry_after_s }) = pipeline.limiter.admit(&LOGIN_ATTEMPTS, "", peer, now) {
            let mut response = login_form(StatusCode::TOO_MANY_REQUESTS, "", Some("Too many attempts; wait a minute."));
            response.headers_mut().insert(hyper::header::RETRY_AFTER, retry_after_s.into());
            return response;
        }
        let form = match Limited::new(request.into_body(), FORM_LIMIT_BYTES).collect().await {
            Ok(body) => form_urlencoded::parse(&body.to_bytes()).into_owned().collect::<HashMap<String, String>>(),
            Err(_) => return login_form(StatusCode::PAYLOAD_TOO_LARGE, "", Some("The form is too large.")),
        };
        let (user, password) = (form.get("user").cloned().unwrap_or_default(), form.get("password").cloned());
        let next = form.get("next").cloned().unwrap_or_default();
        let hash = pipeline.identities.load().password_hash(&user).map(str::to_owned);
        let password = password.unwrap_or_default();
        let valid = tokio::task::spawn_blocking(move || verify_password(&password, hash.as_deref())).await;
        if !valid.unwrap_or(false) {
            pipeline.metrics.login(false);
            return login_form(StatusCode::UNAUTHORIZED, &next, Some("Wrong user name or password."));
        }
        let token = random_token();
        let expires = now.saturating_add(pipeline.config.session_lifetime.as_millis() as u64);
        let session =
            StoredSession { token_sha256: sha256(&token), user: user.clone(), site: None, expires_ms: expires };
        if let Err(e) = self.keep_session(pipeline, session).await {
            tracing::warn!(error = %e, "cannot keep a session");
            return page(StatusCode::SERVICE_UNAVAILABLE, "Try again", "<p>Sessions cannot be kept right now.</p>");
        }
        pipeline.metrics.login(true);
        let lifetime_s = pipeline.config.session_lifetime.as_secs();
        let set = format!("{PLATFORM_COOKIE}={token}; Path=/; Max-Age={lifetime_s}; HttpOnly; SameSite=Lax");
        self.hand_off(pipeline, &user, expires, &next, vec![set])
    }

    /// Redirects a logged-in user to `next` through a one-time code on its
    /// site; to the platform's home page if `next` is not a site's page.
    fn hand_off(
        &self,
        pipeline: &Pipeline,
        user: &str,
        expires_ms: u64,
        next: &str,
        cookies: Vec<String>,
    ) -> Response<Body> {
        let target = next.parse::<Uri>().ok().and_then(|uri| {
            let authority = uri.authority()?.clone();
            let route = pipeline.routes.load().resolve(authority.as_str())?.clone();
            Some((uri, authority, route))
        });
        let Some((uri, authority, route)) = target else { return redirect("/", cookies) };
        let code = self.handoffs.issue(user, &route.site, expires_ms, pipeline.clock.now_ms());
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let location = format!(
            "{}://{authority}/.commons/handoff?code={code}&next={}",
            pipeline.config.public_scheme,
            encode(path)
        );
        redirect(&location, cookies)
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
        match request.uri().path() {
            "/.commons/handoff" => {
                let code = query.get("code").map(String::as_str).unwrap_or("");
                let Some((user, expires)) = self.handoffs.redeem(code, &route.site, now) else {
                    return page(
                        StatusCode::BAD_REQUEST,
                        "This login link has expired",
                        &format!(
                            "<p>It was used already, or is too old. <a href=\"{}\">Log in again</a>.</p>",
                            login_url("/")
                        ),
                    );
                };
                let token = random_token();
                let session = StoredSession {
                    token_sha256: sha256(&token),
                    user,
                    site: Some(route.site.clone()),
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
                let max_age = expires.saturating_sub(now) / 1000;
                let set = format!("{SITE_COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax");
                redirect(local_path(query.get("next").map(String::as_str)), vec![set])
            }
            "/.commons/login" => {
                let next = local_path(query.get("next").map(String::as_str));
                redirect(&login_url(next), Vec::new())
            }
            "/.commons/logout" if request.method() == Method::POST => {
                if let Some(user) = cookie(request.headers(), SITE_COOKIE)
                    .and_then(|t| pipeline.sessions.user(t, Some(&route.site), now))
                {
                    self.end_sessions(pipeline, &user).await;
                }
                redirect("/", vec![expire_cookie(SITE_COOKIE)])
            }
            _ => page(StatusCode::NOT_FOUND, "Not found", "<p>There is no such page.</p>"),
        }
    }

    /// Keeps a new session: in the session store first (if any), then live.
    async fn keep_session(&self, pipeline: &Pipeline, session: StoredSession) -> Result<(), String> {
        if let Some(store) = self.session_store.clone() {
            let saved = session.clone();
            tokio::task::spawn_blocking(move || store.save(&saved)).await.map_err(|e| e.to_string())??;
        }
        pipeline.sessions.insert(session);
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

const LOGOUT_FORM: &str = "<form method=\"post\" action=\"/logout\"><button>Log out everywhere</button></form>";

fn login_form(status: StatusCode, next: &str, error: Option<&str>) -> Response<Body> {
    let error = error.map_or(String::new(), |e| format!("<p class=\"error\">{}</p>", escape(e)));
    page(
        status,
        "Log in to OneCommons",
        &format!(
            "{error}<form method=\"post\" action=\"/login\">\
             <label>User <input name=\"user\" autocomplete=\"username\" required autofocus></label>\
             <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
             <input type=\"hidden\" name=\"next\" value=\"{}\">\
             <button>Log in</button></form>\
             <p>One account for every site. Sites never see your password.</p>",
            escape(next)
        ),
    )
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

fn expire_cookie(name: &str) -> String {
    format!("{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")
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
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => path,
        _ => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handoff_only_ever_goes_to_a_path_on_the_same_host() {
        assert_eq!(local_path(Some("/page?x=1")), "/page?x=1");
        for bad in ["//evil.example/", "http://evil.example/", "/\\evil.example", "", "page"] {
            assert_eq!(local_path(Some(bad)), "/", "{bad}");
        }
        assert_eq!(local_path(None), "/");
    }
}
