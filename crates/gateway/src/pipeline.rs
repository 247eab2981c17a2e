//! The request pipeline: every decision a request goes through and every
//! header rewrite, written once. Both engines (`h1`, `general`) call it, in
//! the same order:
//!
//! 1. [`Facts::read`]: one pass over the request head for what the
//!    decisions look at (host, credentials, framing, `Connection`).
//! 2. [`Pipeline::route`]: the platform's pages, a site's own `/.commons/`
//!    endpoints, a site, or an error (no host, two hosts, unknown host).
//! 3. [`Pipeline::admit`]: who the request is from (API token, site
//!    session, or on the internal listener the provenance token), the tier,
//!    premium-only paths, the free-tier limits, the body limit.
//! 4. [`upstream_head`]: the head the site gets.
//! 5. [`client_head`]: the head of the site's answer as the client gets it.
//! 6. [`Pipeline::meter`]: the answer recorded before it leaves.
//!
//! # Invariants
//! - No inbound header claims an identity: every inbound `x-commons-*`
//!   header, in any spelling frameworks fold into one (case, `_` or `.`
//!   for `-`), is removed, and the gateway writes its own
//!   (`x-commons-user`, `x-commons-tier`, `x-commons-provenance`) after.
//! - The headers that carry framing, routing and identity are written here,
//!   never copied from the request: a `Connection` header naming them can
//!   remove the inbound copy but never what is written. (Copied, and
//!   removed by `Connection: content-length`, a body would reach the site
//!   without its length and be read there as a request of its own, with
//!   whatever identity headers it forges.)
//! - A site gets one `Host`, the one the request was routed by; a request
//!   with two `Host` lines is refused.
//! - No credential (`Authorization`, the gateway's cookies), hop-by-hop
//!   header or proxy header (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`,
//!   `True-Client-IP`, `X-Original-URL`, … in any spelling) reaches a
//!   site; `x-forwarded-proto` is the gateway's (the public scheme).
//! - A site is asked to switch protocols only to WebSocket.
//! - A path is decided on in every reading a site may give it
//!   ([`crate::path`]); one it could read yet otherwise is refused.
//! - A site's cookies reach the client host-only, never with the
//!   gateway's names, `__Host-`/`__Secure-` only when honoured.
//!
//! # Deliberately absent
//! Sockets, parsers and bodies, and so any import of an engine: an engine
//! reads a head, hands it here as (name, value) pairs, has the head it
//! sends written through a [`HeadWriter`], and moves the bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use commons_core::Period;
use metering::{Event, Meter};

use crate::clock::Clock;
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::identity::{
    CookieNames, Identities, Identity, SITE_COOKIE, Seen, Sessions, StoredSession, is_gateway_cookie_name,
    is_session_cookie,
};
use crate::limits::{InFlight, Limiter, Refusal, TierPolicy};
use crate::metrics::Metrics;
use crate::path;
use crate::provenance::{Live, Origin, Provenance};
use crate::routes::{Routes, SiteRoute};

/// What every request is decided by: the gateway's configuration, its
/// routes and users as they are now, the free-tier counters, the sessions,
/// the provenance tokens in flight and the usage log.
pub(crate) struct Pipeline {
    pub(crate) config: GatewayConfig,
    pub(crate) routes: ArcSwap<Routes>,
    pub(crate) identities: ArcSwap<Identities>,
    meter: Option<Arc<Meter>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Metrics,
    pub(crate) limiter: Limiter,
    provenance: Provenance,
    pub(crate) sessions: Sessions,
    /// The gateway's cookies as the public scheme names them.
    pub(crate) cookies: CookieNames,
    /// Where instances are: which addresses are inside an instance's own
    /// network namespace (confined instances on this machine).
    pub(crate) instances: Arc<netns::Directory>,
}

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listener {
    /// Users, from anywhere.
    Public,
    /// Sites calling services, on loopback, with provenance tokens.
    Internal,
}

impl Listener {
    /// A bounded label for metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Listener::Public => "public",
            Listener::Internal => "internal",
        }
    }
}

/// What the pipeline reads from a request head, in one pass, whichever
/// engine parsed it. Headers it cannot read as text are left out (and
/// flagged in `unreadable`).
#[derive(Debug, Default)]
pub(crate) struct Facts<'h> {
    /// The host the request names: the request target's authority
    /// (HTTP/2, or an absolute URI), else the first `Host` line.
    pub(crate) host: Option<&'h str>,
    /// More than one `Host` line.
    pub(crate) host_repeated: bool,
    /// Path and query.
    pub(crate) path: &'h str,
    /// The first `Authorization`.
    pub(crate) authorization: Option<&'h str>,
    /// The gateway's site session cookie as sent: plain (over http) and
    /// `__Host-` (over https). Sent twice, it counts as not sent.
    pub(crate) site_cookie: [Seen<'h>; 2],
    /// A browser's page load (a login redirect helps it).
    pub(crate) wants_html: bool,
    /// The length the body declares: plain digits, every line agreeing.
    pub(crate) content_length: Option<u64>,
    /// A `Content-Length` that is not plain digits, or lines disagreeing.
    pub(crate) length_invalid: bool,
    pub(crate) transfer_encoding: bool,
    pub(crate) expect: bool,
    /// `Connection: close`.
    pub(crate) close: bool,
    /// `Connection` names headers (beyond `close`, `keep-alive`, `upgrade`).
    connection_names: bool,
    /// The protocol asked for (`Connection: upgrade` and an `Upgrade`),
    /// if it is one a site may be asked for: `websocket`.
    pub(crate) upgrade: Option<&'h [u8]>,
    /// The first `x-commons-provenance` (read on the internal listener).
    pub(crate) provenance: Option<&'h str>,
    /// A header the decisions read is not text.
    pub(crate) unreadable: bool,
}

