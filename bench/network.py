#!/usr/bin/env python3
"""Benchmark of what networking costs a start, berth against podman (stdlib only).

Times the whole process, wall clock, of

    berth  run --rm busybox true                     (default bridge: veth, address, NAT)
    berth  run --rm --network none busybox true
    podman --runtime runc run --rm busybox true      (its default network, as packaged:
                                                      netavark here, or CNI)
    podman --runtime runc run --rm --network none busybox true

from the same busybox root filesystem, taking turns in every round (the machines are
noisy), and reports the medians, berth's bridge start against podman's, and what the
network adds to each over `--network none` (the median of the per-round differences).

    bench/network.py                 # 2 warm-ups + 10 measured rounds
    bench/network.py --runs 20 --json out.json
    bench/network.py --smoke         # 1 round, no warm-up, podman skipped if missing

Everything it creates is removed at the end, also on Ctrl-C: the berth root with its
default bridge and firewall table (`network prune` takes them down), podman's store, and
whatever podman's network backend left on the host (its bridge, its firewall rules).
Targets (issue 7): berth's bridge run at most 0.25x podman's, and what networking adds to
berth less than what it adds to podman.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (BenchError, Berth, Podman, alternate, build_rootfs,  # noqa: E402
                    cleanup_docker_network, find_berth, firewall_snapshot, host_info, log,
                    print_ratios, print_table, ratios, run_bench, run_quiet, set_up,
                    summarize, write_json)

TARGETS = {"podman": 0.25}


class NetBerth(Berth):
    """berth, whose clean-up also takes its default bridge and firewall table down."""

    def cleanup(self) -> None:
        if self.root.exists():
            run_quiet(self.prefix + ["network", "prune", "-f"], env=self.env, timeout=120)
        super().cleanup()


class NetPodman(Podman):
    """podman, whose clean-up also removes what its network backend left on the host."""

    def setup(self) -> None:
        self.links_before = set(os.listdir("/sys/class/net"))
        self.fw_before = firewall_snapshot()
        super().setup()

    def cleanup(self) -> None:
        super().cleanup()
        if not getattr(self, "ready", False):
            return
        for link in set(os.listdir("/sys/class/net")) - self.links_before:
            if link.startswith(("podman", "cni-podman", "veth")):
                run_quiet(["ip", "link", "delete", link])
        cleanup_docker_network(True, self.fw_before)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Time `run --rm busybox true` on the default "
                                             "bridge and with --network none, berth and podman.")
    ap.add_argument("--runs", type=int, default=10, help="measured rounds (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up rounds (default 2)")
    ap.add_argument("--json", metavar="FILE", help="write the raw numbers to FILE")
    ap.add_argument("--smoke", action="store_true", help="1 round, no warm-up")
    ap.add_argument("--berth", metavar="PATH", help="the berth executable (default: .venv/bin/berth)")
    ap.add_argument("--tmpdir", metavar="DIR", help="where to make the work dir")
    args = ap.parse_args(argv)
    if args.smoke:
        args.runs, args.warmup = 1, 0
    if args.runs < 1 or args.warmup < 0:
        ap.error("--runs must be >= 1 and --warmup >= 0")
    return run_bench(bench, args, "berth-bench-net.")


def bench(args, work: Path, tools: list) -> int:
    berth_exe = find_berth(args.berth)
    tarball = build_rootfs(work)
    active, skipped = set_up([NetBerth(berth_exe, work, tarball), NetPodman(work, tarball)],
                             tools)
    runs = []
    for t in active:
        runs.append((f"{t.name} bridge", t.prefix + ["run", "--rm", t.image, "true"], t.env))
        runs.append((f"{t.name} none", t.prefix + ["run", "--rm", "--network", "none", t.image,
                                                   "true"], t.env))
    versions = {t.name: t.version() for t in active}
    log(f"measuring {', '.join(n for n, _, _ in runs)}: {args.warmup} warm-up + {args.runs} "
        "rounds, alternating")
    samples = alternate(runs, args.warmup, args.runs, "run")
    stats = summarize(samples)
    order = [n for n, _, _ in runs]

    print(f"\n`run --rm busybox true`, whole-process wall time, {args.runs} rounds "
          f"(+{args.warmup} warm-up), alternating")
    for name, version in versions.items():
        print(f"  {name}: {version}")
    for name, why in skipped.items():
        print(f"  {name}: skipped: {why}")
    print_table("Results (ms):", stats, order)

    added = {}
    for t in active:
        diffs = [b - n for b, n in zip(samples[f"{t.name} bridge"], samples[f"{t.name} none"])]
        added[t.name] = {"median_of_round_differences": statistics.median(diffs),
                         "difference_of_medians": stats[f"{t.name} bridge"]["median"]
                         - stats[f"{t.name} none"]["median"]}
    print("\nWhat the network adds over --network none (ms):")
    for name, a in added.items():
        print(f"  {name}: {a['median_of_round_differences']:+.1f} (median of per-round "
              f"differences; {a['difference_of_medians']:+.1f} between the medians)")

    verdicts = {}
    bridge_only = {k.split()[0]: v for k, v in samples.items() if k.endswith(" bridge")}
    rat = ratios(bridge_only, "berth")
    if rat:
        print("\nDefault-bridge run, berth against podman:")
        verdicts = print_ratios("berth", rat, TARGETS)
    if "podman" in added:
        mine, theirs = (added["berth"]["median_of_round_differences"],
                        added["podman"]["median_of_round_differences"])
        met = mine < theirs
        verdicts["network_added"] = met
        print(f"  networking adds less to berth than to podman: {mine:+.1f} vs {theirs:+.1f} ms "
              f"-> {'MET' if met else 'NOT MET'}")

    if args.json:
        write_json(args.json, {
            "benchmark": "network", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": host_info(), "args": {"runs": args.runs, "warmup": args.warmup},
            "versions": versions, "skipped": skipped, "order": order,
            "commands": {n: c for n, c, _ in runs}, "samples_ms": samples, "stats": stats,
            "added_by_network_ms": added, "ratios": rat, "targets_met": verdicts})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"error: {exc}")
        sys.exit(1)
