//! The general engine: hyper's HTTP/1 and HTTP/2 server, for every
//! connection the HTTP/1 engine hands over (HTTP/2, HTTP/1.0, upgrades,
//! `Expect`, chunked or large bodies, the platform's own pages and
//! `/.commons/`, odd heads) and for the internal listener; hyper's pooled
//! client towards the sites.
//!
//! Every decision and every header it writes is the pipeline's
//! ([`crate::pipeline`]); the platform's pages are the portal's
//! ([`crate::login`]). This engine moves requests and bodies between the
//! two hyper halves.
//!
//! # Invariants
//! - Towards a site every request is HTTP/1.1, its body framed as the
//!   pipeline says (hyper's client follows the framing headers it is given).
//! - A request body over the limit is refused with 413, whether it says
//!   its length or not.
//! - An upgrade's two sides are joined only once the site has agreed (101).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::body::{Body, BoxError};
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::login::{Portal, redirect};
use crate::pipeline::{
    Answer, ClientBody, Destination, Facts, HeadWriter, Listener, Memo, Pipeline, UpstreamBody, client_head,
    upstream_head,
};

/// Most attempts at a request without a body, when instances refuse
/// connections.
const ATTEMPTS_MAX: u32 = 3;

/// A worker's pool of keep-alive connections to upstreams.
pub(crate) type UpstreamClient = Client<Dial, Body>;

/// A worker's client towards the sites.
pub(crate) fn upstream_client(config: &GatewayConfig, instances: &Arc<netns::Directory>) -> UpstreamClient {
    let connector = Dial { instances: instances.clone(), timeout: config.upstream_timeout };
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// Connects to instances as the HTTP/1 engine does: through the directory
/// of instances' namespaces, within the upstream timeout, without Nagle.
#[derive(Clone)]
pub(crate) struct Dial {
    instances: Arc<netns::Directory>,
    timeout: Duration,
}

impl tower_service::Service<hyper::Uri> for Dial {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let (instances, timeout) = (self.instances.clone(), self.timeout);
        Box::pin(async move {
            let addr: SocketAddr = uri.authority().and_then(|a| a.as_str().parse().ok()).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{uri}: not an instance's address"))
            })?;
            let stream = tokio::time::timeout(timeout, instances.connect(addr)).await.map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connecting to {addr} timed out"))
            })??;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Serves one client connection (`io`, from `peer`) until it closes, or
/// until `stopped`, after the requests in flight.
pub(crate) async fn serve<I>(
    pipeline: Arc<Pipeline>,
    portal: Arc<Portal>,
    client: UpstreamClient,
    io: I,
    peer: SocketAddr,
    listener: Listener,
    mut stopped: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(pipeline.config.header_read_timeout)
        .max_buf_size(pipeline.config.header_limit_bytes.max(8192));
    let peer: Arc<str> = peer.ip().to_string().into();
    let service = hyper::service::service_fn(move |request| {
        let (pipeline, portal, client, peer) = (pipeline.clone(), portal.clone(), client.clone(), peer.clone());
        async move { Ok::<_, Infallible>(handle(&pipeline, &portal, request, &client, &peer, listener).await) }
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
}

async fn handle(
    pipeline: &Pipeline,
    portal: &Portal,
    request: Request<Incoming>,
    client: &UpstreamClient,
    peer: &str,
    listener: Listener,
) -> Response<Body> {
    let response = match proxy(pipeline, portal, request, client, peer, listener).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(error = %error, "request refused");
            error.response().map(|body| body.map_err(|never| match never {}).boxed())
        }
    };
    pipeline.metrics.response(response.status().as_u16());
    response
}