/// Where a request goes.
pub(crate) enum Destination {
    /// The platform domain: its own pages (`login`).
    Platform,
    /// `/.commons/…` on a site's host: the gateway's endpoints there.
    SiteEndpoint(Arc<SiteRoute>),
    Site(Arc<SiteRoute>),
}

/// A request let through, with what the site is told about it. The
/// request's place in its user's limits and its provenance token last as
/// long as this does.
pub(crate) struct Admitted<'g> {
    pub(crate) route: Arc<SiteRoute>,
    identity: Option<Arc<Identity>>,
    /// For a call on the internal listener: who and which site it is for.
    origin: Option<Origin>,
    tier: &'static str,
    /// `x-commons-user`.
    pseudonym: Option<Arc<str>>,
    /// `x-commons-provenance`.
    provenance: Option<String>,
    /// `x-forwarded-proto`: the scheme users reach the gateway by.
    scheme: &'g str,
    /// The request's (first) `Authorization` goes to the site: the site
    /// takes them, and it is not the platform's credential.
    pass_authorization: bool,
    _in_flight: Option<InFlight<'g>>,
    _live: Option<Live<'g>>,
}

/// What a connection's last request established, for the next one: the
/// user an API token names (while the registry it was read from is
/// current) and the user's pseudonym on the site. A connection's requests
/// mostly carry the same token to the same site.
#[derive(Default)]
pub(crate) struct Memo {
    identities: Option<Arc<Identities>>,
    token: String,
    identity: Option<Arc<Identity>>,
    /// (user, site, pseudonym).
    pseudonym: Option<(Arc<Identity>, String, Arc<str>)>,
}

/// Why a request does not go through.
pub(crate) enum Answer {
    Refused(GatewayError),
    /// To the login page.
    Redirect(String),
}

/// How the request body goes to the site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpstreamBody {
    /// No body, and no framing header.
    None,
    Length(u64),
    /// Of a length not known in advance (a chunked request, or HTTP/2
    /// without a length).
    Chunked,
}

/// How an engine sends a site's answer's body on to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientBody {
    /// No body (`HEAD`, 204, 304): the framing headers say what a `GET`
    /// would get, and pass as they came.
    Bodiless,
    /// Bytes forwarded as they came, this many.
    Length(u64),
    /// Bytes forwarded as they came, in the `Transfer-Encoding` the site
    /// gave (which passes as it came).
    Encoded,
    /// Bytes forwarded until the site closes (then the client's connection
    /// closes too).
    UntilClose,
    /// Decoded by the engine and framed anew (hyper): a `Content-Length`
    /// passes (hyper holds the body to it), `Transfer-Encoding` does not.
    Reframed,
    /// A `101` to a WebSocket upgrade: no body, the connection becomes the
    /// tunnel, so `Connection` and `Upgrade` pass.
    Upgraded,
}

/// Where an engine has the head it sends written, header by header.
pub(crate) trait HeadWriter {
    fn header(&mut self, name: &str, value: &[u8]);
}

impl Pipeline {
    pub(crate) fn new(
        config: GatewayConfig,
        routes: Routes,
        meter: Option<Arc<Meter>>,
        clock: Arc<dyn Clock>,
        sessions: Vec<StoredSession>,
    ) -> Pipeline {
        let live = Sessions::default();
        for session in sessions {
            live.insert(session, clock.now_ms());
        }
        let provenance = Provenance::new(&config.provenance_secret, clock.now_ms() << 16);
        let cookies = CookieNames::new(config.public_scheme == "https");
        Pipeline {
            cookies,
            config,
            routes: ArcSwap::from_pointee(routes),
            identities: ArcSwap::from_pointee(Identities::default()),
            meter,
            clock,
            metrics: Metrics::default(),
            limiter: Limiter::new(),
            provenance,
            sessions: live,
            instances: Arc::default(),
        }
    }

    /// Where a request goes: on the public listener, the platform domain's
    /// pages and a site's `/.commons/` endpoints are the gateway's; any
    /// other request for a site's host goes to the site.
    pub(crate) fn route(&self, facts: &Facts<'_>, listener: Listener) -> Result<Destination, GatewayError> {
        if facts.host_repeated {
            return Err(GatewayError::HostRepeated);
        }
        let host = facts.host.ok_or(GatewayError::NoHost)?;
        let routes = self.routes.load();
        if listener == Listener::Public && routes.is_platform(host) {
            return Ok(Destination::Platform);
        }
        let route = routes.resolve(host).ok_or_else(|| GatewayError::UnknownHost(host.to_owned()))?.clone();
        let readings = path::readings(facts.path).map_err(|problem| GatewayError::AmbiguousPath {
            path: facts.path.to_owned(),
            problem: problem.describe(),
        })?;
        if listener == Listener::Public && readings.any(|path| path.starts_with("/.commons/")) {
            return Ok(Destination::SiteEndpoint(route));
        }
        Ok(Destination::Site(route))
    }

