"""What runs inside the new namespaces, as the container's PID 1, up to exec.

The order matters and is the one runc uses:
  mounts and pivot_root -> hostname, loopback, sysctls -> masked/read-only paths ->
  tty -> rlimits -> wait for the engine's go -> (seccomp if no no_new_privs) ->
  bounding set -> user and groups -> capabilities -> (no_new_privs + seccomp) -> exec.
Everything this module needs is imported before pivot_root: afterwards the host's
Python files are out of reach.

Failures before exec are reported to the engine as one JSON line on the error pipe,
which is close-on-exec: an EOF without data means exec succeeded.
"""

from __future__ import annotations

import _socket
import errno
import fcntl
import json
import os
import resource
import signal
import stat
import struct

from berth import linux as L
from berth.errors import CommandNotFound, ContainerStartError
from berth.oci.record import Record
from berth.oci.runtime import Spec
from berth.runtime import caps as _caps
from berth.runtime import rootfs

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
TIOCSCTTY = 0x540E
TIOCSPTLCK = 0x40045431  # _IOW('T', 0x31, int): lock/unlock the pty slave
TIOCGPTN = 0x80045430  # _IOR('T', 0x30, unsigned int): the slave's number

# linux/resource.h numbers (the resource module lacks some names, e.g. RLIMIT_LOCKS)
RLIMITS = {f"RLIMIT_{name}": number for number, name in enumerate((
    "CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE", "MEMLOCK", "AS", "LOCKS",
    "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME"))}


class InitArgs(Record):
    """What stage A hands to the container's first process (all in memory)."""

    spec: Spec
    rootfs_mounts: tuple
    seccomp_bpf: bytes | None
    error_fd: int
    go_fd: int
    console_sock: int | None
    init: bool
    cgroup_layout: object
    new_netns: bool


def report(fd: int, exc: BaseException) -> None:
    """Send one error to the engine; it re-raises it as the same berth error class."""
    if isinstance(exc, CommandNotFound):
        payload = {"kind": "notfound", "message": str(exc), "code": exc.exit_code}
    elif isinstance(exc, ContainerStartError):
        payload = {"kind": "start", "message": str(exc)}
    elif isinstance(exc, OSError):
        payload = {"kind": "start", "message": str(exc.strerror and f"{exc}" or exc)}
    else:
        payload = {"kind": "start", "message": f"{type(exc).__name__}: {exc}"}
    try:
        os.write(fd, json.dumps(payload).encode())
    except OSError:
        pass


def loopback_up() -> None:
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM, 0)
    try:
        req = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))
    finally:
        sock.close()


def write_sysctls(sysctls: dict | None) -> None:
    for key, value in (sysctls or {}).items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(str(value))
        except OSError as exc:
            raise ContainerStartError(f"sysctl {key}={value}: {exc.strerror}") from None


