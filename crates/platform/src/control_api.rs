//! The control listener: `/metrics`, `/healthz`, and the agent protocol of
//! joined nodes (`agent::protocol`): `POST /agent/v2/sync` and
//! `GET /agent/v2/bundles/<id>`, each with the node's join token.
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

#[derive(Clone)]
pub(crate) struct ControlApi {
    pub gateway: Gateway,
    pub store: StoreHandle,
    pub shared: Arc<Mutex<Shared>>,
    pub env: Vec<(String, String)>,
}

type Answer = (u16, &'static str, Bytes);

fn text(status: u16, body: impl Into<String>) -> Answer {
    (status, "text/plain; charset=utf-8", Bytes::from(body.into()))
}

pub(crate) async fn serve(listener: TcpListener, api: ControlApi) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "the control listener cannot accept; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let api = api.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let api = api.clone();
                async move {
                    let (status, kind, body) = api.answer(request, peer.ip()).await;
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
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

impl ControlApi {
    async fn answer(&self, request: hyper::Request<hyper::body::Incoming>, peer: IpAddr) -> Answer {
        let path = request.uri().path().to_owned();
        let post = request.method() == hyper::Method::POST;
        match path.as_str() {
            "/metrics" => text(200, self.gateway.metrics()),
            "/healthz" => text(200, "ok\n"),
            "/agent/v2/sync" if post => self.sync(request, peer).await,
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

    async fn sync(&self, request: hyper::Request<hyper::body::Incoming>, peer: IpAddr) -> Answer {
        let node = match self.node_of(&request).await {
            Ok(node) => node,
            Err(answer) => return answer,
        };
        let body = match http_body_util::Limited::new(request.into_body(), SYNC_BYTES_MAX).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => return text(413, format!("the sync is too large: {e}\n")),
        };
        let sync: SyncRequest = match serde_json::from_slice(&body) {
            Ok(sync) => sync,
            Err(e) => return text(400, format!("malformed sync: {e}\n")),
        };
        if let Err(e) = sync.check() {
            return text(400, e + "\n");
        }
        let report = Report {
            instances: sync
                .instances
                .into_iter()
                .map(|i| InstanceReport {
                    site: i.site,
                    generation: i.generation,
                    addr: (peer, i.port).into(),
                    healthy: i.healthy,
                })
                .collect(),
            failures: sync
                .failures
                .into_iter()
                .map(|f| Failure { site: f.site, generation: f.generation, detail: f.detail })
                .collect(),
        };
        let usage: Vec<_>;
        let (assigned, unpacked) = {
            let mut shared = lock(&self.shared);
            let Some(assigned) = shared.assignments.as_ref().map(|all| all.get(&node.id).cloned().unwrap_or_default())
            else {
                return text(503, "the control plane is starting; sync again\n");
            };
            // A node speaks only for what it was given: failures of other
            // sites' generations are not its to report.
            let mut report = report;
            report.failures.retain(|f| assigned.iter().any(|a| a.site == f.site && a.generation == f.generation));
            let now = shared.now();
            shared.control.observe(&node.id, now, report);
            for a in &assigned {
                shared.assigned_at.insert((node.id.clone(), a.site.clone()), now);
            }
            // A node is paid only for sites it was given: usage it reports
            // for any other site is dropped (what a stopped instance used
            // still arrives within USAGE_GRACE_MS of its unassignment).
            let given = |site: &str| {
                shared
                    .assigned_at
                    .get(&(node.id.clone(), site.to_owned()))
                    .is_some_and(|at| now.saturating_sub(*at) <= USAGE_GRACE_MS)
            };
            let (accepted, refused): (Vec<_>, Vec<_>) = sync.usage.into_iter().partition(|u| given(&u.site));
            usage = accepted;
            if !refused.is_empty() {
                tracing::warn!(node = %node.id, sites = refused.len(), "usage reported for sites the node was not given: dropped");
            }
            let unpacked: Vec<(String, u64, std::path::PathBuf)> = assigned
                .iter()
                .filter_map(|a| {
                    let app = shared.apps.get(&(a.site.clone(), a.generation))?;
                    app.bundle.is_none().then(|| (a.site.clone(), a.generation, app.dir.clone()))
                })
                .collect();
            (assigned, unpacked)
        };
        if !usage.is_empty() {
            let (period, provider) = (current_period(), node.provider.clone());
            let recorded = self
                .store
                .call(move |s| {
                    for u in usage {
                        let totals = ResourceTotals { cpu_ms: u.cpu_ms, memory_mib_s: u.memory_mib_s };
                        s.add_resource_usage(period, &u.site, &provider, totals)?;
                    }
                    Ok::<_, store::StoreError>(())
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
        let response = SyncResponse { protocol: PROTOCOL_VERSION, node: node.id, env: self.env.clone(), assignments };
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