    /// Who the request is from, and whether the site's tier policy lets it
    /// through.
    pub(crate) fn admit(
        &self,
        facts: &Facts<'_>,
        route: Arc<SiteRoute>,
        peer: &str,
        listener: Listener,
        memo: &mut Memo,
    ) -> Result<Admitted<'_>, Answer> {
        // Who: a token's or a session's user on the public listener; on the
        // internal one, the user of the request whose provenance the call
        // carries.
        let mut platform_credential = false;
        let (identity, origin) = match listener {
            Listener::Public => {
                let identities = self.identities.load();
                let (scheme, credentials) = facts
                    .authorization
                    .map(|value| value.trim().split_once(|c: char| c.is_ascii_whitespace()).unwrap_or((value, "")))
                    .unwrap_or_default();
                let bearer = scheme.eq_ignore_ascii_case("bearer").then(|| credentials.trim());
                let by_token = bearer.and_then(|token| memo.token_identity(&identities, token));
                // The platform's credential: a token it knows, or anything
                // holding one in its tokens' form (a revoked one; one in a
                // Basic password, as git, npm and pip send tokens): never a
                // site's to see.
                platform_credential = by_token.is_some() || facts.authorization.is_some_and(holds_platform_token);
                let identity: Option<Arc<Identity>> = if platform_credential {
                    by_token
                } else {
                    facts.site_cookie[usize::from(self.config.public_scheme == "https")]
                        .once()
                        .and_then(|token| self.sessions.user(token, Some(&route.site), self.clock.now_ms()))
                        .and_then(|user| identities.user(&user).cloned())
                };
                if identity.is_none() && !route.anonymous {
                    if facts.wants_html {
                        // To the site's own `/.commons/login`, which sets
                        // the browser's state cookie before it goes on to
                        // the platform's login page.
                        let host = facts.host.unwrap_or("");
                        let next: String = form_urlencoded::byte_serialize(facts.path.as_bytes()).collect();
                        let scheme = &self.config.public_scheme;
                        return Err(Answer::Redirect(format!("{scheme}://{host}/.commons/login?next={next}")));
                    }
                    return Err(Answer::Refused(GatewayError::LoginRequired));
                }
                (identity, None)
            }
            Listener::Internal => match self.provenance.verify(facts.provenance, self.clock.now_ms()) {
                Ok(origin) if origin.site == route.site => {
                    return Err(Answer::Refused(GatewayError::SelfCall(origin.site)));
                }
                Ok(origin) => {
                    let identity = Arc::new(Identity { user: origin.user.clone(), premium: origin.premium });
                    (Some(identity), Some(origin))
                }
                Err(refused) => {
                    self.metrics.provenance_refused(refused);
                    return Err(Answer::Refused(GatewayError::Provenance(refused)));
                }
            },
        };
        let premium = identity.as_ref().is_some_and(|i| i.premium);
        if !premium && premium_only(&route.policy, facts.path) {
            let subscribe_url = format!("{}://{}/subscribe", self.config.public_scheme, self.routes.load().domain());
            return Err(Answer::Refused(GatewayError::PremiumOnly { subscribe_url }));
        }
        // Subscribers get the premium limits of every site: none. Calls
        // between services count against nobody.
        let in_flight = if premium || origin.is_some() {
            None
        } else {
            let who = identity.as_ref().map_or(peer, |i| i.user.as_str());
            let admitted = self.limiter.admit(&route.policy, &route.site, who, self.clock.now_ms());
            Some(admitted.map_err(|refusal| {
                Answer::Refused(match refusal {
                    Refusal::Rate { retry_after_s } => GatewayError::RateLimited { retry_after_s },
                    Refusal::Concurrency => GatewayError::TooManyInFlight,
                })
            })?)
        };
        let limit = self.config.body_limit_bytes;
        if facts.content_length.is_some_and(|length| length > limit) {
            return Err(Answer::Refused(GatewayError::BodyTooLarge(limit)));
        }
        let (pseudonym, tier) = match &identity {
            Some(identity) => (
                Some(memo.pseudonym(&self.config.pseudonym_secret, identity, &route.site)),
                if identity.premium { "premium" } else { "free" },
            ),
            None => (None, "anonymous"),
        };
        // The token this request's site may use to call other services for
        // its user; live until the site has answered.
        let (provenance, live) = match (&identity, listener) {
            (Some(identity), Listener::Public) => {
                let (token, live) = self.provenance.issue(identity, &route, self.clock.now_ms());
                (Some(token), Some(live))
            }
            _ => (None, None),
        };
        let scheme = &self.config.public_scheme;
        let pass_authorization = route.pass_authorization
            && listener == Listener::Public
            && facts.authorization.is_some()
            && !platform_credential;
        Ok(Admitted {
            route,
            identity,
            origin,
            tier,
            pseudonym,
            provenance,
            scheme,
            pass_authorization,
            _in_flight: in_flight,
            _live: live,
        })
    }

    /// Records an answered request's usage; an error if it cannot be, in
    /// which case the answer must not be sent.
    pub(crate) fn meter(&self, admitted: &Admitted<'_>, started: Instant) -> Result<(), GatewayError> {
        let (Some(meter), Some(identity)) = (&self.meter, &admitted.identity) else { return Ok(()) };
        let now = self.clock.now_ms();
        let period = Period::from_days_since_epoch((now / 86_400_000) as i64);
        let service_ms = started.elapsed().as_millis() as u64;
        let event = match &admitted.origin {
            None => Event::Direct {
                period,
                user: identity.user.clone(),
                site: admitted.route.site.clone(),
                minute: (now / 60_000) as u32,
                service_ms,
            },
            Some(origin) => Event::Call {
                period,
                user: origin.user.clone(),
                site: origin.site.clone(),
                service: admitted.route.site.clone(),
                minute: (now / 60_000) as u32,
                service_ms,
            },
        };
        if let Err(e) = meter.record(shard(), event) {
            self.metrics.metering_failure();
            return Err(GatewayError::Metering(e.to_string()));
        }
        self.metrics.metered();
        Ok(())
    }
}

