//! Confinement: each instance in a sandbox of its own, as Sandstorm runs a
//! grain and systemd a hardened service.
//!
//! An app's processes and its install steps run:
//! - as **a user and group of their site's own** ([`SiteUsers`]), never the
//!   platform's: nothing of the platform's (its data directory is 0700,
//!   its keys 0600) nor of another site's is theirs to open;
//! - in **namespaces of their own**, made by bubblewrap (`bwrap`, the
//!   sandbox Flatpak runs on), started unprivileged as that user: a user
//!   namespace (the app has no capability outside it), a mount namespace
//!   (the system read-only; `/tmp`, `/var/tmp`, `/dev/shm` private;
//!   `/root`, `/home`, `/run` and the platform's data directory empty;
//!   writable only its instance directory), a PID namespace (it sees,
//!   signals and traces nothing else; when its first process dies, the
//!   kernel kills the rest), IPC, UTS and cgroup namespaces;
//! - in **a network namespace of their own** ([`netns::Namespace`],
//!   made by the agent, owned by the host's user namespace so the app
//!   cannot change it) holding only loopback. The gateway reaches the
//!   instance by making its socket inside that namespace; the app's ways
//!   out are listeners the agent makes there: the platform's internal
//!   listener at the same `127.0.0.1:PORT` as `$COMMONS_INTERNAL_URL`
//!   says, and, for install steps and for apps whose manifest asks, an
//!   egress proxy to the outside network (`$HTTPS_PROXY`);
//! - with `no_new_privs` and a seccomp filter ([`DENIED_SYSCALLS`],
//!   handed to bwrap, which loads it last, just before the app runs).
//!
//! [`DENIED_SYSCALLS`]: crate::DENIED_SYSCALLS

use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::process::Command;

use crate::cgroup::{Cgroup, Hierarchy, Limits};
use crate::egress::Policy;

/// The first user (and group) id given to a site; the range below is the
/// machine's. Far above what distributions and `/etc/subuid` allocate.
pub const SITE_UID_BASE: u32 = 2_000_000_000;
/// Site users this machine may allocate.
pub const SITE_UIDS_MAX: u32 = 100_000_000;
/// The machine's allocation of site users: one line per (realm, site).
pub const SITE_USERS_FILE: &str = "/var/lib/commons/site-users";

/// How this machine runs apps.
#[derive(Clone, Debug)]
pub enum Confinement {
    /// Each instance in a sandbox of its own (see the module's docs).
    Confined(Arc<Sandbox>),
    /// As plain processes of the platform's user, with rlimits and the
    /// seccomp filter only: the operator said so (`--unconfined`).
    Unconfined,
}

impl Confinement {
    /// How a platform keeping its data in `realm` runs apps on this
    /// machine: confined; or, only when the operator asked for it
    /// (`unconfined`), not, said loudly. A machine that cannot confine
    /// apps is an error naming what it lacks.
    pub fn for_machine(realm: &Path, unconfined: bool) -> Result<Confinement, String> {
        if unconfined {
            tracing::warn!(
                "apps run UNCONFINED (--unconfined): as processes of the platform's own user, able to read its keys and database and to reach every other app; never do this on a machine that runs other people's apps"
            );
            return Ok(Confinement::Unconfined);
        }
        match Sandbox::detect(realm) {
            Ok(sandbox) => Ok(Confinement::Confined(Arc::new(sandbox))),
            Err(why) => Err(format!(
                "this machine cannot confine apps: {why}. Fix that, or pass --unconfined to run apps without confinement (only for apps you trust with the platform's keys)"
            )),
        }
    }

    pub fn is_confined(&self) -> bool {
        matches!(self, Confinement::Confined(_))
    }
}

