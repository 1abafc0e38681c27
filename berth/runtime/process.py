"""ContainerProcess: a runtime-spec config plus root filesystem mounts -> a running process.

The processes involved:

    caller (the engine, or the CLI for a foreground run)
      └── stage A: joins the cgroup, waits for the spec, unshares the namespaces, forks B,
            │      then only waits
            └── B: PID 1 of the new pid namespace; sets up the root and execs the command

A exists because a new pid namespace only applies to children. Two ways to own B:

* attached (default): A waits for B and reports its status; A and B die with their
  parent (PR_SET_PDEATHSIG), so a killed caller leaves no container behind;
* detached (``detached=True``, for a long-lived monitor): the caller is a child
  subreaper; A exits as soon as B is forked, so B is re-parented to the caller, which
  reaps it itself, and B outlives the caller if the caller dies (as under conmon).

Starting is split in two so the slowest kernel step overlaps the caller's own work:
moving a process into a cgroup waits for an RCU grace period (~8-15 ms on our hosts),
so :meth:`ContainerProcess.prepare` forks A into the cgroup first, and the caller builds
the spec meanwhile; :meth:`ContainerProcess.start` then hands A the spec over a pipe.

Pipes between the stages:
    spec   caller -> A    the spec, rootfs mounts and compiled seccomp filter (JSON)
    status A -> caller    B's pid, later B's wait status
    go     caller -> B    the caller's side is ready (pty size set); B may exec
    error  B -> caller    one JSON error before exec; close-on-exec, so EOF = running
"""

from __future__ import annotations

import json
import os
import signal
import struct

from berth import errors
from berth import linux as L
from berth.oci.record import Record
from berth.oci.runtime import Mount, Resources, Spec
from berth.runtime import cgroups
from berth.trace import trace


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


class _Pipes:
    """Every fd of one start; each side closes what it does not use."""

    def __init__(self) -> None:
        import _socket

        # the spec goes to stage A with the fds the container gets (stdio, pty socket),
        # so A can be forked before any of them is known
        pair = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC, 0)
        self.spec_w, self.spec_r = pair[0].detach(), pair[1].detach()
        self.status_r, self.status_w = os.pipe2(os.O_CLOEXEC)
        self.go_r, self.go_w = os.pipe2(os.O_CLOEXEC)
        self.err_r, self.err_w = os.pipe2(os.O_CLOEXEC)
        self.con_parent = self.con_child = None

    def close(self, *names: str) -> None:
        for name in names:
            fd = getattr(self, name)
            if fd is not None:
                _close(fd)
                setattr(self, name, None)

    def close_all(self) -> None:
        self.close(*[n for n in vars(self)])

    PARENT_SIDE = ("spec_w", "status_r", "go_w", "err_r", "con_parent")
    CHILD_SIDE = ("spec_r", "status_w", "go_r", "err_w", "con_child")


