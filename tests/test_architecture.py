"""Imports only point down the layers; the CLI's hot path stays light."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# lowest first; a module may import its own layer and any layer listed before it
LAYERS = [
    {"berth.errors", "berth.fsutil", "berth.ipc", "berth.proc", "berth.trace"},
    {"berth.oci", "berth.linux"},
    {"berth.content", "berth.layer", "berth.runtime"},
    {"berth.snapshot", "berth.volume", "berth.network"},
    {"berth.image"},
    {"berth.registry"},
    {"berth.container"},
    {"berth.build"},
    {"berth.cli"},
]


def _layer_of(module: str) -> int | None:
    for i, names in enumerate(LAYERS):
        for name in names:
            if module == name or module.startswith(name + "."):
                return i
    return None


def _imports(path: str) -> set[str]:
    with open(path) as f:
        tree = ast.parse(f.read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in out if m.startswith("berth")}


def test_no_module_imports_a_higher_layer():
    violations = []
    for dirpath, _, files in os.walk(os.path.join(REPO, "berth")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__")
            own = _layer_of(rel)
            if own is None:
                continue
            for imported in _imports(path):
                layer = _layer_of(imported)
                if layer is not None and layer > own:
                    violations.append(f"{rel} imports {imported}")
    assert not violations, "upward imports:\n" + "\n".join(sorted(violations))


def test_version_loads_almost_nothing():
    code = ("import sys; from berth.cli import main; main(['--version']); "
            "print(sorted(m for m in sys.modules if m.startswith('berth')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         check=True).stdout.splitlines()
    assert out[0].startswith("berth version")
    assert out[1] == "['berth', 'berth.cli']"


def test_run_path_does_not_load_heavy_modules():
    """pyseccomp, tarfile, hashlib and dataclasses cost start-up time a run does not need."""
    code = ("import sys\n"
            "from berth.cli import run, containers, images\n"
            "import berth.container, berth.runtime, berth.runtime.init, berth.runtime.seccomp\n"
            "print(' '.join(m for m in ('pyseccomp', 'tarfile', 'hashlib', 'dataclasses', "
            "'typing', 'argparse', 'subprocess') if m in sys.modules))")
    # this working tree (not an installed copy), and no user site-packages
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": REPO, "PYTHONNOUSERSITE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env=env, check=True).stdout.strip()
    assert out == ""


def test_the_installed_launcher_runs_containers_and_flushes_before_its_quick_exit(tmp_path,
                                                                                  busybox_tar):
    """install.sh's launcher (python -S, the venv added by hand, os._exit after run and
    create) must find every dependency and lose no output."""
    launcher = os.path.join(REPO, ".venv", "bin", "berth")
    with open(launcher) as f:
        assert f.readline().rstrip().endswith("python3 -S"), "not install.sh's launcher"
    env = dict(os.environ, BERTH_ROOT=str(tmp_path / "root"), PYTHONPATH=REPO)

    def berth(*args: str) -> str:
        return subprocess.run([launcher, *args], env=env, capture_output=True, text=True,
                              check=True, timeout=120).stdout

    try:
        assert berth("--version").startswith("berth version")
        berth("import", busybox_tar, "busybox")
        assert berth("run", "--rm", "--network", "none", "busybox", "echo", "hi") == "hi\n"
        cid = berth("create", "--network", "none", "busybox", "true").strip()
        assert len(cid) == 64 and berth("ps", "-aq", "--no-trunc").split() == [cid]
        # the dependencies a -S interpreter must still find in the venv
        probe = "import aiohttp, bcrypt, isal, pyseccomp; print('ok')"
        python = os.path.join(REPO, ".venv", "bin", "python3")
        with open(launcher) as f:
            path_line = next(line for line in f if line.startswith("sys.path.append("))
        out = subprocess.run([python, "-S", "-c", "import sys\n" + path_line + probe],
                             capture_output=True, text=True, check=True).stdout
        assert out == "ok\n"
    finally:
        subprocess.run([launcher, "rm", "-f", *subprocess.run(
            [launcher, "ps", "-aq"], env=env, capture_output=True, text=True).stdout.split()],
            env=env, capture_output=True)
        from berth.container import client

        client.stop_hub(str(tmp_path / "root"))
