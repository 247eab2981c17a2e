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
//! (resource use for the node's provider, within what the node could have
//! used: `control::capacity::check_usage`, checked and recorded as one
//! step), observed by `control`, and answered with the node's assignments:
//! each with the id of its app's bundle, packed once per generation and
//! served by id to the nodes it is assigned to. `/metrics` is served to
//! loopback peers or with a join token.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::bundle;
use agent::protocol::{PROTOCOL_VERSION, SYNC_BYTES_MAX, SyncRequest, SyncResponse, WireAssignment};
use bytes::Bytes;
use commons_core::token_sha256;
use control::capacity::{NodeBound, SiteClaim};
use control::{Failure, InstanceReport, Report};
use gateway::Gateway;
use http_body_util::{BodyExt, Full};
use store::{NodeRecord, ResourceTotals};
use tokio::net::TcpListener;

use crate::control_loop::{Given, Shared, lock};
use crate::{StoreHandle, current_period};

/// Back-off after a failed accept (out of file descriptors, say), so a
/// listener never spins a core.
/// Events of one instance one sync may add to the public history.
const EVENTS_PER_INSTANCE_MAX: usize = 8;
/// What the history keeps of an event's detail, in characters.
const EVENT_CHARS_MAX: usize = 200;
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long after a site leaves a node that node's usage of it is taken.
const USAGE_GRACE_MS: u64 = 60_000;
/// How often a resource report is checked again when others of its node
/// were recorded while it was being checked.
const USAGE_ATTEMPTS: usize = 4;
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

/// Whether `/metrics` is served to `peer` without a join token: only on
/// this machine (loopback, also as an IPv4-mapped IPv6 address).
fn metrics_open_to(peer: IpAddr) -> bool {
    peer.to_canonical().is_loopback()
}

impl ControlApi {
    /// Takes a node's resource report if it could have used that much
    /// (`control::capacity::check_usage`), checked and recorded against
    /// its last accepted one as one step: of reports checked against the
    /// same one, only the first is recorded, and the others are checked
    /// again against it. What is not believed goes to `refused`.
    async fn take_usage(
        &self,
        node: &NodeRecord,
        first_sync: u64,
        claims: &[SiteClaim],
        refused: &mut Vec<String>,
    ) -> Result<(), store::StoreError> {
        let period = current_period();
        let period_start_ms = u64::try_from(period.first_day_since_epoch()).unwrap_or(0).saturating_mul(86_400_000);
        let used: Vec<(String, ResourceTotals)> = claims
            .iter()
            .map(|c| (c.site.clone(), ResourceTotals { cpu_ms: c.cpu_ms, memory_mib_s: c.memory_mib_s }))
            .collect();
        for _ in 0..USAGE_ATTEMPTS {
            let id = node.id.clone();
            let reports = self.store.call(move |s| s.node_reports(&id)).await?;
            let since = if reports.usage_at_ms > 0 { reports.usage_at_ms } else { first_sync };
            let bound =
                NodeBound { cores: reports.cores, capacity_mb: node.capacity_mb, since_ms: since, period_start_ms };
            let until = match control::capacity::check_usage(&bound, claims, crate::now_ms()) {
                Ok(until) => until,
                Err(why) => {
                    refused.extend(why);
                    return Ok(());
                }
            };
            let (id, provider, used) = (node.id.clone(), node.provider.clone(), used.clone());
            let checked = reports.usage_at_ms;
            if self.store.call(move |s| s.accept_resource_usage(&id, checked, until, period, &provider, &used)).await? {
                return Ok(());
            }
        }
        refused.extend(
            claims
                .iter()
                .map(|c| format!("resource use of {}: other reports of this node kept coming at once", c.site)),
        );
        Ok(())
    }

