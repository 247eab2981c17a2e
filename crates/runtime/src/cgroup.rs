//! One instance's control group: its processes, however they fork,
//! `setsid` or exit, are capped (resident memory without swap, process
//! count, CPU weight and quota), metered (CPU time, memory charged, OOM
//! kills) and killed as one.
//!
//! cgroup v2 where the machine has it (a `cgroup2` mount whose
//! `cgroup.controllers` lists `memory`, `pids` and `cpu`), v1 otherwise (one
//! hierarchy per controller; `cpu` and `cpuacct` may share one). A hybrid
//! machine, whose `cgroup2` mount has no controllers, is v1.
//!
//! Our groups are `commons/<name>`:
//! - v1: `commons` sits under the cgroup the agent itself is in, in each
//!   hierarchy (from `/proc/self/cgroup`), so that apps stay inside what
//!   the agent was given (a container's, a supervisor's or a slice's
//!   group); on a bare host that is the hierarchy's root.
//! - v2: `commons` sits at the root of the `cgroup2` mount. v2's "no
//!   internal processes" rule forbids a cgroup holding processes (the
//!   agent's own, usually) from giving controllers to its children; the
//!   root is exempt. `+memory +pids +cpu` are enabled in the root's and in
//!   `commons`' `cgroup.subtree_control`.
//!
//! cgroupfs is written directly with `std::fs`, not through the
//! `cgroups-rs` crate: a process must join its group between fork and
//! exec (so that nothing it runs escapes), async-signal-safely, by writing
//! to file descriptors opened before the fork ([`Join`]), which that crate
//! does not offer.
//!
//! # Invariants
//! - A process joins its group before it executes anything of the app's.
//! - Memory is resident memory: no swap (v1 `memsw` equal to the memory
//!   limit, v2 `memory.swap.max` 0), so the limit means what it says.
//! - A group is removed only after everything in it was killed.
//!
//! # Known gaps
//! - The v2 paths follow the kernel's cgroup-v2 documentation but were
//!   tested only on v1 (the machine they were written on); the tests run
//!   unchanged on either.
//! - v2 inside a container's cgroup namespace, whose root holds the
//!   container's processes, cannot give controllers to `commons`:
//!   [`Hierarchy::detect`] says so rather than moving the agent.
//! - Without `cgroup.kill` (v1, kernels before 5.14) processes are killed
//!   by pid, read from `cgroup.procs` a moment before.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The parent of our groups, in each hierarchy.
const PARENT: &str = "commons";
/// The CFS period quotas are expressed in, µs (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;
/// How often, and how long apart, [`Cgroup::kill_all`] looks again for
/// processes left (forked while it killed): 2 s in all.
const KILL_ROUNDS: u32 = 200;
const KILL_PAUSE: Duration = Duration::from_millis(10);
/// How often, and how long apart, [`Cgroup::remove`] retries an `rmdir`
/// refused while the killed processes are being torn down: 5 s in all.
const RMDIR_ROUNDS: u32 = 250;
const RMDIR_PAUSE: Duration = Duration::from_millis(20);

/// What a group may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Resident memory, bytes (no swap on top); more and the kernel's OOM
    /// killer kills a process of the group.
    pub memory_bytes: u64,
    /// Processes (and threads) at once; a fork beyond fails with EAGAIN.
    pub pids: u64,
    /// Share of the CPU when it is contended, 1..=10000 (cgroup v2's scale,
    /// 100 the default; v1 `cpu.shares` = weight × 1024 / 100).
    pub cpu_weight: u32,
    /// A hard cap of CPU time, percent of one core (100 = one core, 250 =
    /// two and a half), even when the CPU is idle; `None`: no cap.
    pub cpu_quota_percent: Option<u32>,
}

impl Limits {
    /// The limits make a usable group, or why not.
    fn check(&self) -> io::Result<()> {
        let refuse = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        if self.memory_bytes == 0 {
            return refuse("a memory limit of 0 bytes leaves no room for any process".to_owned());
        }
        if self.pids == 0 {
            return refuse("a limit of 0 processes leaves no room for any process".to_owned());
        }
        if !(1..=10_000).contains(&self.cpu_weight) {
            return refuse(format!("cpu weight {} is outside 1..=10000", self.cpu_weight));
        }
        if self.cpu_quota_percent == Some(0) {
            return refuse("a CPU quota of 0 % never lets the group run".to_owned());
        }
        Ok(())
    }
}

