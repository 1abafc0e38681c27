#!/usr/bin/env python3
"""Benchmark of `berth build` against buildah and docker's classic builder (stdlib only).

One context: 50 MiB of random data and this Dockerfile (issue 5: a 50 MB COPY, two RUNs
and some metadata):

    ARG BASE=busybox
    FROM $BASE
    COPY data.bin /data/data.bin
    RUN sha256sum /data/data.bin > /data/sum
    RUN echo built > /built
    ENV APP=bench
    CMD ["cat", "/data/sum"]

built by

    berth  build -t bench .                              (this working tree)
    buildah bud --layers --isolation chroot --format docker -t bench .   (isolated store)
    docker build -t bench .  with DOCKER_BUILDKIT=0      (only if a dockerd is reachable,
                                                          or with --start-dockerd)

each from the same busybox root filesystem (scripts/busybox-rootfs.sh), twice per round:

    cold     the image and every cache of the previous round removed first (untimed):
             berth's build cache and the image's blobs and snapshots, buildah's image and
             its intermediate layers, docker's image and its intermediate images
    cached   the same build again, nothing changed: every step a cache hit

The tools alternate within every round and rotate their order each round, because the
machines are noisy; `sync` runs before each timed build, so no tool pays for another's
dirty pages. Targets (issue 5): cold <= 0.8x buildah's, cached <= 0.5x the fastest
peer's (measured before: buildah 2.17 s / 0.93 s, docker classic 2.83 s / 0.58 s).

    bench/build.py                    # 5 rounds
    bench/build.py --runs 9 --json out.json --start-dockerd
    bench/build.py --smoke            # 1 round

Everything it creates (a temp dir with the berth root, the buildah store, the context,
a private dockerd's dirs) is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (REPO, BenchError, Berth, Docker, Skip, Tool, build_rootfs,  # noqa: E402
                    find_berth, host_info, log, print_table, run_bench,
                    run_checked, run_quiet, set_up, write_json)

DATA_MIB = 50
DOCKERFILE = """\
ARG BASE=busybox
FROM $BASE
COPY data.bin /data/data.bin
RUN sha256sum /data/data.bin > /data/sum
RUN echo built > /built
ENV APP=bench
CMD ["cat", "/data/sum"]
"""
TAG = "berth-bench-build"
COLD_TARGET = ("buildah", 0.8)
CACHED_TARGET = 0.5  # of the fastest peer's cached rebuild
REFERENCE_S = {"buildah": (2.17, 0.93), "docker": (2.83, 0.58)}


class Buildah(Tool):
    name = "buildah"

    def __init__(self, work: Path, tarball: Path):
        self.dir, self.tarball = work / "buildah", tarball
        self.ready = False

    def setup(self) -> None:
        exe = shutil.which("buildah")
        if not exe:
            raise Skip("buildah not found on PATH (apt-get install buildah)")
        self.dir.mkdir()
        self.prefix = [exe, "--root", str(self.dir / "root"), "--runroot", str(self.dir / "runroot"),
                       "--storage-driver", "overlay"]
        self.ready = True
        # the busybox base from the same root filesystem tarball: ADD unpacks it
        ctr = run_checked(self.prefix + ["from", "scratch"], what="buildah from", exc=Skip).stdout.strip()
        run_checked(self.prefix + ["add", ctr, str(self.tarball), "/"], what="buildah add", exc=Skip)
        run_checked(self.prefix + ["config", "--cmd", "sh", ctr], what="buildah config", exc=Skip)
        run_checked(self.prefix + ["commit", "-q", ctr, "localhost/busybox"], what="buildah commit",
                    exc=Skip)
        run_checked(self.prefix + ["rm", ctr], what="buildah rm", exc=Skip)
        self.image = "localhost/busybox"

    def build_cmd(self, ctx: Path) -> list[str]:
        return self.prefix + ["bud", "--layers", "--isolation", "chroot", "--pull=never",
                              "--format", "docker", "--build-arg", f"BASE={self.image}",
                              "-t", TAG, str(ctx)]

    def reset(self) -> None:
        run_quiet(self.prefix + ["rmi", "-f", TAG])
        run_quiet(self.prefix + ["rmi", "--prune"])

    def cleanup(self) -> None:
        if self.ready:
            run_quiet(self.prefix + ["rm", "--all"])
            run_quiet(self.prefix + ["rmi", "--all", "--force"], timeout=300)

    def version(self) -> str:
        try:
            return run_checked(["buildah", "--version"]).stdout.strip()
        except BenchError:
            return "?"


def berth_build_cmd(tool: Berth, ctx: Path) -> list[str]:
    return tool.prefix + ["build", "--build-arg", f"BASE={tool.image}", "-t", TAG, str(ctx)]


def berth_reset(tool: Berth) -> None:
    run_quiet(tool.prefix + ["rmi", "-f", TAG], env=tool.env)
    shutil.rmtree(tool.root / "build-cache", ignore_errors=True)


def docker_build_cmd(tool: Docker, ctx: Path) -> list[str]:
    return tool.prefix + ["build", "--build-arg", f"BASE={tool.image}", "-t", TAG, str(ctx)]


def docker_reset(tool: Docker) -> None:
    # removing the tagged image removes its untagged intermediate parents too
    run_quiet(tool.prefix + ["rmi", "-f", TAG], env=tool.env)


def make_context(work: Path) -> Path:
    ctx = work / "context"
    ctx.mkdir()
    with open(ctx / "data.bin", "wb") as f:
        for _ in range(DATA_MIB):
            f.write(os.urandom(1 << 20))
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def timed_build(name: str, cmd: list[str], env: dict | None) -> float:
    subprocess.run(["sync"], check=False)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise BenchError(f"{name} build failed with exit status {p.returncode}: {' '.join(cmd)}\n"
                         + (p.stderr + p.stdout).decode(errors="replace")[-3000:])
    return dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Time a cold and a cached `berth build` against "
                                             "buildah and docker's classic builder.")
    ap.add_argument("--runs", type=int, default=5, help="measured rounds (default 5)")
    ap.add_argument("--json", metavar="FILE", help="write the raw numbers to FILE")
    ap.add_argument("--start-dockerd", action="store_true",
                    help="if no dockerd is reachable, start a private one (in the temp dir)")
    ap.add_argument("--berth", metavar="PATH", help="the berth executable (default: the repo's "
                                                    ".venv/bin/berth, running this working tree)")
    ap.add_argument("--tmpdir", metavar="DIR", help="where to make the work dir (default: /tmp)")
    ap.add_argument("--smoke", action="store_true", help="1 round, missing peers skipped (for tests)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.runs = 1
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    return run_bench(bench, args, "berth-bench-build.")


def bench(args, work: Path, tools: list) -> int:
    berth_exe = find_berth(args.berth)
    tarball = build_rootfs(work)
    berth = Berth(berth_exe, work, tarball, cgroup_parent=f"berth-bench-{os.getpid()}")
    # the checkout's code, not whatever copy of berth the venv has installed
    berth.env["PYTHONPATH"] = str(REPO)
    docker = Docker(work, tarball, args.start_dockerd)
    active, skipped = set_up([berth, Buildah(work, tarball), docker], tools)
    if docker in active:
        docker.env = dict(docker.env, DOCKER_BUILDKIT="0")
    ctx = make_context(work)
    log(f"context: {DATA_MIB} MiB of random data; {len(active)} tool(s): "
        + ", ".join(t.name for t in active))

    def command(tool) -> list[str]:
        if tool is berth:
            return berth_build_cmd(tool, ctx)
        if isinstance(tool, Buildah):
            return tool.build_cmd(ctx)
        return docker_build_cmd(tool, ctx)

    def reset(tool) -> None:
        if tool is berth:
            berth_reset(tool)
        elif isinstance(tool, Buildah):
            tool.reset()
        else:
            docker_reset(tool)

    cold: dict[str, list[float]] = {t.name: [] for t in active}
    cached: dict[str, list[float]] = {t.name: [] for t in active}
    for t in active:  # one untimed build each: images, caches and page cache warmed alike
        timed_build(t.name, command(t), t.env)
    for r in range(args.runs):
        order = active[r % len(active):] + active[:r % len(active)]
        for t in order:
            reset(t)
        for t in order:
            cold[t.name].append(timed_build(t.name, command(t), t.env))
        for t in order:
            cached[t.name].append(timed_build(t.name, command(t), t.env))
        log(f"  round {r + 1}/{args.runs}: " + "  ".join(
            f"{t.name} {cold[t.name][-1]:.2f}/{cached[t.name][-1]:.2f}s" for t in active))

    stats = {}
    for label, samples in (("cold", cold), ("cached", cached)):
        stats[label] = {n: {"median": statistics.median(v) * 1000, "min": min(v) * 1000,
                            "max": max(v) * 1000, "n": len(v)} for n, v in samples.items()}
        print_table(f"{label} build (ms, {args.runs} rounds)", stats[label],
                    [t.name for t in active])
    verdicts = {}
    peer, limit = COLD_TARGET
    verdicts["cold"] = _verdict("cold", cold, "berth", peer, limit)
    peers = [n for n in cached if n != "berth"]
    if peers:
        fastest = min(peers, key=lambda n: statistics.median(cached[n]))
        verdicts["cached"] = _verdict("cached", cached, "berth", fastest, CACHED_TARGET)
    else:
        print("\n  cached: no peer measured")
    print("\nReference (PEERS.md, same machine type): " + ", ".join(
        f"{n} {c:.2f} s cold / {w:.2f} s cached" for n, (c, w) in REFERENCE_S.items()))
    for name, why in skipped.items():
        print(f"  {name}: skipped: {why}")
    if args.json:
        write_json(args.json, {"host": host_info(), "versions": {t.name: t.version() for t in active},
                               "samples_s": {"cold": cold, "cached": cached}, "stats_ms": stats,
                               "verdicts": verdicts, "skipped": skipped})
    return 0


def _verdict(label: str, samples: dict, subject: str, peer: str, limit: float):
    if peer not in samples or not samples[peer]:
        print(f"\n  {label}: berth <= {limit:g}x {peer}: not measured ({peer} skipped)")
        return None
    rounds = [a / b for a, b in zip(samples[subject], samples[peer]) if b > 0]
    per_round = statistics.median(rounds)
    of_medians = statistics.median(samples[subject]) / statistics.median(samples[peer])
    met = per_round <= limit
    print(f"\n  {label}: berth/{peer} median of per-round ratios {per_round:.3f}x "
          f"[ratio of medians {of_medians:.3f}x]; target <= {limit:g}x -> "
          f"{'MET' if met else 'NOT MET'}")
    return met


if __name__ == "__main__":
    sys.exit(main())
