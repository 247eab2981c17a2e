//! App manifests: what an app is, where its source is, how to install and
//! run it, and what the platform enforces for it.
//!
//! ```toml
//! name = "notes"
//! version = "1.2.0"
//! project = "notes"                      # the developer project paid for it
//! repository = "https://example.org/notes.git"
//! license = "AGPL-3.0-or-later"          # an OSI-approved SPDX id
//! install = ["python3 -m pip install --target vendor notes-app==1.2.0"]
//! run = "python3 app.py"                 # must listen on $PORT
//! calls = ["search"]                     # platform services it calls
//! state = true                           # keeps files in $COMMONS_STATE_DIR
//! depends_on = [{ project = "http", weight = 2 }, { project = "markdown" }]
//!
//! [health]
//! path = "/healthz"
//! timeout_ms = 20000                     # how long a new instance may take
//! interval_ms = 5000                     # a running instance is probed this often;
//! failures = 3                           # this many failures in a row restart it (0: never)
//!
//! [tier]
//! free_requests_per_minute = 60
//! free_concurrent_requests = 4
//! premium_prefixes = ["/export"]
//!
//! [resources]
//! memory_mb = 256                        # resident memory (a cgroup limit)
//! open_files = 1024
//! processes = 512                        # processes and threads (a cgroup limit)
//! cpu_weight = 100                       # its share of contended CPU (1 to 10000)
//! cpu_percent = 200                      # at most two cores (none: no cap)
//!
//! [network]
//! outside = true                         # may reach the outside network (through the egress proxy)
//!
//! [requires]                             # interpreters it needs, at least these versions
//! python = "3.11"
//! node = "20"
//!
//! [auth]                                 # the app's own authentication, when it has one
//! pass_authorization = true              # `Authorization` headers not the platform's reach it
//! user_header = "X-Remote-User"          # the user's per-site pseudonym, in this header
//!
//! [env]                                  # the app's own settings, in its environment
//! TITLE = "Our notes"                    # a plain value (an operator may change it)
//! SECRET_KEY = { generate = "secret" }   # made once per site (64 hex digits), kept, sealed
//! ```

use std::path::Path;

use serde::Deserialize;

/// A validated manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub project: String,
    pub repository: String,
    /// An OSI-approved SPDX license id.
    pub license: String,
    /// Shell commands run once, in order, in the instance's directory.
    pub install: Vec<String>,
    /// The shell command that serves the app on `$PORT`.
    pub run: String,
    pub health: Health,
    pub calls: Vec<String>,
    pub depends_on: Vec<(String, u64)>,
    pub tier: Tier,
    pub resources: Resources,
    pub network: Network,
    /// It keeps files in `$COMMONS_STATE_DIR`, which outlive its instances
    /// (so it runs on one node at a time).
    pub state: bool,
    /// Its own settings, by name, in its environment.
    pub env: Vec<(String, EnvValue)>,
    pub auth: Auth,
    /// Interpreters it needs, each at least a version (`[requires]`).
    pub requires: Vec<(Interpreter, (u32, u32))>,
}

/// An interpreter a manifest may require, as a node runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpreter {
    /// `python3`
    Python,
    /// `node`
    Node,
}

impl Interpreter {
    pub const ALL: [(&'static str, Interpreter); 2] = [("python", Interpreter::Python), ("node", Interpreter::Node)];

    pub fn name(self) -> &'static str {
        match self {
            Interpreter::Python => "Python",
            Interpreter::Node => "Node.js",
        }
    }
}

/// How an app that authenticates on its own is given what it needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    /// `Authorization` headers that are not the platform's own tokens
    /// reach it (CalDAV, WebDAV, package registries, its own API tokens).
    pub pass_authorization: bool,
    /// A header it trusts for the user (a reverse proxy's), given the
    /// user's per-site pseudonym, never the user's name. The gateway checks
    /// the name is one it gives no meaning of its own.
    pub user_header: Option<String>,
}

/// Most settings a site may have (its manifest's and its operator's).
pub const ENV_ENTRIES_MAX: usize = 64;
/// Longest value of a setting, bytes.
pub const ENV_VALUE_BYTES_MAX: usize = 16 << 10;

/// A setting of an app's `[env]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvValue {
    /// This value, unless the site's operator set another.
    Plain(String),
    /// A secret the platform makes once per site (32 random bytes, as 64
    /// hex digits) and keeps, sealed.
    Secret,
}