impl<'h> Facts<'h> {
    /// What the decisions need from a request head: its method, its target
    /// (path and query), the target's authority if it has one, and its
    /// header lines in order.
    pub(crate) fn read(
        method: &str,
        target: &'h str,
        authority: Option<&'h str>,
        headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    ) -> Facts<'h> {
        let mut facts = Facts { path: target, host: authority, ..Facts::default() };
        let (mut host, mut hosts, mut html, mut asks_upgrade, mut upgrade) = (None, 0, false, false, None);
        for (name, value) in headers {
            let kind = kind(name);
            match kind {
                Kind::Other | Kind::HopByHop | Kind::Proxy | Kind::SetCookie => continue,
                Kind::Commons if !name.eq_ignore_ascii_case("x-commons-provenance") => continue,
                Kind::Upgrade => {
                    upgrade.get_or_insert(value);
                    continue;
                }
                _ => {}
            }
            let Ok(value) = std::str::from_utf8(value) else {
                facts.unreadable = true;
                continue;
            };
            match kind {
                Kind::Host => {
                    hosts += 1;
                    host.get_or_insert(value.trim());
                }
                Kind::Authorization => {
                    facts.authorization.get_or_insert(value);
                }
                Kind::Cookie => {
                    let secure = CookieNames::new(true).site;
                    // ASCII whitespace only (see `identity::cookie_in`).
                    for (key, value) in value.split(';').filter_map(|pair| pair.trim_ascii().split_once('=')) {
                        if key == SITE_COOKIE {
                            facts.site_cookie[0].see(value);
                        } else if key == secure {
                            facts.site_cookie[1].see(value);
                        }
                    }
                }
                Kind::Accept => html |= value.contains("text/html"),
                Kind::ContentLength => match content_length(value) {
                    Some(n) if facts.content_length.is_none_or(|m| m == n) => facts.content_length = Some(n),
                    _ => facts.length_invalid = true,
                },
                Kind::TransferEncoding => facts.transfer_encoding = true,
                Kind::Expect => facts.expect = true,
                Kind::Connection => {
                    for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                        if token.eq_ignore_ascii_case("close") {
                            facts.close = true;
                        } else if token.eq_ignore_ascii_case("upgrade") {
                            asks_upgrade = true;
                        } else if !token.eq_ignore_ascii_case("keep-alive") {
                            facts.connection_names = true;
                        }
                    }
                }
                Kind::Commons => {
                    facts.provenance.get_or_insert(value);
                }
                Kind::Other | Kind::HopByHop | Kind::Proxy | Kind::Upgrade | Kind::SetCookie => {}
            }
        }
        if facts.host.is_none() {
            facts.host = host;
        }
        facts.host_repeated = hosts > 1;
        if facts.length_invalid {
            facts.content_length = None;
        }
        facts.wants_html = html && method == "GET";
        // WebSocket only: another protocol (h2c, say) would carry later
        // requests past the gateway. A request asking for one goes on as a
        // plain request, as RFC 9110 §7.8 lets a server ignore an upgrade.
        facts.upgrade =
            upgrade.filter(|protocol| asks_upgrade && protocol.trim_ascii().eq_ignore_ascii_case(b"websocket"));
        facts
    }
}

impl UpstreamBody {
    /// How a body goes on: of a length known in advance (`exact`), or not;
    /// a body known to be empty is sent with no framing at all, unless the
    /// client declared its zero length (`declared`).
    pub(crate) fn of(declared: Option<u64>, exact: Option<u64>) -> UpstreamBody {
        match exact {
            None => UpstreamBody::Chunked,
            Some(0) if declared.is_none() => UpstreamBody::None,
            Some(n) => UpstreamBody::Length(n),
        }
    }
}

