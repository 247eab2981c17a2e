//! `commons node --join URL --token T`: the agent of a node on another
//! machine. Every half second it reports to the control listener (over
//! TLS, pinned to the CA the token names) and
//! applies the answer; an app's bundle is fetched once per id, checked
//! against it, and unpacked under `DIR/apps/<id>/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use control::Assignment;
use runtime::Confinement;

use crate::bundle::{self, BUNDLE_BYTES_MAX};
use crate::client::{Client, ClientError};
use crate::node::{NodeAgent, Reach, Source};
use crate::protocol::{
    PROTOCOL_VERSION, ReportedFailure, ReportedInstance, ReportedUsage, SYNC_BYTES_MAX, SyncRequest, SyncResponse,
};
use crate::tls::JoinToken;

/// How often the agent syncs.
pub const SYNC_EVERY: Duration = Duration::from_millis(500);
/// Resource use goes with every twentieth sync: every ten seconds.
const USAGE_EVERY_SYNCS: u64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0} refused the token: {1}")]
    Refused(String, String),
    #[error("{0} refused this agent: {1}")]
    Protocol(String, String),
}

/// Runs the agent until `stop` resolves, then stops its instances. Errors
/// only when the control plane refuses this agent (its token or version),
/// or when the peer is not the control plane the token pins.
pub async fn run(
    url: &str,
    token: &JoinToken,
    dir: &Path,
    confinement: Confinement,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), JoinError> {
    let client = Client::new(url, token.pin)?;
    let mut remote =
        Remote { client, token: token.secret.clone(), dir: dir.to_owned(), confinement, agent: None, syncs: 0 };
    let result = tokio::select! {
        result = remote.sync_forever() => result,
        () = stop => Ok(()),
    };
    if let Some(agent) = &remote.agent {
        agent.stop_all().await;
    }
    result
}

struct Remote {
    client: Client,
    token: String,
    dir: PathBuf,
    confinement: Confinement,
    /// Known once the control plane said which node this is.
    agent: Option<Arc<NodeAgent>>,
    syncs: u64,
}

impl Remote {
    async fn sync_forever(&mut self) -> Result<(), JoinError> {
        loop {
            match self.sync_once().await {
                Ok(()) => {}
                Err(
                    e @ (JoinError::Refused(..)
                    | JoinError::Protocol(..)
                    | JoinError::Client(ClientError::NotPinned(_))),
                ) => return Err(e),
                Err(e) => tracing::warn!(error = %e, "cannot sync with the control plane; retrying"),
            }
            tokio::time::sleep(SYNC_EVERY).await;
        }
    }

