"""Health checks: HEALTHCHECK / --health-* run inside the container, as Docker runs them.

The monitor asks :class:`HealthChecker` when the next check is due; each check runs in a
forked worker (so a hung check never stalls the monitor's loop) that execs the test in
the container, with the container's security context, and records the result in
State.Health: Status starting -> healthy | unhealthy, FailingStreak, and the last five
results in Log. Failures during the start period do not count, as in Docker.
"""

from __future__ import annotations

import os
import signal
import time

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
MAX_OUTPUT = 4096
KEEP_LOG = 5


def _seconds(ns: int | None, default: float) -> float:
    return ns / 1e9 if ns else default


def command(test: list[str]) -> list[str] | None:
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    if test[0] == "CMD":
        return list(test[1:])
    return list(test)  # a bare list, as some tools write it


class HealthChecker:
    def __init__(self, containers, cid: str, argv: list[str], interval: float, timeout: float,
                 start_period: float, retries: int) -> None:
        self.containers = containers
        self.cid = cid
        self.argv = argv
        self.interval = interval
        self.timeout = timeout
        self.start_period = start_period
        self.retries = retries
        self.started = time.monotonic()
        self.next_run = self.started + interval
        self.worker: int | None = None

    @classmethod
    def for_record(cls, containers, record: dict, reset: bool = True) -> "HealthChecker | None":
        hc = record["Config"].get("Healthcheck")
        argv = command(hc.get("Test") or []) if hc else None
        if not argv:
            return None
        checker = cls(containers, record["Id"], argv, _seconds(hc.get("Interval"), DEFAULT_INTERVAL),
                      _seconds(hc.get("Timeout"), DEFAULT_TIMEOUT),
                      _seconds(hc.get("StartPeriod"), 0.0), hc.get("Retries") or DEFAULT_RETRIES)
        if reset:
            containers.set_health(record["Id"], {"Status": "starting", "FailingStreak": 0,
                                                 "Log": []})
        return checker

    def seconds_left(self) -> float:
        return max(0.0, self.next_run - time.monotonic())

    def due(self) -> bool:
        return self.worker is None and time.monotonic() >= self.next_run

    def run(self, monitor) -> None:
        if monitor.proc is None or monitor.proc.pid is None:
            return
        target = monitor.proc.pid
        in_start_period = time.monotonic() - self.started < self.start_period
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                self._check(target, in_start_period)
            except BaseException:  # noqa: BLE001 - a broken check must not take the monitor
                code = 1
            os._exit(code)
        self.worker = pid
        self.next_run = time.monotonic() + self.interval

    def reaped(self, pid: int, _status: int) -> None:
        if pid == self.worker:
            self.worker = None

    # --- in the worker ---------------------------------------------------------------

    def _check(self, target: int, in_start_period: bool) -> None:
        from berth.oci.record import replace
        from berth.runtime import Stdio
        from berth.runtime.exec import ExecProcess

        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        spec = self.containers.spec_of(self.cid)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        start = time.time()
        proc = ExecProcess(target, spec, replace(spec.process, args=tuple(self.argv),
                                                 terminal=False),
                           stdio=Stdio(None, out_w, out_w),
                           seccomp_cache=self.containers.seccomp_cache)
        output = b""
        try:
            proc.start()
            os.close(out_w)
            out_w = None
            deadline = time.monotonic() + self.timeout
            import select

            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    proc.kill(signal.SIGKILL)
                    code, timed_out = -1, True
                    proc.wait()
                    break
                readable, _, _ = select.select([out_r], [], [], left)
                if readable:
                    chunk = os.read(out_r, 4096)
                    if chunk:
                        output = (output + chunk)[:MAX_OUTPUT]
                        continue
                    code, timed_out = proc.wait(), False
                    break
        except Exception as exc:  # noqa: BLE001 - a check that cannot start fails
            code, timed_out = -1, False
            output = str(exc).encode()
        finally:
            if out_w is not None:
                os.close(out_w)
            os.close(out_r)
        text = output.decode(errors="replace")
        if timed_out:
            text = f"Health check exceeded timeout ({self.timeout:g}s)"
        self._record(start, time.time(), code, text, in_start_period)

    def _record(self, start: float, end: float, code: int, output: str,
                in_start_period: bool) -> None:
        from berth.container.logs import timestamp

        record = self.containers.store.read(self.cid)
        health = dict(record["State"].get("Health") or {"Status": "starting", "FailingStreak": 0,
                                                         "Log": []})
        log = list(health.get("Log") or [])
        log.append({"Start": timestamp(start), "End": timestamp(end), "ExitCode": code,
                    "Output": output})
        health["Log"] = log[-KEEP_LOG:]
        if code == 0:
            health["Status"] = "healthy"
            health["FailingStreak"] = 0
        elif not in_start_period or health["Status"] != "starting":
            health["FailingStreak"] = health.get("FailingStreak", 0) + 1
            if health["FailingStreak"] >= self.retries:
                health["Status"] = "unhealthy"
        self.containers.set_health(self.cid, health)


def main(argv: list[str]) -> int:
    """One check, run by berth-shim at each interval: python -m berth.container.health ROOT ID"""
    from berth.container import Containers
    from berth.container.logs import parse_time
    from berth.image import ImageStore

    root, cid = argv[0], argv[1]
    containers = Containers(root, ImageStore(root))
    record = containers.store.read(cid)
    checker = HealthChecker.for_record(containers, record, reset=False)
    if checker is None or not record["State"]["Running"]:
        return 0
    started = parse_time(record["State"]["StartedAt"]) or time.time()
    checker._check(record["State"]["Pid"], time.time() - started < checker.start_period)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
