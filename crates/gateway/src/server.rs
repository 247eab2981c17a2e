//! The server: worker threads, their listening sockets and accept loops,
//! the balance of connections between workers, and the hand-over of a
//! connection from the HTTP/1 engine to the general one. [`Gateway`] is the
//! handle the platform holds: it serves, and takes new routes and users.
//!
//! nginx's model: each worker has its own event loop, its own listening
//! socket on the same port (`SO_REUSEPORT`: the kernel spreads connections)
//! and its own upstream pools, so a request is handled start to end on one
//! thread, with no hand-offs between threads.
//!
//! # Invariants
//! - An accept error that is not about one connection (out of file
//!   descriptors, buffers or memory) pauses that worker's accepting for
//!   [`ACCEPT_PAUSE`], as hyper and axum do: accepting again at once would
//!   fail again at once, a core spinning per worker. Connections wait in
//!   the backlog meanwhile; those already open are served.
//! - A worker serving more connections than another hands a new one over
//!   (once per connection, never per request).
//!
//! # Deliberately absent
//! Decisions about requests (`pipeline`) and the protocols (`h1`,
//! `general`): the server knows connections only.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use metering::Meter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::config::GatewayConfig;
use crate::general;
use crate::h1;
use crate::health;
use crate::identity::{Identities, SessionStore, StoredSession};
use crate::login::Portal;
use crate::metrics::OpenConnections;
use crate::pipeline::{Listener, Pipeline};
use crate::pool::Pools;
use crate::routes::Routes;

/// Most worker threads a gateway runs.
pub const WORKERS_MAX: usize = 256;

/// Backlog of each worker's listening socket.
const LISTEN_BACKLOG: u32 = 4096;

/// How long a worker stops accepting after an accept error that is not
/// about one connection.
pub(crate) const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// A gateway: what every connection of every listener shares.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

struct Shared {
    pipeline: Arc<Pipeline>,
    portal: Arc<Portal>,
    /// The HTTP/1 engine's pools, one per worker.
    pools: Pools,
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
struct Balance {
    open: Arc<OpenConnections>,
    to: Vec<mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>>,
}

/// Connections handed to a worker.
type Handed = mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>;

/// A worker's place in its listener's [`Balance`].
struct Seat {
    balance: Arc<Balance>,
    me: usize,
    handed: Handed,
}

/// A connection a worker serves, counted until dropped.
struct Open {
    balance: Arc<Balance>,
    worker: usize,
}

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
        let checks = config.password_checks_max;
        let pipeline = Arc::new(Pipeline::new(config, routes, meter, clock, sessions));
        let portal = Arc::new(Portal::new(session_store, checks));
        Gateway { shared: Arc::new(Shared { pipeline, portal, pools: Pools::default() }) }
    }

    /// Replaces the routes; requests already routed finish where they were.
    /// Instances that were there before keep what is known of their health;
    /// idle connections to instances that are gone are closed.
    pub fn set_routes(&self, routes: Routes) {
        self.shared.pools.replace_routes(&self.shared.pipeline.routes, routes);
    }

    /// Probes every instance of every site every `every`, for as long as
    /// the future runs: a TCP connection, then `GET <health path>` when the
    /// site has one (any 2xx or 3xx is healthy). Instances that fail are
    /// skipped by new requests until a probe succeeds again.
    pub async fn check_health(&self, every: Duration) {
        loop {
            let routes = self.shared.pipeline.routes.load_full();
            let mut probes = tokio::task::JoinSet::new();
            for route in routes.sites() {
                for (i, instance) in route.instances.iter().enumerate() {
                    let (route, addr) = (route.clone(), instance.addr);
                    let instances = self.shared.pipeline.instances.clone();
                    probes.spawn(async move {
                        let path = route.health_path.as_deref();
                        let healthy = health::probe(&instances, addr, &route.site, path, every).await;
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

    /// Which instance addresses are inside a namespace of their own: the
    /// gateway connects to those from inside it.
    pub fn instances(&self) -> Arc<netns::Directory> {
        self.shared.pipeline.instances.clone()
    }

    /// The routes in use.
    pub fn routes(&self) -> Arc<Routes> {
        self.shared.pipeline.routes.load_full()
    }

    pub fn set_identities(&self, identities: Identities) {
        self.shared.pipeline.identities.store(Arc::new(identities));
    }

    /// Where the live sessions are: take it before reading the stored
    /// sessions for [`Gateway::keep_only_sessions`].
    pub fn sessions_mark(&self) -> u64 {
        self.shared.pipeline.sessions.mark()
    }

    /// Ends the live sessions the store no longer holds (revoked there):
    /// `stored` is every token hash it held when read after `mark` was
    /// taken. Sessions begun since `mark` are kept.
    pub fn keep_only_sessions(&self, stored: impl IntoIterator<Item = [u8; 32]>, mark: u64) {
        self.shared.pipeline.sessions.keep_only(&stored.into_iter().collect(), mark);
    }

    /// Forgets the live sessions that have expired.
    pub fn purge_sessions(&self) {
        self.shared.pipeline.sessions.purge(self.shared.pipeline.clock.now_ms());
    }

    /// The gateway's counters, in the Prometheus text format.
    pub fn metrics(&self) -> String {
        self.shared.pipeline.metrics.render()
    }

    /// Serves on `addr` with `workers` threads until shut down.
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
        self.shared.pipeline.metrics.add_listener(&balance.open);
        for (worker, handed) in handed.into_iter().enumerate() {
            let (ready, is_ready) = std::sync::mpsc::channel();
            let shared = self.shared.clone();
            let stopped = stopped.clone();
            let seat = Seat { balance: balance.clone(), me: worker, handed };
            let priority = shared.pipeline.config.worker_priority;
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
                    accept_loop(shared, listener, stopped, kind, seat).await;
                });
            })?;
            threads.push(thread);
            // The first worker picks the port (when asked for port 0); the
            // others share it.
            bound = is_ready.recv().map_err(|_| std::io::Error::other("a gateway worker died at start"))??;
        }
        Ok(RunningGateway { addr: bound, stop, threads })
    }
}