    async fn sync_once(&mut self) -> Result<(), JoinError> {
        let usage = self.syncs.is_multiple_of(USAGE_EVERY_SYNCS);
        self.syncs += 1;
        let mut request = SyncRequest {
            protocol: PROTOCOL_VERSION,
            instances: vec![],
            failures: vec![],
            usage: vec![],
            events: vec![],
        };
        // What this report takes from the agent, put back unless the
        // control plane answers 200: nothing is lost to a failed exchange.
        let (mut failures, mut taken, mut events) = (Vec::new(), std::collections::BTreeMap::new(), Vec::new());
        if let Some(agent) = &self.agent {
            let report = agent.report().await;
            request.instances = report
                .instances
                .into_iter()
                .map(|i| ReportedInstance {
                    site: i.site,
                    generation: i.generation,
                    port: i.addr.port(),
                    healthy: i.healthy,
                })
                .collect();
            request.failures = report
                .failures
                .iter()
                .map(|f| ReportedFailure { site: f.site.clone(), generation: f.generation, detail: f.detail.clone() })
                .collect();
            failures = report.failures;
            events = agent.take_events().await;
            request.events = events
                .iter()
                .map(|e| ReportedFailure { site: e.site.clone(), generation: e.generation, detail: e.detail.clone() })
                .collect();
            if usage {
                taken = agent.take_usage().await;
                request.usage = taken
                    .iter()
                    .map(|(site, u)| ReportedUsage {
                        site: site.clone(),
                        cpu_ms: u.cpu_ms,
                        memory_mib_s: u.memory_mib_s,
                    })
                    .collect();
            }
        }
        let body = serde_json::to_vec(&request).expect("a sync serializes");
        let sent =
            self.client.send(hyper::Method::POST, "/agent/v2/sync", &self.token, Some(body), SYNC_BYTES_MAX).await;
        if !matches!(&sent, Ok(answer) if answer.status == 200)
            && let Some(agent) = &self.agent
        {
            agent.unreport(&failures).await;
            agent.give_back(taken);
            agent.give_back_events(events);
        }
        let answer = sent?;
        let text = || String::from_utf8_lossy(&answer.body).trim().to_owned();
        match answer.status {
            200 => {}
            401 => return Err(JoinError::Refused(self.client.base().to_owned(), text())),
            400 | 410 => return Err(JoinError::Protocol(self.client.base().to_owned(), text())),
            status => {
                tracing::warn!(status, body = %text(), "the control plane answered with an error");
                return Ok(());
            }
        }
        let response: SyncResponse = serde_json::from_slice(&answer.body)
            .map_err(|e| JoinError::Protocol(self.client.base().to_owned(), format!("a malformed answer: {e}")))?;
        for why in &response.refused {
            tracing::warn!(refused = %why, "the control plane refused part of this node's report");
        }
        let agent = match &self.agent {
            Some(agent) => agent.clone(),
            None => {
                eprintln!(
                    "joined {} as node {}; running its sites in {}",
                    self.client.base(),
                    response.node,
                    self.dir.display()
                );
                let dir = self.dir.join("nodes").join(&response.node);
                let state = self.dir.join("state");
                let agent = NodeAgent::new(&response.node, &dir, &state, self.confinement.clone(), Reach::Forward);
                self.agent = Some(agent.clone());
                agent
            }
        };
        let mut assigned = Vec::new();
        let mut fetched: BTreeMap<String, bool> = BTreeMap::new();
        for a in &response.assignments {
            let ok = match fetched.get(&a.bundle) {
                Some(&ok) => ok,
                None => {
                    let ok = match self.fetch(&a.bundle).await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(site = %a.site, bundle = %a.bundle, error = %e, "cannot fetch the app");
                            false
                        }
                    };
                    fetched.insert(a.bundle.clone(), ok);
                    ok
                }
            };
            // An app not fetched yet is not unassigned: what runs keeps running.
            let source = Source { dir: self.app_dir(&a.bundle), env: a.env.clone() };
            // One app that cannot be fetched yet holds up only itself.
            if ok || self.app_dir(&a.bundle).exists() {
                assigned.push((Assignment { site: a.site.clone(), generation: a.generation }, source));
            }
        }
        agent.apply(assigned, &response.env).await;
        Ok(())
    }

    fn app_dir(&self, bundle: &str) -> PathBuf {
        self.dir.join("apps").join(bundle)
    }

    /// Fetches and unpacks bundle `id` unless this machine has it.
    async fn fetch(&self, id: &str) -> Result<(), String> {
        if !id.bytes().all(|b| b.is_ascii_hexdigit()) || id.len() != 64 {
            return Err(format!("{id:?} is not a bundle id"));
        }
        let dir = self.app_dir(id);
        // Only a whole, checked bundle is ever renamed to its id.
        if dir.exists() {
            return Ok(());
        }
        let path = format!("/agent/v2/bundles/{id}");
        let answer = self
            .client
            .send(hyper::Method::GET, &path, &self.token, None, BUNDLE_BYTES_MAX)
            .await
            .map_err(|e| e.to_string())?;
        if answer.status != 200 {
            return Err(format!("{path}: status {}", answer.status));
        }
        // Unpacked beside, then moved into place: a crash never leaves a
        // half-unpacked app that looks complete.
        let partial = self.dir.join("apps").join(format!("{id}.partial"));
        let (body, id) = (answer.body, id.to_owned());
        // Unpacking writes up to 16 MiB: off the async workers.
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&partial);
            bundle::unpack(&body, &id, &partial).map_err(|e| e.to_string())?;
            std::fs::rename(&partial, &dir).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}
