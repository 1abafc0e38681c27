"""bench/run-all --smoke: the one benchmark command runs every script once, writes its
report and leaves nothing behind, so it cannot rot between real runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_ALL = os.path.join(REPO, "bench", "run-all")
# where the bench scripts make their work dirs (berth roots, podman stores, dockerd's)
WORK_PREFIXES = ("/tmp/berth-bench", "/var/tmp/berth-bench", "/tmp/bcb-")


def _work_dirs() -> set[str]:
    out = set()
    for parent in ("/tmp", "/var/tmp"):
        for entry in os.listdir(parent):
            path = os.path.join(parent, entry)
            if path.startswith(WORK_PREFIXES):
                out.add(path)
    return out


def _work_dir_of(path: str) -> str | None:
    """/tmp/bcb-x/berth-root -> /tmp/bcb-x, for paths under a bench work dir."""
    for prefix in WORK_PREFIXES:
        if path.startswith(prefix):
            parent = os.path.dirname(prefix)
            return os.path.join(parent, path[len(parent) + 1:].split("/")[0])
    return None


def _processes_left(before: set[str], tmp: str) -> list[str]:
    """Processes (a berth hub or monitor, dockerd, containerd, a registry) whose command
    line names a work dir that did not exist before, or the test's own tmp dir."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        dirs = {_work_dir_of(a) for a in argv} - {None} - before
        if dirs or any(tmp in a for a in argv):
            found.append(f"{pid}: {' '.join(argv)[:200]}")
    return found


def _mounts_left(before: set[str], tmp: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(tmp) or
            (_work_dir_of(p) is not None and _work_dir_of(p) not in before)]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_all_smoke_writes_the_report_and_leaves_nothing_behind(tmp_path):
    out, raw = tmp_path / "out", tmp_path / "json"
    cmd = [RUN_ALL, "--smoke", "--out", str(out), "--json-dir", str(raw)]
    had_docker0 = os.path.exists("/sys/class/net/docker0")
    if shutil.which("dockerd") and shutil.which("docker") and not had_docker0:
        cmd.append("--start-dockerd")  # its start and clean-up are the riskiest part
    before = _work_dirs()

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=850,
                          stdin=subprocess.DEVNULL)

    assert proc.returncode == 0, proc.stderr[-4000:]
    results = (out / "RESULTS.md").read_text()
    assert "| operation | berth | peer | ratio | target | met? |" in results
    assert "## The machine" in results
    meta = json.loads((raw / "run.json").read_text())
    assert all(s["status"] == "ok" or s["status"].startswith(("missing", "skipped"))
               for s in meta["steps"].values()), meta["steps"]
    assert meta["leftovers"] == {"mounts": [], "processes": []}
    new = _work_dirs() - before
    assert not new, f"work dirs left behind: {sorted(new)}"
    assert _processes_left(before, str(tmp_path)) == []
    assert _mounts_left(before, str(tmp_path)) == []
    if not had_docker0:
        assert not os.path.exists("/sys/class/net/docker0"), "the private dockerd's bridge is left"