/// Whether `name` may be an app's setting: a shell variable's name, not
/// one of the platform's (`PORT`, `HOME`, `PATH`, `COMMONS_*`,
/// `DATABASE_URL`, the proxies') nor one the runtime's environment
/// allow-list passes (`INHERITED_ENV`).
pub fn check_env_name(name: &str) -> Result<(), String> {
    let shaped = name.len() <= 64
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !shaped {
        return Err(format!("{name:?} must be a variable name: letters, digits and '_', not starting with a digit"));
    }
    let upper = name.to_ascii_uppercase();
    let platforms = ["PORT", "HOME", "PATH", "DATABASE_URL", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"];
    if upper.starts_with("COMMONS_") || platforms.contains(&upper.as_str()) || crate::INHERITED_ENV.contains(&name) {
        return Err(format!("{name:?} is the platform's to set"));
    }
    Ok(())
}

/// What an app may reach besides the platform's internal listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    /// The outside network (public addresses, through the node's egress
    /// proxy, `$HTTPS_PROXY`); never this machine nor private networks.
    /// Install steps always may: they fetch packages.
    pub outside: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// A path answering 2xx when the app is ready.
    pub path: String,
    /// How long a starting instance may take to become healthy.
    pub timeout_ms: u64,
    /// How often a running instance's health path is probed.
    pub interval_ms: u64,
    /// Failed probes in a row after which a running instance is restarted
    /// (0: it never is for failed probes, only when it exits).
    pub failures: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tier {
    pub free_requests_per_minute: Option<u32>,
    pub free_concurrent_requests: Option<u32>,
    pub premium_prefixes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resources {
    /// Most memory the app's processes may hold, resident, in MiB (the
    /// cgroup's memory limit; without confinement, address space:
    /// RLIMIT_AS). Node capacity is booked by it.
    pub memory_mb: u64,
    /// Most open files (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Most processes and threads at once (the cgroup's pids limit).
    pub processes: u64,
    /// Its share of the CPU when cores are contended, 1 to 10000 (100 is
    /// an ordinary share).
    pub cpu_weight: u32,
    /// At most this much CPU, in percent of one core (none: no cap).
    pub cpu_percent: Option<u32>,
}

impl Default for Resources {
    fn default() -> Resources {
        Resources { memory_mb: 1024, open_files: 1024, processes: 512, cpu_weight: 100, cpu_percent: None }
    }
}

/// Most processes (and threads) an app may ask for.
pub const PROCESSES_MAX: u64 = 4096;
/// Most open files an app may ask for.
pub const OPEN_FILES_MAX: u64 = 65_536;

/// Licenses often mistaken for open source, with why they are not.
const NOT_OPEN_SOURCE: &[(&str, &str)] = &[
    (
        "SSPL-1.0",
        "the Server Side Public License is not OSI-approved (it restricts offering the software as a service)",
    ),
    ("BUSL-1.1", "the Business Source License is source-available, not open source, until its change date"),
    ("Elastic-2.0", "the Elastic License restricts use as a managed service: source-available, not open source"),
    ("CC-BY-NC-4.0", "non-commercial licenses are not open source"),
    ("Commons-Clause", "the Commons Clause forbids selling the software: not open source"),
    ("proprietary", "proprietary software cannot run on OneCommons"),
];

/// Why a manifest is refused: the file, the field and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: {reason}")]
pub struct ManifestError {
    pub file: String,
    pub field: String,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestToml {
    name: String,
    version: String,
    project: String,
    repository: String,
    license: String,
    #[serde(default)]
    install: Vec<String>,
    run: String,
    health: HealthToml,
    #[serde(default)]
    calls: Vec<String>,
    #[serde(default)]
    depends_on: Vec<DepToml>,
    #[serde(default)]
    tier: TierToml,
    #[serde(default)]
    resources: ResourcesToml,
    #[serde(default)]
    network: NetworkToml,
    #[serde(default)]
    state: bool,
    #[serde(default)]
    env: std::collections::BTreeMap<String, EnvToml>,
    #[serde(default)]
    auth: AuthToml,
    #[serde(default)]
    requires: std::collections::BTreeMap<String, String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthToml {
    #[serde(default)]
    pass_authorization: bool,
    user_header: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EnvToml {
    Plain(String),
    Generate(GenerateToml),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateToml {
    generate: String,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkToml {
    #[serde(default)]
    outside: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthToml {
    path: String,
    #[serde(default = "default_health_timeout")]
    timeout_ms: u64,
    #[serde(default = "default_health_interval")]
    interval_ms: u64,
    #[serde(default = "default_health_failures")]
    failures: u32,
}

fn default_health_timeout() -> u64 {
    30_000
}

fn default_health_interval() -> u64 {
    5_000
}

fn default_health_failures() -> u32 {
    3
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepToml {
    project: String,
    #[serde(default = "one")]
    weight: u64,
}

fn one() -> u64 {
    1
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TierToml {
    free_requests_per_minute: Option<u32>,
    free_concurrent_requests: Option<u32>,
    #[serde(default)]
    premium_prefixes: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResourcesToml {
    memory_mb: Option<u64>,
    open_files: Option<u64>,
    processes: Option<u64>,
    cpu_weight: Option<u32>,
    cpu_percent: Option<u32>,
}

impl Manifest {
    /// Reads and checks the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            file: path.display().to_string(),
            field: "(file)".into(),
            reason: e.to_string(),
        })?;
        Manifest::parse(&path.display().to_string(), &text)
    }

    /// Parses and checks a manifest; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Manifest, ManifestError> {
        let error = |field: &str, reason: String| ManifestError { file: file.into(), field: field.into(), reason };
        let raw: ManifestToml = toml::from_str(text).map_err(|e| {
            let field = e.span().map_or_else(|| "(document)".to_owned(), |span| line_of(text, span.start));
            error(&field, e.message().to_owned())
        })?;
        for (field, value) in [("name", &raw.name), ("project", &raw.project)] {
            if !is_name(value) {
                return Err(error(
                    field,
                    format!(
                        "{value:?} must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
                    ),
                ));
            }
        }
        // It names the instance's directory: never a path.
        if !is_version(&raw.version) {
            return Err(error(
                "version",
                format!(
                    "{:?} must be 1 to 64 letters, digits, '.', '_', '-' or '+', starting with a letter or digit",
                    raw.version
                ),
            ));
        }
        check_license(&raw.license).map_err(|reason| error("license", reason))?;
        if raw.run.trim().is_empty() {
            return Err(error("run", "the run command is empty".into()));
        }
        if !raw.health.path.starts_with('/') || raw.health.path.contains(char::is_whitespace) {
            return Err(error("health.path", format!("{:?} must start with / and hold no spaces", raw.health.path)));
        }
        if raw.health.timeout_ms == 0 {
            return Err(error("health.timeout_ms", "must be at least 1".into()));
        }
        if raw.health.interval_ms < 100 {
            return Err(error("health.interval_ms", format!("{} must be at least 100", raw.health.interval_ms)));
        }
        if let Some(service) = raw.calls.iter().find(|s| !is_name(s)) {
            return Err(error("calls", format!("{service:?} is not a service name")));
        }
        let mut depends_on = Vec::new();
        for dep in raw.depends_on {
            if !is_name(&dep.project) || dep.project == raw.project {
                return Err(error("depends_on", format!("{:?} is not another project's id", dep.project)));
            }
            if dep.weight == 0 {
                return Err(error("depends_on", format!("the weight of {:?} must be at least 1", dep.project)));
            }
            if depends_on.iter().any(|(p, _)| *p == dep.project) {
                return Err(error("depends_on", format!("{:?} is listed twice", dep.project)));
            }
            depends_on.push((dep.project, dep.weight));
        }
        if let Some(prefix) = raw.tier.premium_prefixes.iter().find(|p| !p.starts_with('/')) {
            return Err(error("tier.premium_prefixes", format!("{prefix:?} must start with /")));
        }
        let defaults = Resources::default();
        let resources = Resources {
            memory_mb: raw.resources.memory_mb.unwrap_or(defaults.memory_mb),
            open_files: raw.resources.open_files.unwrap_or(defaults.open_files),
            processes: raw.resources.processes.unwrap_or(defaults.processes),
            cpu_weight: raw.resources.cpu_weight.unwrap_or(defaults.cpu_weight),
            cpu_percent: raw.resources.cpu_percent,
        };
        if resources.memory_mb < 16 || resources.open_files < 16 {
            return Err(error("resources", "memory_mb and open_files must be at least 16".into()));
        }
        if !(8..=PROCESSES_MAX).contains(&resources.processes) {
            return Err(error(
                "resources.processes",
                format!("{} must be from 8 to {PROCESSES_MAX}", resources.processes),
            ));
        }
        if resources.open_files > OPEN_FILES_MAX {
            return Err(error(
                "resources.open_files",
                format!("{} must be at most {OPEN_FILES_MAX}", resources.open_files),
            ));
        }
        if !(1..=10_000).contains(&resources.cpu_weight) {
            return Err(error("resources.cpu_weight", format!("{} must be from 1 to 10000", resources.cpu_weight)));
        }
        if let Some(percent) = resources.cpu_percent.filter(|p| !(1..=100_000).contains(p)) {
            return Err(error("resources.cpu_percent", format!("{percent} must be from 1 to 100000")));
        }
        let mut env = Vec::new();
        if raw.env.len() > ENV_ENTRIES_MAX {
            return Err(error("env", format!("{} settings: at most {ENV_ENTRIES_MAX}", raw.env.len())));
        }
        for (name, value) in raw.env {
            check_env_name(&name).map_err(|reason| error(&format!("env.{name}"), reason))?;
            let value = match value {
                EnvToml::Plain(value) if value.len() > ENV_VALUE_BYTES_MAX => {
                    return Err(error(&format!("env.{name}"), format!("longer than {ENV_VALUE_BYTES_MAX} bytes")));
                }
                EnvToml::Plain(value) => EnvValue::Plain(value),
                EnvToml::Generate(GenerateToml { generate }) if generate == "secret" => EnvValue::Secret,
                EnvToml::Generate(GenerateToml { generate }) => {
                    return Err(error(
                        &format!("env.{name}"),
                        format!("generate = {generate:?}: only \"secret\" is made"),
                    ));
                }
            };
            env.push((name, value));
        }
        let mut requires = Vec::new();
        for (name, version) in &raw.requires {
            let field = format!("requires.{name}");
            let Some((_, interpreter)) = Interpreter::ALL.iter().find(|(n, _)| n == name) else {
                let known: Vec<&str> = Interpreter::ALL.iter().map(|(n, _)| *n).collect();
                return Err(error(&field, format!("{name:?} is not an interpreter nodes run ({})", known.join(", "))));
            };
            let parsed = parse_version(version)
                .ok_or_else(|| error(&field, format!("{version:?} must be a version: N or N.M")))?;
            requires.push((*interpreter, parsed));
        }
        Ok(Manifest {
            name: raw.name,
            version: raw.version,
            project: raw.project,
            repository: raw.repository,
            license: raw.license,
            install: raw.install,
            run: raw.run,
            health: Health {
                path: raw.health.path,
                timeout_ms: raw.health.timeout_ms,
                interval_ms: raw.health.interval_ms,
                failures: raw.health.failures,
            },
            calls: raw.calls,
            depends_on,
            tier: Tier {
                free_requests_per_minute: raw.tier.free_requests_per_minute,
                free_concurrent_requests: raw.tier.free_concurrent_requests,
                premium_prefixes: raw.tier.premium_prefixes,
            },
            resources,
            network: Network { outside: raw.network.outside },
            state: raw.state,
            env,
            auth: Auth { pass_authorization: raw.auth.pass_authorization, user_header: raw.auth.user_header },
            requires,
        })
    }
}

/// `license` with each word that is an SPDX id or operator in another case
/// written as SPDX writes it, if that makes it an expression.
fn as_written(license: &str) -> Option<String> {
    let word = |w: &str| -> String {
        if let Some(op) = ["AND", "OR", "WITH"].iter().find(|op| op.eq_ignore_ascii_case(w)) {
            return (*op).to_owned();
        }
        let id = spdx::identifiers::LICENSES.iter().map(|l| l.0).find(|id| id.eq_ignore_ascii_case(w));
        id.map_or_else(|| w.to_owned(), str::to_owned)
    };
    let mut meant = String::new();
    let mut current = String::new();
    for c in license.chars().chain(std::iter::once(' ')) {
        if c.is_whitespace() || c == '(' || c == ')' {
            if !current.is_empty() {
                meant.push_str(&word(&current));
                current.clear();
            }
            meant.push(c);
        } else {
            current.push(c);
        }
    }
    let meant = meant.trim_end().to_owned();
    (meant != license && spdx::Expression::parse(&meant).is_ok()).then_some(meant)
}

/// Accepts an SPDX license expression under which the app is open source:
/// every license it must be taken under (`AND`), and one of each choice
/// (`OR`), approved by the OSI by the SPDX list's own record (the `spdx`
/// crate: the whole list, not a copy of ours); an exception (`WITH`) only
/// grants more. Otherwise says why, naming the license at fault.
pub fn check_license(license: &str) -> Result<(), String> {
    let open = |id: spdx::LicenseId| id.is_osi_approved();
    match spdx::Expression::parse(license) {
        Ok(expression) => {
            if expression.evaluate(|req| req.license.id().is_some_and(open)) {
                return Ok(());
            }
            let named: Vec<String> = expression.requirements().map(|r| r.req.license.to_string()).collect();
            let culprit = expression
                .requirements()
                .find(|r| !r.req.license.id().is_some_and(open))
                .map_or_else(|| license.to_owned(), |r| r.req.license.to_string());
            if let Some((_, why)) = NOT_OPEN_SOURCE.iter().find(|(id, _)| id.eq_ignore_ascii_case(&culprit)) {
                return Err(format!("{license:?} is refused: {why}"));
            }
            let what =
                if named.len() > 1 { format!("{license:?} needs {culprit:?}, which") } else { format!("{license:?}") };
            Err(format!(
                "{what} is not an OSI-approved open-source license (give SPDX ids or an expression of them, e.g. \"MIT\", \"Apache-2.0\", \"MIT OR Apache-2.0\")"
            ))
        }
        Err(error) => {
            if let Some((_, why)) = NOT_OPEN_SOURCE.iter().find(|(id, _)| id.eq_ignore_ascii_case(license)) {
                return Err(format!("{license:?} is refused: {why}"));
            }
            if let Some(meant) = as_written(license) {
                return Err(format!("{license:?} is not an SPDX expression as written; did you mean {meant:?}?"));
            }
            Err(format!(
                "{license:?} is not an OSI-approved open-source license nor an SPDX expression ({}); give SPDX ids, e.g. \"MIT\", \"Apache-2.0\", \"AGPL-3.0-or-later\"",
                error.reason
            ))
        }
    }
}

/// The rule for ids of apps, projects, sites, people and nodes: 1 to 64
/// letters, digits, `.`, `_` or `-`, the first a letter or digit (so
/// never `.` nor `..`: ids name directories).
pub fn is_name(name: &str) -> bool {
    name.len() <= 64
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `N` or `N.M` (a further `.P…` is read and ignored: `3.11.7`).
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = match parts.next() {
        Some(minor) => minor.parse().ok()?,
        None => 0,
    };
    Some((major, minor))
}

/// A version as a manifest may give it: a name, or a semantic version
/// with build metadata (`1.2.0+build.5`). Never a path: it names a
/// directory.
pub fn is_version(version: &str) -> bool {
    version.len() <= 64
        && version.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && version.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
}

fn line_of(text: &str, offset: usize) -> String {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    format!("line {line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "notes"
version = "1.0.0"
project = "notes"
repository = "https://example.org/notes.git"
license = "MIT"
run = "exec python3 app.py"
calls = ["search"]
depends_on = [{ project = "http", weight = 2 }, { project = "markdown" }]
[health]
path = "/healthz"
[tier]
free_requests_per_minute = 60
premium_prefixes = ["/export"]
"#;

    #[test]
    fn a_good_manifest_reads_with_its_defaults() {
        let m = Manifest::parse("notes.toml", GOOD).unwrap();
        assert_eq!(m.depends_on, [("http".to_owned(), 2), ("markdown".to_owned(), 1)]);
        assert_eq!(m.health.timeout_ms, 30_000);
        assert_eq!(m.resources, Resources::default());
        assert_eq!(m.tier.free_requests_per_minute, Some(60));
    }

    /// A version names the instance's directory, which root makes and
    /// copies into: a path in it (`/`, `..`, absolute) would put that
    /// anywhere, inside another instance's directory included.
    #[test]
    fn a_version_is_never_a_path() {
        for version in ["1.0-5/app/y", "../victim/1.0", "/etc/cron.d/x", "..", ".hidden", "1 0", ""] {
            let text = GOOD.replace("version = \"1.0.0\"", &format!("version = {version:?}"));
            let error = Manifest::parse("notes.toml", &text).unwrap_err().to_string();
            assert!(error.contains("version: "), "{version:?}: {error}");
        }
        for version in ["1.0.0", "2.1.0-rc.1", "1.2.0+build.5", "2026.12.01"] {
            let text = GOOD.replace("version = \"1.0.0\"", &format!("version = {version:?}"));
            assert_eq!(Manifest::parse("notes.toml", &text).unwrap().version, version);
        }
        for name in ["..", ".", ".x"] {
            let text = GOOD.replace("name = \"notes\"", &format!("name = {name:?}"));
            assert!(Manifest::parse("notes.toml", &text).is_err(), "{name:?}");
        }
    }

    #[test]
    fn settings_are_plain_values_or_secrets_the_platform_makes() {
        let text = format!("{GOOD}[env]\nTITLE = \"Our notes\"\nSECRET_KEY = {{ generate = \"secret\" }}\n");
        let m = Manifest::parse("notes.toml", &text).unwrap();
        assert_eq!(
            m.env,
            [("SECRET_KEY".into(), EnvValue::Secret), ("TITLE".into(), EnvValue::Plain("Our notes".into()))]
        );
    }

    /// Licenses are SPDX expressions over the whole SPDX list: open source
    /// when every license one must take (AND) and one of each choice (OR)
    /// is OSI-approved.
    #[test]
    fn a_license_is_an_spdx_expression_open_source_on_every_path_one_must_take() {
        for open in [
            "MIT OR Apache-2.0",
            "Zlib OR MIT",
            "Apache-2.0 WITH LLVM-exception",
            "MIT AND BSD-3-Clause",
            "(MIT OR BUSL-1.1)",
            "EUPL-1.2",
            "MPL-2.0",
        ] {
            assert_eq!(check_license(open), Ok(()), "{open}");
        }
        let refused = [
            ("MIT AND BUSL-1.1", "is refused: the Business Source License"),
            ("SSPL-1.0 OR BUSL-1.1", "is refused: the Server Side Public License"),
            ("CC-BY-NC-4.0", "is refused: non-commercial licenses are not open source"),
            ("Beerware", "\"Beerware\" is not an OSI-approved"),
            ("MIT AND Beerware", "needs \"Beerware\", which is not an OSI-approved"),
            ("mit or apache-2.0", "did you mean \"MIT OR Apache-2.0\""),
            ("LicenseRef-mine", "is not an OSI-approved"),
            ("MIT OR", "nor an SPDX expression"),
        ];
        for (license, expected) in refused {
            let said = check_license(license).unwrap_err();
            assert!(said.contains(expected), "{license}: {said}");
        }
    }

    #[test]
    fn a_premium_prefix_may_hold_a_comma() {
        let m = Manifest::parse("notes.toml", &GOOD.replace("[\"/export\"]", "[\"/export,csv\", \"/pro\"]")).unwrap();
        assert_eq!(m.tier.premium_prefixes, ["/export,csv", "/pro"]);
    }

    #[test]
    fn bad_manifests_say_which_field_and_why() {
        let cases = [
            (
                GOOD.replace("\"MIT\"", "\"SSPL-1.0\""),
                "license: \"SSPL-1.0\" is refused: the Server Side Public License",
            ),
            (GOOD.replace("\"MIT\"", "\"mit\""), "did you mean \"MIT\""),
            (GOOD.replace("\"MIT\"", "\"WTFPL-ish\""), "not an OSI-approved open-source license"),
            (GOOD.replace("path = \"/healthz\"", "path = \"healthz\""), "health.path"),
            (GOOD.replace("run = ", "runs = "), "unknown field `runs`"),
            (GOOD.replace("{ project = \"markdown\" }", "{ project = \"notes\" }"), "depends_on"),
            (GOOD.replace("name = \"notes\"", "name = \"no tes\""), "name: \"no tes\""),
            (GOOD.replace("[tier]", "[tier]\nfree_concurrent_requests = -1"), "line 13: invalid value"),
            (GOOD.replace("[\"/export\"]", "[\"export\"]"), "tier.premium_prefixes: \"export\" must start with /"),
            (GOOD.replace("[tier]", "[resources]\nprocesses = 100000\n[tier]"), "resources.processes"),
            (format!("{GOOD}[env]\nPORT = \"1\"\n"), "env.PORT: \"PORT\" is the platform's to set"),
            (
                format!("{GOOD}[requires]\nruby = \"3\"\n"),
                "requires.ruby: \"ruby\" is not an interpreter nodes run (python, node)",
            ),
            (format!("{GOOD}[requires]\npython = \"three\"\n"), "requires.python: \"three\" must be a version"),
            (format!("{GOOD}[env]\nCOMMONS_SITE = \"x\"\n"), "env.COMMONS_SITE"),
            (format!("{GOOD}[env]\n\"1X\" = \"x\"\n"), "env.1X: \"1X\" must be a variable name"),
            (format!("{GOOD}[env]\nKEY = {{ generate = \"password\" }}\n"), "env.KEY: generate = \"password\""),
        ];
        for (text, expected) in cases {
            let error = Manifest::parse("notes.toml", &text).unwrap_err().to_string();
            assert!(error.starts_with("notes.toml: ") && error.contains(expected), "{error}");
        }
    }
}
