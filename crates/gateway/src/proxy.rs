//! The request path: resolve, identify, rewrite headers, proxy, meter.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use commons_core::Period;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::header::{HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use metering::{Event, Meter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::fast;
use crate::identity::{
    Handoffs, Identities, Identity, SITE_COOKIE, SessionStore, Sessions, StoredSession, cookie, strip_session_cookies,
};
use crate::limits::{InFlight, Limiter, Refusal};
use crate::login::wants_html;
use crate::metrics::Metrics;
use crate::provenance::{Live, Origin, Provenance};
use crate::{Clock, GatewayError, Routes, SiteRoute};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Body = BoxBody<Bytes, BoxError>;

/// Limits and secrets of a gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Longest wait for a site: connecting plus its response headers.
    pub upstream_timeout: Duration,
    /// Largest request body passed on.
    pub body_limit_bytes: u64,
    /// Longest a client may take to send its request headers (slow
    /// clients hold a connection for at most this long).
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers).
    pub header_limit_bytes: usize,
    /// The key of the per-site user pseudonyms.
    pub pseudonym_secret: [u8; 32],
    /// The key of provenance tokens.
    pub provenance_secret: [u8; 32],
    /// How long a login lasts.
    pub session_lifetime: Duration,
    /// The scheme users reach the gateway by (`https` behind a TLS
    /// terminator), for the redirects of the login handoff.
    pub public_scheme: String,
    /// The workers' scheduling priority (a nice value; lower is sooner),
    /// if it is to change: the gateway should not wait behind the sites it
    /// fronts on the same machine. Needs CAP_SYS_NICE to go below 0; without
    /// it the workers keep their priority, with a warning.
    pub worker_priority: Option<i32>,
    /// Whether plain HTTP/1.1 connections start on the fast engine (on by
    /// default). Off, the general (hyper) engine serves every connection:
    /// for tests that send the same request through both engines.
    pub fast_path: bool,
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            upstream_timeout: Duration::from_secs(30),
            body_limit_bytes: 10 << 20,
            header_read_timeout: Duration::from_secs(10),
            header_limit_bytes: 64 << 10,
            pseudonym_secret: [0; 32],
            provenance_secret: [0; 32],
            session_lifetime: Duration::from_secs(30 * 86_400),
            public_scheme: "http".to_owned(),
            worker_priority: None,
            fast_path: true,
        }
    }
}

/// A gateway: shared state of every connection.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: GatewayConfig,
    pub(crate) routes: ArcSwap<Routes>,
    pub(crate) identities: ArcSwap<Identities>,
    meter: Option<Arc<Meter>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Metrics,
    pseudonym_secret: [u8; 32],
    pub(crate) limiter: Limiter,
    provenance: Provenance,
    pub(crate) sessions: Sessions,
    pub(crate) handoffs: Handoffs,
    pub(crate) session_store: Option<Arc<dyn SessionStore>>,
}

/// A gateway serving on a socket, until [`RunningGateway::shutdown`].
pub struct RunningGateway {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl RunningGateway {
    /// Stops accepting, lets requests in flight finish, and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
    }
}

/// Keeps a listener's workers serving about as many connections each. A
/// worker's own listening socket (SO_REUSEPORT) gets connections by a hash
/// of their addresses, which can leave one worker with a third more than
/// another: its clients then wait while the other idles. A worker that
/// accepts a connection while another serves fewer hands it over (a few
/// system calls, once per connection, not per request).
pub(crate) struct Balance {
    kind: Listener,
    open: Vec<AtomicUsize>,
    to: Vec<tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>>,
}

/// Connections handed to a worker.
type Handed = tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>;

/// A worker's place in its listener's [`Balance`].
struct Seat {
    balance: Arc<Balance>,
    me: usize,
    handed: Handed,
}