/// Which cgroup interface the machine has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// One hierarchy per controller (`/sys/fs/cgroup/memory`, ...).
    V1,
    /// The unified hierarchy.
    V2,
}

/// A directory per controller we use; in v2 they are one and the same, in
/// v1 `cpu` and `cpuacct` may be.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Dirs {
    memory: PathBuf,
    pids: PathBuf,
    cpu: PathBuf,
    cpuacct: PathBuf,
}

impl Dirs {
    /// The distinct directories, each once, in a fixed order.
    fn distinct(&self) -> Vec<&Path> {
        let mut dirs: Vec<&Path> = Vec::with_capacity(4);
        for dir in [&self.memory, &self.pids, &self.cpu, &self.cpuacct] {
            if !dirs.contains(&dir.as_path()) {
                dirs.push(dir);
            }
        }
        dirs
    }

    fn join(&self, name: &str) -> Dirs {
        Dirs {
            memory: self.memory.join(name),
            pids: self.pids.join(name),
            cpu: self.cpu.join(name),
            cpuacct: self.cpuacct.join(name),
        }
    }
}

/// Where our groups go: `commons` in the machine's cgroup hierarchy (or
/// hierarchies, v1).
#[derive(Clone, Debug)]
pub struct Hierarchy {
    version: Version,
    /// The `commons` directories.
    parents: Dirs,
}

impl Hierarchy {
    /// The machine's hierarchy, with `commons` as the parent of our groups
    /// (created, and in v2 given the controllers), or why not: not root,
    /// no cgroupfs mounted, a controller missing, not writable.
    pub fn detect() -> Result<Hierarchy, String> {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("control groups need root: the agent is not running as root".to_owned());
        }
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo to find the cgroup mounts: {e}"))?;
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup to find the agent's own group: {e}"))?;
        let mounts = cgroup_mounts(&mountinfo);
        if let Some(unified) = mounts.iter().find(|m| m.v2) {
            let controllers = fs::read_to_string(unified.point.join("cgroup.controllers")).unwrap_or_default();
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            if ["memory", "pids", "cpu"].into_iter().all(has) {
                return Hierarchy::v2(&unified.point);
            }
        }
        Hierarchy::v1(&mounts, &own)
    }

    /// v2: `commons` at the root of the unified hierarchy at `root`, the
    /// controllers enabled for it and for its children.
    fn v2(root: &Path) -> Result<Hierarchy, String> {
        enable_controllers(root)?;
        let parent = root.join(PARENT);
        make_parent(&parent)?;
        enable_controllers(&parent)?;
        cap_processes(&parent)?;
        let parents = Dirs { memory: parent.clone(), pids: parent.clone(), cpu: parent.clone(), cpuacct: parent };
        Ok(Hierarchy { version: Version::V2, parents })
    }

    /// v1: `commons` under the agent's own group (`own`, the text of
    /// /proc/self/cgroup) in the hierarchy of each controller.
    fn v1(mounts: &[Mount], own: &str) -> Result<Hierarchy, String> {
        let parent = |controller: &str| -> Result<PathBuf, String> {
            let mount =
                mounts.iter().find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller)).ok_or_else(|| {
                    format!(
                        "the {controller} cgroup controller is not mounted \
                     (neither a cgroup2 hierarchy with memory, pids and cpu nor a v1 hierarchy with {controller})"
                    )
                })?;
            let dir = mount.point.join(own_path(own, controller, &mount.root)).join(PARENT);
            make_parent(&dir)?;
            Ok(dir)
        };
        let parents =
            Dirs { memory: parent("memory")?, pids: parent("pids")?, cpu: parent("cpu")?, cpuacct: parent("cpuacct")? };
        cap_processes(&parents.pids)?;
        if !parents.memory.join("memory.limit_in_bytes").exists() {
            return Err(format!("{} has no memory.limit_in_bytes: not a memory cgroup", parents.memory.display()));
        }
        Ok(Hierarchy { version: Version::V1, parents })
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// A new group `commons/<name>` with `limits` set: memory caps resident
    /// memory, with no swap (v1 `memory.limit_in_bytes` and, when the
    /// kernel accounts swap, `memory.memsw.limit_in_bytes` the same; v2
    /// `memory.max`, `memory.swap.max` 0), `pids.max`, the CPU weight (v1
    /// `cpu.shares`, v2 `cpu.weight`) and quota (v1 `cpu.cfs_quota_us` per
    /// `cpu.cfs_period_us`, v2 `cpu.max`). `name` is `[A-Za-z0-9._-]`, not
    /// starting with a dot; others are refused. A group of that name left
    /// by a crashed run is reused, whatever is in it killed first.
    pub fn create(&self, name: &str, limits: &Limits) -> io::Result<Cgroup> {
        check_name(name)?;
        limits.check()?;
        let group = Cgroup { version: self.version, name: name.to_owned(), dirs: self.parents.join(name) };
        let mut existed = false;
        for dir in group.dirs.distinct() {
            match fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if !dir.is_dir() {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a group (a control file?)", dir.display()),
                        ));
                    }
                    existed = true;
                }
                Err(e) => {
                    group.rmdir_all();
                    return Err(context(e, "creating", dir));
                }
            }
        }
        if existed {
            tracing::warn!(group = %name, "a group of that name was left behind (a crashed run?); killing what is in it and reusing it");
            group.kill_all();
        }
        if let Err(e) = group.set(limits) {
            group.rmdir_all();
            return Err(e);
        }
        Ok(group)
    }

    /// Removes the groups under `commons` whose name starts with `prefix`
    /// and that hold no process (left by a crashed platform), and says how
    /// many. Call it when the agent starts, before it creates groups of
    /// that prefix: a group just created holds no process yet.
    pub fn prune(&self, prefix: &str) -> usize {
        let Ok(entries) = fs::read_dir(&self.parents.memory) else { return 0 };
        let mut removed = 0;
        for entry in entries.filter_map(Result::ok) {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if !name.starts_with(prefix) || check_name(&name).is_err() || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let dirs = self.parents.join(&name);
            let group = Cgroup { version: self.version, name, dirs };
            if group.pids().is_empty() && group.rmdir_all() {
                removed += 1;
            }
        }
        removed
    }
}