/// Writes the head of the request the site gets (but its request line,
/// which the engine writes: the method and target as they came, HTTP/1.1):
///
/// - `Host`: the host the request was routed by;
/// - every inbound header, but the hop-by-hop ones, those `Connection`
///   names, `Host`, the framing headers, `Authorization`, every
///   `x-commons-*`, the client addresses, and the gateway's cookies (the
///   others' `Cookie` lines are joined into one, as HTTP/1.1 wants);
/// - `Connection: upgrade` and `Upgrade: websocket` for a WebSocket upgrade
///   (the only one a site is asked for);
/// - the body's framing (`body`);
/// - `x-forwarded-proto` (the public scheme) and the gateway's identity
///   headers.
pub(crate) fn upstream_head<'h>(
    facts: &Facts<'h>,
    admitted: &Admitted<'_>,
    headers: impl Iterator<Item = (&'h str, &'h [u8])> + Clone,
    body: UpstreamBody,
    out: &mut impl HeadWriter,
) {
    if let Some(host) = facts.host {
        out.header("host", host.as_bytes());
    }
    let named = if facts.connection_names { connection_named(headers.clone()) } else { Vec::new() };
    let forwarded = |name: &str| named.is_empty() || !named.iter().any(|n| n.eq_ignore_ascii_case(name));
    let user_header = admitted.route.user_header.as_deref().map(str::as_bytes);
    // The site's user header is the gateway's to write, in any spelling.
    let users = |name: &str| user_header.is_some_and(|h| name.len() == h.len() && folded_prefix(name.as_bytes(), h));
    let mut cookies = false;
    let mut authorization = admitted.pass_authorization;
    for (name, value) in headers.clone() {
        match kind(name) {
            Kind::Other | Kind::Accept | Kind::Expect => {
                if forwarded(name) && !users(name) {
                    out.header(name, value);
                }
            }
            // The first only: the one judged not the platform's.
            Kind::Authorization if authorization && forwarded(name) => {
                out.header(name, value);
                authorization = false;
            }
            Kind::Cookie => cookies = true,
            Kind::Host
            | Kind::ContentLength
            | Kind::TransferEncoding
            | Kind::Connection
            | Kind::Upgrade
            | Kind::HopByHop
            | Kind::Authorization
            | Kind::Commons
            | Kind::Proxy
            | Kind::SetCookie => {}
        }
    }
    if cookies && forwarded("cookie") {
        cookie_line(headers, out);
    }
    if facts.upgrade.is_some() {
        out.header("connection", b"upgrade");
        out.header("upgrade", b"websocket");
    }
    match body {
        UpstreamBody::None => {}
        UpstreamBody::Length(n) => out.header("content-length", decimal(n, &mut [0; 20])),
        UpstreamBody::Chunked => out.header("transfer-encoding", b"chunked"),
    }
    if let Some(pseudonym) = &admitted.pseudonym {
        out.header("x-commons-user", pseudonym.as_bytes());
        // Not on a call between services: a site that takes the header as
        // a login would otherwise log in any site its user visited.
        if let Some(header) = admitted.route.user_header.as_ref().filter(|_| admitted.origin.is_none()) {
            out.header(header, pseudonym.as_bytes());
        }
    }
    out.header("x-forwarded-proto", admitted.scheme.as_bytes());
    out.header("x-commons-tier", admitted.tier.as_bytes());
    if let Some(token) = &admitted.provenance {
        out.header("x-commons-provenance", token.as_bytes());
    }
}

/// Writes the headers of a site's answer as the client gets them: all but
/// the hop-by-hop ones and those `Connection` names; the framing headers as
/// `body` says the engine sends the body on, whatever `Connection` names;
/// the site's cookies as [`site_cookie`] lets them (`secure`: the public
/// scheme is https).
pub(crate) fn client_head<'h>(
    headers: impl Iterator<Item = (&'h str, &'h [u8])> + Clone,
    body: ClientBody,
    secure: bool,
    out: &mut impl HeadWriter,
) {
    let named = connection_named(headers.clone());
    for (name, value) in headers {
        let kind = kind(name);
        let pass = match kind {
            Kind::ContentLength => matches!(body, ClientBody::Bodiless | ClientBody::Reframed),
            Kind::TransferEncoding => {
                matches!(body, ClientBody::Bodiless | ClientBody::Encoded | ClientBody::UntilClose)
            }
            Kind::Connection | Kind::Upgrade => body == ClientBody::Upgraded,
            Kind::HopByHop => false,
            Kind::SetCookie => {
                if !named.is_empty() && named.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                    continue;
                }
                match site_cookie(value, secure) {
                    SiteCookie::Passes => true,
                    SiteCookie::HostOnly(value) => {
                        out.header(name, &value);
                        false
                    }
                    SiteCookie::Dropped => false,
                }
            }
            Kind::Host
            | Kind::Authorization
            | Kind::Cookie
            | Kind::Accept
            | Kind::Expect
            | Kind::Commons
            | Kind::Proxy
            | Kind::Other => named.is_empty() || !named.iter().any(|n| n.eq_ignore_ascii_case(name)),
        };
        if pass {
            out.header(name, value);
        }
    }
    if let ClientBody::Length(n) = body {
        out.header("content-length", decimal(n, &mut [0; 20]));
    }
}

/// A `Content-Length` value: digits only (no sign, no list), as RFC 9110
/// says; anything else is not trusted for framing.
pub(crate) fn content_length(value: &str) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// The per-site pseudonym of a user: keyed BLAKE3 (a PRF) of the user and
/// the site, 16 bytes in hex. Stable for a (user, site), unlinkable across
/// sites without the key.
pub fn pseudonym(secret: &[u8; 32], user: &str, site: &str) -> String {
    let mut hasher = blake3::Hasher::new_keyed(secret);
    hasher.update(&(user.len() as u64).to_le_bytes());
    hasher.update(user.as_bytes());
    hasher.update(site.as_bytes());
    let mut hex = [0u8; 32];
    hex::encode_to_slice(&hasher.finalize().as_bytes()[..16], &mut hex).expect("sized for it");
    String::from_utf8(hex.to_vec()).expect("hex is ASCII")
}

impl Memo {
    fn token_identity(&mut self, identities: &Arc<Identities>, token: &str) -> Option<Arc<Identity>> {
        let current = self.identities.as_ref().is_some_and(|known| Arc::ptr_eq(known, identities));
        if !current || self.token != token {
            self.identities = Some(identities.clone());
            self.token.clear();
            self.token.push_str(token);
            self.identity = identities.by_token(token).cloned();
        }
        self.identity.clone()
    }

    fn pseudonym(&mut self, secret: &[u8; 32], identity: &Arc<Identity>, site: &str) -> Arc<str> {
        match &self.pseudonym {
            Some((user, known_site, pseudonym)) if Arc::ptr_eq(user, identity) && known_site == site => {
                pseudonym.clone()
            }
            _ => {
                let computed: Arc<str> = pseudonym(secret, &identity.user, site).into();
                self.pseudonym = Some((identity.clone(), site.to_owned(), computed.clone()));
                computed
            }
        }
    }
}

