#!/usr/bin/env python3
"""Benchmark of `berth run` latency against its peers (stdlib only).

Times the whole process, wall clock, of

    berth  run --rm --network none busybox true
    podman --runtime runc run --rm --network none busybox true   (isolated store)
    docker run --rm --network none busybox true                  (if a dockerd is reachable,
                                                                  or with --start-dockerd)
    runc run  (a bundle: the same busybox tree, `runc spec` + args ["true"], no terminal,
               a new network namespace, writable root)

all from the same busybox root filesystem (scripts/busybox-rootfs.sh), alternating the
tools in every round (A B C D A B C D ...) because the machines are noisy. It also
times CLI start-up: `berth --version` against the interpreter floor `python3 -I -S -c pass`.

    bench/run_latency.py                 # 2 warm-ups + 10 measured runs per tool
    bench/run_latency.py --runs 20 --json out.json
    bench/run_latency.py --start-dockerd # start a private dockerd for the docker figure
    bench/run_latency.py --smoke         # 1 run each, no warm-up, missing peers skipped

Everything it creates (a temp dir holding the berth root, the podman store, the runc
bundle and state, the private dockerd's dirs) is removed at the end, also on Ctrl-C.
Targets (issue "berth run"): berth <= 0.25x podman, berth <= 2x runc.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (BenchError, Berth, Docker, Podman, Skip, Tool, alternate,  # noqa: E402
                    host_info, log, print_ratios, print_table, ratios, run_bench,
                    run_checked, run_quiet, summarize, find_berth, interpreter_of,
                    build_rootfs, set_up, write_json)

TARGETS = {"podman": 0.25, "runc": 2.0}  # berth / peer ratio must be at most this
RUN_ARGS = ["run", "--rm", "--network", "none"]


class Runc(Tool):
    name = "runc"

    def __init__(self, work: Path, tarball: Path):
        self.bundle, self.state, self.tarball = work / "runc-bundle", work / "runc-state", tarball
        self.id = f"berth-bench-{os.getpid()}"
        self.exe = ""

    def setup(self) -> None:
        exe = shutil.which("runc")
        if not exe:
            raise Skip("runc not found on PATH")
        self.exe = exe
        rootfs = self.bundle / "rootfs"
        rootfs.mkdir(parents=True)
        # GNU tar: the tree has absolute symlinks (-> /bin/busybox) which tarfile's safe
        # filters refuse; as root it keeps numeric owners and modes.
        run_checked(["tar", "--numeric-owner", "-xpf", str(self.tarball), "-C", str(rootfs)],
                    what="unpack rootfs for runc")
        run_checked([exe, "spec", "--bundle", str(self.bundle)], what="runc spec")
        cfg_path = self.bundle / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["process"]["args"] = ["true"]
        cfg["process"]["terminal"] = False
        cfg["root"]["readonly"] = False
        namespaces = cfg.setdefault("linux", {}).setdefault("namespaces", [])
        if not any(ns.get("type") == "network" for ns in namespaces):
            namespaces.append({"type": "network"})
        cfg_path.write_text(json.dumps(cfg, indent=2))
        self.state.mkdir()
        self.cmd = [exe, "--root", str(self.state), "run", "--bundle", str(self.bundle), self.id]

    def cleanup(self) -> None:
        if self.exe and self.state.exists():
            run_quiet([self.exe, "--root", str(self.state), "delete", "--force", self.id])

    def version(self) -> str:
        try:
            return run_checked(["runc", "--version"]).stdout.splitlines()[0]
        except (BenchError, IndexError):
            return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Time `berth run --rm --network none busybox true` "
                                             "against podman, docker and bare runc.")
    ap.add_argument("--runs", type=int, default=10, help="measured runs per tool (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up runs per tool, not counted (default 2)")
    ap.add_argument("--json", metavar="FILE", help="write the raw numbers to FILE")
    ap.add_argument("--smoke", action="store_true",
                    help="1 run each, no warm-up, missing peers skipped (for the test suite)")
    ap.add_argument("--start-dockerd", action="store_true",
                    help="if no dockerd is reachable, start a private one (in the temp dir) and stop it after")
    ap.add_argument("--berth", metavar="PATH", help="the berth executable (default: the repo's .venv/bin/berth)")
    ap.add_argument("--tmpdir", metavar="DIR", help="where to make the work dir (default: $TMPDIR or /tmp)")
    ap.add_argument("--no-startup", action="store_true", help="skip the CLI start-up measurement")
    args = ap.parse_args(argv)
    if args.smoke:
        args.runs, args.warmup = 1, 0
    if args.runs < 1 or args.warmup < 0:
        ap.error("--runs must be >= 1 and --warmup >= 0")

    return run_bench(bench, args, "berth-bench-run.")


def bench(args, work: Path, tools: list) -> int:
    berth_exe = find_berth(args.berth)
    tarball = build_rootfs(work)

    candidates: list[Tool] = [
        Berth(berth_exe, work, tarball),
        Podman(work, tarball),
        Docker(work, tarball, args.start_dockerd),
        Runc(work, tarball),
    ]
    active, skipped = set_up(candidates, tools)
    for t in active:
        if not isinstance(t, Runc):
            t.cmd = t.prefix + RUN_ARGS + [t.image, "true"]

    versions = {t.name: t.version() for t in active}
    order = [t.name for t in active]
    log(f"measuring {' '.join(order)}: {args.warmup} warm-up + {args.runs} measured runs each, alternating")
    samples = alternate([(t.name, t.cmd, t.env) for t in active], args.warmup, args.runs, "run")

    startup = None
    if not args.no_startup:
        py = interpreter_of(berth_exe)
        b = active[0]
        st_tools = [("berth --version", [berth_exe, "--version"], b.env),
                    ("python3 -I -S -c pass", [py, "-I", "-S", "-c", "pass"], None)]
        log(f"measuring CLI start-up: berth --version vs {py} -I -S -c pass")
        st_samples = alternate(st_tools, 0 if args.smoke else 1, args.runs, "start-up")
        startup = {"interpreter": py, "order": [n for n, _, _ in st_tools],
                   "commands": {n: c for n, c, _ in st_tools},
                   "samples_ms": st_samples, "stats": summarize(st_samples)}

    # ---- report
    stats = summarize(samples)
    rat = ratios(samples, "berth")
    print(f"\n`run --rm --network none busybox true`, whole-process wall time, "
          f"{args.runs} runs each (+{args.warmup} warm-up), alternating")
    for n in order:
        print(f"  {n}: {versions.get(n, '')}")
    for n, why in skipped.items():
        print(f"  {n}: skipped: {why}")
    print_table("Results (ms):", stats, order)
    print("\nRatios:")
    verdicts = print_ratios("berth", rat, TARGETS)

    if startup:
        print_table(f"CLI start-up, {args.runs} runs each, alternating (ms):",
                    startup["stats"], startup["order"])
        s = startup["stats"]
        a, f = s["berth --version"], s["python3 -I -S -c pass"]
        pr = [x / y for x, y in zip(startup["samples_ms"]["berth --version"],
                                    startup["samples_ms"]["python3 -I -S -c pass"])]
        startup["ratio"] = {"median_of_round_ratios": statistics.median(pr),
                            "ratio_of_medians": a["median"] / f["median"]}
        startup["overhead_ms_of_medians"] = a["median"] - f["median"]
        print(f"  berth --version over the interpreter floor: +{a['median'] - f['median']:.1f} ms "
              f"(median of per-round ratios {statistics.median(pr):.2f}x, "
              f"ratio of medians {a['median'] / f['median']:.2f}x)")

    if args.json:
        data = {
            "benchmark": "run_latency",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": host_info(),
            "args": {"runs": args.runs, "warmup": args.warmup, "smoke": args.smoke,
                     "start_dockerd": args.start_dockerd},
            "run": {"order": order, "versions": versions, "skipped": skipped,
                    "commands": {t.name: t.cmd for t in active},
                    "samples_ms": samples, "stats": stats, "ratios": rat,
                    "targets": {f"berth/{p}": lim for p, lim in TARGETS.items()},
                    "targets_met": verdicts},
            "startup": startup,
        }
        write_json(args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
