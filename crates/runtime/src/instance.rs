//! One running instance of an app: installed in its own directory, started
//! as a supervised process group listening on `$PORT`, checked, restarted
//! with backoff when it dies, and metered (CPU time and memory).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::Manifest;
use crate::sandbox::{Confinement, Jail};
use crate::seccomp::{denied_syscalls, lock_down};

/// The variable holding the platform's internal listener's URL, which a
/// confined app reaches at the same loopback port inside its namespace.
pub const INTERNAL_URL_ENV: &str = "COMMONS_INTERNAL_URL";
/// The variable naming the site's state directory.
pub const STATE_DIR_ENV: &str = "COMMONS_STATE_DIR";

/// Lines of an app's log shown when it fails.
const LOG_TAIL_LINES: usize = 20;
/// Longest wait between restarts of an instance that keeps dying.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What an instance runs, and where.
#[derive(Clone, Debug)]
pub struct InstanceSpec {
    pub site: String,
    pub manifest: Manifest,
    /// The app's files, copied into the instance's directory.
    pub source: PathBuf,
    /// The instance's own directory (made anew: whatever is there is removed).
    pub dir: PathBuf,
    pub port: u16,
    /// More environment, e.g. where the platform's internal listener is
    /// ([`INTERNAL_URL_ENV`]).
    pub env: Vec<(String, String)>,
    /// In a sandbox of its own, or (said so by the operator) not.
    pub confinement: Confinement,
    /// The site's state directory (`$COMMONS_STATE_DIR`), when its
    /// manifest keeps state: created if missing, the site's, kept.
    pub state_dir: Option<PathBuf>,
}

/// Why an instance could not be installed or started.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("installing {site}: `{step}` failed ({status}); the end of its log:\n{tail}")]
    Install { site: String, step: String, status: String, tail: String },
    #[error("{site} did not become healthy at {path} within {timeout_ms} ms; the end of its log:\n{tail}")]
    Unhealthy { site: String, path: String, timeout_ms: u64, tail: String },
    #[error("{site}: {0}", site = .1)]
    Io(std::io::Error, String),
    #[error("{site}: {detail}")]
    Requires { site: String, detail: String },
}

/// CPU and memory an instance used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceUse {
    /// CPU time of the instance's processes, in milliseconds.
    pub cpu_ms: u64,
    /// Resident memory integrated over time, in MiB·seconds.
    pub memory_mib_s: u64,
}

/// Live state shared with the supervising task.
struct State {
    pid: AtomicU32,
    restarts: AtomicU32,
    healthy: AtomicBool,
    /// Used and not yet taken, and the CPU time (ms) at the last sample:
    /// of the control group (confined), else of the process group.
    usage: Mutex<(ResourceUse, u64)>,
    /// The control group of a confined instance, which meters it.
    group: Option<Arc<crate::cgroup::Cgroup>>,
    /// What happened to it and was not yet taken (restarts and why).
    events: Mutex<Vec<String>>,
}

