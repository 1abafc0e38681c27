"""berth build: Dockerfiles to images, with Docker's rules, cache and multi-stage builds.

    parser    Dockerfile text -> typed instructions with file and line (pure)
    arguments one instruction's argument grammar: flags, JSON form, words, pairs, <<EOF (pure)
    shell     Docker's $VAR substitution and quote removal (pure)
    metadata  the config-only instructions and the history text Docker gives them (pure)
    ignore    .dockerignore's rules (pure)
    context   the build context, and COPY/ADD sources found in it or in an image
    files     COPY, ADD and WORKDIR layers, staged as the files land on the image
    run       RUN in a throw-away container, and the layer it leaves
    cache     the step cache, keyed on (parent image, step, source contents)
    builder   stages and steps: the build itself

This module is the API: ``build()``, its ``BuildOptions`` and its ``Progress``.

Everything a build writes while it runs lives in a workspace of its own under
<root>/build-cache/tmp, removed when it ends; one a killed build left is removed by the
next build.
"""

from __future__ import annotations

import os
import sys

from berth.oci.record import Record, jf

WORKSPACES = ("build-cache", "tmp")


class BuildOptions(Record):
    tags: tuple[str, ...] = ()
    build_args: dict = jf(factory=dict)  # name -> value
    target: str | None = None
    no_cache: bool = False
    pull: bool = False
    labels: dict = jf(factory=dict)
    network: str = "default"  # for RUN: default (own network namespace), none, host
    platform: str | None = None


class Progress:
    """Where the build tells what it does: Docker's step lines and the RUN output.

    Quiet, it keeps the RUN output instead, to show it if the build fails.
    """

    def __init__(self, stream=None, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.quiet = quiet
        self.kept = bytearray()
        self._midline = False  # the last RUN output did not end its line

    def line(self, text: str) -> None:
        if not self.quiet:
            self.end_line()
            self.stream.write(text + "\n")
            self.stream.flush()

    def end_line(self) -> None:
        """Start the next message on a line of its own, whatever a command printed."""
        if self._midline and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
        self._midline = False

    def output(self, data: bytes) -> None:
        if self.quiet:
            self.kept += data
            del self.kept[:-(1 << 20)]
            return
        if data:
            self._midline = not data.endswith(b"\n")
        buffer = getattr(self.stream, "buffer", None)
        if buffer is not None:
            buffer.write(data)
            buffer.flush()
        else:
            self.stream.write(data.decode(errors="replace"))
            self.stream.flush()


def build(root: str, source: str, dockerfile: str | None, stdin, options, progress):
    """``berth build``: the image built from context `source` ("-": stdin) and Dockerfile
    `dockerfile` (None: the context's own; "-": stdin); returns the image."""
    from berth.build.builder import Builder
    from berth.build.context import open_context
    from berth.container import Containers
    from berth.fsutil import remove_tree
    from berth.image import ImageStore

    images = ImageStore(root)
    containers = Containers(root, images)
    workspace = _workspace(root, containers.cgroup_parent)
    try:
        ctx = open_context(source, dockerfile, stdin, workspace)
        try:
            builder = Builder(images, cgroup_parent=containers.cgroup_parent,
                              seccomp_cache=containers.seccomp_cache, workspace=workspace,
                              options=options, progress=progress)
            return builder.build(ctx)
        finally:
            ctx.close()
    finally:
        remove_tree(workspace)


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2:].split()[19].decode()


def _workspace(root: str, cgroup_parent: str) -> str:
    """A fresh directory for this build; those of builds that are gone are removed, with
    the cgroups of their RUN steps (a build killed with -9 cleans nothing itself)."""
    from berth.fsutil import remove_tree

    base = os.path.join(root, *WORKSPACES)
    os.makedirs(base, mode=0o700, exist_ok=True)
    for name in os.listdir(base):
        pid, _, rest = name.partition("-")
        started = rest.partition("-")[0]
        if pid.isdigit() and _start_time(int(pid)) == started:
            continue  # a build that still runs
        stale = os.path.join(base, name)
        _remove_cgroups(stale, cgroup_parent)
        remove_tree(stale)
    me = os.getpid()
    path = os.path.join(base, f"{me}-{_start_time(me)}-{os.urandom(4).hex()}")
    os.mkdir(path, 0o700)
    return path


def _remove_cgroups(workspace: str, cgroup_parent: str) -> None:
    """The cgroups of a dead build's RUN steps (run-<id> in its workspace: build-<id>)."""
    try:
        names = [n for n in os.listdir(workspace) if n.startswith("run-")]
    except OSError:
        return
    if not names:
        return
    from berth.errors import BerthError
    from berth.runtime import cgroups

    for name in names:
        cgroup = cgroups.Cgroup(cgroups.layout(), f"{cgroup_parent}/build-{name[4:]}")
        try:
            if not cgroup.procs():
                cgroup.destroy()
        except (OSError, BerthError):
            pass
