//! The control listener: `/metrics`, `/healthz`, and the agent protocol of
//! joined nodes (`agent::protocol`): `POST /agent/v2/sync` and
//! `GET /agent/v2/bundles/<id>`, each with the node's join token.
//!
//! HTTPS only ([`crate::tls`]): a plain-HTTP request gets its connection
//! closed. The TLS handshake and each request head must arrive within the
//! header timeout, a sync body within [`BODY_TIMEOUT`]; at most
//! `control_connections_max` connections are served at once, and those
//! beyond are closed as they arrive.
//!
//! A sync is authenticated by its token (the node it names), recorded
//! (resource use for the node's provider), observed by `control`, and
//! answered with the node's assignments: each with the id of its app's
//! bundle, packed once per generation and served by id.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::bundle;
use agent::protocol::{PROTOCOL_VERSION, SYNC_BYTES_MAX, SyncRequest, SyncResponse, WireAssignment};
use bytes::Bytes;
use commons_core::token_sha256;
use control::{Failure, InstanceReport, Report};
use gateway::Gateway;
use http_body_util::{BodyExt, Full};
use store::{NodeRecord, ResourceTotals};
use tokio::net::TcpListener;

use crate::control_loop::{Shared, lock};
use crate::{StoreHandle, current_period};

/// Back-off after a failed accept (out of file descriptors, say), so a
/// listener never spins a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long after a site leaves a node that node's usage of it is taken.
const USAGE_GRACE_MS: u64 = 60_000;
/// How long a sync's body may take to arrive once its head has.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(crate) struct ControlApi {
    pub gateway: Gateway,
    pub store: StoreHandle,
    pub shared: Arc<Mutex<Shared>>,
    pub env: Vec<(String, String)>,
    /// Where joined nodes reach the internal listener (see [`InternalUrl`]).
    pub internal: InternalUrl,
    /// Each node's first sync since start (wall clock, ms): the window of
    /// its first resource report, when none was ever accepted.
    pub first_sync: Arc<Mutex<std::collections::HashMap<String, u64>>>,
}

/// How a joined node is told the internal listener's URL.
#[derive(Clone, Debug)]
pub(crate) enum InternalUrl {
    /// As the operator configured it (`internal_url`).
    Configured(String),
    /// The listener takes every address: the one the node reached this
    /// control listener at, with the listener's port.
    AsReached(u16),
    /// The listener's own address.
    Bound(String),
}

impl InternalUrl {
    fn for_connection(&self, local: std::net::SocketAddr) -> String {
        match self {
            InternalUrl::Configured(url) | InternalUrl::Bound(url) => url.clone(),
            InternalUrl::AsReached(port) => format!("http://{}", std::net::SocketAddr::new(local.ip(), *port)),
        }
    }
}

/// The control listener's limits.
#[derive(Clone)]
pub(crate) struct Limits {
    pub tls: Arc<rustls::ServerConfig>,
    pub header_timeout: Duration,
    pub connections_max: usize,
}

