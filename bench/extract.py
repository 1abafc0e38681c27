#!/usr/bin/env python3
"""Layer extraction: berth's apply_layer against GNU tar on the same 300 MiB layer tar.

    bench/extract.py [--size-mib 300] [--runs 5] [--json FILE] [--smoke]

The layer mixes a few large files (sha256-bound) with thousands of small ones
(per-member-bound), like a real image layer. berth's time includes the sha256 of the
whole stream (the diff ID) and its safety checks; tar's does not hash. Both extract from
the page cache into a fresh directory on the same filesystem, taking turns.
Target (issue 3): berth within 1.2x of GNU tar.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def make_layer(path: str, size_mib: int) -> None:
    """Large random files for 2/3 of the size, small files (1-16 KiB) for the rest."""
    big = size_mib * 2 // 3
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(4):
            data = os.urandom(big * (1 << 20) // 4)
            info = tarfile.TarInfo(f"usr/lib/big{i}.bin")
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, _Reader(data))
        left = (size_mib - big) << 20
        n = 0
        while left > 0:
            size = min(left, 1024 * (1 + n % 16))
            if n % 200 == 0:
                d = tarfile.TarInfo(f"usr/share/d{n // 200}")
                d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 1700000000
                tar.addfile(d)
            info = tarfile.TarInfo(f"usr/share/d{n // 200}/f{n}")
            info.size, info.mode, info.mtime = size, 0o644, 1700000000
            tar.addfile(info, _Reader(os.urandom(size)))
            left -= size
            n += 1


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        out = self.data[self.pos:end]
        self.pos += len(out)
        return out


def berth_extract(layer: str, dest: str) -> float:
    code = ("import sys, time; from berth.layer import apply_layer\n"
            "t = time.perf_counter()\n"
            "with open(sys.argv[1], 'rb') as f: apply_layer(f, sys.argv[2])\n"
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code, layer, dest], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO})
    return float(out.stdout)


def tar_extract(layer: str, dest: str) -> float:
    t = time.perf_counter()
    subprocess.run(["tar", "-xf", layer, "-C", dest], check=True)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=300)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json")
    ap.add_argument("--smoke", action="store_true", help="16 MiB, one run each")
    args = ap.parse_args()
    if args.smoke:
        args.size_mib, args.runs = 16, 1
    work = tempfile.mkdtemp(prefix="berth-bench-extract-", dir="/var/tmp")
    try:
        layer = os.path.join(work, "layer.tar")
        make_layer(layer, args.size_mib)
        subprocess.run(["cat", layer], stdout=subprocess.DEVNULL, check=True)  # warm the cache
        times = {"berth": [], "tar": []}
        for i in range(args.runs):
            order = [("berth", berth_extract), ("tar", tar_extract)]
            for name, fn in order if i % 2 == 0 else reversed(order):
                dest = os.path.join(work, f"{name}-{i}")
                os.mkdir(dest)
                subprocess.run(["sync"], check=True)
                times[name].append(fn(layer, dest))
                shutil.rmtree(dest)
        size = os.path.getsize(layer) / 1e6
        print(f"layer: {size:.0f} MB, {args.runs} runs each, alternating")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"  {name:6} median {med:6.3f} s ({size / med:6.1f} MB/s)  min {min(ts):.3f} "
                  f"max {max(ts):.3f}")
        ratios = [b / t for b, t in zip(times["berth"], times["tar"])]
        ratio = statistics.median(ratios)
        print(f"  berth/tar: {ratio:.2f}x (target <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'})")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"size_bytes": os.path.getsize(layer), "times": times,
                           "ratio": ratio}, f, indent=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