/// What the platform's API tokens begin with (`store::Store::add_token`):
/// a credential holding one is the platform's, valid or not.
const TOKEN_PREFIX: &str = "oc_";

/// Whether an `Authorization` value holds something in the form of the
/// platform's tokens: as it is, or in a Basic credential's user or password.
fn holds_platform_token(value: &str) -> bool {
    use base64::Engine as _;
    if value.contains(TOKEN_PREFIX) {
        return true;
    }
    let mut words = value.split_ascii_whitespace();
    let basic = words.next().is_some_and(|scheme| scheme.eq_ignore_ascii_case("basic"));
    basic
        && words.next().is_some_and(|encoded| {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim_end_matches('='))
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded.trim_end_matches('=')));
            decoded.is_ok_and(|bytes| bytes.windows(TOKEN_PREFIX.len()).any(|w| w == TOKEN_PREFIX.as_bytes()))
        })
}

/// A header a site's apps may read their user from (a trusted reverse
/// proxy's: `X-Remote-User`, `Remote-User`, …), lowercase, or why not: a
/// header name (letters, digits, `-`), none the gateway gives a meaning of
/// its own to (`x-commons-*`, a proxy's, framing, hop-by-hop, cookies,
/// `Authorization`, `Host`).
pub fn check_user_header(name: &str) -> Result<String, String> {
    let shaped = (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !shaped {
        return Err(format!("{name:?} must be a header name: 1 to 64 letters, digits and '-'"));
    }
    let lower = name.to_ascii_lowercase();
    if kind(&lower) != Kind::Other {
        return Err(format!("{name:?} is a header the gateway gives a meaning of its own"));
    }
    Ok(lower)
}

/// The headers the pipeline treats apart from the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    /// About one connection, never forwarded (RFC 9110 §7.6.1), but the
    /// three above.
    HopByHop,
    Authorization,
    Cookie,
    Accept,
    Expect,
    /// `x-commons-*`: the gateway's to set.
    Commons,
    /// What a proxy says about the client and how it asked (its address,
    /// scheme, host, port, original URL), in any spelling that frameworks
    /// fold together: the gateway's to set, or to keep from the site.
    Proxy,
    SetCookie,
    Other,
}

/// A header name's kind, without regard to case: by its length first, so
/// that most names are compared with one candidate at most. The names a
/// site could read as the platform's word (`x-commons-*`, a proxy's) are
/// known in every spelling frameworks fold into one (WSGI, CGI and PHP
/// read `X_Commons.User` as `X-Commons-User`): any byte that is not a
/// letter or digit stands for any other.
fn kind(name: &str) -> Kind {
    let name = name.as_bytes();
    let is = |candidate: &[u8]| name.eq_ignore_ascii_case(candidate);
    let known = match name.len() {
        2 if is(b"te") => Kind::HopByHop,
        4 if is(b"host") => Kind::Host,
        6 if is(b"cookie") => Kind::Cookie,
        6 if is(b"accept") => Kind::Accept,
        6 if is(b"expect") => Kind::Expect,
        7 if is(b"upgrade") => Kind::Upgrade,
        7 if is(b"trailer") => Kind::HopByHop,
        10 if is(b"connection") => Kind::Connection,
        10 if is(b"keep-alive") => Kind::HopByHop,
        10 if is(b"set-cookie") => Kind::SetCookie,
        13 if is(b"authorization") => Kind::Authorization,
        14 if is(b"content-length") => Kind::ContentLength,
        14 if is(b"http2-settings") => Kind::HopByHop,
        17 if is(b"transfer-encoding") => Kind::TransferEncoding,
        18 if is(b"proxy-authenticate") => Kind::HopByHop,
        19 if is(b"proxy-authorization") => Kind::HopByHop,
        _ => Kind::Other,
    };
    // Every name below begins with one of these letters.
    if known != Kind::Other
        || name.len() < 6
        || !matches!(name[0] | 0x20, b'x' | b'f' | b'c' | b't' | b'k' | b'p' | b'h')
    {
        return known;
    }
    // A framing or hop-by-hop name spelled with another separator
    // (`Content_Length`, `transfer.encoding`): an app server that folds
    // `_` into `-` would frame by it, or take it as hop-by-hop. Dropped.
    if FOLDED_AWAY.iter().any(|p| p.len() == name.len() && folded_prefix(name, p)) {
        return Kind::HopByHop;
    }
    if folded_prefix(name, b"x-commons-") {
        return Kind::Commons;
    }
    if folded_prefix(name, b"x-forwarded")
        || PROXY_HEADERS.iter().any(|p| p.len() == name.len() && folded_prefix(name, p))
    {
        return Kind::Proxy;
    }
    Kind::Other
}

/// The framing and hop-by-hop names with a separator in them: in any
/// other spelling of it they are not passed on.
const FOLDED_AWAY: [&[u8]; 6] = [
    b"content-length",
    b"transfer-encoding",
    b"keep-alive",
    b"proxy-authorization",
    b"proxy-authenticate",
    b"http2-settings",
];

/// The headers, beyond `x-forwarded*`, that proxies set and frameworks
/// trust for the client's address, the scheme, the host or the URL asked.
const PROXY_HEADERS: [&[u8]; 14] = [
    b"forwarded",
    b"forwarded-for",
    b"x-real-ip",
    b"client-ip",
    b"x-client-ip",
    b"true-client-ip",
    b"x-cluster-client-ip",
    b"cf-connecting-ip",
    b"fastly-client-ip",
    b"x-originating-ip",
    b"x-host",
    b"x-original-host",
    b"x-original-url",
    b"x-rewrite-url",
];

