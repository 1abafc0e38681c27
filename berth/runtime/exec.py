"""Run one more process in a running container, as `runc exec` does.

The new process joins every namespace of the container's PID 1 and its cgroup, and gets
the container's security context: the same capabilities, seccomp filter and
no_new_privs, applied in the same order as for PID 1 (berth.runtime.init).

    caller
      └── X: joins the cgroup, setns() into each namespace, forks Y, waits for it
            └── Y: in the container's pid namespace; tty, user, security, exec

X exists because setns() into a pid namespace only applies to children. Namespace fds
are opened before forking and the target's start time is checked, so a recycled pid is
never joined.
"""

from __future__ import annotations

import os
import signal
import struct

from berth import errors
from berth import linux as L
from berth.oci.runtime import Process, Spec
from berth.runtime import cgroups
from berth.proc import process_start

# setns order: the user namespace first (it grants the rights for the others), the
# mount namespace last (it changes our root, and /proc paths with it)
NAMESPACE_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "mount")


class ExecProcess:
    def __init__(self, target_pid: int, spec: Spec, process: Process, *, stdio=None,
                 seccomp_cache: str | None = None, console_size=None, sys=None) -> None:
        from berth.runtime import Stdio

        self.target_pid = target_pid
        self.spec = spec  # the container's spec: namespaces, cgroup, seccomp
        self.process = process  # what to run, with the user and security to run it as
        self.stdio = stdio or Stdio()
        self.seccomp_cache = seccomp_cache
        self.console_size = console_size
        self.sys = sys or L.syscalls()
        self.pid: int | None = None
        self.console: int | None = None
        self._x: int | None = None
        self._status_r: int | None = None

    def start(self, expected_start_time: int | None = None) -> int:
        from berth.runtime import _Pipes, _recv_fd, _start_error, _read_all, _read_exact
        from berth.runtime.init import InitArgs

        target = self.target_pid
        ns_fds = []
        pipes = None
        try:
            for kind in NAMESPACE_ORDER:
                if not any(ns.type == kind for ns in self.spec.linux.namespaces):
                    continue
                ns_fds.append((kind, os.open(f"/proc/{target}/ns/{L.NAMESPACE_FILES[kind]}",
                                             os.O_RDONLY | os.O_CLOEXEC)))
        except FileNotFoundError:
            for _, fd in ns_fds:
                os.close(fd)
            raise errors.Conflict("the container is not running") from None
        if expected_start_time is not None and process_start(target) != expected_start_time:
            for _, fd in ns_fds:
                os.close(fd)
            raise errors.Conflict("the container is not running")
        bpf = None
        if self.spec.linux.seccomp is not None:
            from berth.runtime import seccomp

            bpf = seccomp.bpf_for(self.spec.linux.seccomp, self.seccomp_cache or "/tmp")
        exec_spec = Spec(process=self.process, root=self.spec.root, linux=self.spec.linux)
        cgroup = cgroups.Cgroup(cgroups.layout(), self.spec.linux.cgroups_path or "")
        pipes = _Pipes()
        if self.process.terminal:
            import _socket

            pair = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC,
                                      0)
            pipes.con_parent, pipes.con_child = pair[0].detach(), pair[1].detach()
        args = InitArgs(exec_spec, (), bpf, pipes.err_w, pipes.go_r, pipes.con_child, False, None,
                        False)
        try:
            self._x = os.fork()
            if self._x == 0:
                self._x_main(pipes, ns_fds, cgroup, args)
            pipes.close(*pipes.CHILD_SIDE)
            raw = _read_exact(pipes.status_r, 4)
            if len(raw) == 4:
                self.pid = struct.unpack("i", raw)[0]
                if pipes.con_parent is not None:
                    self.console = _recv_fd(pipes.con_parent)
                    if self.console is not None and self.console_size:
                        import fcntl
                        import termios

                        rows, cols = self.console_size
                        fcntl.ioctl(self.console, termios.TIOCSWINSZ,
                                    struct.pack("HHHH", rows, cols, 0, 0))
                os.write(pipes.go_w, b"g")
            pipes.close("go_w", "con_parent", "spec_w")
            failure = _read_all(pipes.err_r)
            pipes.close("err_r")
            if failure or self.pid is None:
                raise _start_error(failure)
            self._status_r = pipes.status_r
            pipes.status_r = None
            return self.pid
        except BaseException:
            self.abort()
            raise
        finally:
            for _, fd in ns_fds:
                os.close(fd)
            pipes.close_all()

    def _x_main(self, pipes, ns_fds, cgroup, args) -> None:
        sys = self.sys
        try:
            pipes.close(*pipes.PARENT_SIDE)
            pipes.close("spec_r")
            sys.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            cgroup.join_self()
            for kind, fd in ns_fds:
                sys.setns(fd, L.NAMESPACE_FLAGS[kind])
            pid = os.fork()
            if pid == 0:
                os.close(pipes.status_w)
                for sig in range(1, signal.NSIG):
                    try:
                        signal.signal(sig, signal.SIG_DFL)
                    except (OSError, ValueError, RuntimeError):
                        pass
                self._y_main(args)
            pipes.close("err_w", "go_r", "con_child")
            os.write(pipes.status_w, struct.pack("i", pid))
            status = 0
            while True:
                try:
                    status = os.waitpid(pid, 0)[1]
                    break
                except InterruptedError:
                    continue
            os.write(pipes.status_w, struct.pack("i", status))
            os._exit(0)
        except BaseException as exc:  # noqa: BLE001
            from berth.runtime.init import report

            if pipes.err_w is not None:
                report(pipes.err_w, exc)
            os._exit(1)

    def _y_main(self, args) -> None:
        from berth.runtime import init
        from berth.runtime.init import CommandNotFound

        sys = self.sys
        try:
            self._set_stdio()
            os.setsid()
            console = init.open_console(args.console_sock) if args.console_sock is not None else None
            init.set_rlimits(args.spec.process.rlimits)
            if os.read(args.go_fd, 1) != b"g":
                os._exit(1)
            init.apply_security(sys, args)
            if console:
                init.attach_console(console, new_session=False)
            init.exec_process(args.spec)
        except BaseException as exc:  # noqa: BLE001
            init.report(args.error_fd, exc)
            os._exit(127 if isinstance(exc, CommandNotFound) and exc.exit_code == 127 else 126)

    def _set_stdio(self) -> None:
        null = None
        for target, fd in ((0, self.stdio.stdin), (1, self.stdio.stdout), (2, self.stdio.stderr)):
            if self.process.terminal:
                fd = None
            if fd is None:
                if null is None:
                    null = os.open("/dev/null", os.O_RDWR)
                fd = null
            if fd != target:
                os.dup2(fd, target)
        if null is not None and null > 2:
            os.close(null)

    def wait(self) -> int:
        """The exec'd process's exit code (128+N when a signal ended it)."""
        from berth.runtime import _read_exact, _waitpid

        raw = _read_exact(self._status_r, 4)
        os.close(self._status_r)
        self._status_r = None
        _waitpid(self._x)
        self._x = None
        if self.console is not None:
            os.close(self.console)
            self.console = None
        if len(raw) != 4:
            return 255
        status = struct.unpack("i", raw)[0]
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status)

    def kill(self, sig: int) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def abort(self) -> None:
        from berth.runtime import _kill_and_reap

        if self._x is not None:
            _kill_and_reap(self._x)
            self._x = None
        if self._status_r is not None:
            os.close(self._status_r)
            self._status_r = None