    async fn answer(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
        peer: IpAddr,
        local: std::net::SocketAddr,
    ) -> Answer {
        let path = request.uri().path().to_owned();
        let post = request.method() == hyper::Method::POST;
        match path.as_str() {
            "/metrics" => self.metrics(&request, peer).await,
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

    /// The gateway's metrics, to this machine or a joined node: the
    /// listener faces the network, and they tell who uses what.
    async fn metrics(&self, request: &hyper::Request<hyper::body::Incoming>, peer: IpAddr) -> Answer {
        if !metrics_open_to(peer) && self.node_of(request).await.is_err() {
            return text(401, "/metrics is served to this machine, or with a node's join token\n");
        }
        text(200, self.gateway.metrics())
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
        let wall = crate::now_ms();
        // Every sync, not only one with usage: a node's first report covers
        // the time since it first came.
        let first_sync = *lock(&self.first_sync).entry(node.id.clone()).or_insert(wall);
        // Told to the node in the answer, and counted for the operator.
        let mut refused: Vec<String> = Vec::new();
        let mut claims: Vec<SiteClaim> = Vec::new();
        let mut events: Vec<(String, String)> = Vec::new();
        let (assigned, unpacked) = {
            let mut shared = lock(&self.shared);
            let Some(assigned) = shared.assignments.as_ref().map(|all| all.get(&node.id).cloned().unwrap_or_default())
            else {
                return text(503, "the control plane is starting; sync again\n");
            };
            let now = shared.now();
            let mut booked: HashMap<&str, u64> = HashMap::new();
            for a in &assigned {
                let app = shared.apps.get(&(a.site.clone(), a.generation));
                let memory = app.and_then(|app| app.manifest.as_ref().ok()).map_or(0, |m| m.resources.memory_mb);
                let site = booked.entry(a.site.as_str()).or_default();
                *site = site.saturating_add(memory);
            }
            for a in &assigned {
                let key = (node.id.clone(), a.site.clone());
                // A site given anew after its grace ran out begins a new stay.
                let stays = shared.given.get(&key).is_some_and(|g| now.saturating_sub(g.last) <= USAGE_GRACE_MS);
                if !stays {
                    let since_wall_ms = stay_since(shared.given.get(&key), a.generation, now, wall);
                    let fresh = Given { since_wall_ms, last: now, booked_mb: 0, generations: HashMap::new() };
                    shared.given.insert(key.clone(), fresh);
                }
                let given = shared.given.get_mut(&key).expect("just inserted");
                given.last = now;
                given.booked_mb = booked.get(a.site.as_str()).copied().unwrap_or(0);
                given.generations.insert(a.generation, now);
            }
            // A node speaks only for what it was given, in every part of a
            // sync: what it runs, what failed, what was used. What it was
            // given until a moment ago (USAGE_GRACE_MS) is still its own
            // to finish reporting (an old generation draining is left out,
            // quietly); anything else is refused and counted.
            let given = |site: &str| {
                shared
                    .given
                    .get(&(node.id.clone(), site.to_owned()))
                    .filter(|g| now.saturating_sub(g.last) <= USAGE_GRACE_MS)
            };
            let draining = |site: &str, generation: u64| {
                given(site)
                    .and_then(|g| g.generations.get(&generation))
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
                } else if !draining(&i.site, i.generation) {
                    refused.push(format!("instance of {} generation {}: not given to this node", i.site, i.generation));
                }
            }
            // The public history keeps what a node says happened: a few
            // lines per instance and sync, printable, short.
            let mut per_instance: HashMap<(String, u64), usize> = HashMap::new();
            for e in sync.events {
                if is_assigned(&e.site, e.generation) || draining(&e.site, e.generation) {
                    let seen = per_instance.entry((e.site.clone(), e.generation)).or_default();
                    *seen += 1;
                    if *seen > EVENTS_PER_INSTANCE_MAX {
                        refused.push(format!(
                            "event of {} generation {}: more than {EVENTS_PER_INSTANCE_MAX} in one sync",
                            e.site, e.generation
                        ));
                        continue;
                    }
                    let detail: String =
                        e.detail.chars().map(|c| if c.is_control() { ' ' } else { c }).take(EVENT_CHARS_MAX).collect();
                    events.push((e.site, format!("on {}: {detail}", node.id)));
                } else {
                    refused.push(format!("event of {} generation {}: not given to this node", e.site, e.generation));
                }
            }
            let mut failures = Vec::new();
            for f in sync.failures {
                if is_assigned(&f.site, f.generation) {
                    failures.push(Failure { site: f.site, generation: f.generation, detail: f.detail });
                } else if !draining(&f.site, f.generation) {
                    refused.push(format!("failure of {} generation {}: not given to this node", f.site, f.generation));
                }
            }
            for u in sync.usage {
                let Some(g) = given(&u.site) else {
                    refused.push(format!("resource use of {}: not given to this node", u.site));
                    continue;
                };
                // A site named twice is one claim: its bound holds for the sum.
                match claims.iter_mut().find(|c| c.site == u.site) {
                    Some(c) => {
                        c.cpu_ms = c.cpu_ms.saturating_add(u.cpu_ms);
                        c.memory_mib_s = c.memory_mib_s.saturating_add(u.memory_mib_s);
                    }
                    None => claims.push(SiteClaim {
                        given_since_ms: g.since_wall_ms,
                        booked_mb: g.booked_mb,
                        site: u.site,
                        cpu_ms: u.cpu_ms,
                        memory_mib_s: u.memory_mib_s,
                    }),
                }
            }
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
        if !claims.is_empty()
            && let Err(e) = self.take_usage(&node, first_sync, &claims, &mut refused).await
        {
            return text(500, format!("{e}\n"));
        }
        if !events.is_empty()
            && let Err(e) = self.store.call(move |s| crate::control_loop::record_events(s, &events)).await
        {
            return text(500, format!("{e}\n"));
        }
        if !refused.is_empty() {
            tracing::warn!(node = %node.id, refused = refused.len(), first = %refused[0], "parts of a node's report refused");
            let (id, count) = (node.id.clone(), refused.len() as u64);
            if let Err(e) = self.store.call(move |s| s.note_reports(&id, count, None)).await {
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
                    let app = shared.apps.get(&(a.site.clone(), a.generation))?;
                    let (bundle, env) = (app.bundle.clone()?, app.env.clone());
                    Some(WireAssignment { site: a.site, generation: a.generation, bundle, env })
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

    /// A bundle, to a node it is assigned to: any other id, whether a
    /// bundle of another node's site or none at all, is 404 alike.
    async fn bundle(&self, request: &hyper::Request<hyper::body::Incoming>, id: &str) -> Answer {
        let node = match self.node_of(request).await {
            Ok(node) => node,
            Err(answer) => return answer,
        };
        let shared = lock(&self.shared);
        let assigned = shared.assignments.as_ref().and_then(|all| all.get(&node.id)).is_some_and(|assigned| {
            assigned.iter().any(|a| {
                shared.apps.get(&(a.site.clone(), a.generation)).and_then(|app| app.bundle.as_deref()) == Some(id)
            })
        });
        match shared.bundles.get(id).filter(|_| assigned) {
            Some(bytes) => (200, "application/gzip", bytes.clone()),
            None => text(404, format!("no bundle {id}\n")),
        }
    }
}

/// Since when a node may have run a site whose stay begins now (`now`: the
/// control plane's clock, ms since it started; `wall`: ms since the epoch):
/// - the generation it was given before a lapse (the node was silent past
///   the grace, or its syncs failed): since that stay began, as it may have
///   run it all along;
/// - right after the control plane started, whatever it was given before
///   the restart may be running: no start of the site's own (0), so that
///   the node's last accepted report and the period bound the claim;
/// - else from now.
fn stay_since(before: Option<&Given>, generation: u64, now: u64, wall: u64) -> u64 {
    match before {
        Some(old) if old.generations.contains_key(&generation) => old.since_wall_ms,
        _ if now <= USAGE_GRACE_MS => 0,
        _ => wall,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{Given, USAGE_GRACE_MS, metrics_open_to, stay_since};

    #[test]
    fn a_stay_begun_after_a_lapse_or_a_restart_keeps_what_the_node_may_have_run() {
        let wall = 1_800_000_000_000;
        let before =
            Given { since_wall_ms: wall - 3_600_000, last: 0, booked_mb: 256, generations: HashMap::from([(4, 0)]) };
        let late = USAGE_GRACE_MS * 10;
        assert_eq!(stay_since(Some(&before), 4, late, wall), wall - 3_600_000, "the same generation after a lapse");
        assert_eq!(stay_since(Some(&before), 5, late, wall), wall, "a new generation is given from now");
        assert_eq!(stay_since(None, 4, late, wall), wall, "a site given anew");
        assert_eq!(stay_since(None, 4, 1_000, wall), 0, "right after a restart");
    }

    #[test]
    fn metrics_are_open_only_to_this_machine() {
        for peer in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            assert!(metrics_open_to(peer.parse().unwrap()), "{peer}");
        }
        for peer in ["192.0.2.2", "10.0.0.1", "0.0.0.0", "::", "fd00::2", "::ffff:192.0.2.2", "::ffff:0.0.0.0"] {
            assert!(!metrics_open_to(peer.parse().unwrap()), "{peer} needs a join token");
        }
    }
}