/// Whether `name` begins with `prefix` (lower case), a letter or digit
/// matching in either case, any other byte matching any other.
fn folded_prefix(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len()
        && name.iter().zip(prefix).all(|(&n, &p)| {
            if p.is_ascii_alphanumeric() { n.to_ascii_lowercase() == p } else { !n.is_ascii_alphanumeric() }
        })
}

/// Whether `path`, read any way a site may read it, is under one of the
/// policy's premium-only prefixes (letters in either case). A path the
/// gateway cannot read one way only is refused before (`Pipeline::route`).
fn premium_only(policy: &TierPolicy, path: &str) -> bool {
    if policy.premium_prefixes.is_empty() {
        return false;
    }
    let under = |path: &str| {
        policy.premium_prefixes.iter().any(|prefix| {
            path.len() >= prefix.len() && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        })
    };
    path::readings(path).map_or(true, |readings| readings.any(under))
}

/// What becomes of a cookie a site sets.
enum SiteCookie {
    Passes,
    /// Without its `Domain` attribute.
    HostOnly(Vec<u8>),
    Dropped,
}

/// A site's `Set-Cookie` as the client may get it: host-only (no `Domain`,
/// which would let it reach other sites and the platform); never one of
/// the gateway's cookies; a `__Secure-` or `__Host-` one only if the
/// platform is served over https (`secure`) and the cookie keeps the
/// prefix's rules (`Secure`; for `__Host-` also `Path=/` and no `Domain`).
fn site_cookie(value: &[u8], secure: bool) -> SiteCookie {
    let mut parts = value.split(|&b| b == b';');
    let pair = parts.next().unwrap_or_default();
    let name = pair.split(|&b| b == b'=').next().unwrap_or_default().trim_ascii();
    if is_gateway_cookie_name(name) {
        return SiteCookie::Dropped;
    }
    let (mut domain, mut marked_secure, mut root) = (false, false, false);
    for attribute in parts {
        let mut split = attribute.splitn(2, |&b| b == b'=');
        let key = split.next().unwrap_or_default().trim_ascii();
        if key.eq_ignore_ascii_case(b"domain") {
            domain = true;
        } else if key.eq_ignore_ascii_case(b"secure") {
            marked_secure = true;
        } else if key.eq_ignore_ascii_case(b"path") {
            root = split.next().unwrap_or_default().trim_ascii() == b"/";
        }
    }
    let prefixed = |prefix: &[u8]| name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix);
    if prefixed(b"__secure-") && !(secure && marked_secure) {
        return SiteCookie::Dropped;
    }
    if prefixed(b"__host-") && !(secure && marked_secure && root && !domain) {
        return SiteCookie::Dropped;
    }
    if !domain {
        return SiteCookie::Passes;
    }
    let mut host_only = Vec::with_capacity(value.len());
    for (i, part) in value.split(|&b| b == b';').enumerate() {
        let key = part.split(|&b| b == b'=').next().unwrap_or_default().trim_ascii();
        if i > 0 && key.eq_ignore_ascii_case(b"domain") {
            continue;
        }
        if i > 0 {
            host_only.push(b';');
        }
        host_only.extend_from_slice(part);
    }
    SiteCookie::HostOnly(host_only)
}

/// The header names `Connection` lines list (beyond `close`, `keep-alive`
/// and `upgrade`, which name no header the pipeline would pass anyway).
fn connection_named<'h>(headers: impl Iterator<Item = (&'h str, &'h [u8])>) -> Vec<&'h str> {
    let mut named = Vec::new();
    for (name, value) in headers {
        if name.len() != 10 || kind(name) != Kind::Connection {
            continue;
        }
        let Ok(value) = std::str::from_utf8(value) else { continue };
        for token in value.split(',').map(str::trim) {
            let plain = ["close", "keep-alive", "upgrade"].iter().any(|t| token.eq_ignore_ascii_case(t));
            if !token.is_empty() && !plain {
                named.push(token);
            }
        }
    }
    named
}

/// Writes the request's `Cookie` lines as one, without the gateway's
/// cookies; nothing if nothing is left. A line holding none of them passes
/// byte for byte.
fn cookie_line<'h>(headers: impl Iterator<Item = (&'h str, &'h [u8])>, out: &mut impl HeadWriter) {
    let mut lines = headers.filter(|(name, _)| kind(name) == Kind::Cookie).map(|(_, value)| value);
    let Some(first) = lines.next() else { return };
    let mut rest = lines.peekable();
    if rest.peek().is_none() && !first.split(|&b| b == b';').any(is_session_cookie) {
        out.header("cookie", first);
        return;
    }
    let mut joined = Vec::with_capacity(first.len());
    for line in std::iter::once(first).chain(rest) {
        if !line.split(|&b| b == b';').any(is_session_cookie) {
            if !joined.is_empty() && !line.is_empty() {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(line);
            continue;
        }
        for pair in line.split(|&b| b == b';').map(<[u8]>::trim_ascii).filter(|p| !p.is_empty()) {
            if !is_session_cookie(pair) {
                if !joined.is_empty() {
                    joined.extend_from_slice(b"; ");
                }
                joined.extend_from_slice(pair);
            }
        }
    }
    if !joined.is_empty() {
        out.header("cookie", &joined);
    }
}

