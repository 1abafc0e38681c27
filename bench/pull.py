#!/usr/bin/env python3
"""Benchmark of `berth pull` into a cold store against `podman pull` and `skopeo copy`
(and `docker pull` where a dockerd runs), from one local registry.

The image: busybox plus three layers of 100 MiB of random data each (incompressible, so
~316 MB travel), built in a berth root and pushed with `berth push` to Debian's
docker-registry on 127.0.0.1. Then, alternating the tools and rotating who goes first,
every run times the whole process, wall clock, of

    berth --root FRESH pull 127.0.0.1:PORT/bench/big         (download, verify, unpack)
    podman --root FRESH --runtime runc pull --tls-verify=false ...
    skopeo copy --src-tls-verify=false docker://... oci:FRESH    (download only, no unpack)
    docker pull ...                                          (only if a dockerd is reachable)

each into a store that did not exist before, removed (untimed) after. The registry's
files stay in the page cache across runs, the same for every tool. `sync` runs before
each timed pull, so no tool pays for another's dirty pages.

Beside them it prints the machine's floor on one core for the same compressed bytes:
sha256 (what verifying costs) and gunzip (what unpacking needs at least).

    bench/pull.py                 # 3 runs each
    bench/pull.py --runs 5 --json out.json
    bench/pull.py --smoke         # 3 x 8 MiB layers, 1 run: a quick check

Target (issue 4): berth's rate >= 2x podman's (podman measured 68 MB/s here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TARGET = ("podman", 2.0)  # berth's MB/s must be at least this times podman's


class Skip(Exception):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cmd, env=None, timeout=900, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode:
        raise SystemExit(f"bench: {' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                         f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(work: Path):
    if shutil.which("docker-registry") is None:
        raise SystemExit("bench: docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    config = work / "registry.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                      f"storage:\n  filesystem:\n    rootdirectory: {work}/registry\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("bench: docker-registry did not start")


def berth_cmd(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "berth", "--root", str(root), *args]


def berth_env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("BERTH_REGISTRIES_CONFIG", None)
    return env


def build_image(work: Path, registry: str, layer_mib: int) -> tuple[str, list[str]]:
    """busybox + 3 random layers, pushed to `registry`; (reference, compressed layer paths)."""
    tar = work / "busybox.tar"
    run([str(REPO / "scripts" / "busybox-rootfs.sh"), str(tar)])
    root = work / "source"
    run(berth_cmd(root, "import", "-c", 'CMD ["sh"]', str(tar), "busybox"), env=berth_env())
    from berth.image import ImageStore
    from berth.oci import image as oci

    images = ImageStore(str(root))
    base = images.resolve("busybox")
    layers, diff_ids = list(base.manifest.layers), list(base.diff_ids)
    with images.lease():
        for n in range(3):
            path = work / f"layer{n}.tar"
            _random_layer_tar(path, f"data{n}", layer_mib << 20)
            with open(path, "rb") as f:
                desc, _chain = images.import_layer(f, None)
            path.unlink()
            layers.append(desc)
            diff_ids.append(desc.digest)
        config = oci.ImageConfig(architecture=base.config.architecture, os="linux",
                                 rootfs=oci.RootFS(diff_ids=tuple(diff_ids)),
                                 config=base.config.config)
        ref = f"{registry}/bench/big:latest"
        images.write_image(config, layers, ref)
    t = time.perf_counter()
    run(berth_cmd(root, "push", "-q", ref), env=berth_env())
    log(f"  berth push (gzip of {3 * layer_mib} MiB included): {time.perf_counter() - t:.1f} s")
    pushed = ImageStore(str(root)).resolve(ref)
    paths = [images.content.path(d.digest) for d in pushed.manifest.layers]
    return ref, paths


def _random_layer_tar(path: Path, name: str, size: int) -> None:
    import tarfile

    with open(path, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(f"{name}/blob")
        info.size = size
        info.mode = 0o644
        d = tarfile.TarInfo(name)
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        tar.addfile(d)

        class Random:
            left = size

            def read(self, n=-1):
                n = min(self.left, 1 << 20 if n < 0 else n)
                self.left -= n
                return os.urandom(n)

        tar.addfile(info, Random())


def floors(paths: list[str]) -> dict:
    """sha256 and gunzip of the compressed layers, one core, from the page cache."""
    import hashlib
    import zlib

    total = sum(os.path.getsize(p) for p in paths)
    for p in paths:  # warm the cache
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass
    t = time.perf_counter()
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while data := f.read(1 << 20):
                h.update(data)
    sha_s = time.perf_counter() - t
    t = time.perf_counter()
    for p in paths:
        d = zlib.decompressobj(31)
        with open(p, "rb") as f:
            while data := f.read(1 << 18):
                d.decompress(data)
    gunzip_s = time.perf_counter() - t
    t = time.perf_counter()
    for p in paths:
        run(["sh", "-c", f"gzip -dc < {p} > /dev/null"])
    gnu_s = time.perf_counter() - t
    return {"bytes": total, "sha256_MBps": total / sha_s / 1e6,
            "gunzip_zlib_MBps": total / gunzip_s / 1e6, "gunzip_gnu_MBps": total / gnu_s / 1e6}


def tools(work: Path, ref: str) -> dict:
    """name -> (command for a fresh store at DIR, env, clean-up for DIR)."""
    out = {}
    out["berth"] = (lambda d: berth_cmd(d, "pull", "-q", ref), berth_env(), None)
    conf = work / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n')
    if shutil.which("podman"):
        penv = dict(os.environ, CONTAINERS_CONF=str(conf))
        penv.pop("DOCKER_CONFIG", None)

        def podman(d):
            return ["podman", "--root", f"{d}/root", "--runroot", f"{d}/run", "--runtime", "runc",
                    "pull", "-q", "--tls-verify=false", ref]

        def podman_clean(d):
            run(["podman", "--root", f"{d}/root", "--runroot", f"{d}/run", "--runtime", "runc",
                 "rmi", "-af"], env=penv, check=False)
            for line in reversed(open("/proc/self/mountinfo").read().splitlines()):
                mnt = line.split()[4]
                if mnt.startswith(str(d)):
                    subprocess.run(["umount", "-l", mnt], capture_output=True)
        out["podman"] = (podman, penv, podman_clean)
    if shutil.which("skopeo"):
        out["skopeo"] = (lambda d: ["skopeo", "copy", "-q", "--src-tls-verify=false",
                                    f"docker://{ref}", f"oci:{d}/layout:big"], None, None)
    if shutil.which("docker") and run(["docker", "info"], check=False).returncode == 0:
        out["docker"] = (lambda d: ["docker", "pull", "-q", ref], None,
                         lambda d: run(["docker", "rmi", "-f", ref], check=False))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root")
    layer_mib = 8 if args.smoke else 100
    runs = 1 if args.smoke else args.runs
    work = Path(tempfile.mkdtemp(prefix="berth-bench-pull-", dir="/var/tmp"))
    registry_proc = None
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    try:
        registry_proc, registry = start_registry(work)
        log(f"building and pushing busybox + 3 x {layer_mib} MiB random layers to {registry}")
        ref, paths = build_image(work, registry, layer_mib)
        floor = floors(paths)
        size = floor["bytes"]
        log(f"image: {ref}, {size / 1e6:.1f} MB of compressed layers")
        candidates = tools(work, ref)
        samples: dict[str, list[float]] = {name: [] for name in candidates}
        order = list(candidates)
        for r in range(runs):
            for name in order[r % len(order):] + order[:r % len(order)]:
                make, env, clean = candidates[name]
                store = work / f"{name}-{r}"
                store.mkdir()
                subprocess.run(["sync"])
                t = time.perf_counter()
                run(make(store), env=env)
                elapsed = time.perf_counter() - t
                samples[name].append(elapsed)
                log(f"  run {r + 1} {name}: {elapsed:.2f} s ({size / elapsed / 1e6:.0f} MB/s)")
                if clean:
                    clean(store)
                shutil.rmtree(store, ignore_errors=True)
        print(f"\npull of {size / 1e6:.0f} MB (busybox + 3 x {layer_mib} MiB random layers) into a "
              f"cold store, {runs} run(s), median:")
        results = {}
        for name, times in samples.items():
            med = statistics.median(times)
            results[name] = {"median_s": med, "MBps": size / med / 1e6, "runs": times}
            note = " (download only: no unpack)" if name == "skopeo" else ""
            print(f"  {name:<8} {med:6.2f} s  {size / med / 1e6:7.1f} MB/s{note}")
        print("machine floor, one core, same bytes:")
        print(f"  sha256            {floor['sha256_MBps']:7.0f} MB/s")
        print(f"  gunzip (zlib)     {floor['gunzip_zlib_MBps']:7.0f} MB/s")
        print(f"  gunzip (GNU gzip) {floor['gunzip_gnu_MBps']:7.0f} MB/s")
        peer, factor = TARGET
        if peer in results:
            ratio = results["berth"]["MBps"] / results[peer]["MBps"]
            verdict = "met" if ratio >= factor else "NOT met"
            print(f"berth / {peer} rate: {ratio:.2f}x (target >= {factor}x: {verdict})")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"image_bytes": size, "results": results, "floor": floor}, f, indent=2)
    finally:
        if registry_proc is not None:
            registry_proc.terminate()
            registry_proc.wait()
        for line in reversed(open("/proc/self/mountinfo").read().splitlines()):
            if line.split()[4].startswith(str(work)):
                subprocess.run(["umount", "-l", line.split()[4]], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