/// From now on, what this process creates is its own user's alone (umask
/// 077: files 0600, directories 0700): the platform's database, keys and
/// logs are none of a site user's. And the process may open as many
/// files as its hard limit allows (every instance's forwarders and egress
/// connections are the agent's descriptors).
pub fn keep_files_private() {
    // SAFETY: umask(2) has no preconditions and cannot fail.
    unsafe { libc::umask(0o077) };
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a struct of ours.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// What confinement needs from this machine, found there.
#[derive(Debug)]
pub struct Sandbox {
    bwrap: PathBuf,
    /// The platform's data directory: hidden from apps, and what site
    /// users are allocated for.
    realm: PathBuf,
    users: SiteUsers,
    cgroups: Hierarchy,
    /// The first part of this platform's group names (of its realm).
    groups_prefix: String,
    /// Where the egress proxies may connect.
    outside: Arc<Policy>,
    /// This bubblewrap can forbid user namespaces inside (0.8 and later;
    /// the seccomp filter refuses them either way).
    disable_userns: bool,
}

impl Sandbox {
    /// Checks that this machine can confine apps, for a platform keeping
    /// its data in `realm`: root (to make namespaces and give sites their
    /// users), bubblewrap, network namespaces, user namespaces for an
    /// unprivileged user, and control groups (v2, or v1) with the memory,
    /// pids and cpu controllers. Says what is missing otherwise. Removes
    /// the empty control groups a crashed run of this platform left.
    pub fn detect(realm: &Path) -> Result<Sandbox, String> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(format!(
                "the platform runs as uid {euid}, not root: it needs root to give each site a user and namespaces of its own"
            ));
        }
        let bwrap = find_program("bwrap").ok_or(
            "bubblewrap (`bwrap`) is not installed; on Debian or Ubuntu: apt-get install bubblewrap".to_owned(),
        )?;
        netns::available()?;
        let realm = realm.canonicalize().map_err(|e| format!("{}: {e}", realm.display()))?;
        // bwrap, as the site's user, finds the instance's directory by its
        // path: the way to the data directory must be open to pass through.
        for ancestor in realm.ancestors().skip(1) {
            let mode =
                std::fs::metadata(ancestor).map_err(|e| format!("{}: {e}", ancestor.display()))?.permissions().mode();
            if mode & 0o001 == 0 {
                return Err(format!(
                    "{} (mode {:o}) cannot be passed through by other users, and the apps run as users of their own, who must reach their directories under {}: chmod o+x {0}, or keep the data elsewhere",
                    ancestor.display(),
                    mode & 0o7777,
                    realm.display()
                ));
            }
        }
        let cgroups = Hierarchy::detect()?;
        let groups_prefix = format!("{:016x}.", hash(realm.as_os_str()));
        cgroups.prune(&groups_prefix);
        let outside = Arc::new(Policy::outside().map_err(|e| format!("this machine's own addresses: {e}"))?);
        let users = SiteUsers { file: PathBuf::from(SITE_USERS_FILE) };
        let help = std::process::Command::new(&bwrap)
            .arg("--help")
            .output()
            .map_err(|e| format!("{}: {e}", bwrap.display()))?;
        let disable_userns = String::from_utf8_lossy(&help.stdout).contains("--disable-userns");
        let sandbox = Sandbox { bwrap, realm, users, cgroups, groups_prefix, outside, disable_userns };
        sandbox.try_user_namespaces()?;
        Ok(sandbox)
    }

    /// The user and group id of `site`'s processes on this machine.
    pub fn site_user(&self, site: &str) -> io::Result<u32> {
        self.users.uid(&self.realm, site)
    }

    /// Runs `bwrap … true` as an unprivileged user: user namespaces may be
    /// off (`kernel.unprivileged_userns_clone`, AppArmor's restriction).
    fn try_user_namespaces(&self) -> Result<(), String> {
        let mut probe = std::process::Command::new(&self.bwrap);
        probe
            .args(["--unshare-user", "--unshare-pid", "--ro-bind", "/", "/", "--proc", "/proc", "true"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let nobody = SITE_UID_BASE + SITE_UIDS_MAX - 1;
        // SAFETY: only setgroups/setresgid/setresuid run between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut probe, move || become_user(nobody));
        }
        let output = probe.output().map_err(|e| format!("cannot run {}: {e}", self.bwrap.display()))?;
        if !output.status.success() {
            return Err(format!(
                "bubblewrap cannot make a sandbox for an unprivileged user here ({}): {}; user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces)",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(())
    }
}

/// Allocates site users machine-wide: the file [`SITE_USERS_FILE`] holds a
/// line `uid<TAB>realm<TAB>site` per site of each platform on this machine,
/// changed under an exclusive `flock`. A realm that no longer exists gives
/// its ids back.
#[derive(Debug)]
struct SiteUsers {
    file: PathBuf,
}

impl SiteUsers {
    /// The data directories of every platform with sites on this machine.
    fn realms(&self) -> Vec<PathBuf> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        let mut realms: Vec<PathBuf> =
            text.lines().filter_map(|l| Some(PathBuf::from(l.split('\t').nth(1)?))).collect();
        realms.sort();
        realms.dedup();
        realms
    }

    fn uid(&self, realm: &Path, site: &str) -> io::Result<u32> {
        if !crate::is_name(site) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{site:?} is not a site id")));
        }
        let realm = realm.to_str().filter(|r| !r.contains(['\t', '\n'])).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a usable directory name", realm.display()))
        })?;
        if let Some(parent) = self.file.parent() {
            std::fs::create_dir_all(parent)?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&self.file)?;
        // SAFETY: flock(2) on our descriptor; released when it closes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let mut rows: Vec<(u32, String, String)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let mut fields = line.splitn(3, '\t');
            let (Some(uid), Some(r), Some(s)) = (fields.next(), fields.next(), fields.next()) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} line {}: not `uid<TAB>realm<TAB>site`", self.file.display(), n + 1),
                ));
            };
            let uid = uid.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} line {}: {uid:?} is not a uid", self.file.display(), n + 1),
                )
            })?;
            rows.push((uid, r.to_owned(), s.to_owned()));
        }
        if let Some((uid, _, _)) = rows.iter().find(|(_, r, s)| r == realm && s == site) {
            return Ok(*uid);
        }
        rows.retain(|(_, r, _)| Path::new(r).exists());
        let taken: std::collections::BTreeSet<u32> = rows.iter().map(|(uid, _, _)| *uid).collect();
        let uid = (SITE_UID_BASE..SITE_UID_BASE + SITE_UIDS_MAX - 1)
            .find(|uid| !taken.contains(uid))
            .ok_or_else(|| io::Error::other("every site user of this machine is taken"))?;
        rows.push((uid, realm.to_owned(), site.to_owned()));
        let mut out = String::new();
        for (uid, r, s) in &rows {
            out.push_str(&format!("{uid}\t{r}\t{s}\n"));
        }
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(out.as_bytes())?;
        file.sync_all()?;
        Ok(uid)
    }
}

