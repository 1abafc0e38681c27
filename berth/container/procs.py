"""What `top` and `stats` show: a container's processes and its cgroup's counters."""

from __future__ import annotations

import os
import pwd
import time

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    head, _, tail = raw.rpartition(")")
    return [head.partition("(")[2]] + tail.split()


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def processes(pids: list[int]) -> list[list[str]]:
    """ps -ef columns for `pids`, as the host sees them (Docker's top shows host pids)."""
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    boot = time.time() - uptime
    rows = []
    for pid in sorted(pids):
        fields = _stat(pid)
        if fields is None:
            continue
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        ppid = fields[2]
        utime, stime, start = int(fields[12]), int(fields[13]), int(fields[20])
        cpu_seconds = (utime + stime) / _TICKS
        started = boot + start / _TICKS
        age = max(time.time() - started, 1e-9)
        tty_nr = int(fields[5])
        tty = f"pts/{os.minor(tty_nr)}" if tty_nr and os.major(tty_nr) == 136 else "?"
        rows.append([_user(uid), str(pid), ppid, str(int(100 * cpu_seconds / age)),
                     time.strftime("%H:%M", time.localtime(started)), tty,
                     time.strftime("%H:%M:%S", time.gmtime(cpu_seconds)),
                     cmd or f"[{fields[0]}]"])
    return rows


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def usage(cgroup) -> dict:
    """cpu (ns), memory usage and limit (bytes), pids, block io (bytes) of a cgroup."""
    lay = cgroup.layout
    if lay.is_v2:
        base = cgroup.dirs[""]
        cpu = dict(line.split() for line in _read(f"{base}/cpu.stat").splitlines() if line)
        limit = _read(f"{base}/memory.max").strip()
        io_read = io_write = 0
        for line in _read(f"{base}/io.stat").splitlines():
            for kv in line.split()[1:]:
                k, _, v = kv.partition("=")
                io_read += int(v) if k == "rbytes" else 0
                io_write += int(v) if k == "wbytes" else 0
        return {"cpu_ns": int(cpu.get("usage_usec", 0)) * 1000,
                "mem": int(_read(f"{base}/memory.current") or 0),
                "limit": None if limit in ("", "max") else int(limit),
                "pids": int(_read(f"{base}/pids.current") or 0),
                "io_read": io_read, "io_write": io_write}

    def path(controller, name):
        mount = lay.v1.get(controller)
        return os.path.join(mount, cgroup.rel, name) if mount else ""

    limit = int(_read(path("memory", "memory.limit_in_bytes")) or 0)
    io_read = io_write = 0
    for line in _read(path("blkio", "blkio.throttle.io_service_bytes")).splitlines():
        parts = line.split()
        if len(parts) == 3:
            io_read += int(parts[2]) if parts[1] == "Read" else 0
            io_write += int(parts[2]) if parts[1] == "Write" else 0
    usage = int(_read(path("memory", "memory.usage_in_bytes")) or 0)
    stat = dict(line.split() for line in _read(path("memory", "memory.stat")).splitlines() if line)
    usage -= int(stat.get("total_inactive_file", 0))  # as Docker's CLI computes "used"
    return {"cpu_ns": int(_read(path("cpuacct", "cpuacct.usage")) or 0),
            "mem": max(usage, 0), "limit": None if limit >= 1 << 62 else limit,
            "pids": int(_read(path("pids", "pids.current")) or 0),
            "io_read": io_read, "io_write": io_write}