/// `n` in decimal, written into `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// This thread's metering shard: each thread writes its own log.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SHARD.with(|s| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    impl HeadWriter for Vec<(String, String)> {
        fn header(&mut self, name: &str, value: &[u8]) {
            self.push((name.to_owned(), String::from_utf8_lossy(value).into_owned()));
        }
    }

    fn lines<'h>(headers: &'h [(&'h str, &'h str)]) -> impl Iterator<Item = (&'h str, &'h [u8])> + Clone {
        headers.iter().map(|(name, value)| (*name, value.as_bytes()))
    }

    #[test]
    fn header_kinds_ignore_case_and_commons_headers_are_known_by_their_prefix() {
        for (name, expected) in [
            ("Host", Kind::Host),
            ("CONTENT-LENGTH", Kind::ContentLength),
            ("Transfer-Encoding", Kind::TransferEncoding),
            ("TE", Kind::HopByHop),
            ("Keep-Alive", Kind::HopByHop),
            ("Proxy-Authorization", Kind::HopByHop),
            ("X-Commons-User", Kind::Commons),
            ("x-commons-", Kind::Commons),
            ("x-COMMONS-anything", Kind::Commons),
            ("x-commonsense", Kind::Other),
            ("X-Forwarded-For", Kind::Proxy),
            ("X-Real-IP", Kind::Proxy),
            ("Forwarded", Kind::Proxy),
            ("x-forwarded-proto", Kind::Proxy),
            ("X_Forwarded_Proto", Kind::Proxy),
            ("X_Commons_User", Kind::Commons),
            ("x.commons+tier", Kind::Commons),
            ("True_Client_IP", Kind::Proxy),
            ("X-Original-URL", Kind::Proxy),
            ("x-hosts", Kind::Other),
            ("Set-Cookie", Kind::SetCookie),
            ("HTTP2-Settings", Kind::HopByHop),
            ("Content_Length", Kind::HopByHop),
            ("content.length", Kind::HopByHop),
            ("Transfer_Encoding", Kind::HopByHop),
            ("Keep_Alive", Kind::HopByHop),
            ("proxy_authorization", Kind::HopByHop),
            ("HTTP2_Settings", Kind::HopByHop),
            ("Content-Lengthy", Kind::Other),
            ("Content-Type", Kind::Other),
            ("Accept-Language", Kind::Other),
            ("", Kind::Other),
        ] {
            assert_eq!(kind(name), expected, "{name}");
        }
    }

    #[test]
    fn only_plain_digits_are_a_content_length() {
        assert_eq!(content_length(" 42 "), Some(42));
        for bad in ["+5", "-1", "5, 5", "", "0x10", "99999999999999999999999"] {
            assert_eq!(content_length(bad), None, "{bad}");
        }
    }

    #[test]
    fn facts_take_the_authority_over_host_and_see_two_hosts_and_odd_lengths() {
        let head = [("Host", "a.example"), ("content-length", "5"), ("Content-Length", "6")];
        let facts = Facts::read("POST", "/", None, lines(&head));
        assert_eq!((facts.host, facts.content_length, facts.length_invalid), (Some("a.example"), None, true));
        let head = [("host", "a.example"), ("HOST", "b.example")];
        let facts = Facts::read("GET", "/", Some("c.example"), lines(&head));
        assert_eq!((facts.host, facts.host_repeated), (Some("c.example"), true));
        let head = [("Connection", "Upgrade, x-a"), ("upgrade", "websocket"), ("Accept", "text/html")];
        let facts = Facts::read("GET", "/", None, lines(&head));
        assert_eq!((facts.upgrade, facts.connection_names, facts.wants_html), (Some(&b"websocket"[..]), true, true));
    }

    #[test]
    fn cookie_lines_are_joined_without_the_gateways_cookies() {
        let check = |cookies: &[&str], expected: &[&str]| {
            let head: Vec<(&str, &str)> = cookies.iter().map(|c| ("Cookie", *c)).collect();
            let mut out: Vec<(String, String)> = Vec::new();
            cookie_line(lines(&head), &mut out);
            let values: Vec<&str> = out.iter().map(|(_, v)| v.as_str()).collect();
            assert_eq!(values, expected, "{cookies:?}");
        };
        check(&["a=1;b=2"], &["a=1;b=2"]);
        check(&["a=1", "b=2"], &["a=1; b=2"]);
        check(&["theme=dark; commons_site=abc", "commons_session=def;lang=en"], &["theme=dark; lang=en"]);
        check(&["commons_site=abc"], &[]);
        check(&["__Host-commons_site=abc; a=1", "__Host-commons_session=def"], &["a=1"]);
        check(&[], &[]);
    }

    #[test]
    fn a_sites_framing_headers_pass_as_the_engine_sends_the_body() {
        let head = [
            ("Content-Length", "5"),
            ("Connection", "content-length, transfer-encoding, x-a"),
            ("x-a", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Server", "s"),
        ];
        let check = |body, expected: &[(&str, &str)]| {
            let mut out: Vec<(String, String)> = Vec::new();
            client_head(lines(&head), body, false, &mut out);
            let expected: Vec<(String, String)> =
                expected.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            assert_eq!(out, expected, "{body:?}");
        };
        check(ClientBody::Length(5), &[("Server", "s"), ("content-length", "5")]);
        check(ClientBody::Reframed, &[("Content-Length", "5"), ("Server", "s")]);
        check(ClientBody::UntilClose, &[("Server", "s")]);
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 1234, u64::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }
}