/// Directories an app sees empty (a fresh tmpfs): its own `/tmp`s and
/// `/dev/shm`; the machine's people's homes and runtime state (sockets:
/// PostgreSQL's, D-Bus'); the machine's logs, mail and spools; the mounts
/// of other disks; and the control groups of every other app.
const EMPTIED: &[&str] = &[
    "/tmp",
    "/var/tmp",
    "/dev/shm",
    "/run",
    "/root",
    "/home",
    "/var/log",
    "/var/mail",
    "/var/spool",
    "/var/backups",
    "/var/lib/commons",
    "/mnt",
    "/media",
    "/srv",
    "/sys/fs/cgroup",
];

/// One instance's sandbox: its user, its network namespace, its
/// directory, its control group, and the listeners serving its ways out.
pub(crate) struct Jail {
    sandbox: Arc<Sandbox>,
    pub(crate) uid: u32,
    pub(crate) namespace: Arc<netns::Namespace>,
    /// The instance's directory, canonical, and open (`O_PATH`) for bwrap.
    dir: PathBuf,
    dir_fd: OwnedFd,
    /// The site's state directory, likewise, when it keeps state.
    state: Option<(PathBuf, OwnedFd)>,
    /// The app's processes' group (its install steps have one of their own).
    pub(crate) group: Arc<Cgroup>,
    /// The egress proxy's port inside, while it serves.
    egress: Option<(u16, tokio::task::JoinHandle<()>)>,
    /// Served while the jail lives.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Other platforms' data directories on this machine, hidden too.
    other_realms: Vec<PathBuf>,
    /// Which start of this process this is: its groups are its own.
    start: u64,
    /// Its group was removed ([`Jail::finish`]); else dropping removes it.
    finished: bool,
}

/// A control group removed (its processes killed first) when this is
/// dropped, in the background: for groups whose owner may be given up
/// (a start dropped half way) before it removes them itself.
pub(crate) struct RemoveOnDrop(pub(crate) Option<Arc<Cgroup>>);

impl RemoveOnDrop {
    /// Its owner removes the group itself after all.
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            remove_in_background(group);
        }
    }
}