type Answer = (u16, &'static str, Bytes);

fn text(status: u16, body: impl Into<String>) -> Answer {
    (status, "text/plain; charset=utf-8", Bytes::from(body.into()))
}

pub(crate) async fn serve(listener: TcpListener, api: ControlApi, limits: Limits) {
    let acceptor = tokio_rustls::TlsAcceptor::from(limits.tls.clone());
    let open = Arc::new(tokio::sync::Semaphore::new(limits.connections_max));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "the control listener cannot accept; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Beyond the cap, a connection is closed as it comes.
        let Ok(seat) = open.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "the control listener is serving as many connections as it may; closing one");
            drop(stream);
            continue;
        };
        let Ok(local) = stream.local_addr() else { continue };
        let (api, acceptor, header_timeout) = (api.clone(), acceptor.clone(), limits.header_timeout);
        tokio::spawn(async move {
            let _seat = seat;
            let stream = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                // Plain HTTP, a failed or a slow handshake: nothing to say.
                Ok(Err(_)) | Err(_) => return,
            };
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let api = api.clone();
                async move {
                    let (status, kind, body) = api.answer(request, peer.ip(), local).await;
                    let mut response = hyper::Response::new(Full::new(body));
                    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("a status");
                    response
                        .headers_mut()
                        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(kind));
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

impl ControlApi {
    async fn answer(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
        peer: IpAddr,
        local: std::net::SocketAddr,
    ) -> Answer {
        let path = request.uri().path().to_owned();
        let post = request.method() == hyper::Method::POST;
        match path.as_str() {
            "/metrics" => text(200, self.gateway.metrics()),
            "/healthz" => text(200, "ok\n"),
            "/agent/v2/sync" if post => self.sync(request, peer, local).await,
            "/agent/v1/sync" => text(
                410,
                format!(
                    "agent protocol 1 is gone; this control plane speaks {PROTOCOL_VERSION}: upgrade the node's commons\n"
                ),
            ),
            _ => match path.strip_prefix("/agent/v2/bundles/") {
                Some(id) if request.method() == hyper::Method::GET => self.bundle(&request, id).await,
                _ => text(404, "not found\n"),
            },
        }
    }

    async fn node_of(&self, request: &hyper::Request<hyper::body::Incoming>) -> Result<NodeRecord, Answer> {
        let token = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(token_sha256);
        let Some(hash) = token else {
            return Err(text(401, "a join token is needed: create one with `commons node token NODE`\n"));
        };
        match self.store.call(move |s| s.node_by_token(&hash)).await {
            Ok(Some(node)) => Ok(node),
            Ok(None) => Err(text(401, "unknown join token: create one with `commons node token NODE`\n")),
            Err(e) => Err(text(500, format!("{e}\n"))),
        }
    }

    async fn sync(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
        peer: IpAddr,
        local: std::net::SocketAddr,
    ) -> Answer {
        let node = match self.node_of(&request).await {
            Ok(node) => node,
            Err(answer) => return answer,
        };
        let body = http_body_util::Limited::new(request.into_body(), SYNC_BYTES_MAX).collect();
        let body = match tokio::time::timeout(BODY_TIMEOUT, body).await {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(e)) => return text(413, format!("the sync is too large: {e}\n")),
            Err(_) => return text(408, format!("the sync's body did not arrive within {BODY_TIMEOUT:?}\n")),
        };
        let sync: SyncRequest = match serde_json::from_slice(&body) {
            Ok(sync) => sync,
            Err(e) => return text(400, format!("malformed sync: {e}\n")),
        };
        if let Err(e) = sync.check() {
            return text(400, e + "\n");
        }
        let id = node.id.clone();
        let reports = match self.store.call(move |s| s.node_reports(&id)).await {
            Ok(reports) => reports,
            Err(e) => return text(500, format!("{e}\n")),
        };
        let wall = crate::now_ms();
        // Every sync, not only one with usage: a node's first report covers
        // the time since it first came.
        let first_sync = *lock(&self.first_sync).entry(node.id.clone()).or_insert(wall);
        // Told to the node in the answer, and counted for the operator.
        let mut refused: Vec<String> = Vec::new();
        let accepted_usage: Option<Vec<_>>;
        let (assigned, unpacked) = {
            let mut shared = lock(&self.shared);
            let Some(assigned) = shared.assignments.as_ref().map(|all| all.get(&node.id).cloned().unwrap_or_default())
            else {
                return text(503, "the control plane is starting; sync again\n");
            };
            let now = shared.now();
            for a in &assigned {
                shared.assigned_at.insert((node.id.clone(), a.site.clone()), now);
            }
            // A node speaks only for what it was given, in every part of a
            // sync: what it runs, what failed, what was used. What it was
            // given until a moment ago (USAGE_GRACE_MS) is still its own
            // to finish reporting; anything else is refused and counted.
            let given = |site: &str| {
                shared
                    .assigned_at
                    .get(&(node.id.clone(), site.to_owned()))
                    .is_some_and(|at| now.saturating_sub(*at) <= USAGE_GRACE_MS)
            };
            let is_assigned =
                |site: &str, generation: u64| assigned.iter().any(|a| a.site == site && a.generation == generation);
            let mut instances = Vec::new();
            for i in sync.instances {
                if is_assigned(&i.site, i.generation) {
                    instances.push(InstanceReport {
                        site: i.site,
                        generation: i.generation,
                        addr: (peer, i.port).into(),
                        healthy: i.healthy,
                    });
                } else if !given(&i.site) {
                    refused.push(format!("instance of {} generation {}: not given to this node", i.site, i.generation));
                }
            }
            let mut failures = Vec::new();
            for f in sync.failures {
                if is_assigned(&f.site, f.generation) {
                    failures.push(Failure { site: f.site, generation: f.generation, detail: f.detail });
                } else if !given(&f.site) {
                    refused.push(format!("failure of {} generation {}: not given to this node", f.site, f.generation));
                }
            }
            let (usage, foreign): (Vec<_>, Vec<_>) = sync.usage.into_iter().partition(|u| given(&u.site));
            for u in &foreign {
                refused.push(format!("resource use of {}: not given to this node", u.site));
            }
            // What it reports it used is bounded by what it has: its cores
            // and its memory over the time since its last accepted report.
            let since = if reports.usage_at_ms > 0 { reports.usage_at_ms } else { first_sync };
            let (cpu_max, memory_max) =
                control::capacity::usage_bound(reports.cores, node.capacity_mb, wall.saturating_sub(since));
            let cpu: u64 = usage.iter().map(|u| u.cpu_ms).fold(0, u64::saturating_add);
            let memory: u64 = usage.iter().map(|u| u.memory_mib_s).fold(0, u64::saturating_add);
            accepted_usage = if usage.is_empty() {
                None
            } else if cpu > cpu_max || memory > memory_max {
                for u in &usage {
                    refused.push(format!(
                        "resource use of {}: {} CPU ms and {} MiB·s in all is more than {} cores and {} MiB could use since the last accepted report (at most {cpu_max} ms and {memory_max} MiB·s)",
                        u.site, cpu, memory, reports.cores, node.capacity_mb
                    ));
                }
                None
            } else {
                Some(usage)
            };
            shared.control.observe(&node.id, now, Report { instances, failures });
            let unpacked: Vec<(String, u64, std::path::PathBuf)> = assigned
                .iter()
                .filter_map(|a| {
                    let app = shared.apps.get(&(a.site.clone(), a.generation))?;
                    app.bundle.is_none().then(|| (a.site.clone(), a.generation, app.dir.clone()))
                })
                .collect();
            (assigned, unpacked)
        };
        if !refused.is_empty() {
            tracing::warn!(node = %node.id, refused = refused.len(), first = %refused[0], "parts of a node's report refused");
        }
        if accepted_usage.is_some() || !refused.is_empty() {
            let (period, provider, id, count) =
                (current_period(), node.provider.clone(), node.id.clone(), refused.len());
            let at = accepted_usage.is_some().then_some(wall);
            let recorded = self
                .store
                .call(move |s| {
                    for u in accepted_usage.into_iter().flatten() {
                        let totals = ResourceTotals { cpu_ms: u.cpu_ms, memory_mib_s: u.memory_mib_s };
                        s.add_resource_usage(period, &u.site, &provider, totals)?;
                    }
                    s.note_reports(&id, count as u64, at)
                })
                .await;
            if let Err(e) = recorded {
                return text(500, format!("{e}\n"));
            }
        }
        // Each generation's app is packed once (off the async workers).
        for (site, generation, dir) in unpacked {
            match tokio::task::spawn_blocking(move || bundle::pack(&dir)).await {
                Ok(Ok(packed)) => {
                    let mut shared = lock(&self.shared);
                    if let Some(app) = shared.apps.get_mut(&(site, generation)) {
                        app.bundle = Some(packed.id.clone());
                    }
                    shared.bundles.insert(packed.id, Bytes::from(packed.bytes));
                }
                Ok(Err(e)) => tracing::warn!(site, error = %e, "cannot pack the app"),
                Err(e) => tracing::warn!(site, error = %e, "cannot pack the app"),
            }
        }
        let assignments: Vec<WireAssignment> = {
            let shared = lock(&self.shared);
            assigned
                .into_iter()
                .filter_map(|a| {
                    let bundle = shared.apps.get(&(a.site.clone(), a.generation))?.bundle.clone()?;
                    Some(WireAssignment { site: a.site, generation: a.generation, bundle })
                })
                .collect()
        };
        let mut env = self.env.clone();
        for (name, value) in &mut env {
            if name == "COMMONS_INTERNAL_URL" {
                *value = self.internal.for_connection(local);
            }
        }
        let response = SyncResponse { protocol: PROTOCOL_VERSION, node: node.id, env, assignments, refused };
        (200, "application/json", Bytes::from(serde_json::to_vec(&response).expect("a sync answer serializes")))
    }

    async fn bundle(&self, request: &hyper::Request<hyper::body::Incoming>, id: &str) -> Answer {
        if let Err(answer) = self.node_of(request).await {
            return answer;
        }
        match lock(&self.shared).bundles.get(id) {
            Some(bytes) => (200, "application/gzip", bytes.clone()),
            None => text(404, format!("no bundle {id}\n")),
        }
    }
}
