"""berth's OCI runtime: a runtime-spec config plus root filesystem mounts -> a process.

It knows nothing of images, containers' names or the CLI. The processes involved:

    caller (the engine, or the CLI for a foreground run)
      └── stage A: joins the cgroup, unshares the namespaces, forks B, then only waits
            └── B: PID 1 of the new pid namespace; sets up the root and execs the command

A exists because a new pid namespace only applies to children. A and B die with their
parent (PR_SET_PDEATHSIG), so a killed caller leaves no container behind. A reports B's
pid, then B's wait status, through a pipe; B reports start-up errors through a
close-on-exec pipe, so EOF without data means the command is running.
"""

from __future__ import annotations

import json
import os
import signal
import struct
from berth.oci.record import Record

from berth import errors
from berth import linux as L
from berth.oci.runtime import Mount, Spec
from berth.runtime import cgroups


class ExitStatus(Record):
    code: int
    signal: int | None = None
    oom_killed: bool = False


class Stdio(Record):
    """File descriptors the container's process gets; None means /dev/null."""

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None


def _read_exact(fd: int, size: int) -> bytes:
    buf = b""
    while len(buf) < size:
        chunk = os.read(fd, size - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def _read_all(fd: int) -> bytes:
    out = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(out)
        out.append(chunk)


def _own_cgroups() -> dict[str, str]:
    """controllers field of /proc/self/cgroup -> path, to move stage A back out later."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            out[controllers] = path
    return out


class ContainerProcess:
    """One container process: start() it, then wait() for its exit status."""

    def __init__(self, spec: Spec, *, cgroup_path: str, rootfs_mounts: tuple[Mount, ...] = (),
                 stdio: Stdio = Stdio(), init: bool = False, seccomp_cache: str | None = None,
                 console_size: tuple[int, int] | None = None, sys=None) -> None:
        self.spec = spec
        self.cgroup_path = cgroup_path
        self.rootfs_mounts = rootfs_mounts
        self.stdio = stdio
        self.init = init
        self.seccomp_cache = seccomp_cache
        self.console_size = console_size  # (rows, cols) set on the pty before the command runs
        self.sys = sys or L.syscalls()
        self.pid: int | None = None  # B, the container's PID 1, as the host sees it
        self.console: int | None = None  # pty master when spec.process.terminal
        self._stage_a: int | None = None
        self._status_fd: int | None = None
        self.cgroup: cgroups.Cgroup | None = None

    # --- start -----------------------------------------------------------------------

    def start(self) -> int:
        spec = self.spec
        if os.geteuid() != 0:
            raise errors.FailedPrecondition("berth must run as root to create containers")
        bpf = None
        if spec.linux.seccomp is not None:
            from berth.runtime import seccomp

            bpf = seccomp.bpf_for(spec.linux.seccomp, self.seccomp_cache or "/tmp")
        layout = cgroups.layout()
        self.cgroup = cgroups.Cgroup(layout, self.cgroup_path)
        resources = spec.linux.resources
        self.cgroup.create(resources)
        devices_prog = None
        if resources and resources.devices and self.cgroup.v2_dir():
            from berth.runtime import devices

            devices_prog = devices.attach(self.cgroup.v2_dir(), resources.devices)
        fds: list[int] = []
        try:
            return self._launch(layout, bpf, fds)
        except BaseException:
            for fd in fds:
                _close(fd)
            self._reap_failed()
            raise
        finally:
            if devices_prog is not None:
                _close(devices_prog)

    def _launch(self, layout, bpf, fds: list[int]) -> int:
        spec = self.spec
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        st_r, st_w = os.pipe2(os.O_CLOEXEC)
        fds += [err_r, err_w, go_r, go_w, st_r, st_w]
        con_parent = con_child = None
        if spec.process.terminal:
            import _socket

            pair = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM, 0)
            con_parent, con_child = pair[0].detach(), pair[1].detach()
            fds += [con_parent, con_child]
        unshare = 0
        join = []
        for ns in spec.linux.namespaces:
            if ns.path:
                join.append(ns)
            else:
                unshare |= L.NAMESPACE_FLAGS[ns.type]
        home = _own_cgroups()
        from berth.runtime.init import InitArgs

        args = InitArgs(spec, self.rootfs_mounts, bpf, err_w, go_r, con_child, self.init, layout,
                        bool(unshare & L.CLONE_NEWNET))
        child_only = (err_r, go_w, st_r, con_parent)
        pid = os.fork()
        if pid == 0:  # stage A
            self._stage_a_main(args, unshare, join, home, st_w, child_only)
        self._stage_a = pid
        for fd in (err_w, go_r, st_w, con_child):
            if fd is not None:
                _close(fd)
                fds.remove(fd)
        self._status_fd = st_r
        raw = _read_exact(st_r, 4)
        if len(raw) == 4:
            self.pid = struct.unpack("i", raw)[0]
        if self.pid is not None and con_parent is not None:
            self.console = _recv_fd(con_parent)
            if self.console is not None and self.console_size:
                import fcntl
                import termios

                rows, cols = self.console_size
                fcntl.ioctl(self.console, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        if self.pid is not None:
            os.write(go_w, b"g")
        _close(go_w)
        fds.remove(go_w)
        failure = _read_all(err_r)
        _close(err_r)
        fds.remove(err_r)
        if con_parent is not None:
            _close(con_parent)
            fds.remove(con_parent)
        if failure or self.pid is None:
            raise _start_error(failure)
        fds.remove(st_r)
        return self.pid

    def _stage_a_main(self, args, unshare: int, join, home: dict, st_w: int, child_only) -> None:
        sys = self.sys
        try:
            for fd in child_only:
                if fd is not None:
                    os.close(fd)
            sys.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP, signal.SIGTSTP,
                        signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH, signal.SIGUSR1, signal.SIGUSR2):
                signal.signal(sig, signal.SIG_IGN)
            self.cgroup.join(os.getpid())
            for ns in join:
                fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    sys.setns(fd, L.NAMESPACE_FLAGS[ns.type])
                finally:
                    os.close(fd)
            sys.unshare(unshare)
            pid = os.fork()
            if pid == 0:  # B: the container
                os.close(st_w)
                sys.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)
                for sig in range(1, signal.NSIG):
                    try:
                        signal.signal(sig, signal.SIG_DFL)
                    except (OSError, ValueError, RuntimeError):
                        pass
                self._set_stdio()
                from berth.runtime.init import container_main

                container_main(args, sys)
                os._exit(1)
            for fd in (args.error_fd, args.go_fd, args.console_sock):
                if fd is not None:
                    os.close(fd)
            self.cgroup_leave(home)
            os.write(st_w, struct.pack("i", pid))
            while True:
                try:
                    _, status = os.waitpid(pid, 0)
                    break
                except InterruptedError:
                    continue
            os.write(st_w, struct.pack("i", status))
            os._exit(0)
        except BaseException as exc:  # noqa: BLE001
            from berth.runtime.init import report

            report(args.error_fd, exc)
            os._exit(1)

    def cgroup_leave(self, home: dict) -> None:
        """Move stage A back to its caller's cgroups: only the container is accounted."""
        lay = self.cgroup.layout
        mine = str(os.getpid())
        if lay.is_v2:
            targets = [os.path.join(lay.unified, home.get("", "/").lstrip("/"))]
        else:
            targets = []
            for controllers, path in home.items():
                names = controllers.split(",")
                mount = next((lay.v1[n] for n in names if n in lay.v1), None)
                if mount and mount in lay.v1_options:
                    targets.append(os.path.join(mount, path.lstrip("/")))
        for target in targets:
            try:
                with open(os.path.join(target, "cgroup.procs"), "w") as f:
                    f.write(mine)
            except OSError:
                pass

    def _set_stdio(self) -> None:
        null = None
        for target, fd in ((0, self.stdio.stdin), (1, self.stdio.stdout), (2, self.stdio.stderr)):
            if self.spec.process.terminal:
                fd = None  # the pty replaces all three; never hand the host's fds over
            if fd is None:
                if null is None:
                    null = os.open("/dev/null", os.O_RDWR)
                fd = null
            if fd != target:
                os.dup2(fd, target)
        if null is not None and null > 2:
            os.close(null)

    # --- wait ------------------------------------------------------------------------

    def wait(self) -> ExitStatus:
        """Block until the container's PID 1 exits; remove its cgroup; return the status."""
        raw = _read_exact(self._status_fd, 4)
        _close(self._status_fd)
        self._status_fd = None
        _waitpid(self._stage_a)
        self._stage_a = None
        if len(raw) != 4:
            code, sig = 255, None
        else:
            status = struct.unpack("i", raw)[0]
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                code = 128 + sig
            else:
                sig, code = None, os.WEXITSTATUS(status)
        oom = self.cgroup.oom_killed()
        self._destroy_cgroup()
        if self.console is not None:
            _close(self.console)
            self.console = None
        return ExitStatus(code, sig, oom)

    def kill(self, sig: int) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def _reap_failed(self) -> None:
        if self._stage_a is not None:
            try:
                os.kill(self._stage_a, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _waitpid(self._stage_a)
            self._stage_a = None
        if self._status_fd is not None:
            _close(self._status_fd)
            self._status_fd = None
        self._destroy_cgroup()

    def _destroy_cgroup(self) -> None:
        if self.cgroup is None:
            return
        # a dead PID 1 takes its namespace with it; wait until the kernel has reaped it
        for _ in range(500):
            if not self.cgroup.procs():
                break
            import time

            time.sleep(0.002)
        self.cgroup.destroy()
        self.cgroup = None


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _waitpid(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue


def _recv_fd(sock_fd: int) -> int | None:
    import _socket

    sock = _socket.socket(fileno=os.dup(sock_fd))
    try:
        size = struct.calcsize("i")
        _msg, ancdata, _flags, _addr = sock.recvmsg(1, _socket.CMSG_LEN(size))
    finally:
        sock.close()
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fd = struct.unpack("i", data[:size])[0]
            os.set_inheritable(fd, False)
            return fd
    return None


def _start_error(raw: bytes) -> errors.BerthError:
    try:
        payload = json.loads(raw) if raw else {}
    except ValueError:
        payload = {"message": raw.decode(errors="replace")}
    message = payload.get("message") or "the container's process exited before it started"
    if payload.get("kind") == "notfound":
        return errors.CommandNotFound(message, payload.get("code", 127))
    return errors.ContainerStartError(message)
