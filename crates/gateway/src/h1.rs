//! The HTTP/1 engine, for what nearly every request is — a site's page or
//! API call with a small body, answered by the site — proxied the way nginx
//! does it: the request head parsed in place (httparse), rewritten into one
//! buffer with its body and written to a pooled upstream connection in one
//! call; the response head rewritten and sent with the body bytes that came
//! with it in one call; the rest of the body copied as it arrives. No header
//! maps, no tasks or channels between the two connections.
//!
//! Every decision and every header it writes is the pipeline's
//! ([`crate::pipeline`]): this engine parses, moves bytes, and keeps the
//! connections (its pool: [`crate::pool`]).
//!
//! # Invariants
//! - A request body is read whole before anything is answered, so the
//!   connection stays in step for the next request whatever the answer.
//! - A response body is forwarded as the site framed it, and the client's
//!   connection is closed after one that ends when the site closes.
//!
//! # Deliberately absent
//! Anything else — HTTP/2 and HTTP/1.0, upgrades, `Expect`, chunked or
//! large request bodies, the platform's own pages and `/.commons/`,
//! malformed, oversized or unreadable heads — is handed, with the bytes
//! already read, to the general engine for the rest of the connection's
//! life ([`Outcome::Fallback`]).

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use httparse::{ParserConfig, Status};
use memchr::memmem::Finder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::error::GatewayError;
use crate::pipeline::{
    Answer, ClientBody, Destination, Facts, HeadWriter, Listener, Memo, Pipeline, UpstreamBody, client_head,
    content_length, upstream_head,
};
use crate::pool::Pool;
use crate::routes::SiteRoute;

/// Most headers in a request or response this engine parses.
const HEADERS_MAX: usize = 100;
/// Largest request body this engine holds in memory; larger ones go the
/// general (streaming) way.
const BODY_MAX: u64 = 64 << 10;
/// Largest response head read from a site.
const RESPONSE_HEAD_MAX: usize = 1 << 20;
/// Most attempts at a request: a connection refused, or a pooled one the
/// site had closed, is tried again on another.
const ATTEMPTS_MAX: u32 = 3;

/// How a connection left this engine.
pub(crate) enum Outcome {
    /// It is finished.
    Closed,
    /// The general engine takes over, with these bytes already read.
    Fallback(Bytes),
}

/// How a response body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A site's answer (its head already rewritten for the client, the body
/// bytes that came with it still in the read buffer), and the connection
/// it came on.
struct Reply {
    conn: TcpStream,
    addr: SocketAddr,
    framing: Framing,
    /// The site keeps the connection open after this answer.
    reusable: bool,
    status: u16,
}

