#!/usr/bin/env python3
"""Push and pull throughput of `berth registry serve` against Debian's docker-registry
(the CNCF distribution registry 2.8), with skopeo as the client of both (stdlib only).

The image: three layers of 100 MiB of random bytes (gzip-wrapped, as pushed images are;
random data does not compress) plus busybox, ~316 MB, in an OCI layout. Each round
starts each registry afresh (an empty root, a new port, so neither skopeo's blob-info
cache nor a previous push lets it skip an upload) and times, whole process, wall clock:

    push  skopeo copy oci:LAYOUT:bench docker://127.0.0.1:PORT/bench/image:latest
    pull  skopeo copy docker://127.0.0.1:PORT/bench/image:latest oci:EMPTY-DIR:bench

The registries take turns and swap who goes first every round; `sync` runs before each
timed copy so neither pays for the other's dirty pages. MB/s = image bytes / seconds.
Beside the rates it prints the CPU seconds each server process spent per copy (skopeo
shares the machine's two cores with the server, and a pull is mostly the client's work),
and, where curl is installed, how fast each server hands out all four layers at once to
a client that throws them away: the servers' own pace, which skopeo's pull hides.

    bench/registry.py                    # 5 rounds
    bench/registry.py --rounds 5 --json out.json
    bench/registry.py --smoke            # 3 x 4 MiB layers, 1 round; a missing peer is skipped

Target (issue 4): berth's server at least as fast as distribution both ways (measured
here before: push 96 MB/s, pull 176 MB/s with distribution). Everything it makes lives in
one temporary directory, removed at the end, also on Ctrl-C; the servers it started are
stopped by their pids.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTFS_SCRIPT = REPO / "scripts" / "busybox-rootfs.sh"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
TIMEOUT = 600


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cmd: list[str], timeout: float = TIMEOUT, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout, **kw)
    if p.returncode != 0:
        raise BenchError(f"{' '.join(cmd)}: exit {p.returncode}\n{(p.stderr or p.stdout)[-2000:]}")
    return p


# -- the image -----------------------------------------------------------------------------


def _blob(layout: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _layer_tar(name: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def make_image(work: Path, layer_size: int) -> tuple[Path, int, list[dict]]:
    """An OCI layout with busybox and three random layers: (layout, image bytes, layers)."""
    layout = work / "image"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    rootfs = work / "busybox.tar"
    run([str(ROOTFS_SCRIPT), str(rootfs)])
    tars = [rootfs.read_bytes()] + [_layer_tar(f"random{i}", os.urandom(layer_size))
                                    for i in range(3)]
    rootfs.unlink()
    layers, diff_ids = [], []
    for tar in tars:
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        # level 1, as `gzip -1`; random bytes come out the size they went in
        layers.append({"mediaType": OCI_LAYER_GZIP,
                       **_blob(layout, gzip.compress(tar, compresslevel=1, mtime=0))})
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, **_blob(layout, config)},
                           "layers": layers}).encode()
    desc = {"mediaType": OCI_MANIFEST, **_blob(layout, manifest),
            "annotations": {"org.opencontainers.image.ref.name": "bench"}}
    (layout / "index.json").write_text(json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc]}))
    total = sum(l["size"] for l in layers) + len(config) + len(manifest)
    return layout, total, layers


# -- the registries ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    name = ""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.root: Path | None = None

    def command(self, root: Path, port: int) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        return dict(os.environ)

    def start(self, round_no: int) -> None:
        self.root = self.work / f"{self.name}-{round_no}"
        self.root.mkdir()
        self.port = free_port()
        self.proc = subprocess.Popen(self.command(self.root, self.port), env=self.env(),
                                     stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(self.work / f"{self.name}.log", "ab"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise BenchError(f"{self.name} did not start; see {self.work / (self.name + '.log')}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


class Berth(Registry):
    name = "berth"

    def command(self, root: Path, port: int) -> list[str]:
        return [sys.executable, "-m", "berth", "registry", "serve", "--addr",
                f"127.0.0.1:{port}", "--root", str(root)]

    def env(self) -> dict:
        return dict(os.environ, PYTHONPATH=str(REPO))  # this working tree's berth


class Distribution(Registry):
    name = "distribution"

    def command(self, root: Path, port: int) -> list[str]:
        config = self.work / f"distribution-{port}.yml"
        config.write_text(f"""version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {root}
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
""")
        return ["docker-registry", "serve", str(config)]


# -- timing ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and of its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(cmd: list[str], server_pid: int) -> tuple[float, float]:
    """(wall seconds of `cmd`, CPU seconds the server spent meanwhile)."""
    subprocess.run(["sync"], check=False)
    cpu = cpu_seconds(server_pid)
    start = time.perf_counter()
    run(cmd)
    return time.perf_counter() - start, cpu_seconds(server_pid) - cpu


def raw_get(port: int, layers: list[dict]) -> float:
    """Seconds for curl to GET every layer at once into /dev/null: the server's own pace,
    with a client that does nothing with the bytes."""
    subprocess.run(["sync"], check=False)
    start = time.perf_counter()
    procs = [subprocess.Popen(["curl", "-sf", "-o", "/dev/null",
                               f"http://127.0.0.1:{port}/v2/bench/image/blobs/{l['digest']}"])
             for l in layers]
    if any(p.wait(timeout=TIMEOUT) for p in procs):
        raise BenchError("curl could not GET a layer")
    return time.perf_counter() - start


def one_round(reg: Registry, round_no: int, layout: Path, layers: list[dict]) -> dict:
    reg.start(round_no)
    pulled = reg.work / f"pulled-{reg.name}-{round_no}"
    try:
        ref = f"docker://127.0.0.1:{reg.port}/bench/image:latest"
        push = timed(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                      f"oci:{layout}:bench", ref], reg.proc.pid)
        pull = timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false", ref,
                      f"oci:{pulled}:bench"], reg.proc.pid)
        got = {"push": push[0], "pull": pull[0], "push_cpu": push[1], "pull_cpu": pull[1]}
        if shutil.which("curl"):
            got["get"] = raw_get(reg.port, layers)
        return got
    finally:
        reg.stop()
        shutil.rmtree(pulled, ignore_errors=True)


def sha256_rate(size: int = 300 << 20) -> float:
    data = os.urandom(size)
    start = time.perf_counter()
    hashlib.sha256(data).digest()
    return size / (time.perf_counter() - start) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--smoke", action="store_true",
                        help="3 x 4 MiB layers, 1 round; skip distribution if missing")
    args = parser.parse_args()
    if shutil.which("skopeo") is None:
        raise BenchError("skopeo is not installed (apt-get install skopeo)")
    rounds = 1 if args.smoke else args.rounds
    work = Path(tempfile.mkdtemp(prefix="berth-bench-registry-"))
    registries: list[Registry] = [Berth(work)]
    if shutil.which("docker-registry"):
        registries.append(Distribution(work))
    elif not args.smoke:
        raise BenchError("docker-registry is not installed (apt-get install docker-registry)")
    else:
        log("docker-registry not installed: measuring berth alone")

    def cleanup(*_):
        for reg in registries:
            reg.stop()
        shutil.rmtree(work, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *_: (cleanup(), sys.exit(143)))
    try:
        layer_size = (4 << 20) if args.smoke else (100 << 20)
        log(f"making the image in {work} ...")
        layout, size, layers = make_image(work, layer_size)
        layer_bytes = sum(l["size"] for l in layers)
        log(f"image: {size / 1e6:.1f} MB; {rounds} rounds, registries alternating")
        results = {reg.name: {"push": [], "pull": [], "push_cpu": [], "pull_cpu": [], "get": []}
                   for reg in registries}
        for n in range(rounds):
            order = registries if n % 2 == 0 else registries[::-1]
            for reg in order:
                got = one_round(reg, n, layout, layers)
                for key, value in got.items():
                    results[reg.name][key].append(value)
                log(f"round {n + 1} {reg.name:<13} push {size / got['push'] / 1e6:7.1f} MB/s  "
                    f"pull {size / got['pull'] / 1e6:7.1f} MB/s")
        rates = {name: {d: size / statistics.median(r[d]) / 1e6 for d in ("push", "pull")}
                 for name, r in results.items()}
        cpu = {name: {d: statistics.median(r[d + "_cpu"]) for d in ("push", "pull")}
               for name, r in results.items()}
        print(f"\nskopeo push/pull of a {size / 1e6:.0f} MB image (3 x {layer_size >> 20} MiB "
              f"random layers + busybox), median of {rounds} rounds")
        print(f"{'registry':<14} {'push MB/s':>10} {'pull MB/s':>10}   server CPU s: push  pull")
        for name, r in rates.items():
            print(f"{name:<14} {r['push']:>10.1f} {r['pull']:>10.1f}   "
                  f"{cpu[name]['push']:>18.2f} {cpu[name]['pull']:>5.2f}")
        if "distribution" in rates:
            b, d = rates["berth"], rates["distribution"]
            print(f"{'berth / dist.':<14} {b['push'] / d['push']:>9.2f}x "
                  f"{b['pull'] / d['pull']:>9.2f}x   (target: >= 1.00x both ways)")
        if all(r["get"] for r in results.values()):
            gets = {name: layer_bytes / statistics.median(r["get"]) / 1e6
                    for name, r in results.items()}
            print("layers GET at once by curl into /dev/null (the servers' own pace): "
                  + ", ".join(f"{name} {rate:.0f} MB/s" for name, rate in gets.items()))
            rates = {name: dict(r, get=gets[name]) for name, r in rates.items()}
        print(f"machine: sha256 (hashlib, one core) {sha256_rate():.0f} MB/s")
        if args.json:
            Path(args.json).write_text(json.dumps({"image_bytes": size, "layer_bytes": layer_bytes,
                                                   "seconds": results,
                                                   "mb_per_s": rates, "server_cpu_s": cpu},
                                                  indent=2))
        return 0
    finally:
        cleanup()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench/registry.py: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