impl Balance {
    fn new(kind: Listener, workers: usize) -> (Arc<Balance>, Vec<Handed>) {
        let (to, handed) = (0..workers).map(|_| tokio::sync::mpsc::unbounded_channel()).unzip();
        let open = (0..workers).map(|_| AtomicUsize::new(0)).collect();
        (Arc::new(Balance { kind, open, to }), handed)
    }

    /// A connection `me` accepted: back to serve it here, or None if it
    /// went to a worker serving fewer.
    fn place(&self, me: usize, stream: TcpStream, peer: SocketAddr) -> Option<TcpStream> {
        let count = |worker: usize| self.open[worker].load(Ordering::Relaxed);
        let least = (0..self.open.len()).min_by_key(|&worker| count(worker)).unwrap_or(me);
        if count(least) < count(me) {
            self.open[least].fetch_add(1, Ordering::Relaxed);
            match stream.into_std() {
                Ok(stream) => match self.to[least].send((stream, peer)) {
                    Ok(()) => return None,
                    // That worker has stopped: serve it here after all.
                    Err(returned) => {
                        self.open[least].fetch_sub(1, Ordering::Relaxed);
                        self.open[me].fetch_add(1, Ordering::Relaxed);
                        return TcpStream::from_std(returned.0.0).ok().or_else(|| {
                            self.closed(me);
                            None
                        });
                    }
                },
                Err(_) => {
                    self.closed(least);
                    return None;
                }
            }
        }
        self.open[me].fetch_add(1, Ordering::Relaxed);
        Some(stream)
    }

    fn closed(&self, worker: usize) {
        self.open[worker].fetch_sub(1, Ordering::Relaxed);
    }

    /// Open connections per worker.
    pub(crate) fn open(&self) -> impl Iterator<Item = usize> + '_ {
        self.open.iter().map(|count| count.load(Ordering::Relaxed))
    }

    pub(crate) fn listener(&self) -> &'static str {
        match self.kind {
            Listener::Public => "public",
            Listener::Internal => "internal",
        }
    }
}

/// A connection a worker serves, counted until dropped.
struct Open {
    balance: Arc<Balance>,
    worker: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.balance.closed(self.worker);
    }
}

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listener {
    /// Users, from anywhere.
    Public,
    /// Sites calling services, on loopback, with provenance tokens.
    Internal,
}

/// Most worker threads a gateway runs.
pub const WORKERS_MAX: usize = 256;

/// Backlog of each worker's listening socket.
const LISTEN_BACKLOG: u32 = 4096;

type UpstreamClient = Client<HttpConnector, Body>;

/// A pool of keep-alive connections to upstreams, one per worker.
fn upstream_client(config: &GatewayConfig) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.upstream_timeout));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// Gives the calling thread the nice value `nice`.
fn set_thread_priority(nice: i32) {
    // SAFETY: gettid and setpriority have no memory preconditions; on Linux
    // PRIO_PROCESS with a thread id changes only that thread.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if result != 0 {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                nice,
                error = %std::io::Error::last_os_error(),
                "cannot raise the gateway workers' priority (needs CAP_SYS_NICE); they keep the default"
            )
        });
    }
}

