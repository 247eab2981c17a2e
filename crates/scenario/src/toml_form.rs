//! The TOML form of a scenario.

use std::path::Path;

use commons_core::{Cents, Period};
use serde::Deserialize;
use settlement::{
    ActivityBuilder, CallRow, DepSpec, Entry, Params, ParamsSpec, ProjectSpec, ProviderSpec, Registry, RegistryError,
    SiteSpec, UsageRow,
};
use toml::Spanned;

use crate::{Scenario, ScenarioError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioToml {
    #[serde(default)]
    params: ParamsToml,
    #[serde(default)]
    project: Vec<Spanned<ProjectToml>>,
    #[serde(default)]
    site: Vec<Spanned<SiteToml>>,
    #[serde(default)]
    subscription: Vec<Spanned<SubscriptionToml>>,
    #[serde(default)]
    usage: Vec<Spanned<UsageToml>>,
}

/// `[params]`, also the whole of a CSV scenario's `params.toml`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ParamsToml {
    period: Option<Spanned<String>>,
    general_fund_bps: Option<Spanned<u64>>,
    provider_share_bps: Option<Spanned<u64>>,
    developer_share_bps: Option<Spanned<u64>>,
    pass_bps: Option<Spanned<u64>>,
    cents_per_cc: Option<Spanned<u64>>,
    reserve_contribution_bps: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectToml {
    id: String,
    #[serde(default)]
    deps: Vec<Spanned<DepToml>>,
    pass_bps: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepToml {
    project: String,
    #[serde(default = "one")]
    weight: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteToml {
    id: String,
    operator: String,
    project: String,
    provider_share_bps: Option<u64>,
    developer_share_bps: Option<u64>,
    #[serde(default)]
    providers: Vec<Spanned<ProviderToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderToml {
    provider: String,
    #[serde(default = "one")]
    resource_weight: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionToml {
    user: String,
    paid_cents: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageToml {
    user: String,
    site: String,
    active_minutes: u64,
    #[serde(default)]
    service_ms: u64,
    #[serde(default)]
    calls: Vec<Spanned<CallToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallToml {
    service: String,
    ms: u64,
}

fn one() -> u64 {
    1
}

pub(crate) fn parse(path: &Path, text: &str, default_period: Period) -> Result<Scenario, ScenarioError> {
    let file: ScenarioToml = parse_toml(path, text)?;
    let at = |offset: usize, problem: &dyn std::fmt::Display| {
        let error = ScenarioError::at(path, text.as_bytes(), offset as u64, problem);
        match entry_at(text, offset) {
            Some(entry) => error.entry(entry),
            None => error,
        }
    };
    let params = params(path, text, &file.params, default_period)?;

    let projects: Vec<ProjectSpec> = file
        .project
        .iter()
        .map(|p| {
            let p = p.get_ref();
            ProjectSpec {
                id: p.id.clone(),
                pass_bps: p.pass_bps,
                deps: p
                    .deps
                    .iter()
                    .map(|d| DepSpec { project: d.get_ref().project.clone(), weight: d.get_ref().weight })
                    .collect(),
            }
        })
        .collect();
    let sites: Vec<SiteSpec> = file
        .site
        .iter()
        .map(|s| {
            let s = s.get_ref();
            SiteSpec {
                id: s.id.clone(),
                operator: s.operator.clone(),
                project: s.project.clone(),
                provider_share_bps: s.provider_share_bps,
                developer_share_bps: s.developer_share_bps,
                providers: s
                    .providers
                    .iter()
                    .map(|p| ProviderSpec {
                        provider: p.get_ref().provider.clone(),
                        resource_weight: p.get_ref().resource_weight,
                    })
                    .collect(),
            }
        })
        .collect();
    let registry = Registry::new(&params, &projects, &sites).map_err(|RegistryError { entry, field, problem }| {
        let (offset, field) = match entry {
            Entry::Project(i) => (file.project[i].span().start, field.to_owned()),
            Entry::Dep { project, dep } => {
                (file.project[project].get_ref().deps[dep].span().start, format!("deps[{dep}].{field}"))
            }
            Entry::Site(i) => (file.site[i].span().start, field.to_owned()),
            Entry::Provider { site, provider } => {
                (file.site[site].get_ref().providers[provider].span().start, format!("providers[{provider}].{field}"))
            }
        };
        at(offset, &problem).field(field)
    })?;

    let mut activity = ActivityBuilder::new(&params, &registry);
    for subscription in &file.subscription {
        let tag = subscription.span().start;
        let s = subscription.get_ref();
        activity
            .add_subscription(&s.user, Cents::new(s.paid_cents), tag as u64)
            .map_err(|e| at(tag, &e.problem).field("user"))?;
    }
    let mut usage = Vec::with_capacity(file.usage.len());
    let mut calls = Vec::new();
    for row in &file.usage {
        let tag = row.span().start;
        let u = row.get_ref();
        let site = registry
            .site_ix(&u.site)
            .ok_or_else(|| at(tag, &format!("there is no site {:?}", u.site)).field("site"))?;
        let user = activity.subscriber(&u.user);
        for (i, call) in u.calls.iter().enumerate() {
            let c = call.get_ref();
            let service = registry.site_ix(&c.service).ok_or_else(|| {
                at(call.span().start, &format!("there is no site {:?}", c.service)).field(format!("calls[{i}].service"))
            })?;
            if let Some(user) = user {
                calls.push(CallRow { user, site, service, ms: c.ms, tag: call.span().start as u64 });
            }
        }
        if let Some(user) = user {
            usage.push(UsageRow {
                user,
                site,
                active_minutes: u.active_minutes,
                service_ms: u.service_ms,
                tag: tag as u64,
            });
        }
    }
    activity.add_usage(usage);
    activity.add_calls(calls);
    let activity = activity.finish().map_err(|e| at(e.tag as usize, &e.problem))?;
    Ok(Scenario { params, registry, activity })
}

/// Deserializes TOML, turning the parser's error into one with a line, the
/// entry it is in and the key at fault.
pub(crate) fn parse_toml<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T, ScenarioError> {
    toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |span| span.start);
        let mut error = ScenarioError::at(path, text.as_bytes(), offset as u64, e.message());
        if e.span().is_none() {
            error.line = None;
        }
        if let Some(entry) = entry_at(text, offset) {
            error = error.entry(entry);
        }
        match key_on_line(text, offset) {
            Some(key) => error.field(key),
            None => error,
        }
    })
}

/// Validates `[params]`, pointing at the offending key.
pub(crate) fn params(path: &Path, text: &str, p: &ParamsToml, default_period: Period) -> Result<Params, ScenarioError> {
    let value = |v: &Option<Spanned<u64>>| v.as_ref().map(|s| *s.get_ref());
    let period = match &p.period {
        None => default_period,
        Some(label) => Period::parse(label.get_ref()).map_err(|e| {
            ScenarioError::at(path, text.as_bytes(), label.span().start as u64, e).entry("[params]").field("period")
        })?,
    };
    let spec = ParamsSpec {
        general_fund_bps: value(&p.general_fund_bps),
        provider_share_bps: value(&p.provider_share_bps),
        developer_share_bps: value(&p.developer_share_bps),
        pass_bps: value(&p.pass_bps),
        cents_per_cc: value(&p.cents_per_cc),
        reserve_contribution_bps: value(&p.reserve_contribution_bps),
    };
    Params::new(period, &spec).map_err(|(field, problem)| {
        let span = match field {
            "general_fund_bps" => &p.general_fund_bps,
            "provider_share_bps" => &p.provider_share_bps,
            "developer_share_bps" => &p.developer_share_bps,
            "pass_bps" => &p.pass_bps,
            "cents_per_cc" => &p.cents_per_cc,
            _ => &p.reserve_contribution_bps,
        };
        let error = match span {
            Some(s) => ScenarioError::at(path, text.as_bytes(), s.span().start as u64, problem),
            None => ScenarioError::file(path, problem),
        };
        error.entry("[params]").field(field)
    })
}

/// Names the table holding byte `offset`: `[params]` or `[[site]] #2`.
fn entry_at(text: &str, offset: usize) -> Option<String> {
    let before = &text[..text.len().min(offset)];
    let end_of_line = text[before.len()..].find('\n').map_or(text.len(), |i| before.len() + i);
    let headers = text[..end_of_line].lines().filter_map(table_header);
    let (array, name) = headers.clone().next_back()?;
    if array {
        let ordinal = headers.filter(|header| *header == (true, name)).count();
        Some(format!("[[{name}]] #{ordinal}"))
    } else {
        Some(format!("[{name}]"))
    }
}

/// `(is an array of tables, name)` for a table header line, even a malformed one.
fn table_header(line: &str) -> Option<(bool, &str)> {
    let line = line.trim();
    let inner = line.strip_prefix('[')?;
    let (array, inner) = match inner.strip_prefix('[') {
        Some(inner) => (true, inner),
        None => (false, inner),
    };
    Some((array, inner.split(']').next()?.trim()))
}

/// The key assigned on the line holding byte `offset`, if any.
fn key_on_line(text: &str, offset: usize) -> Option<String> {
    let start = text[..text.len().min(offset)].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    bare.then(|| key.to_owned())
}
