//! The CSV form of a scenario: a directory of tables, one row per entry.
//!
//! Every file starts with a header naming its columns; columns may come in
//! any order, optional columns may be left out or left empty, and a column
//! the format does not know is an error. `usage.csv` and `calls.csv`, the
//! big ones, are split at line boundaries and parsed on every core (unless
//! they contain quotes, which could hide a line break inside a field).

use std::ops::Range;
use std::path::{Path, PathBuf};

use commons_core::{Cents, Period};
use settlement::{
    ActivityBuilder, ActivityProblem, CallRow, DepSpec, Entry, ProjectSpec, ProviderSpec, Registry, RegistryError,
    SiteSpec, SubscriberIx, UsageRow,
};

use crate::toml_form::{ParamsToml, params, parse_toml};
use crate::{Scenario, ScenarioError};

/// The files of the CSV form, in the order they are read.
pub(crate) const FILES: [&str; 8] = [
    "params.toml",
    "projects.csv",
    "deps.csv",
    "sites.csv",
    "site_providers.csv",
    "subscriptions.csv",
    "usage.csv",
    "calls.csv",
];

/// Bytes between two progress reports from one parsing thread.
const PROGRESS_STEP_BYTES: u64 = 4 << 20;

/// A column of a table: its header name and whether it must be present.
struct Column(&'static str, bool);

const PROJECTS: &[Column] = &[Column("id", true), Column("pass_bps", false)];
const DEPS: &[Column] = &[Column("project", true), Column("dep", true), Column("weight", false)];
const SITES: &[Column] = &[
    Column("id", true),
    Column("operator", true),
    Column("project", true),
    Column("provider_share_bps", false),
    Column("developer_share_bps", false),
];
const SITE_PROVIDERS: &[Column] = &[Column("site", true), Column("provider", true), Column("resource_weight", false)];
const SUBSCRIPTIONS: &[Column] = &[Column("user", true), Column("paid_cents", true)];
const USAGE: &[Column] =
    &[Column("user", true), Column("site", true), Column("active_minutes", true), Column("service_ms", false)];
const CALLS: &[Column] = &[Column("user", true), Column("site", true), Column("service", true), Column("ms", true)];

pub(crate) fn load(
    dir: &Path,
    default_period: Period,
    on_progress: &(dyn Fn(u64) + Sync),
) -> Result<Scenario, ScenarioError> {
    let params = match read_optional(&dir.join("params.toml"))? {
        None => params(dir, "", &ParamsToml::default(), default_period)?,
        Some(bytes) => {
            let path = dir.join("params.toml");
            let text = String::from_utf8(bytes).map_err(|_| ScenarioError::file(&path, "not valid UTF-8"))?;
            let parsed: ParamsToml = parse_toml(&path, &text)?;
            on_progress(text.len() as u64);
            params(&path, &text, &parsed, default_period)?
        }
    };

    let projects_table = Table::open(dir, "projects.csv", PROJECTS, on_progress)?;
    let mut projects = Vec::new();
    let mut project_offsets = Vec::new();
    projects_table.for_each(|row| {
        projects.push(ProjectSpec { id: row.str(0)?.to_owned(), pass_bps: row.optional_u64(1)?, deps: Vec::new() });
        project_offsets.push(row.offset);
        Ok(())
    })?;
    let mut dep_offsets: Vec<Vec<u64>> = vec![Vec::new(); projects.len()];
    let deps_table = Table::open_optional(dir, "deps.csv", DEPS, on_progress)?;
    if let Some(table) = &deps_table {
        let index: std::collections::HashMap<&str, usize> =
            projects.iter().enumerate().rev().map(|(i, p)| (p.id.as_str(), i)).collect();
        let mut deps: Vec<Vec<DepSpec>> = vec![Vec::new(); projects.len()];
        table.for_each(|row| {
            let project = row.str(0)?;
            let &i = index.get(project).ok_or_else(|| row.error(0, format!("there is no project {project:?}")))?;
            deps[i].push(DepSpec { project: row.str(1)?.to_owned(), weight: row.optional_u64(2)?.unwrap_or(1) });
            dep_offsets[i].push(row.offset);
            Ok(())
        })?;
        for (project, deps) in projects.iter_mut().zip(deps) {
            project.deps = deps;
        }
    }

    let sites_table = Table::open(dir, "sites.csv", SITES, on_progress)?;
    let mut sites = Vec::new();
    let mut site_offsets = Vec::new();
    sites_table.for_each(|row| {
        sites.push(SiteSpec {
            id: row.str(0)?.to_owned(),
            operator: row.str(1)?.to_owned(),
            project: row.str(2)?.to_owned(),
            provider_share_bps: row.optional_u64(3)?,
            developer_share_bps: row.optional_u64(4)?,
            providers: Vec::new(),
        });
        site_offsets.push(row.offset);
        Ok(())
    })?;
    let providers_table = Table::open(dir, "site_providers.csv", SITE_PROVIDERS, on_progress)?;
    let mut provider_offsets: Vec<Vec<u64>> = vec![Vec::new(); sites.len()];
    {
        let index: std::collections::HashMap<String, usize> =
            sites.iter().enumerate().rev().map(|(i, s)| (s.id.clone(), i)).collect();
        providers_table.for_each(|row| {
            let site = row.str(0)?;
            let &i = index.get(site).ok_or_else(|| row.error(0, format!("there is no site {site:?}")))?;
            sites[i].providers.push(ProviderSpec {
                provider: row.str(1)?.to_owned(),
                resource_weight: row.optional_u64(2)?.unwrap_or(1),
            });
            provider_offsets[i].push(row.offset);
            Ok(())
        })?;
    }

    let registry = Registry::new(&params, &projects, &sites).map_err(|RegistryError { entry, field, problem }| {
        let (table, offset, column) = match entry {
            Entry::Project(i) => (&projects_table, project_offsets[i], field),
            Entry::Dep { project, dep } => {
                let column = if field == "project" { "dep" } else { field };
                (deps_table.as_ref().expect("deps come from deps.csv"), dep_offsets[project][dep], column)
            }
            Entry::Site(i) => (&sites_table, site_offsets[i], field),
            Entry::Provider { site, provider } => (&providers_table, provider_offsets[site][provider], field),
        };
        let error = table.error_at(offset, problem);
        // A site without providers has no providers column to point at.
        if column == "providers" { error } else { error.field(column) }
    })?;

    let mut activity = ActivityBuilder::new(&params, &registry);
    let subscriptions = Table::open(dir, "subscriptions.csv", SUBSCRIPTIONS, on_progress)?;
    subscriptions.for_each(|row| {
        let paid = Cents::new(row.u64(1)?);
        activity.add_subscription(row.str(0)?, paid, row.offset).map_err(|e| row.error(0, e.problem))?;
        Ok(())
    })?;

    let usage_table = Table::open(dir, "usage.csv", USAGE, on_progress)?;
    let calls_table = Table::open_optional(dir, "calls.csv", CALLS, on_progress)?;
    let site = |row: &Row, column| {
        let id = row.str(column)?;
        registry.site_ix(id).ok_or_else(|| row.error(column, format!("there is no site {id:?}")))
    };
    // Exports list a user's rows together, so the previous row's user is
    // remembered: most rows then skip the lookup in a table of a million.
    let subscriber = |row: &Row, last: &mut (String, Option<SubscriberIx>)| {
        let user = row.str(0)?;
        if last.0 != user {
            last.0.clear();
            last.0.push_str(user);
            last.1 = activity.subscriber(user);
        }
        Ok(last.1)
    };
    let usage = usage_table.parse_parallel(on_progress, |row, last| {
        let site = site(row, 1)?;
        let active_minutes = row.u64(2)?;
        let service_ms = row.optional_u64(3)?.unwrap_or(0);
        Ok(subscriber(row, last)?.map(|user| UsageRow { user, site, active_minutes, service_ms, tag: row.offset }))
    })?;
    let calls = match &calls_table {
        None => Vec::new(),
        Some(table) => table.parse_parallel(on_progress, |row, last| {
            let (site, service, ms) = (site(row, 1)?, site(row, 2)?, row.u64(3)?);
            Ok(subscriber(row, last)?.map(|user| CallRow { user, site, service, ms, tag: row.offset }))
        })?,
    };
    activity.add_usage(usage);
    activity.add_calls(calls);
    let activity = activity.finish().map_err(|e| {
        let table = match (&e.problem, &calls_table) {
            (
                ActivityProblem::DuplicateCall { .. }
                | ActivityProblem::CallWithoutUsage { .. }
                | ActivityProblem::SelfCall(_),
                Some(calls),
            ) => calls,
            _ => &usage_table,
        };
        table.error_at(e.tag, e.problem)
    })?;
    Ok(Scenario { params, registry, activity })
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ScenarioError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ScenarioError::file(path, format!("cannot read: {e}"))),
    }
}