/// A running, supervised instance. Dropping it stops it in the background
/// (nothing of it runs on unseen); [`Instance::stop`] stops it and waits.
pub struct Instance {
    pub site: String,
    pub version: String,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// Its network namespace, where `addr` is, when it is confined.
    namespace: Option<Arc<netns::Namespace>>,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Instance {
    /// Installs the app into `spec.dir`, starts it and waits until its
    /// health path answers 2xx (within the manifest's timeout); then keeps
    /// it running: a process that dies is started again after a backoff
    /// (0.2 s doubling to 10 s, reset after a minute of health).
    pub async fn start(spec: InstanceSpec) -> Result<Instance, InstanceError> {
        let site = spec.site.clone();
        let io = |e: std::io::Error| InstanceError::Io(e, site.clone());
        if !spec.manifest.requires.is_empty() {
            let requires = spec.manifest.requires.clone();
            let lacking = tokio::task::spawn_blocking(move || lacks(&requires))
                .await
                .map_err(|e| io(std::io::Error::other(e)))?;
            if let Some(detail) = lacking {
                return Err(InstanceError::Requires { site, detail });
            }
        }
        copy_app(&spec).await.map_err(io)?;
        if let Some(state) = &spec.state_dir {
            tokio::fs::create_dir_all(state).await.map_err(io)?;
        }
        let mut jail = match &spec.confinement {
            Confinement::Confined(sandbox) => {
                let internal = internal_addr(&spec.env);
                let limits = limits(&spec.manifest);
                let (dir, state) = (&spec.dir, spec.state_dir.as_deref());
                Some(Jail::new(sandbox, &spec.site, dir, state, internal, &limits, Some(spec.port)).await.map_err(io)?)
            }
            Confinement::Unconfined => {
                tracing::warn!(site = %spec.site, "this instance runs UNCONFINED (--unconfined)");
                note_in_log(
                    &spec.dir,
                    "commons: this instance runs UNCONFINED (--unconfined): it can read the platform's keys and reach every other app",
                );
                None
            }
        };
        let installed = install(&spec, jail.as_ref()).await;
        let install_cpu_ms = *installed.as_ref().unwrap_or(&0);
        let spawned = match installed {
            Ok(_) => {
                if let Some(jail) = jail.as_mut().filter(|_| !spec.manifest.network.outside) {
                    jail.close_egress();
                }
                spawn(&spec, jail.as_ref()).await.map_err(io)
            }
            Err(e) => Err(e),
        };
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                finish(jail).await;
                return Err(e);
            }
        };
        let namespace = jail.as_ref().map(|j| j.namespace.clone());
        let addr = SocketAddr::from(([127, 0, 0, 1], spec.port));
        let state = Arc::new(State {
            pid: AtomicU32::new(child.id().unwrap_or(0)),
            restarts: AtomicU32::new(0),
            healthy: AtomicBool::new(false),
            usage: Mutex::new((ResourceUse { cpu_ms: install_cpu_ms, memory_mib_s: 0 }, 0)),
            group: jail.as_ref().map(|j| j.group.clone()),
            events: Mutex::default(),
        });
        if !wait_healthy(&spec, namespace.as_deref(), addr, &mut child).await {
            kill_group(&child);
            let _ = child.wait().await;
            finish(jail).await;
            return Err(InstanceError::Unhealthy {
                site: spec.site.clone(),
                path: spec.manifest.health.path.clone(),
                timeout_ms: spec.manifest.health.timeout_ms,
                tail: log_tail(&spec.dir),
            });
        }
        state.healthy.store(true, Ordering::Relaxed);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(supervise(spec.clone(), jail, child, state.clone(), stopped));
        Ok(Instance {
            site: spec.site,
            version: spec.manifest.version,
            addr,
            dir: spec.dir,
            namespace,
            state,
            stop,
            task: Some(task),
        })
    }

    /// Stops the instance: SIGTERM to its processes, SIGKILL after 5 s.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// The network namespace its address is in (none: the host's).
    pub fn namespace(&self) -> Option<&Arc<netns::Namespace>> {
        self.namespace.as_ref()
    }

    pub fn is_healthy(&self) -> bool {
        self.state.healthy.load(Ordering::Relaxed)
    }

    /// How many times it was started again after dying.
    pub fn restarts(&self) -> u32 {
        self.state.restarts.load(Ordering::Relaxed)
    }

    /// The process group's id (the first process), 0 between restarts.
    pub fn pid(&self) -> u32 {
        self.state.pid.load(Ordering::Relaxed)
    }

    /// What happened to it since the last call, a line each: restarts and
    /// why (it exited, it failed its health probes, it was killed for
    /// exceeding its memory limit). For the public history.
    pub fn take_events(&self) -> Vec<String> {
        std::mem::take(&mut *self.state.events.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// CPU time and memory used since the last call (the meter's delta),
    /// CPU time sampled now.
    pub fn take_usage(&self) -> ResourceUse {
        cpu_sample(&self.state, self.pid());
        std::mem::take(&mut self.state.usage.lock().unwrap_or_else(|e| e.into_inner()).0)
    }

    /// Where its output goes.
    pub fn log_path(&self) -> PathBuf {
        log_path(&self.dir)
    }
}

/// The log of an instance in `dir`: `dir` + `.log`, beside it, never in
/// it. The instance's directory is the app's to change (confined, as its
/// own user): a log in it could be made a link to a file of the
/// platform's, which the agent would then write to or read back.
pub fn log_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".log");
    dir.with_file_name(name)
}

