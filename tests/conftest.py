"""Shared fixtures: a throw-away berth root with a real busybox image, and a CLI runner.

Integration tests drive the real CLI (``python -m berth``, from this working tree) as
root, in real namespaces, and check from inside the container with busybox applets.
After every test that uses the root, nothing of berth's may remain mounted and no
per-container cgroup may remain: a leak fails the test that caused it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# every test session puts its containers' cgroups under a parent of its own, so the leak
# checks see only this session's cgroups, whatever else runs on the machine
CGROUP_PARENT = f"berth-test-{os.getpid()}"
# berth-shim, built from this working tree once per session, so monitors of long-running
# test containers become the shim as they do in an installation
SHIM = os.path.join(f"/tmp/berth-test-shim-{os.getpid()}", "berth-shim")


def _build_shim() -> None:
    if not os.path.exists(SHIM):
        os.makedirs(os.path.dirname(SHIM), exist_ok=True)
        subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", SHIM,
                        os.path.join(REPO, "berth", "shim", "shim.c")], check=True)


def _env(root: str) -> dict:
    env = dict(os.environ)
    env["BERTH_ROOT"] = root
    env["BERTH_CGROUP_PARENT"] = CGROUP_PARENT
    env["BERTH_HUB_IDLE"] = "60"  # a hub a test forgot to stop goes away on its own
    _build_shim()
    env["BERTH_SHIM"] = SHIM
    env["PYTHONPATH"] = REPO
    env.pop("BERTH_DEBUG", None)
    return env


_ROOTS: set[str] = set()  # every root a test used: all are shut down when the session ends


class Berth:
    """Runs the berth CLI against one root."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.env = _env(root)
        _ROOTS.add(root)

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "berth", *args]

    def __call__(self, *args: str, input: bytes | str | None = None, check: bool = True,
                 timeout: float = 120) -> subprocess.CompletedProcess:
        if isinstance(input, str):
            input = input.encode()
        proc = subprocess.run(self.cmd(*args), env=self.env, input=input, capture_output=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"berth {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout.decode(errors='replace')}\n"
                                 f"stderr: {proc.stderr.decode(errors='replace')}")
        return proc

    def out(self, *args: str, **kw) -> str:
        return self(*args, **kw).stdout.decode()

    def popen(self, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.cmd(*args), env=self.env, **kw)

    def shutdown(self) -> None:
        """Remove every container of this root and stop its hub: leave nothing running."""
        ids = self("ps", "-aq", "--no-trunc", check=False).stdout.decode().split()
        if ids:
            self("rm", "-f", *ids, check=False)
        self("network", "prune", "-f", check=False)
        from berth.container import client

        client.stop_hub(self.root)


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("busybox") / "busybox.tar")
    subprocess.run([os.path.join(REPO, "scripts", "busybox-rootfs.sh"), path], check=True)
    return path


@pytest.fixture(scope="session")
def session_root(tmp_path_factory, busybox_tar) -> str:
    root = str(tmp_path_factory.mktemp("berth-root"))
    Berth(root)("import", "-c", 'CMD ["sh"]', busybox_tar, "busybox")
    yield root
    Berth(root).shutdown()


def berth_mounts(root: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if root in line]


def _cgroup_parents(name: str) -> list[str]:
    base = "/sys/fs/cgroup"
    if os.path.exists(os.path.join(base, "cgroup.controllers")):  # pure cgroup v2
        return [os.path.join(base, name)]
    return [os.path.join(base, entry, name) for entry in os.listdir(base)]


def berth_cgroups(parent: str = CGROUP_PARENT) -> list[str]:
    """Per-container cgroups this test session's berth created and did not remove.

    A hub's spare (a stage A waiting in a .spare-* cgroup for the next run) is not a
    container: it goes when its hub is stopped, which every test root's teardown does.
    """
    out = []
    for path in _cgroup_parents(parent):
        if os.path.isdir(path):
            out += [os.path.join(path, c) for c in os.listdir(path)
                    if os.path.isdir(os.path.join(path, c)) and not c.startswith(".spare-")]
    return out


@pytest.fixture(scope="session", autouse=True)
def _remove_cgroup_parent():
    yield
    for root in sorted(_ROOTS):
        if os.path.isdir(root):
            Berth(root).shutdown()
    for path in _cgroup_parents(CGROUP_PARENT):
        try:
            os.rmdir(path)
        except OSError:
            pass
    import shutil

    shutil.rmtree(os.path.dirname(SHIM), ignore_errors=True)


def running_containers(root: str) -> set[str]:
    import json

    out = set()
    cdir = os.path.join(root, "containers")
    for cid in os.listdir(cdir) if os.path.isdir(cdir) else ():
        try:
            with open(os.path.join(cdir, cid, "container.json")) as f:
                if json.load(f)["State"]["Running"]:
                    out.add(cid)
        except (OSError, ValueError):
            continue
    return out


@pytest.fixture
def berth(session_root) -> Berth:
    """The CLI on the shared root; checks for leaked mounts and cgroups afterwards."""
    b = Berth(session_root)
    before = set(berth_cgroups())
    yield b
    # give exiting containers a moment: cgroups go once the last task is reaped
    for _ in range(100):
        leaked = set(berth_cgroups()) - before
        leaked = {c for c in leaked if os.path.basename(c) not in running_containers(session_root)}
        if not leaked and not berth_mounts(session_root):
            break
        time.sleep(0.05)
    assert not berth_mounts(session_root), "berth left mounts on the host"
    assert not leaked, f"berth left cgroups behind: {sorted(leaked)}"


@pytest.fixture
def fresh_berth(tmp_path, busybox_tar) -> Berth:
    """A berth root of its own, with busybox imported, for tests that count things."""
    b = Berth(str(tmp_path / "root"))
    b("import", "-c", 'CMD ["sh"]', busybox_tar, "busybox")
    yield b
    b.shutdown()
