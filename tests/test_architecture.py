"""Imports only point down the layers; the CLI's hot path stays light."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# lowest first; a module may import its own layer and any layer listed before it
LAYERS = [
    {"berth.errors", "berth.fsutil", "berth.ipc", "berth.trace"},
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