/// Serves requests on `stream` for as long as they suit this engine.
pub(crate) async fn serve(
    pipeline: &Pipeline,
    stream: &mut TcpStream,
    peer: &str,
    pool: &Pool,
    stopped: &mut watch::Receiver<bool>,
) -> Outcome {
    let config = &pipeline.config;
    let mut buf = BytesMut::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(8192);
    let mut site = SiteSide { buf: BytesMut::with_capacity(16 << 10), wait: Deadline::new() };
    let mut memo = Memo::default();
    let mut client_wait = Deadline::new();
    loop {
        // A whole request head, within the header timeout (which is also
        // how long a kept-alive connection may stay idle): found by its
        // blank line, parsed once.
        let head_deadline = Instant::now() + config.header_read_timeout;
        let head_len = loop {
            if let Some(end) = head_end(&buf) {
                break end;
            }
            if buf.len() >= config.header_limit_bytes {
                // Too large (or not HTTP/1): the general engine answers
                // (431, 400) or speaks it.
                return Outcome::Fallback(buf.freeze());
            }
            if buf.is_empty() && *stopped.borrow() {
                return Outcome::Closed;
            }
            if buf.capacity() - buf.len() < 2048 {
                buf.reserve(8192);
            }
            let read = tokio::select! {
                read = client_wait.until(head_deadline, stream.read_buf(&mut buf)) => read,
                _ = stopped.changed(), if buf.is_empty() => return Outcome::Closed,
            };
            match read {
                Some(Ok(n)) if n > 0 => {}
                _ => return Outcome::Closed,
            }
        };
        let head = buf.split_to(head_len).freeze();
        let mut headers = [const { MaybeUninit::uninit() }; HEADERS_MAX];
        let mut request = httparse::Request::new(&mut []);
        // Malformed, HTTP/2's preface, or more headers than this engine
        // keeps: the general engine answers (400) or speaks it.
        if request.parse_with_uninit_headers(&head, &mut headers) != Ok(Status::Complete(head_len)) {
            return fallback(&head, &buf);
        }
        let (method, path) = (request.method.unwrap_or(""), request.path.unwrap_or(""));
        let lines = || request.headers.iter().map(|h| (h.name, h.value));
        let facts = Facts::read(method, path, None, lines());
        let general = request.version != Some(1)
            || !path.starts_with('/')
            || facts.transfer_encoding
            || facts.expect
            || facts.upgrade.is_some()
            || facts.unreadable
            || facts.length_invalid
            || facts.content_length.is_some_and(|n| n > BODY_MAX);
        if general {
            return fallback(&head, &buf);
        }
        let route = match pipeline.route(&facts, Listener::Public) {
            Ok(Destination::Site(route)) => Ok(route),
            Ok(Destination::Platform | Destination::SiteEndpoint(_)) => return fallback(&head, &buf),
            Err(error) => Err(error),
        };
        let started = Instant::now();
        let keep_alive = !facts.close;

        // Its body, whole.
        let body_len = facts.content_length.unwrap_or(0) as usize;
        let body_deadline = started + config.header_read_timeout;
        while buf.len() < body_len {
            buf.reserve(body_len - buf.len());
            match client_wait.until(body_deadline, stream.read_buf(&mut buf)).await {
                Some(Ok(n)) if n > 0 => {}
                _ => return Outcome::Closed,
            }
        }
        let body = buf.split_to(body_len);

        let admitted = match route
            .map_err(Answer::Refused)
            .and_then(|route| pipeline.admit(&facts, route, peer, Listener::Public, &mut memo))
        {
            Ok(admitted) => admitted,
            Err(Answer::Refused(error)) => {
                if !answer_error(pipeline, stream, &error, keep_alive).await || !keep_alive {
                    return Outcome::Closed;
                }
                continue;
            }
            Err(Answer::Redirect(location)) => {
                out.clear();
                out.extend_from_slice(b"HTTP/1.1 303 See Other\r\nlocation: ");
                out.extend_from_slice(location.as_bytes());
                out.extend_from_slice(b"\r\ncontent-length: 0\r\n");
                finish_head(&mut out, keep_alive);
                pipeline.metrics.response(303);
                if stream.write_all(&out).await.is_err() || !keep_alive {
                    return Outcome::Closed;
                }
                continue;
            }
        };

        // The request as the site gets it.
        out.clear();
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let framing = UpstreamBody::of(facts.content_length, Some(body_len as u64));
        upstream_head(&facts, &admitted, lines(), framing, &mut out);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);

        let reply = match exchange(pipeline, &admitted.route, &mut out, &mut site, pool, method, keep_alive).await {
            Ok(reply) => reply,
            Err(error) => {
                drop(admitted);
                if !answer_error(pipeline, stream, &error, keep_alive).await || !keep_alive {
                    return Outcome::Closed;
                }
                continue;
            }
        };
        // The answer is about to leave: record it first.
        if let Err(error) = pipeline.meter(&admitted, started) {
            drop(admitted);
            if !answer_error(pipeline, stream, &error, keep_alive).await || !keep_alive {
                return Outcome::Closed;
            }
            continue;
        }
        drop(admitted);
        match relay(pipeline, stream, reply, keep_alive, &mut out, &mut site, pool).await {
            Some(true) => {}
            _ => return Outcome::Closed,
        }
    }
}