/// One group, in every hierarchy. Dropping it leaves the group (and what
/// runs in it) as it is: call [`Cgroup::remove`].
#[derive(Debug)]
pub struct Cgroup {
    version: Version,
    name: String,
    dirs: Dirs,
}

impl Cgroup {
    /// Its name, under `commons`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its directory in the memory controller's hierarchy (in v2, its only
    /// one).
    pub fn path(&self) -> &Path {
        &self.dirs.memory
    }

    /// Its directories, one per hierarchy (v1: memory, pids, cpu,
    /// cpuacct, fewer when they share one; v2: one).
    pub fn dirs(&self) -> Vec<&Path> {
        self.dirs.distinct()
    }

    /// Writes `limits` into the group's control files.
    fn set(&self, limits: &Limits) -> io::Result<()> {
        let memory = limits.memory_bytes.to_string();
        let pids = limits.pids.to_string();
        match self.version {
            Version::V1 => {
                let dir = &self.dirs.memory;
                if dir.join("memory.memsw.limit_in_bytes").exists() {
                    // memory+swap may never be below memory alone: lift it,
                    // set memory, then bring memory+swap down to it (a
                    // reused group may hold any old values).
                    write(dir, "memory.memsw.limit_in_bytes", "-1")?;
                    write(dir, "memory.limit_in_bytes", &memory)?;
                    write(dir, "memory.memsw.limit_in_bytes", &memory)?;
                } else {
                    write(dir, "memory.limit_in_bytes", &memory)?;
                }
                // v1 does not charge TCP buffers to a group unless it has a
                // limit of their own: without one, an app could queue the
                // host's whole TCP memory, beyond its limit. (v2 charges
                // socket memory to memory.max.)
                let tcp = "memory.kmem.tcp.limit_in_bytes";
                if dir.join(tcp).exists()
                    && let Err(e) = write(dir, tcp, &memory)
                {
                    tracing::warn!(group = %self.name, error = %e, "cannot limit the group's TCP buffers");
                }
                write(&self.dirs.pids, "pids.max", &pids)?;
                let shares = (u64::from(limits.cpu_weight) * 1024 / 100).max(2);
                write(&self.dirs.cpu, "cpu.shares", &shares.to_string())?;
                write(&self.dirs.cpu, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                let quota = limits.cpu_quota_percent.map_or_else(|| "-1".to_owned(), |p| quota_us(p).to_string());
                write(&self.dirs.cpu, "cpu.cfs_quota_us", &quota)?;
            }
            Version::V2 => {
                let dir = &self.dirs.memory;
                write(dir, "memory.max", &memory)?;
                // Absent when the kernel does not account swap (then there
                // is none to use).
                if dir.join("memory.swap.max").exists() {
                    write(dir, "memory.swap.max", "0")?;
                }
                write(dir, "pids.max", &pids)?;
                write(dir, "cpu.weight", &limits.cpu_weight.to_string())?;
                let max = limits.cpu_quota_percent.map_or_else(|| "max".to_owned(), |p| quota_us(p).to_string());
                write(dir, "cpu.max", &format!("{max} {CPU_PERIOD_US}"))?;
            }
        }
        Ok(())
    }

    /// File descriptors of the group's `cgroup.procs` (one per hierarchy:
    /// v1 memory, pids, cpu and cpuacct, fewer when they share one), opened
    /// now, for [`Join::join_self`] in a child between fork and exec.
    pub fn joiner(&self) -> io::Result<Join> {
        let fds = self
            .dirs
            .distinct()
            .into_iter()
            .map(|dir| {
                let path = dir.join("cgroup.procs");
                // std opens with O_CLOEXEC: the app never inherits them.
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(OwnedFd::from)
                    .map_err(|e| context(e, "opening", &path))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Join { fds })
    }

    /// CPU time of every process that ever ran in the group, ns (v1
    /// `cpuacct.usage`, v2 `cpu.stat` `usage_usec` × 1000): children that
    /// started a new session and processes that exited included. 0 when it
    /// cannot be read.
    pub fn cpu_ns(&self) -> u64 {
        match self.version {
            Version::V1 => read_u64(&self.dirs.cpuacct, "cpuacct.usage"),
            Version::V2 => keyed(&self.dirs.cpu, "cpu.stat", "usage_usec").saturating_mul(1000),
        }
    }

    /// Memory charged to the group now, bytes (v1 `memory.usage_in_bytes`,
    /// v2 `memory.current`): resident memory and page cache.
    pub fn memory_bytes(&self) -> u64 {
        match self.version {
            Version::V1 => read_u64(&self.dirs.memory, "memory.usage_in_bytes"),
            Version::V2 => read_u64(&self.dirs.memory, "memory.current"),
        }
    }

    /// How many times the kernel's OOM killer killed a process of the group
    /// (the `oom_kill` line of v1 `memory.oom_control`, v2 `memory.events`).
    pub fn oom_kills(&self) -> u64 {
        match self.version {
            Version::V1 => keyed(&self.dirs.memory, "memory.oom_control", "oom_kill"),
            Version::V2 => keyed(&self.dirs.memory, "memory.events", "oom_kill"),
        }
    }

    /// The processes in the group now (in any of its hierarchies), sorted.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .dirs
            .distinct()
            .into_iter()
            .filter_map(|dir| fs::read_to_string(dir.join("cgroup.procs")).ok())
            .flat_map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs every process in the group, and those they fork meanwhile:
    /// v2 through `cgroup.kill` (the kernel kills the group and whatever
    /// forks during it) when the kernel has it, otherwise by reading
    /// `cgroup.procs` and signalling each until it is empty (for 2 s at
    /// most; a process that outlives that is logged).
    pub fn kill_all(&self) {
        let by_kernel = self.version == Version::V2
            && self.dirs.memory.join("cgroup.kill").exists()
            && write(&self.dirs.memory, "cgroup.kill", "1").is_ok();
        for _ in 0..KILL_ROUNDS {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            if !by_kernel {
                for pid in pids {
                    let Ok(pid) = libc::pid_t::try_from(pid) else { continue };
                    // The pid was in the group a moment ago; it could have
                    // exited and been reused since, which the kernel's
                    // wrap-around of pids makes unlikely within these
                    // milliseconds (v2's cgroup.kill has no such window).
                    // SAFETY: kill(2) with integer arguments.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
            std::thread::sleep(KILL_PAUSE);
        }
        tracing::warn!(group = %self.name, pids = ?self.pids(), "processes of the group outlived SIGKILL for 2 s");
    }

    /// [`Cgroup::kill_all`], then removes the group from every hierarchy
    /// (retrying for 5 s while the kernel still tears the killed processes
    /// down, when `rmdir` says EBUSY).
    pub fn remove(&self) -> io::Result<()> {
        self.kill_all();
        for dir in self.dirs.distinct() {
            let mut tries = 0;
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < RMDIR_ROUNDS => {
                        tries += 1;
                        std::thread::sleep(RMDIR_PAUSE);
                    }
                    Err(e) => return Err(context(e, "removing", dir)),
                }
            }
        }
        Ok(())
    }

    /// Removes the group's directories, once each, no retry; whether all
    /// are gone.
    fn rmdir_all(&self) -> bool {
        self.dirs.distinct().into_iter().fold(true, |gone, dir| {
            let removed = match fs::remove_dir(dir) {
                Ok(()) => true,
                Err(e) => e.kind() == io::ErrorKind::NotFound,
            };
            gone && removed
        })
    }
}

/// A group's `cgroup.procs`, opened (see [`Cgroup::joiner`]), for a child
/// to join between fork and exec.
#[derive(Debug)]
pub struct Join {
    fds: Vec<OwnedFd>,
}

impl Join {
    /// Moves the calling process (all its threads) into the group: writes
    /// "0" (the writer, in v1 and v2) to each pre-opened `cgroup.procs`.
    /// Async-signal-safe, only write(2) and no allocation, for
    /// `Command::pre_exec`.
    pub fn join_self(&self) -> io::Result<()> {
        for fd in &self.fds {
            // SAFETY: write(2) of one byte from a static buffer to a file
            // descriptor this `Join` owns (open until it is dropped).
            let written = unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            if written != 1 {
                // An OS error carries its code only: no allocation.
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// A group's name is `[A-Za-z0-9._-]{1,255}` and does not start with a dot
/// (which refuses `.` and `..`), or it is refused.
fn check_name(name: &str) -> io::Result<()> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if name.is_empty() || name.len() > 255 || name.starts_with('.') || !name.bytes().all(allowed) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a group name: 1 to 255 of A-Z a-z 0-9 . _ -, not starting with a dot"),
        ));
    }
    Ok(())
}

/// The CFS quota, µs per period, of `percent` of one core.
fn quota_us(percent: u32) -> u64 {
    // The kernel refuses quotas under 1 ms.
    (CPU_PERIOD_US * u64::from(percent) / 100).max(1000)
}

/// A cgroup filesystem mounted here.
#[derive(Debug)]
struct Mount {
    /// Where it is mounted.
    point: PathBuf,
    /// Which group of the hierarchy appears there (not `/` in some
    /// containers).
    root: String,
    /// cgroup2 (else v1).
    v2: bool,
    /// v1: the controllers of the hierarchy (`memory`; `cpu`, `cpuacct`).
    controllers: Vec<String>,
}

/// The cgroup mounts in the text of /proc/self/mountinfo: `id parent
/// major:minor root point options [optional...] - type source super-options`.
fn cgroup_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let kind = right.next()?;
            let options = right.nth(1).unwrap_or("");
            let v2 = match kind {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some(Mount {
                point: PathBuf::from(unescape(left.get(4)?)),
                root: unescape(left.get(3)?),
                v2,
                controllers: if v2 { Vec::new() } else { options.split(',').map(str::to_owned).collect() },
            })
        })
        .collect()
}