/// One CSV file in memory, with its header checked.
struct Table {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Where the records start, after the header line.
    data_start: usize,
    /// For each of the format's columns, its position in this file's records.
    positions: Vec<Option<usize>>,
    names: Vec<&'static str>,
    n_fields: usize,
}

/// One record of a [`Table`].
struct Row<'t> {
    table: &'t Table,
    record: &'t csv::ByteRecord,
    /// The record's byte offset in the file: its tag, and its line on error.
    offset: u64,
}

impl Table {
    fn open(
        dir: &Path,
        name: &str,
        columns: &[Column],
        on_progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Table, ScenarioError> {
        Table::open_optional(dir, name, columns, on_progress)?.ok_or_else(|| {
            ScenarioError::file(&dir.join(name), "this file is required in a CSV scenario directory, and is missing")
        })
    }

    fn open_optional(
        dir: &Path,
        name: &str,
        columns: &[Column],
        on_progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Option<Table>, ScenarioError> {
        let path = dir.join(name);
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(bytes.as_slice());
        let mut header = csv::ByteRecord::new();
        let at_header = |problem: String| ScenarioError { line: Some(1), ..ScenarioError::file(&path, problem) };
        if !reader.read_byte_record(&mut header).map_err(|e| at_header(e.to_string()))? {
            return Err(at_header(format!("the header line is missing; expected columns {}", expected(columns))));
        }
        let data_start = reader.position().byte() as usize;
        let mut positions = vec![None; columns.len()];
        for (position, name) in header.iter().enumerate() {
            let name = std::str::from_utf8(name).unwrap_or("").trim();
            let column = columns
                .iter()
                .position(|c| c.0 == name)
                .ok_or_else(|| at_header(format!("unknown column {name:?}; the columns are {}", expected(columns))))?;
            if positions[column].replace(position).is_some() {
                return Err(at_header(format!("column {name:?} appears twice")));
            }
        }
        if let Some(missing) = columns.iter().zip(&positions).find(|(c, p)| c.1 && p.is_none()) {
            return Err(at_header(format!("required column {:?} is missing", missing.0.0)));
        }
        on_progress(data_start as u64);
        let n_fields = header.len();
        Ok(Some(Table { path, bytes, data_start, positions, names: columns.iter().map(|c| c.0).collect(), n_fields }))
    }

    fn error_at(&self, offset: u64, problem: impl std::fmt::Display) -> ScenarioError {
        ScenarioError::at(&self.path, &self.bytes, offset, problem)
    }

    /// Calls `each` on every record in order, stopping at the first error.
    fn for_each(&self, mut each: impl FnMut(&Row) -> Result<(), ScenarioError>) -> Result<(), ScenarioError> {
        self.records(self.data_start..self.bytes.len(), &|_| {}, |row| each(row))
    }

    /// Maps every record to at most one item, on every core; items come out
    /// in file order, and the error reported is the first in the file. Each
    /// thread has its own `S` for `map` to keep state in.
    fn parse_parallel<T: Send, S: Default>(
        &self,
        on_progress: &(dyn Fn(u64) + Sync),
        map: impl Fn(&Row, &mut S) -> Result<Option<T>, ScenarioError> + Sync,
    ) -> Result<Vec<T>, ScenarioError> {
        let chunks = self.chunks(std::thread::available_parallelism().map_or(1, |n| n.get()));
        let results: Vec<Result<Vec<T>, ScenarioError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    let map = &map;
                    scope.spawn(move || {
                        let mut items = Vec::with_capacity(chunk.len() / 24);
                        let mut state = S::default();
                        self.records(chunk, on_progress, |row| {
                            items.extend(map(row, &mut state)?);
                            Ok(())
                        })?;
                        Ok(items)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a parsing thread panicked")).collect()
        });
        let mut items = Vec::new();
        for result in results {
            items.append(&mut result?);
        }
        Ok(items)
    }

    /// Splits the records into about `n` ranges at line starts; a file with
    /// quotes stays whole, since a quoted field may hold a line break.
    fn chunks(&self, n: usize) -> Vec<Range<usize>> {
        let data = self.data_start..self.bytes.len();
        if n <= 1 || data.len() < 1 << 20 || memchr::memchr(b'"', &self.bytes[data.clone()]).is_some() {
            return vec![data];
        }
        let mut chunks = Vec::with_capacity(n);
        let mut start = data.start;
        for i in 1..n {
            let target = (data.start + data.len() * i / n).max(start);
            let Some(newline) = memchr::memchr(b'\n', &self.bytes[target..]) else {
                break;
            };
            let end = target + newline + 1;
            chunks.push(start..end);
            start = end;
        }
        chunks.push(start..data.end);
        chunks
    }

    fn records(
        &self,
        range: Range<usize>,
        on_progress: &(dyn Fn(u64) + Sync),
        mut each: impl FnMut(&Row) -> Result<(), ScenarioError>,
    ) -> Result<(), ScenarioError> {
        let base = range.start as u64;
        let mut reader =
            csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(&self.bytes[range.clone()]);
        let mut record = csv::ByteRecord::new();
        let mut reported = 0;
        loop {
            let offset = base + reader.position().byte();
            match reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => return Err(self.error_at(offset, e)),
            }
            let offset = base + record.position().map_or(offset - base, |p| p.byte());
            if record.len() != self.n_fields {
                let problem = format!("{} fields where the header has {}", record.len(), self.n_fields);
                return Err(self.error_at(offset, problem));
            }
            each(&Row { table: self, record: &record, offset })?;
            if offset - base - reported >= PROGRESS_STEP_BYTES {
                on_progress(offset - base - reported);
                reported = offset - base;
            }
        }
        on_progress(range.len() as u64 - reported);
        Ok(())
    }
}

impl Row<'_> {
    fn error(&self, column: usize, problem: impl std::fmt::Display) -> ScenarioError {
        self.table.error_at(self.offset, problem).field(self.table.names[column])
    }