/// What of `requires` this machine lacks, said (the first), if anything.
fn lacks(requires: &[(crate::manifest::Interpreter, (u32, u32))]) -> Option<String> {
    requires.iter().find_map(|&(interpreter, (major, minor))| {
        let needs = format!("it needs {} {major}.{minor} or later", interpreter.name());
        match installed(interpreter) {
            None => Some(format!("{needs}, and this node has none ({} is not found)", command_of(interpreter))),
            Some((version, text)) if version < (major, minor) => Some(format!("{needs}; this node has {text}")),
            Some(_) => None,
        }
    })
}

fn command_of(interpreter: crate::manifest::Interpreter) -> &'static str {
    match interpreter {
        crate::manifest::Interpreter::Python => "python3",
        crate::manifest::Interpreter::Node => "node",
    }
}

/// This machine's version of `interpreter` (as a number, and as it says
/// it), asked once per run of the platform.
fn installed(interpreter: crate::manifest::Interpreter) -> Option<((u32, u32), String)> {
    use crate::manifest::Interpreter;
    type Found = std::sync::OnceLock<Option<((u32, u32), String)>>;
    static PYTHON: Found = Found::new();
    static NODE: Found = Found::new();
    let (cell, args): (&Found, &[&str]) = match interpreter {
        Interpreter::Python => (&PYTHON, &["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"]),
        Interpreter::Node => (&NODE, &["--version"]),
    };
    cell.get_or_init(|| {
        let output = std::process::Command::new(command_of(interpreter)).args(args).output().ok()?;
        let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let version = crate::manifest::parse_version(&text)?;
        output.status.success().then_some((version, text))
    })
    .clone()
}

/// Copies the app into `dir/app`, `dir` made anew: a directory left by
/// an earlier start of the same generation held what its app chose to put
/// there (links to the platform's files, say), which the agent, as root,
/// would otherwise copy into and change the owner of.
async fn copy_app(spec: &InstanceSpec) -> std::io::Result<()> {
    let (from, dir) = (spec.source.clone(), spec.dir.clone());
    tokio::task::spawn_blocking(move || {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // remove_dir_all does not follow links.
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir(&dir)?;
        copy_dir(&from, &dir.join("app"))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Where [`INTERNAL_URL_ENV`] says the internal listener is.
fn internal_addr(env: &[(String, String)]) -> Option<SocketAddr> {
    let (_, url) = env.iter().find(|(name, _)| name == INTERNAL_URL_ENV)?;
    url.strip_prefix("http://")?.trim_end_matches('/').parse().ok()
}

/// Runs the install steps in the app's directory, each with a shell,
/// output to the log.
async fn install(spec: &InstanceSpec, jail: Option<&Jail>) -> Result<u64, InstanceError> {
    let io = |e: std::io::Error| InstanceError::Io(e, spec.site.clone());
    if spec.manifest.install.is_empty() {
        return Ok(0);
    }
    let deadline = tokio::time::Instant::now() + INSTALL_TIMEOUT;
    // Confined, the steps have a control group of their own, removed (and
    // whatever they left running killed) once they are done.
    let group = match jail {
        Some(jail) => Some(Arc::new(jail.install_group(&spec.site, &limits(&spec.manifest)).map_err(io)?)),
        None => None,
    };
    // Should this future be dropped (its start given up), the group goes too.
    let mut guard = crate::sandbox::RemoveOnDrop(group.clone());
    let mut outcome = Ok(());
    for step in &spec.manifest.install {
        let sandbox = jail.zip(group.as_deref());
        // Past the deadline the step's process is dropped, which kills it
        // (and its sandbox with it).
        let status = match command(spec, sandbox, step, false) {
            Ok(mut command) => match tokio::time::timeout_at(deadline, command.kill_on_drop(true).status()).await {
                Ok(status) => status.map_err(io),
                Err(_) => Err(InstanceError::Install {
                    site: spec.site.clone(),
                    step: step.clone(),
                    status: format!("still running after {} s, all steps together: stopped", INSTALL_TIMEOUT.as_secs()),
                    tail: log_tail(&spec.dir),
                }),
            },
            Err(e) => Err(io(e)),
        };
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => {
                outcome = Err(InstanceError::Install {
                    site: spec.site.clone(),
                    step: step.clone(),
                    status: status.to_string(),
                    tail: log_tail(&spec.dir),
                });
                break;
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    // What the steps burned is the site's, as the app's own CPU is.
    let mut cpu_ms = 0;
    guard.disarm();
    if let Some(group) = group {
        let removed = tokio::task::spawn_blocking(move || {
            group.kill_all();
            let cpu_ms = group.cpu_ns() / 1_000_000;
            group.remove().map(|()| cpu_ms)
        });
        cpu_ms = removed.await.map_err(std::io::Error::other).and_then(|r| r).map_err(io)?;
    }
    outcome.map(|()| cpu_ms)
}

/// How long an instance's install steps may take, together.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// The control group limits of the app in `manifest`.
fn limits(manifest: &Manifest) -> crate::cgroup::Limits {
    let resources = &manifest.resources;
    crate::cgroup::Limits {
        memory_bytes: resources.memory_mb.saturating_mul(1 << 20),
        pids: resources.processes,
        cpu_weight: resources.cpu_weight,
        cpu_quota_percent: resources.cpu_percent,
    }
}

/// Ends a jail (its group's processes killed, the group removed), off the
/// async threads.
async fn finish(jail: Option<Jail>) {
    if let Some(jail) = jail {
        let _ = tokio::task::spawn_blocking(move || jail.finish()).await;
    }
}

/// Copies the directory `from` into `to` (created), recursively: regular
/// files and directories only. A symbolic link (or anything else) is
/// refused, naming it, and never followed.
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), target)?;
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a regular file or a directory (a symbolic link?): apps are copied without them",
                    entry.path().display()
                ),
            ));
        }
    }
    Ok(())
}