/// Removes `group` off the async threads (it waits for the kernel).
fn remove_in_background(group: Arc<Cgroup>) {
    let remove = move || {
        if let Err(e) = group.remove() {
            tracing::warn!(group = group.name(), error = %e, "cannot remove a control group");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(remove)),
        Err(_) => remove(),
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        self.close_egress();
        for task in &self.tasks {
            task.abort();
        }
        if !self.finished {
            remove_in_background(self.group.clone());
        }
    }
}

impl Jail {
    /// A jail for `site`'s instance in `dir` (installed there already):
    /// its files become the site user's, and a new network namespace gets
    /// a listener forwarding to `internal` (the platform's internal
    /// listener, when there is one) at the same loopback port inside.
    pub(crate) async fn new(
        sandbox: &Arc<Sandbox>,
        site: &str,
        dir: &Path,
        state: Option<&Path>,
        internal: Option<std::net::SocketAddr>,
        limits: &Limits,
        app_port: Option<u16>,
    ) -> io::Result<Jail> {
        let uid = sandbox.site_user(site)?;
        let (dir, dir_fd) = give(sandbox, &dir, uid, true).await?;
        // The state directory is the site's too: its top only is changed
        // (what is in it is the app's, never walked by root).
        let state = match state {
            Some(state) => Some(give(sandbox, state, uid, false).await?),
            None => None,
        };
        static STARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let start = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let group = Arc::new(sandbox.cgroups.create(&sandbox.group_name(site, &dir, start, ""), limits)?);
        let namespace = Arc::new(netns::Namespace::create()?);
        let mut tasks = Vec::new();
        if let Some(target) = internal {
            let inside = std::net::SocketAddr::from(([127, 0, 0, 1], target.port()));
            let listener = tokio::net::TcpListener::from_std(namespace.listen(inside)?)?;
            tasks.push(tokio::spawn(netns::forward(listener, target, None, 256)));
        }
        // Any free port of its loopback but the app's own.
        let egress = loop {
            let listener = namespace.listen(([127, 0, 0, 1], 0).into())?;
            if Some(listener.local_addr()?.port()) != app_port {
                break tokio::net::TcpListener::from_std(listener)?;
            }
        };
        let port = egress.local_addr()?.port();
        let proxy = tokio::spawn(crate::egress::serve(egress, sandbox.outside.clone(), site.to_owned()));
        let other_realms = sandbox.users.realms().into_iter().filter(|r| *r != sandbox.realm && r.is_dir()).collect();
        Ok(Jail {
            sandbox: sandbox.clone(),
            uid,
            namespace,
            dir,
            dir_fd,
            state,
            group,
            egress: Some((port, proxy)),
            tasks,
            other_realms,
            start,
            finished: false,
        })
    }

    /// A control group for the install steps of `site`'s instance: they
    /// fetch and build, so they get more room than the app (at least
    /// 2 GiB and 1024 processes), and lose it all once they are done.
    pub(crate) fn install_group(&self, site: &str, limits: &Limits) -> io::Result<Cgroup> {
        let roomy = Limits { memory_bytes: limits.memory_bytes.max(2 << 30), pids: limits.pids.max(1024), ..*limits };
        self.sandbox.cgroups.create(&self.sandbox.group_name(site, &self.dir, self.start, ".install"), &roomy)
    }

    /// The egress proxy's port inside the namespace, while it serves.
    pub(crate) fn egress_port(&self) -> Option<u16> {
        self.egress.as_ref().map(|(port, _)| *port)
    }

    /// Stops the egress proxy: the app has no way to the outside network.
    pub(crate) fn close_egress(&mut self) {
        if let Some((_, proxy)) = self.egress.take() {
            proxy.abort();
        }
    }

    /// Ends the jail: whatever still runs in its group is killed, and the
    /// group removed (a blocking wait of at most a few seconds).
    pub(crate) fn finish(mut self) {
        if let Err(e) = self.group.remove() {
            tracing::warn!(group = self.group.name(), error = %e, "cannot remove an instance's control group");
        }
        self.finished = true;
    }

    /// The instance's directory, as the app sees it (at the same path).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The site's state directory, as the app sees it (at the same path).
    pub(crate) fn state_dir(&self) -> Option<&Path> {
        self.state.as_ref().map(|(path, _)| path.as_path())
    }