/// A listening socket that other workers may share (`SO_REUSEPORT`).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Hop-by-hop headers: about one connection, never forwarded.
pub(crate) const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Gateway {
    /// A gateway recording usage in `meter` (none: metering off).
    pub fn new(config: GatewayConfig, routes: Routes, meter: Option<Arc<Meter>>, clock: Arc<dyn Clock>) -> Gateway {
        Gateway::with_sessions(config, routes, meter, clock, None, Vec::new())
    }

    /// A gateway that keeps login sessions in `session_store`, starting
    /// with the `sessions` it kept before.
    pub fn with_sessions(
        config: GatewayConfig,
        routes: Routes,
        meter: Option<Arc<Meter>>,
        clock: Arc<dyn Clock>,
        session_store: Option<Arc<dyn SessionStore>>,
        sessions: Vec<StoredSession>,
    ) -> Gateway {
        let live = Sessions::default();
        for session in sessions {
            live.insert(session);
        }
        let config_secret = config.pseudonym_secret;
        let provenance_secret = config.provenance_secret;
        let nonce_seed = clock.now_ms() << 16;
        Gateway {
            inner: Arc::new(Inner {
                config,
                routes: ArcSwap::from_pointee(routes),
                identities: ArcSwap::from_pointee(Identities::default()),
                meter,
                clock,
                metrics: Metrics::default(),
                pseudonym_secret: config_secret,
                limiter: Limiter::new(),
                provenance: Provenance::new(&provenance_secret, nonce_seed),
                sessions: live,
                handoffs: Handoffs::default(),
                session_store,
            }),
        }
    }

    /// Replaces the routes; requests already routed finish where they were.
    /// Instances that were there before keep what is known of their health.
    pub fn set_routes(&self, routes: Routes) {
        routes.keep_health_of(&self.inner.routes.load());
        self.inner.routes.store(Arc::new(routes));
    }

    /// Probes every instance of every site every `every`, for as long as
    /// the future runs: a TCP connection, then `GET <health path>` when the
    /// site has one (any 2xx or 3xx is healthy). Instances that fail are
    /// skipped by new requests until a probe succeeds again.
    pub async fn check_health(&self, every: Duration) {
        loop {
            let routes = self.inner.routes.load_full();
            let mut probes = tokio::task::JoinSet::new();
            for route in routes.sites() {
                for (i, instance) in route.instances.iter().enumerate() {
                    let (route, addr) = (route.clone(), instance.addr);
                    probes.spawn(async move {
                        let healthy =
                            crate::health::probe(addr, &route.site, route.health_path.as_deref(), every).await;
                        let instance = &route.instances[i];
                        if instance.is_healthy() != healthy {
                            tracing::info!(site = %route.site, instance = %addr, healthy, "instance health changed");
                        }
                        instance.set_healthy(healthy);
                    });
                }
            }
            while probes.join_next().await.is_some() {}
            tokio::time::sleep(every).await;
        }
    }

    /// The routes in use.
    pub fn routes(&self) -> Arc<Routes> {
        self.inner.routes.load_full()
    }

    pub fn set_identities(&self, identities: Identities) {
        self.inner.identities.store(Arc::new(identities));
    }

    /// Serves on `addr` with `workers` threads until shut down: nginx's
    /// model. Each worker has its own event loop, its own listening socket
    /// on the same port (`SO_REUSEPORT`: the kernel spreads connections)
    /// and its own pool of upstream connections, so a request is handled
    /// start to end on one thread, with no hand-offs between threads.
    pub fn serve(&self, addr: SocketAddr, workers: usize) -> std::io::Result<RunningGateway> {
        self.serve_as(addr, workers, Listener::Public)
    }

    /// Serves the internal listener on `addr` (keep it on loopback): sites
    /// call other platform services here, with the provenance token of the
    /// request they are serving; calls are attributed to that user.
    pub fn serve_internal(&self, addr: SocketAddr, workers: usize) -> std::io::Result<RunningGateway> {
        self.serve_as(addr, workers, Listener::Internal)
    }

    fn serve_as(&self, addr: SocketAddr, workers: usize, kind: Listener) -> std::io::Result<RunningGateway> {
        // Sharing a port with SO_REUSEPORT would also share it with another
        // gateway already there: make sure nobody is.
        if addr.port() != 0 {
            drop(std::net::TcpListener::bind(addr)?);
        }
        let (stop, stopped) = watch::channel(false);
        let mut threads = Vec::new();
        let mut bound = addr;
        let workers = workers.clamp(1, WORKERS_MAX);
        let (balance, handed) = Balance::new(kind, workers);
        self.inner.metrics.add_balance(&balance);
        for (worker, handed) in handed.into_iter().enumerate() {
            let (ready, is_ready) = std::sync::mpsc::channel();
            let gateway = self.clone();
            let stopped = stopped.clone();
            let seat = Seat { balance: balance.clone(), me: worker, handed };
            let priority = self.inner.config.worker_priority;
            let thread = std::thread::Builder::new().name(format!("gateway-{worker}")).spawn(move || {
                if let Some(nice) = priority {
                    set_thread_priority(nice);
                }
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => return drop(ready.send(Err(e))),
                };
                runtime.block_on(async move {
                    let listener = match listen(bound) {
                        Ok(listener) => listener,
                        Err(e) => return drop(ready.send(Err(e))),
                    };
                    let _ = ready.send(listener.local_addr());
                    gateway.accept_loop(listener, stopped, kind, seat).await;
                });
            })?;
            threads.push(thread);
            // The first worker picks the port (when asked for port 0); the
            // others share it.
            bound = is_ready.recv().map_err(|_| std::io::Error::other("a gateway worker died at start"))??;
        }
        Ok(RunningGateway { addr: bound, stop, threads })
    }

    async fn accept_loop(&self, listener: TcpListener, mut stopped: watch::Receiver<bool>, kind: Listener, seat: Seat) {
        let Seat { balance, me, mut handed } = seat;
        let client = upstream_client(&self.inner.config);
        let pool = Arc::new(fast::Pool::default());
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (mut stream, peer) = tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    match balance.place(me, stream, peer) {
                        Some(stream) => (stream, peer),
                        None => continue,
                    }
                }
                Some((stream, peer)) = handed.recv() => match TcpStream::from_std(stream) {
                    Ok(stream) => (stream, peer),
                    Err(_) => {
                        balance.closed(me);
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let open = Open { balance: balance.clone(), worker: me };
            let gateway = self.clone();
            let client = client.clone();
            let pool = pool.clone();
            let mut stopped = stopped.clone();
            connections.spawn(async move {
                let _open = open;
                // Most connections are served start to end by the
                // fast path; the rest go to hyper, as they are.
                let io = match kind {
                    Listener::Public if gateway.inner.config.fast_path => {
                        let peer = peer.ip().to_string();
                        match gateway.serve_fast(&mut stream, &peer, &pool, &mut stopped).await {
                            fast::Outcome::Closed => return,
                            fast::Outcome::Fallback(read) => fast::Rewind::new(read, stream),
                        }
                    }
                    Listener::Public | Listener::Internal => fast::Rewind::new(Bytes::new(), stream),
                };
                let config = gateway.inner.config.clone();
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(config.header_read_timeout)
                    .max_buf_size(config.header_limit_bytes.max(8192));
                let peer = HeaderValue::from_str(&peer.ip().to_string()).expect("an IP is a valid header");
                let service = hyper::service::service_fn(move |request| {
                    let (gateway, client, peer) = (gateway.clone(), client.clone(), peer.clone());
                    async move { Ok::<_, Infallible>(gateway.handle(request, &client, &peer, kind).await) }
                });
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                tokio::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => {}
                    _ = stopped.changed() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
            });
        }
        while connections.join_next().await.is_some() {}
    }

    /// The gateway's counters, in the Prometheus text format.
    pub fn metrics(&self) -> String {
        self.inner.metrics.render()
    }

    async fn handle(
        &self,
        request: Request<Incoming>,
        client: &UpstreamClient,
        peer: &HeaderValue,
        kind: Listener,
    ) -> Response<Body> {
        let response = match self.proxy(request, client, peer, kind).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(error = %error, "request refused");
                error.response().map(|body| body.map_err(|never| match never {}).boxed())
            }
        };
        self.inner.metrics.response(response.status().as_u16());
        response
    }

    async fn proxy(
        &self,
        mut request: Request<Incoming>,
        client: &UpstreamClient,
        peer: &HeaderValue,
        kind: Listener,
    ) -> Result<Response<Body>, GatewayError> {
        let started = Instant::now();
        let inner = &self.inner;
        let host = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| request.headers().get(HOST).and_then(|h| h.to_str().ok()).map(str::to_owned))
            .ok_or(GatewayError::NoHost)?;
        let routes = inner.routes.load();
        if kind == Listener::Public && routes.is_platform(&host) {
            return Ok(self.platform(request, peer).await);
        }
        let route = routes.resolve(&host).ok_or_else(|| GatewayError::UnknownHost(host.clone()))?.clone();
        if kind == Listener::Public && request.uri().path().starts_with("/.commons/") {
            return Ok(self.site_endpoint(&request, &route, &host).await);
        }
        drop(routes);

        let facts = Facts {
            path: request.uri().path_and_query().map_or("/", |p| p.as_str()),
            authorization: request.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()),
            site_cookie: cookie(request.headers(), SITE_COOKIE),
            wants_html: wants_html(&request),
            content_length: request
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok()),
            provenance: request.headers().get("x-commons-provenance").and_then(|v| v.to_str().ok()),
        };
        let memo = &mut Memo::default();
        let admitted = match self.admit(&facts, route, &host, peer.to_str().unwrap_or("?"), kind, memo) {
            Ok(admitted) => admitted,
            Err(Answer::Refused(error)) => return Err(error),
            Err(Answer::Redirect(location)) => return Ok(crate::login::redirect(&location, Vec::new())),
        };
        let limit = inner.config.body_limit_bytes;
        let route = admitted.route.clone();

        // An upgrade (WebSocket) keeps its Upgrade header, and the client's
        // side of the connection is taken over once the site agrees.
        let upgrade = upgrade_protocol(request.headers());
        let client_side = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
        let headers = request.headers_mut();
        strip_hop_by_hop(headers);
        if let Some(protocol) = &upgrade {
            headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(hyper::header::UPGRADE, protocol.clone());
        }
        strip_session_cookies(headers);
        if headers.keys().any(|name| name.as_str().starts_with("x-commons-")) {
            let commons: Vec<HeaderName> =
                headers.keys().filter(|name| name.as_str().starts_with("x-commons-")).cloned().collect();
            for name in commons {
                headers.remove(&name);
            }
        }
        if let Some(pseudonym) = &admitted.pseudonym {
            headers.insert("x-commons-user", HeaderValue::from_str(pseudonym).expect("hex is a valid header"));
        }
        headers.insert("x-commons-tier", HeaderValue::from_static(admitted.tier));
        if let Some(token) = &admitted.provenance {
            headers.insert("x-commons-provenance", HeaderValue::from_str(token).expect("hex is a valid header"));
        }
        // No client address: with it, sites could correlate users the
        // pseudonym keeps apart (the Host header is passed on as it came).
        headers.remove("x-forwarded-for");
        headers.remove("x-forwarded-host");
        headers.remove(hyper::header::AUTHORIZATION);

        // A connection refused never reached the site, so a request without
        // a body is tried on the next healthy instance (at most 3 in all).
        let path_and_query = request.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        let (mut parts, body) = request.into_parts();
        parts.version = hyper::Version::HTTP_11;
        let spare = body.is_end_stream().then(|| (parts.method.clone(), parts.headers.clone()));
        let mut first = Some(Request::from_parts(parts, Limited::new(body, limit as usize).boxed()));
        let timeout = inner.config.upstream_timeout;
        let mut attempts = 0;
        let response = loop {
            let instance = route.choose().ok_or_else(|| GatewayError::UpstreamDown {
                site: route.site.clone(),
                reason: "it has no instances".into(),
            })?;
            let mut request = match (first.take(), &spare) {
                (Some(request), _) => request,
                (None, Some((method, headers))) => {
                    let mut request =
                        Request::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed());
                    *request.method_mut() = method.clone();
                    *request.headers_mut() = headers.clone();
                    request
                }
                (None, None) => unreachable!("only a request without a body is tried again"),
            };
            *request.uri_mut() = Uri::builder()
                .scheme(hyper::http::uri::Scheme::HTTP)
                .authority(instance.authority.clone())
                .path_and_query(path_and_query.clone())
                .build()
                .map_err(|e| GatewayError::UpstreamDown { site: route.site.clone(), reason: e.to_string() })?;
            attempts += 1;
            match tokio::time::timeout(timeout, client.request(request)).await {
                Err(_) => {
                    return Err(GatewayError::UpstreamTimeout {
                        site: route.site.clone(),
                        timeout_ms: timeout.as_millis() as u64,
                    });
                }
                Ok(Err(error)) => {
                    if error.is_connect() {
                        instance.set_healthy(false);
                        if spare.is_some() && attempts < 3 && route.any_healthy() {
                            continue;
                        }
                    }
                    let reason = std::error::Error::source(&error).map_or_else(|| error.to_string(), |s| s.to_string());
                    if reason.contains("length limit exceeded") {
                        return Err(GatewayError::BodyTooLarge(limit));
                    }
                    return Err(GatewayError::UpstreamDown { site: route.site.clone(), reason });
                }
                Ok(Ok(response)) => {
                    instance.set_healthy(true);
                    break response;
                }
            }
        };

        // The answer is about to leave: record it first.
        self.meter(&admitted, started)?;
        drop(admitted);

        let mut response = response;
        if response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_side) = client_side
        {
            // Tunnel the two upgraded connections to each other until
            // either side closes.
            let site_side = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                if let (Ok(client), Ok(site)) = tokio::join!(client_side, site_side) {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(site)).await;
                }
            });
            let (parts, body) = response.into_parts();
            return Ok(Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed()));
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed()))
    }
}

