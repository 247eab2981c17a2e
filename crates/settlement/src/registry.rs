//! The registry snapshot a period is settled against: projects with their
//! dependencies, and sites with their operator, project and providers.
//!
//! # Invariants
//! - Ids are non-empty and unique per kind; every reference resolves.
//! - No project depends on itself; dependency and resource weights are
//!   positive; `pass_bps` is at most 9,000; a site's developer share is at
//!   or above the period's floor; every site has at least one provider.
//! - Projects and sites are stored in ascending id order, and each list of
//!   dependencies or providers too, so an index comparison is an id
//!   comparison. That is what makes settlement independent of input order.

use commons_core::{Bps, BpsError};
use compact_str::CompactString;
use foldhash::{HashMap, HashSet};

use crate::params::{ParamError, Params, pass_bps};

/// A project's position in [`Registry::projects`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProjectIx(pub(crate) u32);

/// A site's position in [`Registry::sites`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SiteIx(pub(crate) u32);

impl ProjectIx {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl SiteIx {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A project as declared.
#[derive(Clone, Debug)]
pub struct ProjectSpec {
    pub id: String,
    /// Overrides the period's `pass_bps`.
    pub pass_bps: Option<u64>,
    pub deps: Vec<DepSpec>,
}

/// One dependency edge as declared.
#[derive(Clone, Debug)]
pub struct DepSpec {
    pub project: String,
    pub weight: u64,
}

/// A site as declared.
#[derive(Clone, Debug)]
pub struct SiteSpec {
    pub id: String,
    pub operator: String,
    pub project: String,
    /// Overrides the period's `provider_share_bps`.
    pub provider_share_bps: Option<u64>,
    /// Raises the developer share above the period's floor.
    pub developer_share_bps: Option<u64>,
    pub providers: Vec<ProviderSpec>,
}

/// One provider of a site as declared.
#[derive(Clone, Debug)]
pub struct ProviderSpec {
    pub provider: String,
    pub resource_weight: u64,
}

/// Which declared entry an error is about, by position in the input lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Project(usize),
    Dep { project: usize, dep: usize },
    Site(usize),
    Provider { site: usize, provider: usize },
}

/// A registry entry that breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct RegistryError {
    pub entry: Entry,
    /// The field at fault, as spelled in scenario files.
    pub field: &'static str,
    pub problem: RegistryProblem,
}

/// What is wrong with a registry entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryProblem {
    /// An empty id.
    #[error("the id is empty")]
    EmptyId,
    /// A second project, site, dependency or provider with the same id.
    #[error("{0:?} is declared twice")]
    Duplicate(String),
    /// A reference to a project that is not declared.
    #[error("there is no project {0:?}")]
    UnknownProject(String),
    /// A project listed among its own dependencies.
    #[error("project {0:?} cannot depend on itself")]
    SelfDependency(String),
    /// A zero dependency or resource weight.
    #[error("the weight must be at least 1")]
    ZeroWeight,
    /// A parameter out of range.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// A developer share below the period's floor.
    #[error("developer share {share} is below the floor of {floor}")]
    BelowFloor { share: Bps, floor: Bps },
    /// A site with no provider to pay the provider cut to.
    #[error("a site needs at least one provider")]
    NoProviders,
}

/// A validated registry snapshot.
#[derive(Clone, Debug)]
pub struct Registry {
    projects: Vec<Project>,
    sites: Vec<Site>,
    /// Inline ids up to 24 bytes: probed once or twice per usage row.
    site_index: HashMap<CompactString, SiteIx>,
}

/// A project, resolved.
#[derive(Clone, Debug)]
pub struct Project {
    pub id: String,
    pub pass_bps: Bps,
    /// `(dependency, weight)`, in ascending dependency id order.
    pub deps: Vec<(ProjectIx, u64)>,
}

/// A site, resolved.
#[derive(Clone, Debug)]
pub struct Site {
    pub id: String,
    pub operator: String,
    pub project: ProjectIx,
    pub provider_share_bps: Bps,
    pub developer_share_bps: Bps,
    /// `(provider id, resource weight)`, in ascending provider id order.
    pub providers: Vec<(String, u64)>,
}

