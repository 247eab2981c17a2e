//! Checks a deployment request before it is recorded: what `commons deploy`
//! (and, later, the API) refuses at once, so that nothing is recorded that
//! the control plane could not run or a settlement could not pay.

use runtime::Manifest;
use store::{DeploymentRecord, Store};

use crate::BadInput;

/// Refuses `d` (running `manifest`) with the reason unless its nodes are
/// known and of one kind, each has the memory the app asks for left, and
/// the site with its terms is one a settlement accepts.
pub fn check(store: &mut Store, d: &DeploymentRecord, manifest: &Manifest) -> anyhow::Result<()> {
    if d.nodes.is_empty() {
        return Err(BadInput("a site needs at least one node (--node)".into()).into());
    }
    if let Some(header) = &manifest.auth.user_header {
        gateway::check_user_header(header)
            .map_err(|e| BadInput(format!("the app is refused: auth.user_header {e}")))?;
    }
    // Its files are in one place: two instances would each write their own.
    if manifest.state && d.nodes.len() > 1 {
        return Err(BadInput(format!(
            "{} keeps state (`state = true`: its files in $COMMONS_STATE_DIR), so it runs on one node at a time; give one --node",
            manifest.name
        ))
        .into());
    }
    // What cannot be shipped is refused now: a symbolic link (to a key,
    // say) is never followed, nor shipped.
    agent::bundle::check(std::path::Path::new(&d.app_dir)).map_err(|e| BadInput(format!("the app is refused: {e}")))?;
    // A removed site's id is not taken while a period needs its record.
    if let Some(why) = store.kept_removed_site(&d.site)? {
        return Err(BadInput(why).into());
    }
    let known = store.nodes()?;
    if let Some(unknown) = d.nodes.iter().find(|n| !known.iter().any(|k| k.id == **n)) {
        return Err(BadInput(format!("there is no node {unknown:?}; register it with `commons node add`")).into());
    }
    // Each node must have the memory the app asks for, beside what its
    // other sites (this one's earlier version aside) asked for.
    let booked: Vec<control::DeploymentSpec> =
        store.deployments()?.iter().map(|d| crate::deployment_spec(d, crate::app_memory_mb(&d.app_dir))).collect();
    for id in &d.nodes {
        let node = known.iter().find(|k| k.id == *id).expect("checked above");
        let spec = crate::control_loop::node_spec(node);
        let free = control::capacity::free_memory_mb(&spec, &booked, Some(&d.site));
        if free < manifest.resources.memory_mb {
            return Err(BadInput(format!(
                "node {id} has {free} MiB left of its {} MiB; {} asks for {} MiB (resources.memory_mb)",
                node.capacity_mb, manifest.name, manifest.resources.memory_mb
            ))
            .into());
        }
    }
    let remote = d.nodes.iter().filter(|n| known.iter().any(|k| k.id == **n && k.remote)).count();
    if remote != 0 && remote != d.nodes.len() {
        return Err(BadInput(
            "a site's nodes must all be on this machine or all joined ones (`commons node list` says which)".into(),
        )
        .into());
    }
    // The site as it will be published, with the app's project and its
    // dependencies as they will be registered, must be one a settlement
    // accepts: the shares within their rules, above the developer floor.
    let site = crate::metered::site_spec(&crate::control_loop::site_record(d, manifest, vec![], &known));
    let project = store::ProjectRecord {
        id: manifest.project.clone(),
        deps: manifest.depends_on.clone(),
        repository: manifest.repository.clone(),
    };
    let registered = crate::metered::registration(&store.projects()?, project);
    crate::metered::check_registry(store, |projects, sites| {
        crate::metered::write_projects(projects, &registered);
        sites.retain(|s| s.id != site.id);
        sites.push(site);
    })?;
    Ok(())
}

/// Keeps the app in `dir` as an artifact of the platform's,
/// `DATA/artifacts/<bundle id>/` (content-addressed: the same files are
/// kept once), and returns where: a deployment runs that, so that what
/// ran stays as it was for a rollback, whatever becomes of `dir`.
pub fn keep_artifact(data_dir: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let bundle = agent::bundle::pack(dir).map_err(|e| BadInput(format!("the app is refused: {e}")))?;
    let artifacts = data_dir.join("artifacts");
    let kept = artifacts.join(&bundle.id);
    if !kept.is_dir() {
        // Unpacked beside it, then renamed: never a half-written artifact.
        let unpacking = artifacts.join(format!(".{}.{}", bundle.id, std::process::id()));
        let _ = std::fs::remove_dir_all(&unpacking);
        agent::bundle::unpack(&bundle.bytes, &bundle.id, &unpacking)?;
        if let Err(e) = std::fs::rename(&unpacking, &kept) {
            let _ = std::fs::remove_dir_all(&unpacking);
            if !kept.is_dir() {
                return Err(e.into());
            }
        }
    }
    Ok(kept)
}

/// Where a deployment request stands, for whoever waits for it.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    /// Running: what runs.
    Running(String),
    /// Failed: why.
    Failed(String),
    /// Replaced by a newer request, or withdrawn.
    Gone,
}

/// The outcome of `site`'s `generation` among the stored `deployments`.
pub fn outcome(deployments: Vec<DeploymentRecord>, site: &str, generation: u64) -> Outcome {
    match deployments.into_iter().find(|d| d.site == site && d.generation == generation) {
        None => Outcome::Gone,
        Some(d) => match d.state {
            commons_core::DeploymentState::Pending => Outcome::Pending,
            commons_core::DeploymentState::Running => Outcome::Running(d.detail),
            commons_core::DeploymentState::Failed => Outcome::Failed(d.detail),
        },
    }
}