/// A worker: accepts connections (and takes those handed over) and serves
/// each on a task of its own, until `stopped`; then waits for them.
async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut stopped: watch::Receiver<bool>,
    kind: Listener,
    seat: Seat,
) {
    let Seat { balance, me, mut handed } = seat;
    let client = general::upstream_client(&shared.pipeline.config, &shared.pipeline.instances);
    let pool = shared.pools.add(&shared.pipeline.routes);
    let mut connections = tokio::task::JoinSet::new();
    let mut paused_until: Option<tokio::time::Instant> = None;
    loop {
        let resume = paused_until.unwrap_or_else(tokio::time::Instant::now);
        let (mut stream, peer) = tokio::select! {
            accepted = listener.accept(), if paused_until.is_none() => match accepted {
                Ok((stream, peer)) => match balance.place(me, stream, peer) {
                    Some(stream) => (stream, peer),
                    None => continue,
                },
                Err(error) if about_one_connection(&error) => continue,
                Err(error) => {
                    tracing::error!(
                        error = %error,
                        listener = kind.label(),
                        worker = me,
                        pause_ms = ACCEPT_PAUSE.as_millis() as u64,
                        "cannot accept connections; pausing"
                    );
                    paused_until = Some(tokio::time::Instant::now() + ACCEPT_PAUSE);
                    continue;
                }
            },
            _ = tokio::time::sleep_until(resume), if paused_until.is_some() => {
                paused_until = None;
                continue;
            }
            Some((stream, peer)) = handed.recv() => match TcpStream::from_std(stream) {
                Ok(stream) => (stream, peer),
                Err(_) => {
                    balance.open.closed(me);
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let open = Open { balance: balance.clone(), worker: me };
        // Each listener serves at most so many at once: one more is closed
        // (counted as open until `open` drops).
        let max = match kind {
            Listener::Public => shared.pipeline.config.public_connections_max,
            Listener::Internal => shared.pipeline.config.internal_connections_max,
        };
        let serving: usize = (0..balance.open.workers()).map(|w| balance.open.of(w)).sum();
        if serving > max {
            tracing::warn!(%peer, listener = kind.label(), "serving as many connections as it may; closing one");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (shared, client, pool, mut stopped) = (shared.clone(), client.clone(), pool.clone(), stopped.clone());
        connections.spawn(async move {
            let _open = open;
            // Most connections are served start to end by the HTTP/1
            // engine; the rest go to the general one, as they are.
            let io = match kind {
                Listener::Public if shared.pipeline.config.fast_path => {
                    let peer = peer.ip().to_string();
                    match h1::serve(&shared.pipeline, &mut stream, &peer, &pool, &mut stopped).await {
                        h1::Outcome::Closed => return,
                        h1::Outcome::Fallback(read) => Rewind::new(read, stream),
                    }
                }
                Listener::Public | Listener::Internal => Rewind::new(Bytes::new(), stream),
            };
            let (pipeline, portal) = (shared.pipeline.clone(), shared.portal.clone());
            general::serve(pipeline, portal, client, io, peer, kind, stopped).await;
        });
    }
    while connections.join_next().await.is_some() {}
}

/// Whether an accept error is about the one connection being accepted
/// (which is then gone), not about accepting as such.
fn about_one_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionRefused
            | ErrorKind::Interrupted
    )
}

impl Balance {
    fn new(kind: Listener, workers: usize) -> (Arc<Balance>, Vec<Handed>) {
        let (to, handed) = (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        let open = Arc::new(OpenConnections::new(kind.label(), workers));
        (Arc::new(Balance { open, to }), handed)
    }

    /// A connection `me` accepted: back to serve it here, or None if it
    /// went to a worker serving fewer.
    fn place(&self, me: usize, stream: TcpStream, peer: SocketAddr) -> Option<TcpStream> {
        let open = &self.open;
        let least = (0..open.workers()).min_by_key(|&worker| open.of(worker)).unwrap_or(me);
        if open.of(least) < open.of(me) {
            open.opened(least);
            match stream.into_std() {
                Ok(stream) => match self.to[least].send((stream, peer)) {
                    Ok(()) => return None,
                    // That worker has stopped: serve it here after all.
                    Err(returned) => {
                        open.closed(least);
                        open.opened(me);
                        return TcpStream::from_std(returned.0.0).ok().or_else(|| {
                            open.closed(me);
                            None
                        });
                    }
                },
                Err(_) => {
                    open.closed(least);
                    return None;
                }
            }
        }
        open.opened(me);
        Some(stream)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.balance.open.closed(self.worker);
    }
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

/// A connection with bytes already read from it put back in front, for the
/// general engine to read again.
struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl Rewind {
    fn new(prefix: Bytes, inner: TcpStream) -> Rewind {
        Rewind { prefix, inner }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let bytes = self.prefix.split_to(n);
            buf.put_slice(&bytes);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