/// Appends a line of the platform's own to an instance's log, where
/// `commons logs` shows it beside the app's.
fn note_in_log(dir: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut log) = open_log(dir) {
        let _ = writeln!(log, "{line}");
    }
}

/// The log, opened to append; never through a link, never anything but a
/// regular file.
fn open_log(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(log_path(dir))?;
    if !log.metadata()?.is_file() {
        return Err(std::io::Error::other(format!("{} is not a regular file", log_path(dir).display())));
    }
    Ok(log)
}

/// How much of a log's end is read for its tail.
const LOG_TAIL_BYTES: u64 = 64 << 10;

/// The last lines of an instance's log (of its last 64 KiB at most).
pub fn log_tail(dir: &Path) -> String {
    let text = read_end(&log_path(dir), LOG_TAIL_BYTES);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    if tail.is_empty() { "(the log is empty)".to_owned() } else { tail }
}

/// The last `bytes` of the regular file at `path`, as text (nothing when
/// it is missing, a link or not a regular file).
pub fn read_end(path: &Path, bytes: u64) -> String {
    use std::io::{Read, Seek};
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path);
    let Ok(mut file) = opened else { return String::new() };
    let Ok(meta) = file.metadata() else { return String::new() };
    if !meta.is_file() || file.seek(std::io::SeekFrom::Start(meta.len().saturating_sub(bytes))).is_err() {
        return String::new();
    }
    let mut end = Vec::new();
    let _ = file.take(bytes).read_to_end(&mut end);
    String::from_utf8_lossy(&end).into_owned()
}

/// What an app may take from the platform's environment: where programs
/// are, where home is, the locale and zone, and how this machine reaches
/// the outside and trusts TLS (proxies, CA bundles), which install steps
/// need to fetch packages. Nothing else: the platform's own variables
/// (database URLs, credentials, `COMMONS_*` settings) are never an app's.
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
];

/// Prefixes of the package managers' own settings (pip's, npm's), which
/// say where this machine's registries are and how to trust them; never
/// their credentials ([`is_credential`]).
pub const INHERITED_ENV_PREFIXES: &[&str] = &["PIP_", "npm_config_", "NPM_CONFIG_"];

/// A package manager's setting that holds a secret: its name says so
/// (`…AUTH…`, `…TOKEN…`, `…PASSWORD…`, `…SECRET…`, `…_KEY`), or its value
/// is a URL with a user in it (`https://user:pass@registry/…`).
fn is_credential(name: &str, value: &std::ffi::OsStr) -> bool {
    let upper = name.to_ascii_uppercase();
    let named =
        ["AUTH", "TOKEN", "PASSWORD", "PASSWD", "SECRET", "_KEY", "CREDENTIAL"].iter().any(|w| upper.contains(w));
    let value = value.to_string_lossy();
    let user_in_url = value.split_whitespace().any(|v| {
        v.split_once("://").is_some_and(|(_, rest)| rest.split(['/', '?', '#']).next().is_some_and(|a| a.contains('@')))
    });
    named || user_in_url
}

