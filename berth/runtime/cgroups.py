"""Control groups, v1 and v2, detected at run time.

Three layouts exist in the wild and all must work:
  * unified (v2): /sys/fs/cgroup is cgroup2 and holds every controller;
  * legacy (v1): one hierarchy per controller;
  * hybrid: v1 hierarchies plus a cgroup2 mount (usually /sys/fs/cgroup/unified) holding
    few or no controllers. Our development machines are hybrid with only hugetlb on v2,
    so there the v1 hierarchies do the work.
Limits come from the OCI ``linux.resources`` section; a container's cgroup is created
before its process starts and removed after it ends.
"""

from __future__ import annotations

import errno
import os
import time
from berth.oci.record import Record

from berth.errors import FailedPrecondition, InvalidArgument
from berth.oci.runtime import Resources

# v1 controllers a container gets its own cgroup in (Docker creates one in each)
V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
                  "net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc", "name=systemd")


class Layout(Record):
    """Where each hierarchy is mounted. v1 maps controller -> mountpoint."""

    unified: str | None  # cgroup2 mountpoint, if any
    v1: dict  # controller name -> mountpoint
    v1_options: dict  # mountpoint -> the comma-joined controller list it was mounted with

    @property
    def is_v2(self) -> bool:
        """True when cgroup v2 does the work (no v1 memory/pids hierarchies)."""
        return self.unified is not None and "memory" not in self.v1 and "pids" not in self.v1


_layout: Layout | None = None


def layout() -> Layout:
    global _layout
    if _layout is None:
        _layout = _read_layout("/proc/self/mountinfo")
    return _layout