/// A mountinfo field with its octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') << 6 | (d[1] - b'0') << 3 | (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The agent's own group in the v1 hierarchy of `controller`, relative to
/// the group mounted there (`mount_root`), from the text of
/// /proc/self/cgroup (`id:controllers:path` lines); "" for the mount's top.
fn own_path(own: &str, controller: &str, mount_root: &str) -> PathBuf {
    let path = own
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            controllers.split(',').any(|c| c == controller).then_some(path)
        })
        .next()
        .unwrap_or("/");
    let relative = Path::new(path).strip_prefix(mount_root).unwrap_or(Path::new(""));
    // Never climb out of the mount: only plain components.
    relative.components().filter(|c| matches!(c, std::path::Component::Normal(_))).collect()
}

/// Creates `commons` (and what leads to it), which also proves the
/// hierarchy writable.
fn make_parent(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create the group {}: {e}", dir.display()))
}

/// All apps together may hold at most three quarters of the machine's
/// process ids (`kernel.pid_max`): the platform, and the machine's own
/// services, can always fork, whatever every site's limit adds up to.
fn cap_processes(parent: &Path) -> Result<(), String> {
    let pid_max: u64 =
        fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|text| text.trim().parse().ok()).unwrap_or(32_768);
    write(parent, "pids.max", &(pid_max / 4 * 3).to_string())
        .map_err(|e| format!("cannot cap the processes of {}: {e}", parent.display()))
}