class ContainerProcess:
    """One container process: prepare(), start(spec), then wait() for its exit status."""

    def __init__(self, *, cgroup_path: str, resources: Resources | None = None,
                 stdio: Stdio = Stdio(), init: bool = False,
                 seccomp_cache: str | None = None, console_size: tuple[int, int] | None = None,
                 detached: bool = False, sys=None) -> None:
        self.cgroup_path = cgroup_path
        self.resources = resources
        self.stdio = stdio
        self.init = init
        self.seccomp_cache = seccomp_cache
        self.console_size = console_size  # (rows, cols) set on the pty before the command runs
        self.detached = detached
        self.sys = sys or L.syscalls()
        self.pid: int | None = None  # B, the container's PID 1, as the host sees it
        self.console: int | None = None  # pty master when the spec asks for a terminal
        self.cgroup: cgroups.Cgroup | None = None
        self._stage_a: int | None = None
        self._pipes: _Pipes | None = None
        self._joined = False

    # --- prepare: cgroup and stage A ------------------------------------------------

    def prepare(self) -> None:
        """Create the cgroup and fork stage A into it; A then waits for start()."""
        if os.geteuid() != 0:
            raise errors.FailedPrecondition("berth must run as root to create containers")
        if self.detached:
            self.sys.prctl(L.PR_SET_CHILD_SUBREAPER, 1)
        layout = cgroups.layout()
        self.cgroup = cgroups.Cgroup(layout, self.cgroup_path)
        try:
            self.cgroup.create(self.resources)
            if self.resources and self.resources.devices and self.cgroup.v2_dir():
                from berth.runtime import devices

                _close(devices.attach(self.cgroup.v2_dir(), self.resources.devices))
            self._pipes = pipes = _Pipes()
            home = _own_cgroups()
            pid = os.fork()
            if pid == 0:
                self._stage_a_main(pipes, home)
            self._stage_a = pid
            pipes.close(*_Pipes.CHILD_SIDE)
        except BaseException:
            self.abort()
            raise

    def _stage_a_main(self, pipes: _Pipes, home: dict) -> None:
        sys = self.sys
        try:
            pipes.close(*_Pipes.PARENT_SIDE)
            # whatever else the caller had open (a client's terminal, a log file) is not
            # stage A's to keep alive
            close_fds_except({0, 1, 2} | {fd for fd in vars(pipes).values() if fd is not None})
            sys.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP, signal.SIGTSTP,
                        signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH, signal.SIGUSR1, signal.SIGUSR2):
                signal.signal(sig, signal.SIG_IGN)
            trace("A: forked")
            self.cgroup.join_self()  # slow on v2 (an RCU wait): overlapped with the caller's work
            trace("A: joined")
            os.write(pipes.status_w, b"J")  # now the cgroup may be renamed (retarget)
            import _socket

            from berth import ipc

            channel = _socket.socket(fileno=pipes.spec_r)
            pipes.spec_r = None
            payload, fds = ipc.recv(channel)
            channel.close()
            if payload is None:
                os._exit(0)  # the caller gave up before start()
            given = iter(fds)
            stdio = Stdio(*(next(given) if payload["stdio"][i] else None for i in range(3)))
            pipes.con_child = next(given) if payload["console"] else None
            self.init = payload["init"]
            from berth.oci.codec import from_dict

            spec = from_dict(Spec, payload["spec"])
            mounts = tuple(Mount(m["destination"], m.get("type"), m.get("source"),
                                 tuple(m.get("options", ()))) for m in payload["mounts"])
            bpf = bytes.fromhex(payload["bpf"]) if payload["bpf"] else None
            unshare = 0
            for ns in spec.linux.namespaces:
                if ns.path:
                    fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        sys.setns(fd, L.NAMESPACE_FLAGS[ns.type])
                    finally:
                        os.close(fd)
                else:
                    unshare |= L.NAMESPACE_FLAGS[ns.type]
            sys.unshare(unshare)
            from berth.runtime.init import InitArgs

            args = InitArgs(spec, mounts, bpf, pipes.err_w, pipes.go_r, pipes.con_child, self.init,
                            self.cgroup.layout, bool(unshare & L.CLONE_NEWNET))
            pid = os.fork()
            if pid == 0:  # B: the container
                os.close(pipes.status_w)
                if not self.detached:
                    sys.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)
                for sig in range(1, signal.NSIG):
                    try:
                        signal.signal(sig, signal.SIG_DFL)
                    except (OSError, ValueError, RuntimeError):
                        pass
                self._set_stdio(stdio, spec.process.terminal)
                from berth.runtime.init import container_main

                container_main(args, sys)
                os._exit(1)
            pipes.close("err_w", "go_r", "con_child")
            for fd in fds:
                _close(fd)
            os.write(pipes.status_w, struct.pack("i", pid))
            if self.detached:
                os._exit(0)  # B goes to the caller, the nearest subreaper
            self._leave_cgroup(home)  # after the pid is out: this may wait for RCU again
            status = _waitpid(pid)
            os.write(pipes.status_w, struct.pack("i", status))
            os._exit(0)
        except BaseException as exc:  # noqa: BLE001 - everything must reach the caller
            from berth.runtime.init import report

            trace(f"A: failed: {type(exc).__name__}: {exc}")
            if pipes.err_w is not None:
                report(pipes.err_w, exc)
            os._exit(1)

    def _leave_cgroup(self, home: dict) -> None:
        """Move stage A back to its caller's cgroups: only the container is accounted."""
        lay = self.cgroup.layout
        if lay.is_v2:
            targets = [os.path.join(lay.unified, home.get("", "/").lstrip("/"))]
        else:
            targets = []
            for controllers, path in home.items():
                mount = next((lay.v1[n] for n in controllers.split(",") if n in lay.v1), None)
                if mount and mount in lay.v1_options:
                    targets.append(os.path.join(mount, path.lstrip("/")))
        # v1: "0" to tasks moves the (single-threaded) caller without the global lock
        name, mine = ("cgroup.procs", str(os.getpid()).encode()) if lay.is_v2 else ("tasks", b"0")
        for target in targets:
            try:
                fd = os.open(os.path.join(target, name), os.O_WRONLY)
                try:
                    os.write(fd, mine)
                finally:
                    os.close(fd)
            except OSError:
                pass

    def _set_stdio(self, stdio: Stdio, terminal: bool) -> None:
        null = None
        for target, fd in ((0, stdio.stdin), (1, stdio.stdout), (2, stdio.stderr)):
            if terminal:
                fd = None  # the pty replaces all three; never hand the host's fds over
            if fd is None:
                if null is None:
                    null = os.open("/dev/null", os.O_RDWR)
                fd = null
            if fd != target:
                os.dup2(fd, target)
        if null is not None and null > 2:
            os.close(null)

    def wait_joined(self) -> None:
        """Block until stage A is inside its cgroup (the first byte on the status pipe)."""
        if self._joined:
            return
        if _read_exact(self._pipes.status_r, 1) != b"J":
            raise _start_error(_read_all(self._pipes.err_r))
        self._joined = True

    def retarget(self, cgroup_path: str, resources: Resources | None) -> None:
        """Give a prepared, still unused stage A its container's cgroup name and limits.

        Renaming a cgroup keeps its processes in it and costs microseconds; joining one
        waits for an RCU grace period. So a spare stage A can wait in a spare cgroup
        and be handed over when a container is asked for.
        """
        self.wait_joined()  # a rename before A's join would leave A outside
        self.cgroup.rename(cgroup_path)
        self.cgroup_path = cgroup_path
        self.resources = resources
        if resources:
            self.cgroup.apply(resources)
            if resources.devices and self.cgroup.v2_dir():
                from berth.runtime import devices

                _close(devices.attach(self.cgroup.v2_dir(), resources.devices))

    # --- start ----------------------------------------------------------------------

    def start(self, spec: Spec, rootfs_mounts: tuple[Mount, ...] = (), on_pid=None) -> int:
        """Hand the spec to stage A; return the container's pid once its command runs.

        `on_pid(pid)` runs once the container's namespaces exist and before its command
        may start: the engine's hook for what must be set up from outside, such as the
        network interfaces of its network namespace. An exception from it aborts the start.
        """
        if self._stage_a is None:
            self.prepare()
        pipes = self._pipes
        try:
            bpf = None
            if spec.linux.seccomp is not None:
                from berth.runtime import seccomp

                bpf = seccomp.bpf_for(spec.linux.seccomp, self.seccomp_cache or "/tmp")
            import _socket

            from berth import ipc
            from berth.oci.codec import to_dict
            from berth.oci.record import replace

            stdio = (self.stdio.stdin, self.stdio.stdout, self.stdio.stderr)
            fds = [fd for fd in stdio if fd is not None]
            if spec.process.terminal:
                pair = _socket.socketpair(_socket.AF_UNIX,
                                          _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC, 0)
                pipes.con_parent, pipes.con_child = pair[0].detach(), pair[1].detach()
                fds.append(pipes.con_child)
            payload = {
                # as data, not JSON; and without the seccomp rules, which B gets compiled
                "spec": to_dict(replace(spec, linux=replace(spec.linux, seccomp=None))),
                "mounts": [{"destination": m.destination, "type": m.type, "source": m.source,
                            "options": list(m.options)} for m in rootfs_mounts],
                "bpf": bpf.hex() if bpf else "",
                "stdio": [fd is not None for fd in stdio],
                "console": spec.process.terminal,
                "init": self.init,
            }
            self.wait_joined()  # A dies, reporting why, if it cannot join: hear that first
            trace("runtime: spec sent")
            channel = _socket.socket(fileno=pipes.spec_w)
            pipes.spec_w = None
            try:
                ipc.send(channel, payload, fds, binary=True)
            finally:
                channel.close()
            pipes.close("con_child")
            raw = _read_exact(pipes.status_r, 4)
            if len(raw) == 4:
                self.pid = struct.unpack("i", raw)[0]
                if self.detached:  # A is done; B is ours now
                    _waitpid(self._stage_a)
                    self._stage_a = None
                if pipes.con_parent is not None:
                    self.console = _recv_fd(pipes.con_parent)
                    if self.console is not None and self.console_size:
                        import fcntl
                        import termios

                        rows, cols = self.console_size
                        fcntl.ioctl(self.console, termios.TIOCSWINSZ,
                                    struct.pack("HHHH", rows, cols, 0, 0))
                if on_pid is not None:
                    on_pid(self.pid)
                try:
                    os.write(pipes.go_w, b"g")
                except BrokenPipeError:
                    pass  # B died in its own set-up; the error pipe says why
            pipes.close("go_w", "con_parent")
            trace("runtime: go sent")
            failure = _read_all(pipes.err_r)
            trace("runtime: exec seen")
            pipes.close("err_r")
            if failure or self.pid is None:
                raise _start_error(failure)
            return self.pid
        except BaseException:
            self.abort()
            raise

    # --- wait and clean up ------------------------------------------------------------

    def wait(self, status: int | None = None) -> ExitStatus:
        """Block until the container's PID 1 exits; remove its cgroup; return the status.

        A detached caller that reaped B itself (e.g. in its own event loop) passes the
        wait status it got.
        """
        if self.detached:
            if status is None:
                status = _waitpid(self.pid)
            raw = struct.pack("i", status)
        else:
            raw = _read_exact(self._pipes.status_r, 4)
        self._pipes.close_all()
        if self._stage_a is not None:
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

    def abort(self) -> None:
        """Undo prepare() or a failed start(): stage A and B gone, fds closed, cgroup removed."""
        if self._stage_a is not None:
            _kill_and_reap(self._stage_a)
            self._stage_a = None
        if self.detached and self.pid is not None:
            self.kill(signal.SIGKILL)
            _waitpid(self.pid)
            self.pid = None
        if self._pipes is not None:
            self._pipes.close_all()
        if self.console is not None:
            _close(self.console)
            self.console = None
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


def close_fds_except(keep: set[int]) -> None:
    """Close every fd of this process not in `keep` (after a fork, before anything else)."""
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in open_fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _kill_and_reap(pid: int) -> None:
    """SIGKILL a helper stage of ours and reap it (it may have exited already)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _waitpid(pid)


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
