//! Control groups with real processes. These need root and cgroups (v1 or
//! v2), and fail, never skip, without them.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use runtime::{Cgroup, Hierarchy, Limits, Version};

/// Held (shared) by every test with a group; pruning, which removes the
/// groups of others that hold no process yet, holds it alone.
static GROUPS: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    GROUPS.read().unwrap_or_else(|e| e.into_inner())
}

fn hierarchy() -> Hierarchy {
    Hierarchy::detect().unwrap_or_else(|e| panic!("these tests need root and control groups: {e}"))
}

/// A group name no other test, and no other run, uses at the same time.
fn unique(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("test-{}-{}-{what}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A group of a test, removed when the test ends, passing or failing.
struct Group(Option<Cgroup>);

impl Group {
    fn new(hierarchy: &Hierarchy, name: &str, limits: Limits) -> Group {
        Group(Some(hierarchy.create(name, &limits).unwrap()))
    }

    fn remove(mut self) -> std::io::Result<()> {
        self.0.take().map_or(Ok(()), |group| group.remove())
    }
}

impl std::ops::Deref for Group {
    type Target = Cgroup;
    fn deref(&self) -> &Cgroup {
        self.0.as_ref().expect("the group is still there")
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            let _ = group.remove();
        }
    }
}

fn roomy() -> Limits {
    Limits { memory_bytes: 256 << 20, pids: 64, cpu_weight: 100, cpu_quota_percent: None }
}

/// `program args` started in `group` (joined between fork and exec).
fn spawn_in(group: &Cgroup, program: &str, args: &[&str]) -> Child {
    let join = group.joiner().unwrap();
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    // SAFETY: join_self only calls write(2) on descriptors opened before.
    unsafe { command.pre_exec(move || join.join_self()) };
    command.spawn().unwrap()
}

/// Polls `done` every 20 ms for at most `limit`; whether it came true.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// The process exists and has not exited (a zombie has).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

#[test]
fn a_child_is_in_its_group_in_every_hierarchy_before_it_runs() {
    let _shared = shared();
    let hierarchy = hierarchy();
    let name = unique("join");
    let group = Group::new(&hierarchy, &name, roomy());
    let join = group.joiner().unwrap();
    let mut command = Command::new("cat");
    command.arg("/proc/self/cgroup");
    // SAFETY: join_self only calls write(2) on descriptors opened before.
    unsafe { command.pre_exec(move || join.join_self()) };
    let output = command.output().unwrap();
    group.remove().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let suffix = format!("/commons/{name}");
    let wanted: &[&str] = match hierarchy.version() {
        Version::V1 => &["memory", "pids", "cpu", "cpuacct"],
        Version::V2 => &[""],
    };
    for controller in wanted {
        let line = text
            .lines()
            .find(|line| {
                line.split(':').nth(1).is_some_and(|c| c.split(',').any(|c| c == *controller) || c == *controller)
            })
            .unwrap_or_else(|| panic!("no {controller:?} line in\n{text}"));
        assert!(line.ends_with(&suffix), "{line} is not in {suffix}:\n{text}");
    }
}

#[test]
fn a_fork_bomb_stops_at_its_pids_limit_and_the_machine_is_unharmed() {
    let _shared = shared();
    let group = Group::new(&hierarchy(), &unique("forkbomb"), Limits { pids: 20, ..roomy() });
    // 100 children if nothing stops it (then it waits for them, until
    // killed); a refused fork makes the shell exit with an error.
    let mut bomb = spawn_in(
        &group,
        "sh",
        &["-c", "i=0; while [ $i -lt 100 ]; do sleep 60 2>/dev/null & i=$((i+1)); done; wait 2>/dev/null"],
    );
    let mut most = 0;
    let mut seen = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let pids = group.pids();
        most = most.max(pids.len());
        seen.extend(pids);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(most <= 20, "{most} processes in a group limited to 20");
    assert!(most >= 15, "the loop never came near its limit ({most} processes): did it fork at all?");
    group.remove().unwrap();
    let status = bomb.wait().unwrap();
    assert!(!status.success(), "{status}");
    seen.retain(|&pid| pid != bomb.id());
    assert!(eventually(Duration::from_secs(5), || seen.iter().all(|&pid| !alive(pid))), "processes outlived the group");
    assert!(Command::new("true").status().unwrap().success(), "the machine can no longer start a process");
}

#[test]
fn a_process_over_its_memory_limit_is_oom_killed_and_counted() {
    let _shared = shared();
    let group = Group::new(&hierarchy(), &unique("oom"), Limits { memory_bytes: 32 << 20, ..roomy() });
    assert_eq!(group.oom_kills(), 0);
    // 200 MiB really written (a bytes object is filled), not just mapped.
    let status = spawn_in(&group, "python3", &["-c", "b = b'x' * (200 << 20)"]).wait().unwrap();
    let kills = group.oom_kills();
    group.remove().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(kills >= 1, "the OOM killer's kill was not counted");
}

#[test]
fn a_process_under_its_memory_limit_runs_to_its_end_unkilled() {
    let _shared = shared();
    let group = Group::new(&hierarchy(), &unique("fits"), Limits { memory_bytes: 96 << 20, ..roomy() });
    let status = spawn_in(&group, "python3", &["-c", "b = b'x' * (16 << 20)"]).wait().unwrap();
    let (kills, memory) = (group.oom_kills(), group.memory_bytes());
    group.remove().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(kills, 0);
    assert!(memory <= 96 << 20, "{memory} bytes charged over a 96 MiB limit");
}

#[test]
#[expect(clippy::zombie_processes, reason = "the child is reaped by wait4, which reports its CPU time")]
fn cpu_of_a_process_that_started_its_own_session_and_exited_is_counted() {
    let _shared = shared();
    let group = Group::new(&hierarchy(), &unique("cpu"), roomy());
    assert!(group.cpu_ns() < 100_000_000, "a new group has used {} ns", group.cpu_ns());
    // A grandchild in a session of its own (out of our process group,
    // where a meter by process group misses it) prints its session, then
    // loops until RLIMIT_CPU (1 s of CPU time, however contended the
    // machine) kills it; its parent waits for it, so that wait4 below
    // reports the CPU time of both.
    let join = group.joiner().unwrap();
    let mut command = Command::new("sh");
    command
        .args(["-c", "setsid -w sh -c 'cut -d\" \" -f6 /proc/$$/stat; ulimit -t 1; while :; do :; done'; exit 0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    // SAFETY: join_self only calls write(2) on descriptors opened before.
    unsafe { command.pre_exec(move || join.join_self()) };
    let mut child = command.spawn().unwrap();
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut printed).unwrap();
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: all zeroes is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into the two locals.
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    let reported_ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    let reported = reported_ns(usage.ru_utime) + reported_ns(usage.ru_stime);
    let counted = group.cpu_ns();
    group.remove().unwrap();
    // SAFETY: getsid(2) of the calling process.
    let ours = unsafe { libc::getsid(0) };
    assert_ne!(printed.trim(), ours.to_string(), "the busy loop did not start a session of its own");
    assert!(reported >= 500_000_000, "the busy loop used only {reported} ns");
    let gap = counted.abs_diff(reported);
    assert!(gap <= reported / 20 + 20_000_000, "{counted} ns counted, {reported} ns reported by wait4");
}

#[test]
fn a_name_with_a_slash_or_dots_is_refused() {
    let _shared = shared();
    let hierarchy = hierarchy();
    let escape = unique("escape");
    for name in ["a/b".to_owned(), "..".to_owned(), ".".to_owned(), format!("../{escape}"), String::new()] {
        let refused = hierarchy.create(&name, &roomy()).expect_err(&name);
        assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput, "{name:?}: {refused}");
    }
    let probe = Group::new(&hierarchy, &unique("probe"), roomy());
    let beside = probe.path().parent().and_then(|commons| commons.parent()).unwrap().join(&escape);
    probe.remove().unwrap();
    assert!(!beside.exists(), "{} was created", beside.display());
}

#[test]
fn kill_all_leaves_the_group_empty() {
    let _shared = shared();
    let group = Group::new(&hierarchy(), &unique("kill"), roomy());
    // Children, a grandchild and a process in a session of its own.
    let mut parent = spawn_in(&group, "sh", &["-c", "sleep 60 & sh -c 'sleep 60 & wait' & setsid -f sleep 60; wait"]);
    assert!(eventually(Duration::from_secs(10), || group.pids().len() >= 5), "{:?}", group.pids());
    let pids = group.pids();
    group.kill_all();
    let left = group.pids();
    let status = parent.wait().unwrap();
    group.remove().unwrap();
    assert_eq!(left, Vec::<u32>::new());
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(eventually(Duration::from_secs(5), || pids.iter().all(|&pid| !alive(pid))));
}

#[test]
fn a_group_left_by_a_crashed_run_is_reused_with_what_ran_in_it_killed() {
    let _shared = shared();
    let hierarchy = hierarchy();
    let name = unique("crashed");
    // Not a `Group`: nobody removes it, as after a crash (the reused one
    // below is removed, passing or failing).
    let crashed = hierarchy.create(&name, &roomy()).unwrap();
    assert!(spawn_in(&crashed, "setsid", &["-f", "sleep", "60"]).wait().unwrap().success());
    assert!(eventually(Duration::from_secs(10), || !crashed.pids().is_empty()));
    let left = crashed.pids();
    drop(crashed); // the platform crashed: nobody removes it
    let reused = Group::new(&hierarchy, &name, Limits { memory_bytes: 48 << 20, ..roomy() });
    let (pids, path) = (reused.pids(), reused.path().to_owned());
    let limit = match hierarchy.version() {
        Version::V1 => std::fs::read_to_string(path.join("memory.limit_in_bytes")),
        Version::V2 => std::fs::read_to_string(path.join("memory.max")),
    };
    reused.remove().unwrap();
    assert_eq!(pids, Vec::<u32>::new());
    assert_eq!(limit.unwrap().trim(), (48u64 << 20).to_string());
    assert!(eventually(Duration::from_secs(5), || left.iter().all(|&pid| !alive(pid))));
}

#[test]
fn pruning_removes_groups_without_processes_and_keeps_the_others() {
    // Alone: other tests' groups hold no process for a moment.
    let _alone = GROUPS.write().unwrap_or_else(|e| e.into_inner());
    let hierarchy = hierarchy();
    let empty = Group::new(&hierarchy, &unique("empty"), roomy());
    let busy = Group::new(&hierarchy, &unique("busy"), roomy());
    let mut sleeper = spawn_in(&busy, "sleep", &["60"]);
    assert!(eventually(Duration::from_secs(10), || !busy.pids().is_empty()));
    // Only this test binary's groups: others (other binaries') may run.
    let pruned = hierarchy.prune(&format!("test-{}-", std::process::id()));
    let (empty_gone, busy_kept) = (!empty.path().exists(), busy.path().exists());
    busy.remove().unwrap();
    let _ = sleeper.wait();
    assert!(pruned >= 1, "nothing pruned");
    assert!(empty_gone, "{} holds no process and was kept", empty.path().display());
    assert!(busy_kept, "a group with a process was pruned");
}

#[test]
fn a_cpu_quota_caps_the_groups_cpu_time_however_idle_the_machine() {
    let _shared = shared();
    let group = Group::new(&hierarchy(), &unique("quota"), Limits { cpu_quota_percent: Some(20), ..roomy() });
    // Two seconds of a busy loop: at most 0.4 s of CPU under a 20 % quota,
    // up to 2 s without one.
    let status = spawn_in(&group, "timeout", &["2", "sh", "-c", "while :; do :; done"]).wait().unwrap();
    let cpu_ns = group.cpu_ns();
    group.remove().unwrap();
    assert_eq!(status.code(), Some(124), "{status}");
    assert!(cpu_ns < 1_000_000_000, "{cpu_ns} ns of CPU in 2 s under a 20 % quota");
}

#[test]
fn the_cpu_weight_is_written_on_the_kernels_scale() {
    let _shared = shared();
    let hierarchy = hierarchy();
    let group = Group::new(&hierarchy, &unique("weight"), Limits { cpu_weight: 50, ..roomy() });
    let (file, wanted) = match hierarchy.version() {
        Version::V1 => ("cpu.shares", "512"),
        Version::V2 => ("cpu.weight", "50"),
    };
    let dir = group.dirs().into_iter().find(|dir| dir.join(file).exists()).expect("a cpu hierarchy").to_owned();
    let written = std::fs::read_to_string(dir.join(file));
    group.remove().unwrap();
    assert_eq!(written.unwrap().trim(), wanted);
}