/// v2: enables `memory`, `pids` and `cpu` for the children of `dir`.
fn enable_controllers(dir: &Path) -> Result<(), String> {
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let missing: Vec<String> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| !enabled.split_whitespace().any(|x| x == *c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(dir, "cgroup.subtree_control", &missing.join(" ")).map_err(|e| {
        if e.raw_os_error() == Some(libc::EBUSY) {
            format!(
                "{e} (cgroup v2 lets a group that holds processes give controllers to its children only at the \
                 real root: is this a container's cgroup namespace?)"
            )
        } else {
            e.to_string()
        }
    })
}

/// Writes `value` to the control file `dir/file`, the path and value in
/// the error.
fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(|e| context(e, &format!("writing {value:?} to"), &path))
}

/// A control file holding one number; 0 when it cannot be read.
fn read_u64(dir: &Path, file: &str) -> u64 {
    fs::read_to_string(dir.join(file)).ok().and_then(|text| text.trim().parse().ok()).unwrap_or(0)
}

/// The number after `key` in a control file of `key value` lines; 0 when
/// absent.
fn keyed(dir: &Path, file: &str, key: &str) -> u64 {
    let text = fs::read_to_string(dir.join(file)).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

fn context(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_of_a_hybrid_machine_yields_v1_hierarchies_and_an_empty_cgroup2() {
        let text = "30 25 0:26 / /sys/fs/cgroup/unified rw,relatime shared:5 - cgroup2 cgroup2 rw\n\
                    31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                    32 25 0:28 /docker/x /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                    33 25 0:29 / /mnt/with\\040space rw - ext4 /dev/sda rw\n";
        let mounts = cgroup_mounts(text);
        assert_eq!(mounts.len(), 3);
        assert!(mounts[0].v2);
        assert_eq!(mounts[1].controllers, ["rw", "cpu", "cpuacct"]);
        assert_eq!(mounts[2].root, "/docker/x");
        assert_eq!(unescape("/mnt/with\\040space"), "/mnt/with space");
    }

    #[test]
    fn the_agents_own_group_is_found_relative_to_the_mount() {
        let own = "4:memory:/docker/x/inner\n2:cpu,cpuacct:/\n0::/\n";
        assert_eq!(own_path(own, "memory", "/docker/x"), PathBuf::from("inner"));
        assert_eq!(own_path(own, "memory", "/"), PathBuf::from("docker/x/inner"));
        assert_eq!(own_path(own, "cpuacct", "/"), PathBuf::new());
        assert_eq!(own_path(own, "pids", "/"), PathBuf::new());
        assert_eq!(own_path("4:memory:/../../etc\n", "memory", "/"), PathBuf::from("etc"));
    }

    #[test]
    fn names_are_plain_and_limits_usable() {
        for bad in ["", ".", "..", "a/b", "../x", ".hidden", "a b", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?} was accepted");
        }
        check_name("site-1.v2_x").unwrap();
        let ok = Limits { memory_bytes: 1 << 20, pids: 1, cpu_weight: 100, cpu_quota_percent: None };
        ok.check().unwrap();
        assert!(Limits { cpu_weight: 0, ..ok }.check().is_err());
        assert!(Limits { cpu_weight: 10_001, ..ok }.check().is_err());
        assert!(Limits { pids: 0, ..ok }.check().is_err());
        assert!(Limits { cpu_quota_percent: Some(0), ..ok }.check().is_err());
        assert_eq!(quota_us(100), 100_000);
        assert_eq!(quota_us(250), 250_000);
    }
}