/// Sends the request in `out` to an instance of `route` and reads the
/// head of its answer into `buf`, then rewrites that head for the
/// client into `out`. A connection refused, or a pooled one found
/// closed before any answer, is tried again on another (at most
/// [`ATTEMPTS_MAX`] attempts).
async fn exchange(
    pipeline: &Pipeline,
    route: &SiteRoute,
    out: &mut Vec<u8>,
    site: &mut SiteSide,
    pool: &Pool,
    method: &str,
    keep_alive: bool,
) -> Result<Reply, GatewayError> {
    let SiteSide { buf, wait } = site;
    let timeout = pipeline.config.upstream_timeout;
    let deadline = Instant::now() + timeout;
    let timed_out =
        || GatewayError::UpstreamTimeout { site: route.site.clone(), timeout_ms: timeout.as_millis() as u64 };
    let down = |reason: String| GatewayError::UpstreamDown { site: route.site.clone(), reason };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let instance = route.choose().ok_or_else(|| down("it has no instances".into()))?;
        let addr = instance.addr;
        let (mut conn, reused) = match pool.take(addr) {
            Some(conn) => (conn, true),
            None => match wait.until(deadline, pipeline.instances.connect(addr)).await {
                None => return Err(timed_out()),
                Some(Err(e)) => {
                    instance.set_healthy(false);
                    if attempts < ATTEMPTS_MAX && route.any_healthy() {
                        continue;
                    }
                    return Err(down(e.to_string()));
                }
                Some(Ok(conn)) => {
                    let _ = conn.set_nodelay(true);
                    (conn, false)
                }
            },
        };
        if let Err(e) = conn.write_all(out).await {
            if reused && attempts < ATTEMPTS_MAX {
                continue;
            }
            return Err(down(e.to_string()));
        }
        buf.clear();
        if buf.capacity() < 4096 {
            buf.reserve(16 << 10);
        }
        let parsed = loop {
            // Parsed once the blank line that ends it has come.
            let Some(end) = head_end(buf) else {
                if buf.len() >= RESPONSE_HEAD_MAX {
                    return Err(down("its response head is over 1 MiB".into()));
                }
                match wait.until(deadline, conn.read_buf(buf)).await {
                    None => return Err(timed_out()),
                    Some(Ok(0)) | Some(Err(_)) => break None,
                    Some(Ok(_)) => continue,
                }
            };
            let mut headers = [const { MaybeUninit::uninit() }; HEADERS_MAX];
            let mut response = httparse::Response::new(&mut []);
            match ParserConfig::default().parse_response_with_uninit_headers(&mut response, &buf[..end], &mut headers) {
                Ok(Status::Complete(n)) if n == end => {}
                Ok(_) => return Err(down("its response head is not HTTP".into())),
                Err(e) => return Err(down(format!("its response is not HTTP: {e}"))),
            }
            let code = response.code.unwrap_or(0);
            if (100..200).contains(&code) && code != 101 {
                // Interim (100, 103): skip it, read the answer.
                buf.advance(end);
                continue;
            }
            if code == 101 {
                return Err(down("it switched protocols unasked".into()));
            }
            let framing = framing(&response, method);
            let close = !keep_alive || framing == Framing::UntilClose;
            out.clear();
            response_head(&response, framing, close, pipeline.config.public_scheme == "https", out);
            break Some((end, framing, reusable(&response), code));
        };
        let Some((head_len, framing, reusable, status)) = parsed else {
            // Closed before answering: a pooled connection the site had
            // just closed, if nothing came at all.
            if reused && buf.is_empty() && attempts < ATTEMPTS_MAX && idempotent(method) {
                continue;
            }
            return Err(down("it closed the connection before answering".into()));
        };
        instance.set_healthy(true);
        buf.advance(head_len);
        return Ok(Reply { conn, addr, framing, reusable, status });
    }
}