/// An app's environment, for its install steps and its process alike:
/// cleared, then [`INHERITED_ENV`] from the platform's, then `PORT`,
/// `COMMONS_SITE` and what the manifest and the platform give
/// (`spec.env`). Confined, its home is its instance's directory (the rest
/// of the system is read-only) and the internal listener is on loopback.
fn app_env(spec: &InstanceSpec, jail: Option<&Jail>) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut env: std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString> = std::env::vars_os()
        .filter(|(name, value)| {
            name.to_str().is_some_and(|name| {
                INHERITED_ENV.contains(&name)
                    || (INHERITED_ENV_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
                        && !is_credential(name, value))
            })
        })
        .collect();
    let mut set = |name: &str, value: &std::ffi::OsStr| {
        env.insert(name.into(), value.to_owned());
    };
    set("PORT", spec.port.to_string().as_ref());
    set("COMMONS_SITE", spec.site.as_ref());
    for (name, value) in &spec.env {
        set(name, value.as_ref());
    }
    if let Some(state) = &spec.state_dir {
        set(STATE_DIR_ENV, jail.map_or(state.as_path(), |j| j.state_dir().unwrap_or(state)).as_os_str());
    }
    if let Some(jail) = jail {
        set("HOME", jail.dir().as_os_str());
        if let Some(internal) = internal_addr(&spec.env) {
            set(INTERNAL_URL_ENV, format!("http://127.0.0.1:{}", internal.port()).as_ref());
        }
        // The way out, when there is one, and never for loopback (the
        // internal listener is there).
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy"] {
            env.remove(std::ffi::OsStr::new(name));
        }
        if let Some(port) = jail.egress_port() {
            let proxy = format!("http://127.0.0.1:{port}");
            for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                env.insert(name.into(), proxy.clone().into());
            }
            for name in ["NO_PROXY", "no_proxy"] {
                env.insert(name.into(), "127.0.0.1,localhost,::1".into());
            }
        }
    }
    env.into_iter().collect()
}

/// A command running `script` with a shell in the app's directory, with
/// the app's environment, under the seccomp filter: in the instance's
/// sandbox and the control group given, or (unconfined) as a process of
/// the platform's user with rlimits. Output goes to the instance's log.
fn command(
    spec: &InstanceSpec,
    sandbox: Option<(&Jail, &crate::cgroup::Cgroup)>,
    script: &str,
    serving: bool,
) -> std::io::Result<Command> {
    let filter = denied_syscalls()?;
    let files = spec.manifest.resources.open_files;
    let jail = sandbox.map(|(jail, _)| jail);
    let env = app_env(spec, jail);
    let mut command = match sandbox {
        Some((jail, group)) => jail.command(script, filter, files, group, &env)?,
        None => {
            let mut command = Command::new("sh");
            command.arg("-c").arg(script).current_dir(spec.dir.join("app"));
            // Unconfined, the memory limit can only be one of address space.
            let memory = if serving { spec.manifest.resources.memory_mb.saturating_mul(1 << 20) } else { u64::MAX };
            // SAFETY: between fork and exec only prctl, seccomp (with the
            // filter built before the fork) and setrlimit run, which are
            // async-signal-safe and touch no memory of the parent.
            unsafe {
                command.pre_exec(move || {
                    // If the agent dies, so does the app: no orphan keeps a
                    // port or serves outside the platform's view. (The
                    // signal follows the forking thread: a runtime worker,
                    // alive as long as the agent.)
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    lock_down(filter)?;
                    let limit = |resource, value: u64| {
                        let rlimit = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: value as libc::rlim_t };
                        if libc::setrlimit(resource, &rlimit) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    };
                    if memory != u64::MAX {
                        limit(libc::RLIMIT_AS, memory)?;
                    }
                    limit(libc::RLIMIT_NOFILE, files)
                });
            }
            command.env_clear().envs(env);
            command
        }
    };
    let log = open_log(&spec.dir)?;
    command.stdin(std::process::Stdio::null()).stdout(log.try_clone()?).stderr(log);
    Ok(command)
}

