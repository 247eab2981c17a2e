//! The system calls an app never needs, refused by seccomp filters (after
//! `no_new_privs`), stacked: one answering EPERM ([`DENIED_SYSCALLS`], and
//! `clone` making namespaces), one answering ENOSYS (`clone3`, whose flags
//! a filter cannot read, so that libc falls back to `clone`). Built once,
//! before any fork; applied between fork and exec (unconfined) or handed to
//! bubblewrap, which loads them last (confined).

/// Between fork and exec of an app's process or install step:
/// `no_new_privs` (no setuid binary or file capability gives it and what it
/// starts more than they have), then the seccomp `filters` (built before
/// the fork: only prctl and seccomp run here, both async-signal-safe).
pub(crate) fn lock_down(filters: &Filters) -> std::io::Result<()> {
    // SAFETY: prctl(2) with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    for filter in filters {
        seccompiler::apply_filter(filter).map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    Ok(())
}

/// The seccomp programs an app runs under, stacked: [`DENIED_SYSCALLS`]
/// and `clone` making namespaces answer EPERM; `clone3`, whose flags a
/// filter cannot read, answers ENOSYS, so that libc falls back to `clone`.
pub(crate) type Filters = [seccompiler::BpfProgram; 3];

/// x32 system calls (x86_64's other ABI: the same architecture in the
/// filter's eyes, numbers with bit 30 set) are refused with ENOSYS: the
/// other filters match plain numbers only, so an x32 `bpf` would pass
/// them. Written by hand: seccompiler has no rule for a range.
fn no_x32() -> seccompiler::BpfProgram {
    const LOAD_NUMBER: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS, offset 0: seccomp_data.nr
    const JUMP_IF_AT_LEAST: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RETURN: u16 = 0x06; // BPF_RET | BPF_K
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const ERRNO: u32 = 0x0005_0000; // SECCOMP_RET_ERRNO
    const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    let op = |code, jt, jf, k| seccompiler::sock_filter { code, jt, jf, k };
    vec![
        op(LOAD_NUMBER, 0, 0, 0),
        op(JUMP_IF_AT_LEAST, 0, 1, X32_SYSCALL_BIT),
        op(RETURN, 0, 0, ERRNO | libc::ENOSYS as u32),
        op(RETURN, 0, 0, ALLOW),
    ]
}

/// `clone` flags that make a namespace, refused (an app making a user
/// namespace of its own would reach the kernel's code for privileged users;
/// `unshare` and `setns` are refused outright). `CLONE_NEWTIME` shares its
/// bit with `clone`'s exit signal: it is refused through `unshare`/`clone3`.
const NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// System calls no app needs, refused with EPERM (a seccomp filter, after
/// `no_new_privs`): tracing or reading other processes, mounting and
/// namespaces, loading kernels, modules, BPF programs and keys, the
/// clock, swap and reboot. Modelled on the defaults of Docker and systemd's
/// `SystemCallFilter=~@mount @module @raw-io @reboot @swap @clock @debug`.
pub const DENIED_SYSCALLS: &[(&str, i64)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("fsopen", libc::SYS_fsopen),
    ("fsmount", libc::SYS_fsmount),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("bpf", libc::SYS_bpf),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("syslog", libc::SYS_syslog),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    // io_uring reaches much of the kernel past seccomp's view (Docker's
    // and ChromeOS's defaults refuse it too).
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
];

/// The seccomp programs of [`Filters`], built once.
pub(crate) fn denied_syscalls() -> std::io::Result<&'static Filters> {
    use seccompiler::{SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule};
    static FILTERS: std::sync::OnceLock<Result<Filters, String>> = std::sync::OnceLock::new();
    let built = FILTERS.get_or_init(|| {
        let arch = seccompiler::TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
        let program = |rules, errno: i32| {
            let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(errno as u32), arch)
                .map_err(|e| e.to_string())?;
            seccompiler::BpfProgram::try_from(filter).map_err(|e| e.to_string())
        };
        let mut refused: std::collections::BTreeMap<i64, Vec<SeccompRule>> =
            DENIED_SYSCALLS.iter().map(|&(_, number)| (number, Vec::new())).collect();
        // Rules of one system call are alternatives: any flag set refuses.
        let clone = NAMESPACE_FLAGS
            .iter()
            .map(|&flag| {
                let set = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flag), flag);
                SeccompRule::new(vec![set.map_err(|e| e.to_string())?]).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, String>>()?;
        refused.insert(libc::SYS_clone, clone);
        let clone3 = std::collections::BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
        Ok([no_x32(), program(refused, libc::EPERM)?, program(clone3, libc::ENOSYS)?])
    });
    built.as_ref().map_err(|e| std::io::Error::other(format!("the system-call filter cannot be built: {e}")))
}