/// Sends the site's answer on to the client; whether the client's
/// connection may serve another request (None: it broke).
/// `out` holds the rewritten head, `buf` the body bytes read with it.
async fn relay(
    pipeline: &Pipeline,
    stream: &mut TcpStream,
    mut reply: Reply,
    keep_alive: bool,
    out: &mut Vec<u8>,
    site: &mut SiteSide,
    pool: &Pool,
) -> Option<bool> {
    let SiteSide { buf, wait } = site;
    let timeout = pipeline.config.upstream_timeout;
    let close = !keep_alive || reply.framing == Framing::UntilClose;
    pipeline.metrics.response(reply.status);

    // The body bytes that came with the head go out with it.
    let mut chunked = ChunkedEnd::default();
    let mut left = match reply.framing {
        Framing::Empty => Some(0),
        Framing::Length(n) => Some(n),
        Framing::Chunked | Framing::UntilClose => None,
    };
    let mut done = forward(buf, reply.framing, &mut left, &mut chunked, out);
    if stream.write_all(out).await.is_err() {
        return None;
    }
    while !done {
        buf.clear();
        buf.reserve(16 << 10);
        match wait.until(Instant::now() + timeout, reply.conn.read_buf(buf)).await {
            Some(Ok(0)) if reply.framing == Framing::UntilClose => {
                let _ = stream.shutdown().await;
                return Some(false);
            }
            Some(Ok(n)) if n > 0 => {}
            // The site broke off mid-answer: so must we.
            _ => return None,
        }
        out.clear();
        done = forward(buf, reply.framing, &mut left, &mut chunked, out);
        if stream.write_all(out).await.is_err() {
            return None;
        }
    }
    if reply.reusable && buf.is_empty() {
        pool.put(reply.addr, reply.conn);
    }
    if close {
        let _ = stream.shutdown().await;
        return Some(false);
    }
    Some(true)
}