    /// The raw field of a format column; empty when the file leaves it out.
    fn raw(&self, column: usize) -> &[u8] {
        self.table.positions[column].and_then(|p| self.record.get(p)).unwrap_or(b"")
    }

    fn str(&self, column: usize) -> Result<&str, ScenarioError> {
        let raw = self.raw(column);
        let text = std::str::from_utf8(raw).map_err(|_| self.error(column, "not valid UTF-8"))?;
        if text.is_empty() {
            return Err(self.error(column, "a value is required"));
        }
        Ok(text)
    }

    fn u64(&self, column: usize) -> Result<u64, ScenarioError> {
        self.optional_u64(column)?.ok_or_else(|| self.error(column, "a value is required"))
    }

    fn optional_u64(&self, column: usize) -> Result<Option<u64>, ScenarioError> {
        let raw = self.raw(column);
        if raw.is_empty() {
            return Ok(None);
        }
        let number = std::str::from_utf8(raw).ok().and_then(|s| s.parse::<u64>().ok());
        match number {
            Some(n) => Ok(Some(n)),
            None => {
                let shown = String::from_utf8_lossy(raw);
                Err(self.error(column, format!("{shown:?} is not a whole number from 0 to {}", u64::MAX)))
            }
        }
    }
}

fn expected(columns: &[Column]) -> String {
    let names: Vec<String> =
        columns.iter().map(|c| if c.1 { c.0.to_owned() } else { format!("{} (optional)", c.0) }).collect();
    names.join(", ")
}