/// What the admission of a request looks at, whichever parser read it.
pub(crate) struct Facts<'r> {
    /// Path and query.
    pub(crate) path: &'r str,
    pub(crate) authorization: Option<&'r str>,
    pub(crate) site_cookie: Option<&'r str>,
    /// A browser's page load (a login redirect helps it).
    pub(crate) wants_html: bool,
    pub(crate) content_length: Option<u64>,
    pub(crate) provenance: Option<&'r str>,
}

/// A request let through, with what the site is told about it. The
/// request's place in its user's limits and its provenance token last as
/// long as this does.
pub(crate) struct Admitted<'g> {
    pub(crate) route: Arc<SiteRoute>,
    pub(crate) identity: Option<Arc<Identity>>,
    /// For a call on the internal listener: who and which site it is for.
    pub(crate) origin: Option<Origin>,
    pub(crate) tier: &'static str,
    /// `x-commons-user`.
    pub(crate) pseudonym: Option<Arc<str>>,
    /// `x-commons-provenance`.
    pub(crate) provenance: Option<String>,
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

/// Why a request does not go through.
pub(crate) enum Answer {
    Refused(GatewayError),
    /// To the login page.
    Redirect(String),
}

impl Gateway {
    /// Who the request is from, and whether the site's tier policy lets it
    /// through: one decision, shared by both request paths.
    pub(crate) fn admit(
        &self,
        facts: &Facts<'_>,
        route: Arc<SiteRoute>,
        host: &str,
        peer: &str,
        kind: Listener,
        memo: &mut Memo,
    ) -> Result<Admitted<'_>, Answer> {
        let inner = &self.inner;
        // Who: a token's or a session's user on the public listener; on the
        // internal one, the user of the request whose provenance the call
        // carries.
        let (identity, origin) = match kind {
            Listener::Public => {
                let identities = inner.identities.load();
                let identity: Option<Arc<Identity>> =
                    match facts.authorization.and_then(|value| value.strip_prefix("Bearer ")) {
                        Some(token) => memo.token_identity(&identities, token.trim()),
                        None => facts
                            .site_cookie
                            .and_then(|token| inner.sessions.user(token, Some(&route.site), inner.clock.now_ms()))
                            .and_then(|user| identities.user(&user).cloned()),
                    };
                if identity.is_none() && !route.anonymous {
                    if facts.wants_html {
                        return Err(Answer::Redirect(self.login_url(host, facts.path)));
                    }
                    return Err(Answer::Refused(GatewayError::LoginRequired));
                }
                (identity, None)
            }
            Listener::Internal => match inner.provenance.verify(facts.provenance, inner.clock.now_ms()) {
                Ok(origin) => {
                    let identity = Arc::new(Identity { user: origin.user.clone(), premium: origin.premium });
                    (Some(identity), Some(origin))
                }
                Err(refused) => {
                    inner.metrics.provenance_refused(refused);
                    return Err(Answer::Refused(GatewayError::Provenance(refused)));
                }
            },
        };
        let premium = identity.as_ref().is_some_and(|i| i.premium);
        let path = facts.path.split('?').next().unwrap_or("");
        if !premium && route.policy.is_premium_only(path) {
            let subscribe_url = format!("http://{}/subscribe", inner.routes.load().domain());
            return Err(Answer::Refused(GatewayError::PremiumOnly { subscribe_url }));
        }
        // Subscribers get the premium limits of every site: none. Calls
        // between services count against nobody.
        let in_flight = if premium || origin.is_some() {
            None
        } else {
            let who = identity.as_ref().map_or(peer, |i| i.user.as_str());
            let admitted = inner.limiter.admit(&route.policy, &route.site, who, inner.clock.now_ms());
            Some(admitted.map_err(|refusal| {
                Answer::Refused(match refusal {
                    Refusal::Rate { retry_after_s } => GatewayError::RateLimited { retry_after_s },
                    Refusal::Concurrency => GatewayError::TooManyInFlight,
                })
            })?)
        };
        let limit = inner.config.body_limit_bytes;
        if facts.content_length.is_some_and(|length| length > limit) {
            return Err(Answer::Refused(GatewayError::BodyTooLarge(limit)));
        }
        let (pseudonym, tier) = match &identity {
            Some(identity) => (
                Some(memo.pseudonym(&inner.pseudonym_secret, identity, &route.site)),
                if identity.premium { "premium" } else { "free" },
            ),
            None => (None, "anonymous"),
        };
        // The token this request's site may use to call other services for
        // its user; live until the site has answered.
        let (provenance, live) = match (&identity, kind) {
            (Some(identity), Listener::Public) => {
                let (token, live) =
                    inner.provenance.issue(&identity.user, &route.site, identity.premium, inner.clock.now_ms());
                (Some(token), Some(live))
            }
            _ => (None, None),
        };
        Ok(Admitted { route, identity, origin, tier, pseudonym, provenance, _in_flight: in_flight, _live: live })
    }

    /// Records an answered request's usage; an error if it cannot be, in
    /// which case the answer must not be sent.
    pub(crate) fn meter(&self, admitted: &Admitted<'_>, started: Instant) -> Result<(), GatewayError> {
        let inner = &self.inner;
        let (Some(meter), Some(identity)) = (&inner.meter, &admitted.identity) else { return Ok(()) };
        let now = inner.clock.now_ms();
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
                service_ms,
            },
        };
        if let Err(e) = meter.record(shard(), event) {
            inner.metrics.metering_failure();
            return Err(GatewayError::Metering(e.to_string()));
        }
        inner.metrics.metered();
        Ok(())
    }
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

/// The protocol a request asks to upgrade to (`Connection: upgrade` with an
/// `Upgrade` header), if any.
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if asks { headers.get(hyper::header::UPGRADE).cloned() } else { None }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(hyper::header::CONNECTION) {
        strip_connection_named(headers);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes the headers a `Connection` header names.
fn strip_connection_named(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
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