/// Writes an error page; false if the client is gone.
async fn answer_error(pipeline: &Pipeline, stream: &mut TcpStream, error: &GatewayError, keep_alive: bool) -> bool {
    tracing::debug!(error = %error, "request refused");
    let page = error.page();
    pipeline.metrics.response(page.status().as_u16());
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(page.status().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(page.status().canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in page.headers() {
        out.header(name.as_str(), value.as_bytes());
    }
    out.header("content-length", page.body().len().to_string().as_bytes());
    finish_head(&mut out, keep_alive);
    out.extend_from_slice(page.body());
    stream.write_all(&out).await.is_ok()
}

/// Moves the body bytes in `buf` that belong to this answer into `out`;
/// whether the body is complete. Bytes past its end stay in `buf`.
fn forward(
    buf: &mut BytesMut,
    framing: Framing,
    left: &mut Option<u64>,
    chunked: &mut ChunkedEnd,
    out: &mut Vec<u8>,
) -> bool {
    match framing {
        Framing::Empty => true,
        Framing::Length(_) => {
            let n = left.unwrap_or(0);
            let take = (buf.len() as u64).min(n) as usize;
            out.extend_from_slice(&buf.split_to(take));
            *left = Some(n - take as u64);
            n == take as u64
        }
        Framing::Chunked => match chunked.scan(buf) {
            Some(end) => {
                out.extend_from_slice(&buf.split_to(end));
                true
            }
            None => {
                out.extend_from_slice(&buf.split_to(buf.len()));
                false
            }
        },
        Framing::UntilClose => {
            out.extend_from_slice(&buf.split_to(buf.len()));
            false
        }
    }
}

/// The site's response head as the client gets it: its status line, the
/// headers the pipeline passes for a body forwarded with `framing`, and
/// `connection: close` when the client's connection ends after it.
fn response_head(
    response: &httparse::Response<'_, '_>,
    framing: Framing,
    close: bool,
    secure: bool,
    out: &mut Vec<u8>,
) {
    let status = response.code.unwrap_or(502);
    out.extend_from_slice(b"HTTP/1.1 ");
    // httparse gives three digits.
    let digits = [status / 100, status / 10 % 10, status % 10].map(|d| b'0' + d as u8);
    out.extend_from_slice(&digits);
    out.push(b' ');
    out.extend_from_slice(response.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let body = match framing {
        Framing::Empty => ClientBody::Bodiless,
        Framing::Length(n) => ClientBody::Length(n),
        Framing::Chunked => ClientBody::Encoded,
        Framing::UntilClose => ClientBody::UntilClose,
    };
    client_head(response.headers.iter().map(|h| (h.name, h.value)), body, secure, out);
    finish_head(out, !close);
}

/// Finds where a chunked body ends, across reads, without decoding it
/// (it is forwarded as it is).
#[derive(Default)]
struct ChunkedEnd {
    state: ChunkState,
    size: u64,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum ChunkState {
    /// Hex digits of a chunk size.
    #[default]
    Size,
    /// A chunk extension, up to the end of the line.
    Extension,
    /// The LF after a size line.
    SizeLf,
    /// Chunk data still to pass.
    Data,
    /// The CR, then the LF, after chunk data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (after the last chunk).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// The LF that ends a trailer line, or the whole body.
    TrailerLf {
        last: bool,
    },
    Done,
}

impl ChunkedEnd {
    /// Scans `bytes` (what follows what was scanned before): the offset
    /// just past the body's end if it is in there. A malformed body is
    /// treated as ending nowhere (the site's close ends it).
    fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.size = self.size.checked_mul(16)?.checked_add(digit)?;
                    }
                    b';' | b' ' | b'\t' => self.state = ChunkState::Extension,
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => self.after_size_line(),
                    _ => return None,
                },
                ChunkState::Extension => match b {
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => self.after_size_line(),
                    _ => {}
                },
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return None;
                    }
                    self.after_size_line();
                }
                ChunkState::Data => {
                    let take = (self.size).min((bytes.len() - i) as u64);
                    self.size -= take;
                    i += take as usize;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => match b {
                    b'\r' => self.state = ChunkState::DataLf,
                    b'\n' => self.state = ChunkState::Size,
                    _ => return None,
                },
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return None;
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerStart => match b {
                    b'\r' => self.state = ChunkState::TrailerLf { last: true },
                    b'\n' => {
                        self.state = ChunkState::Done;
                        return Some(i + 1);
                    }
                    _ => self.state = ChunkState::Trailer,
                },
                ChunkState::Trailer => {
                    if b == b'\r' {
                        self.state = ChunkState::TrailerLf { last: false };
                    } else if b == b'\n' {
                        self.state = ChunkState::TrailerStart;
                    }
                }
                ChunkState::TrailerLf { last } => {
                    if b != b'\n' {
                        return None;
                    }
                    if last {
                        self.state = ChunkState::Done;
                        return Some(i + 1);
                    }
                    self.state = ChunkState::TrailerStart;
                }
                ChunkState::Done => return Some(i),
            }
            i += 1;
        }
        None
    }

    fn after_size_line(&mut self) {
        self.state = if self.size == 0 { ChunkState::TrailerStart } else { ChunkState::Data };
    }
}

/// What a client connection keeps for talking to sites, across requests.
struct SiteSide {
    /// Reads from the site.
    buf: BytesMut,
    wait: Deadline,
}

/// A connection's timer for one kind of wait, armed once and moved on
/// only when it goes off early. Arming a tokio timer and disarming it takes
/// the timer wheel's lock each time; at one or two waits per request that
/// was a measurable share of the fast path. A connection's successive
/// deadlines of one kind only move later (now plus a fixed timeout), so
/// the armed timer can only be early, never late.
struct Deadline {
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new() -> Deadline {
        // Armed on first use.
        Deadline { sleep: Box::pin(tokio::time::sleep(std::time::Duration::ZERO)) }
    }

    /// `work`'s output, or None if `at` came first.
    async fn until<F: Future>(&mut self, at: Instant, work: F) -> Option<F::Output> {
        let at = tokio::time::Instant::from_std(at);
        let mut work = std::pin::pin!(work);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            if self.sleep.deadline() > at {
                self.sleep.as_mut().reset(at);
            }
            while self.sleep.as_mut().poll(cx).is_ready() {
                if tokio::time::Instant::now() >= at {
                    return Poll::Ready(None);
                }
                self.sleep.as_mut().reset(at);
            }
            Poll::Pending
        })
        .await
    }
}