def _read_layout(mountinfo: str) -> Layout:
    unified = None
    v1: dict = {}
    opts: dict = {}
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            fstype, _source, superopts = (right.split() + ["", "", ""])[:3]
            mountpoint = fields[4]
            if fstype == "cgroup2":
                if unified is None or mountpoint == "/sys/fs/cgroup":
                    unified = mountpoint
            elif fstype == "cgroup":
                controllers = [o for o in superopts.split(",")
                               if o in V1_CONTROLLERS or o.startswith("name=")]
                for c in controllers:
                    v1.setdefault(c, mountpoint)
                opts[mountpoint] = ",".join(controllers)
    if unified is None and not v1:
        raise FailedPrecondition("no cgroup filesystem is mounted on this host")
    return Layout(unified, v1, opts)


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    except OSError as exc:
        name = os.path.basename(path)
        if exc.errno in (errno.EINVAL, errno.ERANGE, errno.EBUSY):
            raise InvalidArgument(f"cgroup {name}: cannot set {value!r}: {exc.strerror}") from None
        raise
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000), as runc converts it."""
    if shares == 0:
        return 100
    return 1 + ((shares - 2) * 9999) // 262142


class Cgroup:
    """One container's cgroup across every hierarchy."""

    def __init__(self, lay: Layout, rel: str) -> None:
        self.layout = lay
        self.rel = rel.strip("/")
        if lay.is_v2:
            self.dirs = {"": os.path.join(lay.unified, self.rel)}
        else:
            mounts = sorted(set(lay.v1.values()))
            self.dirs = {lay.v1_options[m]: os.path.join(m, self.rel) for m in mounts}

    def _dir(self, controller: str) -> str | None:
        if self.layout.is_v2:
            return self.dirs[""]
        mount = self.layout.v1.get(controller)
        return os.path.join(mount, self.rel) if mount else None

    # --- lifecycle -------------------------------------------------------------------

    def create(self, resources: Resources | None) -> None:
        try:
            if self.layout.is_v2:
                self._create_v2()
            else:
                for path in self.dirs.values():
                    os.makedirs(path, exist_ok=True)
                cpuset = self._dir("cpuset")
                if cpuset:
                    _init_cpuset(cpuset)
            if resources:
                self.apply(resources)
        except BaseException:
            self.destroy()
            raise

    def _create_v2(self) -> None:
        # every ancestor must delegate the controllers we use
        parts = self.rel.split("/")
        cur = self.layout.unified
        available = set(_read(os.path.join(cur, "cgroup.controllers")).split())
        wanted = [c for c in ("cpu", "cpuset", "memory", "pids", "io", "hugetlb") if c in available]
        for part in parts:
            try:
                _write(os.path.join(cur, "cgroup.subtree_control"), " ".join("+" + c for c in wanted))
            except (OSError, InvalidArgument):
                pass  # a controller busy in a parent with processes; limits on it will fail loudly
            cur = os.path.join(cur, part)
            os.makedirs(cur, exist_ok=True)

    def join(self, pid: int) -> None:
        value = str(pid)
        for path in self.dirs.values():
            _write(os.path.join(path, "cgroup.procs"), value)

    def join_self(self) -> None:
        """Move the calling process, which must be single-threaded, into this cgroup.

        Moving a process through cgroup.procs takes the global threadgroup lock, whose
        write side waits for an RCU grace period (5-15 ms on our machines). On cgroup v1 a
        thread moving itself through `tasks` ("0" is the caller) needs no such lock, and
        for a single-threaded process that moves the whole process: under a millisecond.
        """
        if self.layout.is_v2:
            self.join(os.getpid())
            return
        for path in self.dirs.values():
            _write(os.path.join(path, "tasks"), "0")

    def destroy(self) -> None:
        """Remove the cgroup in every hierarchy; processes must already be gone."""
        for path in self.dirs.values():
            for attempt in range(50):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    # EBUSY: the last tasks of a dead pid namespace are still being reaped
                    if exc.errno != errno.EBUSY or attempt == 49:
                        raise
                    time.sleep(0.002 * (attempt + 1))

    def rename(self, rel: str) -> None:
        """Move this cgroup to a new name under the same parent, processes and all."""
        rel = rel.strip("/")
        new = Cgroup(self.layout, rel)
        for key, path in self.dirs.items():
            os.rename(path, new.dirs[key])
        self.rel, self.dirs = new.rel, new.dirs

    def procs(self) -> list[int]:
        path = self._dir("pids") or self._dir("memory") or next(iter(self.dirs.values()))
        try:
            return [int(p) for p in _read(os.path.join(path, "cgroup.procs")).split()]
        except FileNotFoundError:
            return []

    # --- limits ----------------------------------------------------------------------

    def apply(self, r: Resources) -> None:
        if self.layout.is_v2:
            self._apply_v2(r)
        else:
            self._apply_v1(r)

    def _apply_v1(self, r: Resources) -> None:
        mem = self._dir("memory")
        if r.memory and mem:
            if r.memory.reservation is not None:
                _write(f"{mem}/memory.soft_limit_in_bytes", str(r.memory.reservation))
            if r.memory.limit is not None:
                _write(f"{mem}/memory.limit_in_bytes", str(r.memory.limit))
            if r.memory.swap is not None and os.path.exists(f"{mem}/memory.memsw.limit_in_bytes"):
                _write(f"{mem}/memory.memsw.limit_in_bytes", str(r.memory.swap))
            if r.memory.swappiness is not None:
                _write(f"{mem}/memory.swappiness", str(r.memory.swappiness))
            if r.memory.disable_oom_killer:
                _write(f"{mem}/memory.oom_control", "1")
        cpu = self._dir("cpu")
        if r.cpu and cpu:
            if r.cpu.shares is not None:
                _write(f"{cpu}/cpu.shares", str(r.cpu.shares))
            if r.cpu.period is not None:
                _write(f"{cpu}/cpu.cfs_period_us", str(r.cpu.period))
            if r.cpu.quota is not None:
                _write(f"{cpu}/cpu.cfs_quota_us", str(r.cpu.quota))
        cpuset = self._dir("cpuset")
        if r.cpu and cpuset:
            if r.cpu.cpus:
                _write(f"{cpuset}/cpuset.cpus", r.cpu.cpus)
            if r.cpu.mems:
                _write(f"{cpuset}/cpuset.mems", r.cpu.mems)
        pids = self._dir("pids")
        if r.pids and pids:
            _write(f"{pids}/pids.max", "max" if r.pids.limit <= 0 else str(r.pids.limit))
        dev = self._dir("devices")
        if r.devices and dev:
            for rule in r.devices:
                _write(f"{dev}/devices.{'allow' if rule.allow else 'deny'}", device_rule_v1(rule))

    def _apply_v2(self, r: Resources) -> None:
        path = self.dirs[""]
        if r.memory:
            if r.memory.reservation is not None:
                _write(f"{path}/memory.low", str(r.memory.reservation))
            if r.memory.limit is not None:
                _write(f"{path}/memory.max", "max" if r.memory.limit < 0 else str(r.memory.limit))
            if r.memory.swap is not None and os.path.exists(f"{path}/memory.swap.max"):
                if r.memory.swap < 0:
                    swap = "max"
                else:
                    swap = str(max(0, r.memory.swap - (r.memory.limit or 0)))
                _write(f"{path}/memory.swap.max", swap)
        if r.cpu:
            if r.cpu.shares is not None:
                _write(f"{path}/cpu.weight", str(shares_to_weight(r.cpu.shares)))
            if r.cpu.quota is not None or r.cpu.period is not None:
                quota = "max" if not r.cpu.quota or r.cpu.quota < 0 else str(r.cpu.quota)
                _write(f"{path}/cpu.max", f"{quota} {r.cpu.period or 100000}")
            if r.cpu.cpus:
                _write(f"{path}/cpuset.cpus", r.cpu.cpus)
            if r.cpu.mems:
                _write(f"{path}/cpuset.mems", r.cpu.mems)
        if r.pids:
            _write(f"{path}/pids.max", "max" if r.pids.limit <= 0 else str(r.pids.limit))
        # v2 has no device files: the device rules are a BPF program the runtime attaches
        # (berth.runtime.devices), which also needs the cgroup's directory fd.

    # --- accounting ------------------------------------------------------------------

    def oom_killed(self) -> bool:
        """True when the kernel OOM killer killed something in this cgroup."""
        if self.layout.is_v2:
            key, path = "oom_kill", f"{self.dirs['']}/memory.events"
        else:
            mem = self._dir("memory")
            if not mem:
                return False
            key, path = "oom_kill", f"{mem}/memory.oom_control"
        try:
            for line in _read(path).splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value) > 0
        except (FileNotFoundError, ValueError):
            pass
        return False

    def v2_dir(self) -> str | None:
        """The cgroup2 directory of this container, where device BPF programs attach."""
        if self.layout.is_v2:
            return self.dirs[""]
        return None

    # --- freezer ---------------------------------------------------------------------

    def freeze(self, timeout: float = 10.0) -> None:
        """Stop every process of the cgroup and return once all are stopped.

        v1 can stay in FREEZING while a task is in an uninterruptible sleep; runc writes
        FROZEN again until the state reads FROZEN, and so do we. On a timeout the cgroup
        is thawed again, so a failed freeze never leaves the container stopped.
        """
        deadline = time.monotonic() + timeout
        if self.layout.is_v2:
            path = self.dirs[""]
            _write(f"{path}/cgroup.freeze", "1")
            while "frozen 1" not in _read(f"{path}/cgroup.events").splitlines():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.001)
            else:
                return
        else:
            path = self._dir("freezer")
            if path is None:
                raise FailedPrecondition("the freezer cgroup controller is not mounted on this host")
            while True:
                _write(f"{path}/freezer.state", "FROZEN")
                if _read(f"{path}/freezer.state").strip() == "FROZEN":
                    return
                if time.monotonic() > deadline:
                    break
                time.sleep(0.001)
        self.thaw()
        from berth.errors import Unavailable

        raise Unavailable(f"cgroup {self.rel}: its processes did not freeze within {timeout:.0f}s")

    def thaw(self) -> None:
        """Let the processes of a frozen cgroup run again."""
        if self.layout.is_v2:
            _write(f"{self.dirs['']}/cgroup.freeze", "0")
        else:
            path = self._dir("freezer")
            if path is not None:
                _write(f"{path}/freezer.state", "THAWED")


def device_rule_v1(rule) -> str:
    kind = rule.type or "a"
    major = "*" if rule.major is None or rule.major < 0 else str(rule.major)
    minor = "*" if rule.minor is None or rule.minor < 0 else str(rule.minor)
    return f"{kind} {major}:{minor} {rule.access or 'rwm'}"


def _init_cpuset(path: str) -> None:
    """A new v1 cpuset cgroup starts empty; copy cpus and mems down from its ancestors."""
    parent = os.path.dirname(path)
    for name in ("cpuset.cpus", "cpuset.mems"):
        if _read(f"{parent}/{name}").strip() == "":
            _init_cpuset(parent)
        if _read(f"{path}/{name}").strip() == "":
            _write(f"{path}/{name}", _read(f"{parent}/{name}").strip())