/// Starts the app's process in its own process group, with its limits.
async fn spawn(spec: &InstanceSpec, jail: Option<&Jail>) -> std::io::Result<Child> {
    let sandbox = jail.map(|jail| (jail, &*jail.group));
    command(spec, sandbox, &spec.manifest.run, true)?.process_group(0).kill_on_drop(true).spawn()
}

/// Polls the health path until it answers 2xx, the process exits, or the
/// manifest's timeout passes.
async fn wait_healthy(
    spec: &InstanceSpec,
    namespace: Option<&netns::Namespace>,
    addr: SocketAddr,
    child: &mut Child,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(spec.manifest.health.timeout_ms);
    let mut pause = Duration::from_millis(2);
    while tokio::time::Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if probe(namespace, addr, &spec.manifest.health.path).await {
            return true;
        }
        // Soon at first (most apps are up within milliseconds), then less.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    false
}

/// `GET path` answered 2xx within a second, at `addr` in `namespace`.
pub async fn probe(namespace: Option<&netns::Namespace>, addr: SocketAddr, path: &str) -> bool {
    let check = async {
        let mut stream = netns::connect(namespace, addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        let status = std::str::from_utf8(&head[9..12]).ok()?.parse::<u16>().ok()?;
        Some((200..300).contains(&status))
    };
    tokio::time::timeout(Duration::from_secs(1), check).await.ok().flatten().unwrap_or(false)
}

fn kill_group(child: &Child) {
    signal_group(child.id(), libc::SIGKILL);
}

fn signal_group(pid: Option<u32>, signal: libc::c_int) {
    if let Some(pid) = pid.filter(|&p| p > 0) {
        // SAFETY: kill(2) on our own child's process group.
        unsafe {
            libc::kill(-(pid as libc::pid_t), signal);
        }
    }
}

/// Keeps the instance running until told to stop, and meters it; then
/// ends its jail (nothing of it left running).
async fn supervise(
    spec: InstanceSpec,
    jail: Option<Jail>,
    child: Child,
    state: Arc<State>,
    stopped: watch::Receiver<bool>,
) {
    keep_running(&spec, jail.as_ref(), child, &state, stopped).await;
    finish(jail).await;
}

async fn keep_running(
    spec: &InstanceSpec,
    jail: Option<&Jail>,
    mut child: Child,
    state: &State,
    mut stopped: watch::Receiver<bool>,
) {
    let addr = SocketAddr::from(([127, 0, 0, 1], spec.port));
    let namespace = jail.map(|j| &*j.namespace);
    let mut backoff = Duration::from_millis(200);
    let mut meter = tokio::time::interval(Duration::from_secs(1));
    let mut healthy_since = tokio::time::Instant::now();
    let mut liveness = tokio::time::interval(Duration::from_millis(spec.manifest.health.interval_ms));
    liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Failed probes in a row of the running process (only once it was
    // healthy: a starting one has its own timeout).
    let mut failed_probes = 0u32;
    // Why the instance is being restarted, when the platform did it.
    let mut restarting: Option<String> = None;
    let mut oom_kills = state.group.as_ref().map_or(0, |g| g.oom_kills());
    loop {
        tokio::select! {
            _ = stopped.changed() => {
                signal_group(child.id(), libc::SIGTERM);
                if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                    kill_group(&child);
                    let _ = child.wait().await;
                }
                cpu_sample(state, child.id().unwrap_or(0));
                return;
            }
            status = child.wait() => {
                state.healthy.store(false, Ordering::Relaxed);
                state.pid.store(0, Ordering::Relaxed);
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                let oom = state.group.as_ref().map(|g| g.oom_kills()).filter(|&n| n > oom_kills);
                let why = match (restarting.take(), oom) {
                    (_, Some(n)) => {
                        oom_kills = n;
                        format!(
                            "the kernel killed it for using more than its memory limit of {} MiB (out of memory)",
                            spec.manifest.resources.memory_mb
                        )
                    }
                    (Some(why), None) => why,
                    (None, None) => format!("it exited ({status})"),
                };
                tracing::warn!(site = %spec.site, %why, "instance restarting");
                note_in_log(&spec.dir, &format!("commons: the instance is started again: {why}"));
                state.events.lock().unwrap_or_else(|e| e.into_inner()).push(format!("restarted: {why}"));
                if let Some(group) = &state.group {
                    // What it left behind (a daemon that left its process
                    // group) goes with it.
                    let group = group.clone();
                    let _ = tokio::task::spawn_blocking(move || group.kill_all()).await;
                }
                if healthy_since.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_millis(200);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped.changed() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                match spawn(spec, jail).await {
                    Ok(new) => {
                        child = new;
                        state.pid.store(child.id().unwrap_or(0), Ordering::Relaxed);
                        state.restarts.fetch_add(1, Ordering::Relaxed);
                        if state.group.is_none() {
                            // A new process group: its CPU time starts at zero.
                            state.usage.lock().unwrap_or_else(|e| e.into_inner()).1 = 0;
                        }
                        if wait_healthy(spec, namespace, addr, &mut child).await {
                            state.healthy.store(true, Ordering::Relaxed);
                            healthy_since = tokio::time::Instant::now();
                        }
                    }
                    Err(e) => tracing::warn!(site = %spec.site, error = %e, "cannot start the instance"),
                }
            }
            _ = liveness.tick(), if spec.manifest.health.failures > 0 && state.healthy.load(Ordering::Relaxed) => {
                if probe(namespace, addr, &spec.manifest.health.path).await {
                    failed_probes = 0;
                    continue;
                }
                failed_probes += 1;
                if failed_probes >= spec.manifest.health.failures {
                    failed_probes = 0;
                    restarting = Some(format!(
                        "{} health probes of {} failed in a row",
                        spec.manifest.health.failures, spec.manifest.health.path
                    ));
                    // Its exit is then seen above, and it is started again.
                    kill_group(&child);
                }
            }
            _ = meter.tick() => {
                cpu_sample(state, child.id().unwrap_or(0));
                memory_sample(state, child.id().unwrap_or(0));
                if !state.healthy.load(Ordering::Relaxed) && probe(namespace, addr, &spec.manifest.health.path).await {
                    state.healthy.store(true, Ordering::Relaxed);
                    healthy_since = tokio::time::Instant::now();
                }
            }
        }
    }
}

/// Adds the CPU time used since the last sample: of the control group when
/// there is one (every process that ever ran in it, however it forked),
/// else of the process group `pgid` (0: between restarts).
fn cpu_sample(state: &State, pgid: u32) {
    let cpu = match &state.group {
        Some(group) => group.cpu_ns() / 1_000_000,
        None if pgid == 0 => return,
        None => group_cpu_ms(pgid),
    };
    let mut usage = state.usage.lock().unwrap_or_else(|e| e.into_inner());
    let (used, last) = &mut *usage;
    used.cpu_ms += cpu.saturating_sub(*last);
    *last = cpu.max(*last);
}

/// Adds a second of the memory it holds: what the control group is
/// charged, else the process group's resident memory.
fn memory_sample(state: &State, pgid: u32) {
    let mib = match &state.group {
        Some(group) => group.memory_bytes() >> 20,
        None if pgid == 0 => return,
        None => group_rss_kib(pgid) / 1024,
    };
    state.usage.lock().unwrap_or_else(|e| e.into_inner()).0.memory_mib_s += mib;
}

/// The processes of group `pgid`: their /proc stat fields after the name.
fn group_stats(pgid: u32) -> Vec<Vec<String>> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| {
            // The name may hold spaces; fields resume after its ')'.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
            // fields[2] is the process group.
            (fields.get(2)?.parse::<u32>().ok()? == pgid).then_some(fields)
        })
        .collect()
}

/// CPU time (user + system, with reaped children) of a process group, ms.
fn group_cpu_ms(pgid: u32) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    group_stats(pgid).iter().map(|f| (11..15).filter_map(|i| f.get(i)?.parse::<u64>().ok()).sum::<u64>()).sum::<u64>()
        * 1000
        / ticks
}

/// Resident memory of a process group, KiB.
fn group_rss_kib(pgid: u32) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    group_stats(pgid).iter().filter_map(|f| f.get(21)?.parse::<u64>().ok()).sum::<u64>() * page / 1024
}
