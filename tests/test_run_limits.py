"""cgroup limits, applied on this host's layout (hybrid v1 here, v2 elsewhere)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from berth.runtime import cgroups
from conftest import CGROUP_PARENT


def _cg(rel: str, controller: str, name: str) -> str:
    lay = cgroups.layout()
    if lay.is_v2:
        return os.path.join(lay.unified, rel, name)
    return os.path.join(lay.v1[controller], rel, name)


def test_limits_are_written_to_the_containers_cgroup(berth):
    v2 = cgroups.layout().is_v2
    script = ("cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max "
              "/sys/fs/cgroup/cpu.weight" if v2 else
              "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us "
              "/sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max "
              "/sys/fs/cgroup/cpu/cpu.shares")
    out = berth.out("run", "--rm", "--cpus", "0.5", "--memory", "64m", "--pids-limit", "50",
                    "--cpu-shares", "512", "busybox", "sh", "-c", script).split()
    if v2:
        assert out == ["50000", "100000", str(64 << 20), "50", str(cgroups.shares_to_weight(512))]
    else:
        assert out == ["50000", "100000", str(64 << 20), "50", "512"]


@pytest.mark.slow
def test_memory_hog_is_oom_killed_with_137_and_inspect_shows_it(berth):
    name = f"oom-{os.getpid()}"
    # tail keeps everything it reads when there are no newlines: an unbounded allocation
    proc = berth("run", "--name", name, "--memory", "32m", "--memory-swap", "32m", "busybox",
                 "tail", "/dev/zero", check=False, timeout=120)
    assert proc.returncode == 137
    state = json.loads(berth.out("inspect", name))[0]["State"]
    assert state["OOMKilled"] is True
    assert state["ExitCode"] == 137
    assert state["Status"] == "exited"
    assert berth.out("inspect", "-f", "{{.State.OOMKilled}}", name).strip() == "true"
    berth("rm", name)


@pytest.mark.slow
def test_fork_bomb_stops_at_the_pids_limit(berth):
    name = f"bomb-{os.getpid()}"
    proc = berth.popen("run", "--rm", "--name", name, "--pids-limit", "64", "busybox", "sh", "-c",
                       "bomb() { bomb | bomb & }; bomb; sleep 4; echo survived",
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak = 0
    deadline = time.time() + 3
    current = None
    while time.time() < deadline:
        cid = _find_id(berth, name)
        if cid:
            current = _cg(f"{CGROUP_PARENT}/{cid}", "pids", "pids.current")
            try:
                with open(current) as f:
                    peak = max(peak, int(f.read()))
            except FileNotFoundError:
                pass
        time.sleep(0.05)
    # the host stays responsive and the container still ends on its own
    out, _ = proc.communicate(timeout=60)
    assert 0 < peak <= 64
    assert b"survived" in out


def _find_id(berth, name: str) -> str | None:
    link = os.path.join(berth.root, "names", name)
    try:
        return os.readlink(link)
    except OSError:
        return None


def test_cgroup_is_removed_when_the_container_ends(berth):
    name = f"cgone-{os.getpid()}"
    berth("run", "--name", name, "--memory", "64m", "busybox", "true")
    cid = _find_id(berth, name)
    assert not os.path.exists(_cg(f"{CGROUP_PARENT}/{cid}", "memory", ""))
    berth("rm", name)


def test_ulimit_sets_rlimits_and_refuses_to_exceed_the_hard_limit(berth):
    import resource

    out = berth.out("run", "--rm", "--ulimit", "nofile=512:1024", "busybox", "sh", "-c",
                    "ulimit -n; ulimit -Hn").split()
    assert out == ["512", "1024"]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and not _has_sys_resource():
        proc = berth("run", "--rm", "--ulimit", f"nofile={hard + 1}:{hard + 1}", "busybox", "true",
                     check=False)
        assert proc.returncode != 0
        assert b"RLIMIT_NOFILE" in proc.stderr
        assert b"Traceback" not in proc.stderr


def _has_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 24))
    return False