def open_console(sock_fd: int) -> str:
    """Open a pty in the container's own devpts; send the master to the engine.

    Returns the slave's path so it can also be bound to /dev/console.
    """
    master = os.open("/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    # unlockpt(); then the slave's number
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, struct.pack("I", 0)))[0]
    sock = _socket.socket(fileno=sock_fd)
    try:
        sock.sendmsg([b"m"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", master))])
    finally:
        sock.close()
    os.close(master)
    return f"/dev/pts/{number}"


def attach_console(slave_path: str, new_session: bool) -> None:
    if new_session:
        os.setsid()
    fd = os.open(slave_path, os.O_RDWR)
    fcntl.ioctl(fd, TIOCSCTTY, 0)
    for target in (0, 1, 2):
        os.dup2(fd, target)
    if fd > 2:
        os.close(fd)


def set_rlimits(rlimits) -> None:
    for rl in rlimits:
        number = RLIMITS.get(rl.type)
        if number is None:
            raise ContainerStartError(f"unknown rlimit {rl.type}")
        _soft, hard = resource.getrlimit(number)
        try:
            resource.setrlimit(number, (rl.soft, rl.hard))
        except (ValueError, OSError) as exc:
            # root without CAP_SYS_RESOURCE cannot raise a hard limit: fail, never clamp
            raise ContainerStartError(
                f"setrlimit {rl.type} {rl.soft}:{rl.hard}: {getattr(exc, 'strerror', None) or exc}"
                f" (the caller's hard limit is {hard}; raising it needs CAP_SYS_RESOURCE)") from None


def switch_user(spec: Spec) -> None:
    user = spec.process.user
    os.setgroups(list(user.additional_gids))
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)


def apply_security(sys, args: InitArgs) -> None:
    spec = args.spec
    process = spec.process
    nnp = process.no_new_privileges
    if args.seccomp_bpf and not nnp:
        # without no_new_privs the filter must go in while CAP_SYS_ADMIN is still held
        sys.load_seccomp(args.seccomp_bpf)
    c = process.capabilities
    if c is not None:
        _caps.apply_bounding(sys, _caps.mask(c.bounding))
        sys.prctl(L.PR_SET_KEEPCAPS, 1)
    switch_user(spec)
    if c is not None:
        sys.prctl(L.PR_SET_KEEPCAPS, 0)
        _caps.apply_sets(sys, _caps.mask(c.effective), _caps.mask(c.permitted),
                         _caps.mask(c.inheritable), _caps.mask(c.ambient))
    if nnp:
        sys.prctl(L.PR_SET_NO_NEW_PRIVS, 1)
        if args.seccomp_bpf:
            sys.load_seccomp(args.seccomp_bpf)


def look_path(cmd: str, env: dict) -> str:
    """The executable `cmd` names, searched in the container's PATH as runc does.

    Written out rather than os.execvpe: that imports `warnings` lazily, and after
    pivot_root the host's Python files are out of reach.
    """
    if "/" in cmd:
        return cmd
    for directory in env.get("PATH", "").split(":"):
        candidate = os.path.join(directory or ".", cmd)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return candidate
    raise CommandNotFound(f'exec: "{cmd}": executable file not found in $PATH')


def exec_process(spec: Spec) -> None:
    """execve the container's command; map failures to Docker's 127/126."""
    argv = list(spec.process.args)
    env = dict(e.split("=", 1) if "=" in e else (e, "") for e in spec.process.env)
    try:
        os.chdir(spec.process.cwd)
    except OSError as exc:
        raise ContainerStartError(f"chdir to cwd ({spec.process.cwd!r}) set in config.json failed: "
                                  f"{exc.strerror}") from None
    cmd = argv[0]
    path = look_path(cmd, env)
    try:
        os.execve(path, argv, env)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise CommandNotFound(f'exec: "{cmd}": stat {path}: no such file or directory') from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EISDIR):
            raise CommandNotFound(f'exec: "{cmd}": permission denied', 126) from None
        if exc.errno == errno.ENOEXEC:
            raise CommandNotFound(f'exec: "{cmd}": exec format error', 126) from None
        raise ContainerStartError(f'exec: "{cmd}": {exc.strerror}') from None


def reap_forever(child: int) -> None:
    """--init: PID 1 forwards signals to the command and reaps every orphan."""
    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
            continue
        try:
            signal.signal(sig, forward)
        except (OSError, ValueError, RuntimeError):
            pass
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            if os.WIFSIGNALED(status):
                os._exit(128 + os.WTERMSIG(status))
            os._exit(os.WEXITSTATUS(status))


def container_main(args: InitArgs, sys=None) -> None:
    """Never returns: execs the container's process or exits non-zero after reporting."""
    sys = sys or L.syscalls()
    spec = args.spec
    try:
        console = None
        # a session of its own: the host's terminal is never the container's
        # controlling tty, so TIOCSTI cannot inject input into the host shell
        os.setsid()
        rootfs.setup(sys, spec, args.rootfs_mounts, args.cgroup_layout)
        if spec.hostname:
            sys.sethostname(spec.hostname)
        if spec.domainname:
            sys.setdomainname(spec.domainname)
        if args.new_netns:
            loopback_up()
        write_sysctls(spec.linux.sysctl)
        rootfs.ensure_cwd("/", spec.process.cwd)
        if args.console_sock is not None:
            console = open_console(args.console_sock)
            sys.mount(console, _console_target(), None, L.MS_BIND)
        rootfs.finish(sys, spec)
        set_rlimits(spec.process.rlimits)
        if spec.process.oom_score_adj is not None:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(spec.process.oom_score_adj))
        # the engine finishes its side (cgroup, network) before the command may run
        if os.read(args.go_fd, 1) != b"g":
            os._exit(1)
        os.close(args.go_fd)
        apply_security(sys, args)
        if args.init:
            child = os.fork()
            if child == 0:
                if console:
                    attach_console(console, new_session=True)
                exec_process(spec)
            os.close(args.error_fd)
            reap_forever(child)
        if console:
            attach_console(console, new_session=False)
        exec_process(spec)
    except BaseException as exc:  # noqa: BLE001 - everything must reach the engine
        report(args.error_fd, exc)
        os._exit(127 if isinstance(exc, CommandNotFound) and exc.exit_code == 127 else 1)


def _console_target() -> str:
    path = "/dev/console"
    if not os.path.lexists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    return path