impl Registry {
    /// Validates the declarations against the rules above and `params`.
    /// Reports the first broken rule, pointing at the entry and field.
    pub fn new(params: &Params, projects: &[ProjectSpec], sites: &[SiteSpec]) -> Result<Registry, RegistryError> {
        let fail = |entry, field, problem| RegistryError { entry, field, problem };

        let mut project_order: Vec<usize> = (0..projects.len()).collect();
        project_order.sort_by(|&a, &b| projects[a].id.cmp(&projects[b].id));
        let mut project_index: HashMap<&str, ProjectIx> = HashMap::default();
        for (ix, &i) in project_order.iter().enumerate() {
            let id = projects[i].id.as_str();
            if id.is_empty() {
                return Err(fail(Entry::Project(i), "id", RegistryProblem::EmptyId));
            }
            let at = ProjectIx(u32::try_from(ix).expect("fewer than 2^32 projects fit in memory"));
            if project_index.insert(id, at).is_some() {
                let later = first_of_duplicates(projects, i, |p| &p.id);
                return Err(fail(Entry::Project(later), "id", RegistryProblem::Duplicate(id.to_owned())));
            }
        }
        let resolve = |entry, field, id: &str| {
            project_index
                .get(id)
                .copied()
                .ok_or_else(|| fail(entry, field, RegistryProblem::UnknownProject(id.to_owned())))
        };

        let mut resolved_projects = Vec::with_capacity(projects.len());
        for &i in &project_order {
            let spec = &projects[i];
            let pass_bps = pass_bps(spec.pass_bps.unwrap_or(u64::from(params.pass_bps().get())))
                .map_err(|e| fail(Entry::Project(i), "pass_bps", e.into()))?;
            let mut deps = Vec::with_capacity(spec.deps.len());
            let mut seen_deps = HashSet::default();
            for (d, dep) in spec.deps.iter().enumerate() {
                let entry = Entry::Dep { project: i, dep: d };
                if dep.project == spec.id {
                    return Err(fail(entry, "project", RegistryProblem::SelfDependency(spec.id.clone())));
                }
                if dep.weight == 0 {
                    return Err(fail(entry, "weight", RegistryProblem::ZeroWeight));
                }
                let target = resolve(entry, "project", &dep.project)?;
                if !seen_deps.insert(target) {
                    return Err(fail(entry, "project", RegistryProblem::Duplicate(dep.project.clone())));
                }
                deps.push((target, dep.weight));
            }
            deps.sort_unstable();
            resolved_projects.push(Project { id: spec.id.clone(), pass_bps, deps });
        }

        let mut site_order: Vec<usize> = (0..sites.len()).collect();
        site_order.sort_by(|&a, &b| sites[a].id.cmp(&sites[b].id));
        let mut site_index = HashMap::default();
        let mut resolved_sites = Vec::with_capacity(sites.len());
        for (ix, &i) in site_order.iter().enumerate() {
            let spec = &sites[i];
            let entry = Entry::Site(i);
            if spec.id.is_empty() {
                return Err(fail(entry, "id", RegistryProblem::EmptyId));
            }
            if spec.operator.is_empty() {
                return Err(fail(entry, "operator", RegistryProblem::EmptyId));
            }
            let at = SiteIx(u32::try_from(ix).expect("fewer than 2^32 sites fit in memory"));
            if site_index.insert(CompactString::from(spec.id.as_str()), at).is_some() {
                let later = first_of_duplicates(sites, i, |s| &s.id);
                return Err(fail(Entry::Site(later), "id", RegistryProblem::Duplicate(spec.id.clone())));
            }
            let project = resolve(entry, "project", &spec.project)?;
            let provider_share_bps =
                Bps::new(spec.provider_share_bps.unwrap_or(u64::from(params.provider_share_bps().get())))
                    .map_err(|e: BpsError| fail(entry, "provider_share_bps", ParamError::from(e).into()))?;
            let floor = params.developer_share_bps();
            let developer_share_bps = Bps::new(spec.developer_share_bps.unwrap_or(u64::from(floor.get())))
                .map_err(|e: BpsError| fail(entry, "developer_share_bps", ParamError::from(e).into()))?;
            if developer_share_bps < floor {
                return Err(fail(
                    entry,
                    "developer_share_bps",
                    RegistryProblem::BelowFloor { share: developer_share_bps, floor },
                ));
            }
            if spec.providers.is_empty() {
                return Err(fail(entry, "providers", RegistryProblem::NoProviders));
            }
            let mut providers = Vec::with_capacity(spec.providers.len());
            let mut seen_providers = HashSet::default();
            for (p, provider) in spec.providers.iter().enumerate() {
                let entry = Entry::Provider { site: i, provider: p };
                if provider.provider.is_empty() {
                    return Err(fail(entry, "provider", RegistryProblem::EmptyId));
                }
                if provider.resource_weight == 0 {
                    return Err(fail(entry, "resource_weight", RegistryProblem::ZeroWeight));
                }
                if !seen_providers.insert(provider.provider.as_str()) {
                    return Err(fail(entry, "provider", RegistryProblem::Duplicate(provider.provider.clone())));
                }
                providers.push((provider.provider.clone(), provider.resource_weight));
            }
            providers.sort_unstable();
            resolved_sites.push(Site {
                id: spec.id.clone(),
                operator: spec.operator.clone(),
                project,
                provider_share_bps,
                developer_share_bps,
                providers,
            });
        }
        Ok(Registry { projects: resolved_projects, sites: resolved_sites, site_index })
    }

    pub fn projects(&self) -> &[Project] {
        self.projects.as_slice()
    }

    pub fn sites(&self) -> &[Site] {
        self.sites.as_slice()
    }

    pub fn project(&self, ix: ProjectIx) -> &Project {
        &self.projects[ix.index()]
    }

    pub fn site(&self, ix: SiteIx) -> &Site {
        &self.sites[ix.index()]
    }

    /// Looks a site up by id.
    pub fn site_ix(&self, id: &str) -> Option<SiteIx> {
        self.site_index.get(id).copied()
    }
}

/// Of the entries sharing `items[i]`'s id, the one given later in the
/// input: the duplicate is the second declaration, not the first.
fn first_of_duplicates<T>(items: &[T], i: usize, id: impl Fn(&T) -> &String) -> usize {
    items.iter().enumerate().filter(|(_, item)| id(item) == id(&items[i])).map(|(j, _)| j).nth(1).unwrap_or(i)
}