async fn proxy(
    pipeline: &Pipeline,
    portal: &Portal,
    mut request: Request<Incoming>,
    client: &UpstreamClient,
    peer: &str,
    listener: Listener,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    let (admitted, upgrading) = {
        let inbound = lines(request.headers());
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let authority = request.uri().authority().map(|a| a.as_str());
        let facts = Facts::read(request.method().as_str(), path, authority, inbound.iter().copied());
        let route = match pipeline.route(&facts, listener)? {
            Destination::Site(route) => route,
            Destination::Platform => {
                drop(inbound);
                return Ok(portal.platform(pipeline, request, peer).await);
            }
            Destination::SiteEndpoint(route) => {
                let host = facts.host.unwrap_or("");
                return Ok(portal.site_endpoint(pipeline, &request, &route, host).await);
            }
        };
        let admitted = match pipeline.admit(&facts, route, peer, listener, &mut Memo::default()) {
            Ok(admitted) => admitted,
            Err(Answer::Refused(error)) => return Err(error),
            Err(Answer::Redirect(location)) => return Ok(redirect(&location, Vec::new())),
        };
        let body = request.body();
        let framing = UpstreamBody::of(facts.content_length, body.size_hint().exact());
        let mut headers = Headers(HeaderMap::with_capacity(inbound.len() + 3));
        upstream_head(&facts, &admitted, inbound.iter().copied(), framing, &mut headers);
        let upgrading = facts.upgrade.is_some();
        drop(inbound);
        *request.headers_mut() = headers.0;
        (admitted, upgrading)
    };
    // An upgrade (WebSocket): the client's side of the connection is taken
    // over once the site agrees.
    let client_side = upgrading.then(|| hyper::upgrade::on(&mut request));
    let limit = pipeline.config.body_limit_bytes;
    let route = admitted.route.clone();

    // A connection refused never reached the site, so a request without
    // a body is tried on the next healthy instance.
    let path_and_query = request.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let (mut parts, body) = request.into_parts();
    parts.version = hyper::Version::HTTP_11;
    let spare = body.is_end_stream().then(|| (parts.method.clone(), parts.headers.clone()));
    let mut first = Some(Request::from_parts(parts, Limited::new(body, limit as usize).boxed()));
    let timeout = pipeline.config.upstream_timeout;
    let mut attempts = 0;
    let response = loop {
        let instance = route.choose().ok_or_else(|| GatewayError::UpstreamDown {
            site: route.site.clone(),
            reason: "it has no instances".into(),
        })?;
        let mut request = match (first.take(), &spare) {
            (Some(request), _) => request,
            (None, Some((method, headers))) => {
                let mut request = Request::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed());
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
                    if spare.is_some() && attempts < ATTEMPTS_MAX && route.any_healthy() {
                        continue;
                    }
                }
                if caused_by_the_limit(&error) {
                    return Err(GatewayError::BodyTooLarge(limit));
                }
                let reason = std::error::Error::source(&error).map_or_else(|| error.to_string(), |s| s.to_string());
                return Err(GatewayError::UpstreamDown { site: route.site.clone(), reason });
            }
            Ok(Ok(response)) => {
                instance.set_healthy(true);
                break response;
            }
        }
    };

    let switched = response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS;
    if switched && client_side.is_none() {
        return Err(GatewayError::UpstreamDown {
            site: route.site.clone(),
            reason: "it switched protocols unasked".into(),
        });
    }
    // The answer is about to leave: record it first.
    pipeline.meter(&admitted, started)?;
    drop(admitted);

    let mut response = response;
    let secure = pipeline.config.public_scheme == "https";
    if switched && let Some(client_side) = client_side {
        // Tunnel the two upgraded connections to each other until either
        // side closes.
        let site_side = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(client), Ok(site)) = tokio::join!(client_side, site_side) {
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(site)).await;
            }
        });
        let (mut parts, body) = response.into_parts();
        let mut headers = Headers(HeaderMap::with_capacity(parts.headers.len()));
        client_head(lines(&parts.headers).into_iter(), ClientBody::Upgraded, secure, &mut headers);
        parts.headers = headers.0;
        return Ok(Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed()));
    }
    let (mut parts, body) = response.into_parts();
    let mut headers = Headers(HeaderMap::with_capacity(parts.headers.len()));
    client_head(lines(&parts.headers).into_iter(), ClientBody::Reframed, secure, &mut headers);
    parts.headers = headers.0;
    Ok(Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed()))
}

/// A header map's lines, as the pipeline reads them.
fn lines(headers: &HeaderMap) -> Vec<(&str, &[u8])> {
    headers.iter().map(|(name, value)| (name.as_str(), value.as_bytes())).collect()
}

/// Whether a request failed because its body went over the limit.
fn caused_by_the_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<LengthLimitError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// A head written into a header map.
struct Headers(HeaderMap);

impl HeadWriter for Headers {
    fn header(&mut self, name: &str, value: &[u8]) {
        // What the pipeline writes came in as a header, or is its own: a
        // name or value hyper would not take cannot occur, and is dropped
        // rather than sent if it did.
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
            self.0.append(name, value);
        }
    }
}