    /// A command running `script` with `sh -c` in the sandbox, in the
    /// instance's directory `app/`, in `group`, refusing `filter`'s system
    /// calls; `files` is its RLIMIT_NOFILE. The caller sets its
    /// environment, output and process group.
    pub(crate) fn command(
        &self,
        script: &str,
        filters: &crate::seccomp::Filters,
        files: u64,
        group: &Cgroup,
        env: &[(std::ffi::OsString, std::ffi::OsString)],
    ) -> io::Result<Command> {
        let seccomp = [seccomp_fd(&filters[0])?, seccomp_fd(&filters[1])?, seccomp_fd(&filters[2])?];
        let join = group.joiner()?;
        let dir = self.dir.to_string_lossy().into_owned();
        let fd = |fd: &OwnedFd| fd.as_raw_fd().to_string();
        // bwrap's own arguments and the app's environment go through a
        // file (`--args FD`), and bwrap itself runs with no environment:
        // nothing of the app's (`LD_PRELOAD`, say) reaches bwrap's loader
        // before the sandbox exists, and no value shows on a command line.
        let mut args: Vec<std::ffi::OsString> = [
            "--die-with-parent",
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "app",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
        ]
        .map(Into::into)
        .to_vec();
        let mut arg = |a: &dyn AsRef<std::ffi::OsStr>| args.push(a.as_ref().to_owned());
        for empty in EMPTIED {
            if Path::new(empty).is_dir() {
                arg(&"--tmpfs");
                arg(empty);
            }
        }
        // This platform's data, and every other platform's on this machine.
        arg(&"--tmpfs");
        arg(&self.sandbox.realm);
        for realm in &self.other_realms {
            arg(&"--tmpfs");
            arg(realm);
        }
        for a in ["--bind-fd", &fd(&self.dir_fd), &dir] {
            arg(&a);
        }
        if let Some((state, state_fd)) = &self.state {
            arg(&"--bind-fd");
            arg(&fd(state_fd));
            arg(state);
        }
        arg(&"--chdir");
        arg(&self.dir.join("app"));
        for program in &seccomp {
            arg(&"--add-seccomp-fd");
            arg(&fd(program));
        }
        if self.sandbox.disable_userns {
            arg(&"--disable-userns");
        }
        arg(&"--clearenv");
        for (name, value) in env {
            arg(&"--setenv");
            arg(name);
            arg(value);
        }
        let args_fd = args_file(&args)?;
        let mut command = Command::new(&self.sandbox.bwrap);
        // (bwrap takes the command itself only from its command line.)
        command.env_clear().arg("--args").arg(fd(&args_fd)).args(["--", "/bin/sh", "-c", script]);
        let (netns, uid) = (self.namespace.raw_fd(), self.uid);
        let state_fd = self.state.as_ref().map_or(-1, |(_, fd)| fd.as_raw_fd());
        let inherit = [
            self.dir_fd.as_raw_fd(),
            seccomp[0].as_raw_fd(),
            seccomp[1].as_raw_fd(),
            seccomp[2].as_raw_fd(),
            state_fd,
            args_fd.as_raw_fd(),
        ];
        // `seccomp` and `join` move into the closure, alive until the
        // command is. SAFETY: between fork and exec only setns, write (the
        // group's join), fcntl, setrlimit, setgroups/setresgid/setresuid
        // and prctl run: plain system calls, async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                let _keep = (&seccomp, &args_fd);
                // First: nothing the child does from here escapes its group.
                join.join_self()?;
                check(libc::setns(netns, libc::CLONE_NEWNET))?;
                for fd in inherit.into_iter().filter(|&fd| fd >= 0) {
                    check(libc::fcntl(fd, libc::F_SETFD, 0))?;
                }
                let rlimit = libc::rlimit { rlim_cur: files as libc::rlim_t, rlim_max: files as libc::rlim_t };
                check(libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit))?;
                // No core dumps: a pipe `core_pattern` would run its helper
                // as root on the app's crash.
                check(libc::setrlimit(libc::RLIMIT_CORE, &libc::rlimit { rlim_cur: 0, rlim_max: 0 }))?;
                become_user(uid)?;
                // After the change of user, which clears it: if the agent
                // dies, so does the sandbox (and bwrap takes the app along).
                check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
                check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
            });
        }
        Ok(command)
    }
}

