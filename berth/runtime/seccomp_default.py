"""berth's default seccomp profile: Docker's (moby/profiles seccomp v0.2.3) in effect.

Kept as plain data so a reviewer can diff it against Docker's policy by eye, and rendered
by :func:`profile` into Docker's JSON profile schema, the same shape users hand us with
``--security-opt seccomp=FILE``; one resolver (``berth.runtime.seccomp.resolve``) then
serves both. The reasoning behind each block is in /work/shared/SECURITY-DEFAULTS.md.

Everything not allowed here fails with EPERM (``defaultErrnoRet: 1``). Notably absent,
so denied: keyctl/add_key/request_key (the keyring is not namespaced), kexec_*,
userfaultfd, io_uring_*, swapon/swapoff, pivot_root, move_pages, uselib, nfsservctl.
"""

from __future__ import annotations

EPERM = 1
ENOSYS = 38

# Host architecture (libseccomp "native" name) -> the sub-architectures its processes can
# also issue syscalls as; each must be listed or its syscalls hit the bad-arch action.
ARCH_MAP: dict[str, tuple[str, ...]] = {
    "SCMP_ARCH_X86_64": ("SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "SCMP_ARCH_AARCH64": ("SCMP_ARCH_ARM",),
    "SCMP_ARCH_MIPS64": ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"),
    "SCMP_ARCH_MIPS64N32": ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64"),
    "SCMP_ARCH_MIPSEL64": ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32"),
    "SCMP_ARCH_MIPSEL64N32": ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64"),
    "SCMP_ARCH_S390X": ("SCMP_ARCH_S390",),
    "SCMP_ARCH_RISCV64": (),
    "SCMP_ARCH_LOONGARCH64": (),
}

# Allowed for every container on every arch. Names that do not exist on the host arch
# (the *32 and *_time64 variants on 64-bit hosts) are skipped when compiling.
ALLOWED: tuple[str, ...] = tuple("""
    _llseek _newselect accept accept4 access adjtimex alarm bind brk cachestat capget capset
    chdir chmod chown chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64
    clock_gettime clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range
    connect copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl
    epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve
    execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark
    fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr
    flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync
    ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake
    futimesat get_robust_list get_thread_area getcpu getcwd getdents getdents64 getegid
    getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername
    getpgid getpgrp getpid getppid getpriority getrandom getresgid getresgid32 getresuid
    getresuid32 getrlimit getrusage getsid getsockname getsockopt gettid gettimeofday getuid
    getuid32 getxattr getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch
    io_cancel io_destroy io_getevents io_pgetevents io_pgetevents_time64 io_setup io_submit
    ioctl ioprio_get ioprio_set ipc kill landlock_add_rule landlock_create_ruleset
    landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listmount listxattr
    listxattrat llistxattr lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack
    membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2
    mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
    mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget
    msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat open
    openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free
    pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64
    process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink
    readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr
    removexattrat rename renameat renameat2 restart_syscall riscv_hwprobe rmdir rseq
    rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
    rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_get_priority_max
    sched_get_priority_min sched_getaffinity sched_getattr sched_getparam sched_getscheduler
    sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr
    sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
    semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto set_robust_list
    set_thread_area set_tid_address setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32
    setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid
    setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit setsid setsockopt setuid
    setuid32 setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd
    signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64
    statmount statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time
    timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
    timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
    timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
    uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write
    writev
""".split())

# Before 4.8 a ptrace()d process could change its syscall after seccomp had checked it.
MIN_KERNEL: dict[str, tuple[str, ...]] = {
    "4.8": ("process_vm_readv", "process_vm_writev", "ptrace"),
}

# Allowed only for one argument value each (each entry is its own rule, so they OR).
# socket: every domain but AF_ALG (38, kernel crypto) and AF_VSOCK (40, host sockets).
# personality: only the harmless personas and the query; not ADDR_NO_RANDOMIZE etc.
ARG_RULES: dict[str, tuple[tuple[str, int], ...]] = {
    "socket": (("SCMP_CMP_LT", 38), ("SCMP_CMP_EQ", 39), ("SCMP_CMP_GT", 40)),
    "personality": tuple(("SCMP_CMP_EQ", persona)
                         for persona in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)),
}

# Profile arch name (as in Docker's "arches") -> extra syscalls that only exist there.
BY_ARCH: dict[tuple[str, ...], tuple[str, ...]] = {
    ("ppc64le",): ("sync_file_range2", "swapcontext"),
    ("arm", "arm64"): ("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2",
                       "breakpoint", "cacheflush", "set_tls"),
    ("amd64", "x32"): ("arch_prctl",),
    ("amd64", "x32", "x86"): ("modify_ldt",),
    ("s390", "s390x"): ("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"),
    ("riscv64",): ("riscv_flush_icache",),
}

# Syscalls whose kernel check is a capability anyway; allowing them only with that
# capability keeps a kernel bug in them out of reach of ordinary containers.
BY_CAPABILITY: dict[str, tuple[str, ...]] = {
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
    "CAP_SYS_ADMIN": (
        "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
        "lookup_dcookie", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr",
        "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open", "quotactl",
        "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount",
        "umount2", "unshare",
    ),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_CHROOT": ("chroot",),
    "CAP_SYS_MODULE": ("delete_module", "init_module", "finit_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_PTRACE": ("kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv",
                       "process_vm_writev", "ptrace"),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_settime64"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYS_NICE": ("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
}

# clone without CAP_SYS_ADMIN: only if no CLONE_NEW* flag is set (NEWNS|NEWCGROUP|NEWUTS|
# NEWIPC|NEWUSER|NEWPID|NEWNET). s390 swaps clone's first two arguments.
CLONE_NEWNS_MASK = 0x7E020000


def _masked_clone(index: int, **cond) -> dict:
    return {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": index, "value": CLONE_NEWNS_MASK, "valueTwo": 0,
                      "op": "SCMP_CMP_MASKED_EQ"}], **cond}


def profile() -> dict:
    """The default profile as a fresh dict in Docker's JSON profile schema."""
    rules: list[dict] = [{"names": list(ALLOWED), "action": "SCMP_ACT_ALLOW"}]
    for version, names in MIN_KERNEL.items():
        rules.append({"names": list(names), "action": "SCMP_ACT_ALLOW",
                      "includes": {"minKernel": version}})
    for name, conds in ARG_RULES.items():
        rules += [{"names": [name], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 0, "value": value, "valueTwo": 0, "op": op}]}
                  for op, value in conds]
    for arches, names in BY_ARCH.items():
        rules.append({"names": list(names), "action": "SCMP_ACT_ALLOW",
                      "includes": {"arches": list(arches)}})
    for cap, names in BY_CAPABILITY.items():
        rules.append({"names": list(names), "action": "SCMP_ACT_ALLOW",
                      "includes": {"caps": [cap]}})
    rules += [
        _masked_clone(0, excludes={"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}),
        _masked_clone(1, includes={"arches": ["s390", "s390x"]},
                      excludes={"caps": ["CAP_SYS_ADMIN"]}),
        # clone3's flags sit behind a pointer seccomp cannot read; ENOSYS (not EPERM) makes
        # glibc fall back to clone(), which the rules above can filter.
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS,
         "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
    ]
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "archMap": [{"architecture": arch, "subArchitectures": list(subs)}
                    for arch, subs in ARCH_MAP.items()],
        "syscalls": rules,
    }