/// Where a head ends: just past its first empty line (CRLF or bare LF
/// line ends, as httparse accepts).
fn head_end(buf: &[u8]) -> Option<usize> {
    static CRLF: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\r\n"));
    static LF: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\n"));
    let crlf = CRLF.find(buf);
    // A bare LF blank line counts if it comes first.
    let within = crlf.map_or(buf, |at| &buf[..at + 2]);
    match LF.find(within) {
        Some(at) => Some(at + 2),
        None => crlf.map(|at| at + 3),
    }
}

fn fallback(head: &[u8], rest: &[u8]) -> Outcome {
    let mut bytes = BytesMut::with_capacity(head.len() + rest.len());
    bytes.extend_from_slice(head);
    bytes.extend_from_slice(rest);
    Outcome::Fallback(bytes.freeze())
}

fn framing(response: &httparse::Response<'_, '_>, method: &str) -> Framing {
    let code = response.code.unwrap_or(0);
    if method == "HEAD" || code == 204 || code == 304 {
        return Framing::Empty;
    }
    let mut length = None;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked is last when it is there at all.
            let chunked = std::str::from_utf8(header.value)
                .is_ok_and(|v| v.rsplit(',').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked")));
            return if chunked { Framing::Chunked } else { Framing::UntilClose };
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(header.value).ok().and_then(content_length) {
                Some(n) if length.is_none_or(|m| m == n) => length = Some(n),
                _ => return Framing::UntilClose,
            }
        }
    }
    length.map_or(Framing::UntilClose, Framing::Length)
}

/// Whether the site keeps the connection open after this answer.
fn reusable(response: &httparse::Response<'_, '_>) -> bool {
    response.version == Some(1)
        && !response.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("connection")
                && std::str::from_utf8(h.value)
                    .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
        })
}

fn idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE")
}

/// A head is written as it goes on the wire.
impl HeadWriter for Vec<u8> {
    fn header(&mut self, name: &str, value: &[u8]) {
        self.extend_from_slice(name.as_bytes());
        self.extend_from_slice(b": ");
        self.extend_from_slice(value);
        self.extend_from_slice(b"\r\n");
    }
}

fn finish_head(out: &mut Vec<u8>, keep_alive: bool) {
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end_of(body: &[u8], pieces: usize) -> Option<usize> {
        let mut scanner = ChunkedEnd::default();
        let step = body.len().div_ceil(pieces).max(1);
        let mut at = 0;
        for piece in body.chunks(step) {
            if let Some(end) = scanner.scan(piece) {
                return Some(at + end);
            }
            at += piece.len();
        }
        None
    }

    #[test]
    fn the_end_of_a_chunked_body_is_found_in_any_pieces() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nNEXT";
        let trailers = b"3\r\nabc\r\n0\r\nx-sum: 1\r\nx-more: 2\r\n\r\nNEXT";
        for pieces in 1..body.len() {
            assert_eq!(end_of(body, pieces), Some(body.len() - 4), "{pieces} pieces");
            assert_eq!(end_of(trailers, pieces.min(trailers.len())), Some(trailers.len() - 4), "{pieces} pieces");
        }
        assert_eq!(end_of(b"5\r\nhel", 1), None);
        assert_eq!(end_of(b"zz\r\n", 1), None, "malformed");
    }

    #[test]
    fn a_head_ends_at_its_first_blank_line_whatever_its_line_ends() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nbody\r\n\r\n"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody\n\n"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\n\r\n"), Some(26));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), None);
        assert_eq!(head_end(b""), None);
        // Each one parses whole, as httparse sees it.
        for head in [&b"GET / HTTP/1.1\nHost: a\n\n"[..], b"GET / HTTP/1.1\r\nHost: a\n\r\n"] {
            let mut headers = [httparse::EMPTY_HEADER; 4];
            let parsed = httparse::Request::new(&mut headers).parse(head);
            assert_eq!(parsed, Ok(Status::Complete(head.len())));
            assert_eq!(head_end(head), Some(head.len()));
        }
    }
}