impl Sandbox {
    /// `commons/<realm>.<site>.<instance>.<start><suffix>`: this
    /// platform's, this instance's (by its directory), this start's (an
    /// instance draining and a new start of the same directory never
    /// share one).
    fn group_name(&self, site: &str, dir: &Path, start: u64, suffix: &str) -> String {
        format!("{}{site}.{:016x}.{start}{suffix}", self.groups_prefix, hash(dir.as_os_str()))
    }
}

/// A stable 64-bit hash of a path, for names (not for security).
fn hash(path: &std::ffi::OsStr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    path.hash(&mut hasher);
    hasher.finish()
}

/// Makes `dir` (`tree`: and all in it) `uid`'s, 0700, found through the
/// data directory by that user (bwrap, as it, binds it): canonical, and
/// open (`O_PATH`) for bwrap.
async fn give(sandbox: &Sandbox, dir: &Path, uid: u32, tree: bool) -> io::Result<(PathBuf, OwnedFd)> {
    let dir = dir.canonicalize()?;
    let (owned, realm) = (dir.clone(), sandbox.realm.clone());
    tokio::task::spawn_blocking(move || {
        if tree {
            chown_tree(&owned, uid)?;
        } else {
            std::os::unix::fs::lchown(&owned, Some(uid), Some(uid))?;
        }
        std::fs::set_permissions(&owned, std::fs::Permissions::from_mode(0o700))?;
        traversable(&realm, &owned)
    })
    .await
    .map_err(io::Error::other)??;
    let fd = open_path(&dir)?;
    Ok((dir, fd))
}

/// Drops every group and becomes `uid` (its own group too), for good.
/// Async-signal-safe.
fn become_user(uid: u32) -> io::Result<()> {
    // SAFETY: plain system calls.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(uid, uid, uid))?;
        check(libc::setresuid(uid, uid, uid))
    }
}

/// `args` as bwrap's `--args FD` reads them (each ended by NUL), in a
/// memory file read from its start: however long, never a pipe to fill.
fn args_file(args: &[std::ffi::OsString]) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: memfd_create(2) with a NUL-terminated name; a new descriptor.
    let fd = unsafe { libc::memfd_create(c"bwrap-args".as_ptr(), libc::MFD_CLOEXEC) };
    check(fd)?;
    // SAFETY: a new descriptor nothing else owns.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut bytes = Vec::new();
    for a in args {
        bytes.extend_from_slice(a.as_bytes());
        bytes.push(0);
    }
    file.write_all(&bytes)?;
    file.rewind()?;
    Ok(OwnedFd::from(file))
}

/// The seccomp program as bwrap reads it (`--seccomp FD`: raw `struct
/// sock_filter`s until end of file), in a pipe whose write end is closed.
fn seccomp_fd(filter: &seccompiler::BpfProgram) -> io::Result<OwnedFd> {
    let mut bytes = Vec::with_capacity(filter.len() * 8);
    for instruction in filter {
        bytes.extend_from_slice(&instruction.code.to_ne_bytes());
        bytes.push(instruction.jt);
        bytes.push(instruction.jf);
        bytes.extend_from_slice(&instruction.k.to_ne_bytes());
    }
    let (reader, mut writer) = io::pipe()?;
    // A pipe holds 64 KiB; a filter of a few dozen rules is a few hundred bytes.
    writer.write_all(&bytes)?;
    drop(writer);
    Ok(OwnedFd::from(reader))
}

/// Lets bwrap, which runs as the site's user, find `dir` (within
/// `realm`): every directory from `realm` down to `dir`'s parent becomes
/// 0711, searchable but not listable by others; what is in them keeps its
/// own mode (the platform's files are 0600, its other directories 0700).
fn traversable(realm: &Path, dir: &Path) -> io::Result<()> {
    for ancestor in dir.ancestors().skip(1) {
        if !ancestor.starts_with(realm) {
            break;
        }
        std::fs::set_permissions(ancestor, std::fs::Permissions::from_mode(0o711))?;
    }
    Ok(())
}

/// Makes `dir` and everything in it `uid`'s (user and group), never
/// following a symbolic link.
fn chown_tree(dir: &Path, uid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(uid))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_tree(&entry.path(), uid)?;
        } else {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(uid))?;
        }
    }
    Ok(())
}

fn open_path(dir: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path holds a NUL byte"))?;
    // SAFETY: open(2) of a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    check(fd)?;
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}
