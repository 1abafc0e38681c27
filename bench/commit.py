#!/usr/bin/env python3
"""Benchmark of `berth commit` against `podman commit` and `docker commit` (stdlib only).

Every round gives each tool a fresh container that wrote 100 MiB of random data in
1,000 files (`head -c 104858 /dev/urandom`, busybox), then times the whole process,
wall clock, of

    berth  commit CTR bench:N
    podman --runtime runc commit CTR bench:N     (an isolated store in the work dir)
    docker commit CTR bench:N                    (only if a dockerd is reachable:
                                                  DOCKER_HOST or /var/run/docker.sock)

The tools alternate and rotate their order every round, because the machines are noisy;
`sync` runs before each timed commit, so no tool pays for another's dirty pages. The
containers and images are removed after each commit, untimed.

    bench/commit.py                  # 5 rounds
    bench/commit.py --runs 9 --json out.json
    bench/commit.py --smoke          # 1 round; missing peers are skipped as always

Everything it creates (a temp dir with the berth root and the podman store, the docker
containers and images it made) is removed at the end, also on Ctrl-C.
Target (issue 3, part 4): berth <= 0.5x docker (docker measured 1.04 s, podman 3.06 s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTFS_SCRIPT = REPO / "scripts" / "busybox-rootfs.sh"
WRITE_100MIB = ("mkdir /data && i=0; while [ $i -lt 1000 ]; do "
                "head -c 104858 /dev/urandom > /data/f$i; i=$((i+1)); done")
TARGET = ("docker", 0.5)  # berth/docker must be at most this
REFERENCE_S = {"docker": 1.04, "podman": 3.06}  # PEERS.md, the same machine type


class BenchError(Exception):
    """Fatal: printed as one message, exit status 1."""


class Skip(Exception):
    """A peer cannot be measured here: reported as skipped."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cmd: list[str], env: dict | None = None, what: str = "", exc=BenchError,
        timeout: float = 600) -> str:
    try:
        p = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise exc(f"{what or cmd[0]}: {e}") from None
    if p.returncode:
        raise exc(f"{what or cmd[0]}: exit {p.returncode}: {' '.join(cmd)}\n"
                  + (p.stderr.strip() or p.stdout.strip())[-2000:])
    return p.stdout


def quiet(cmd: list[str], env: dict | None = None) -> None:
    try:
        subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=300)
    except (OSError, subprocess.SubprocessError):
        pass


class Tool:
    """A container engine with docker's commands: `prefix` + run/commit/rm/rmi."""

    name = "?"
    prefix: list[str] = []
    env: dict | None = None
    image = "busybox"
    run_flags: list[str] = []

    def setup(self, tarball: Path) -> None: ...

    def cleanup(self) -> None: ...

    def version(self) -> str:
        return ""

    def make_container(self, name: str) -> None:
        run(self.prefix + ["run", "--name", name, *self.run_flags, self.image, "sh", "-c",
                           WRITE_100MIB], self.env, f"{self.name} run")

    def commit_cmd(self, name: str, tag: str) -> list[str]:
        return self.prefix + ["commit", name, tag]

    def remove(self, name: str, tag: str) -> None:
        quiet(self.prefix + ["rm", "-f", name], self.env)
        quiet(self.prefix + ["rmi", "-f", tag], self.env)


class Berth(Tool):
    name = "berth"
    run_flags = ["--network", "none"]

    def __init__(self, work: Path, exe: list[str]) -> None:
        self.root = work / "berth-root"
        self.prefix = exe + ["--root", str(self.root)]
        # bytecode is cached as in any install: without it every run compiles what changed
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env["PYTHONPATH"] = str(REPO)
        self.exe = exe

    def setup(self, tarball: Path) -> None:
        if self.exe[-2:] == ["-m", "berth"]:
            run([self.exe[0], "-m", "compileall", "-q", str(REPO / "berth")], self.env,
                "compileall")
        run(self.prefix + ["import", "-c", 'CMD ["sh"]', str(tarball), "busybox"], self.env,
            "berth import")

    def version(self) -> str:
        return run(self.prefix + ["--version"], self.env).strip()

    def cleanup(self) -> None:
        # the root's hub would outlive the benchmark by its idle minute, in a removed dir
        python = self.exe[0] if self.exe[-2:] == ["-m", "berth"] else sys.executable
        quiet([python, "-c", "import sys; from berth.container import client; "
               "client.stop_hub(sys.argv[1])", str(self.root)], self.env)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _running_with(str(self.root).encode()):
            time.sleep(0.1)


def _running_with(text: bytes) -> bool:
    """Is a process other than this one running with `text` on its command line?"""
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            if text in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


class Podman(Tool):
    name = "podman"
    image = "localhost/busybox"
    run_flags = ["--network", "none"]

    def __init__(self, work: Path) -> None:
        self.dir = work / "podman"  # podman refuses a runroot path of 50 characters or more
        self.ready = False

    def setup(self, tarball: Path) -> None:
        exe = shutil.which("podman")
        if not exe or not shutil.which("runc"):
            raise Skip("podman and runc are needed (crun does not run on hybrid cgroups)")
        self.dir.mkdir()
        conf = self.dir / "containers.conf"
        nofile = min(20000, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        nproc = min(32768, resource.getrlimit(resource.RLIMIT_NPROC)[1])
        conf.write_text(f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", '
                        f'"nproc={nproc}:{nproc}"]\n')
        self.env = dict(os.environ, CONTAINERS_CONF=str(conf))
        self.prefix = [exe, "--root", str(self.dir / "root"), "--runroot", str(self.dir / "rr"),
                       "--runtime", "runc"]
        self.ready = True
        run(self.prefix + ["import", str(tarball), "busybox"], self.env, "podman import", Skip)

    def cleanup(self) -> None:
        if self.ready:
            quiet(self.prefix + ["rm", "-af"], self.env)
            quiet(self.prefix + ["rmi", "-af"], self.env)

    def version(self) -> str:
        return run(["podman", "--version"]).strip() + " (runtime runc)"


class Docker(Tool):
    name = "docker"
    run_flags = ["--network", "none"]

    def __init__(self, work: Path) -> None:
        self.dir = work / "docker-cli"
        self.imported = False

    def setup(self, tarball: Path) -> None:
        exe = shutil.which("docker")
        host = os.environ.get("DOCKER_HOST") or (
            "unix:///var/run/docker.sock" if os.path.exists("/var/run/docker.sock") else "")
        if not exe or not host:
            raise Skip("no dockerd running (no DOCKER_HOST, no /var/run/docker.sock)")
        # a private CLI config; a unique image name, not to clobber the daemon owner's busybox
        self.env = dict(os.environ, DOCKER_HOST=host, DOCKER_CONFIG=str(self.dir))
        self.prefix = [exe]
        self.image = f"berth-bench-busybox:{os.getpid()}"
        run(self.prefix + ["version"], self.env, f"dockerd at {host}", Skip)
        run(self.prefix + ["import", str(tarball), self.image], self.env, "docker import", Skip)
        self.imported = True

    def cleanup(self) -> None:
        if self.imported:
            quiet(self.prefix + ["rmi", "-f", self.image], self.env)

    def version(self) -> str:
        return "docker server " + run(self.prefix + ["version", "--format",
                                                     "{{.Server.Version}}"], self.env).strip()


def find_berth(arg: str | None) -> list[str]:
    """The berth command: `arg` if given, else this working tree run as the tests run it
    (an installed .venv/bin/berth may be an older copy)."""
    if arg:
        found = shutil.which(arg)
        if not found:
            raise BenchError(f"--berth {arg}: not an executable")
        return [found]
    python = REPO / ".venv" / "bin" / "python"
    return [str(python) if os.access(python, os.X_OK) else sys.executable, "-m", "berth"]


def measure(tools: list[Tool], runs: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {t.name: [] for t in tools}
    for i in range(runs):
        order = tools[i % len(tools):] + tools[:i % len(tools)]
        for t in order:
            name, tag = f"bench-commit-{os.getpid()}-{i}", f"bench-commit:{os.getpid()}-{i}"
            try:
                t.make_container(name)
                subprocess.run(["sync"], check=True)
                start = time.perf_counter()
                run(t.commit_cmd(name, tag), t.env, f"{t.name} commit")
                samples[t.name].append(time.perf_counter() - start)
            finally:
                t.remove(name, tag)
            log(f"  round {i + 1}/{runs} {t.name}: {samples[t.name][-1]:.3f} s")
    return samples


def report(samples: dict[str, list[float]], versions: dict, skipped: dict, runs: int) -> dict:
    print(f"\ncommit of a container that wrote 100 MiB in 1,000 files; whole-process wall time, "
          f"{runs} rounds, alternating")
    for name, v in versions.items():
        print(f"  {name}: {v}")
    for name, why in skipped.items():
        print(f"  {name}: skipped: {why}")
    print(f"\n  {'tool':<8} {'median':>8} {'min':>8} {'max':>8}   (seconds)")
    for name, xs in samples.items():
        print(f"  {name:<8} {statistics.median(xs):8.3f} {min(xs):8.3f} {max(xs):8.3f}")
    ratios = {}
    berth = samples["berth"]
    for peer, xs in samples.items():
        if peer == "berth":
            continue
        per_round = statistics.median(b / p for b, p in zip(berth, xs))
        ratios[peer] = {"median_of_round_ratios": per_round,
                        "ratio_of_medians": statistics.median(berth) / statistics.median(xs)}
        print(f"  berth/{peer}: {per_round:.3f}x (ratio of medians "
              f"{ratios[peer]['ratio_of_medians']:.3f}x)")
    peer, limit = TARGET
    if peer in ratios:
        got = ratios[peer]["median_of_round_ratios"]
        verdict = got <= limit
        print(f"\nTarget berth <= {limit}x {peer}: {got:.3f}x -> {'MET' if verdict else 'NOT MET'}")
    else:
        got = statistics.median(berth) / REFERENCE_S[peer]
        verdict = got <= limit
        print(f"\nTarget berth <= {limit}x {peer}: {peer} not measured here; against its "
              f"reference {REFERENCE_S[peer]} s (PEERS.md): {got:.3f}x -> "
              f"{'MET' if verdict else 'NOT MET'}")
    return {"ratios": ratios, "target": {"peer": peer, "limit": limit, "value": got,
                                         "met": verdict, "measured": peer in ratios}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Time berth commit against podman and docker.")
    ap.add_argument("--runs", type=int, default=5, help="rounds, a fresh container each (default 5)")
    ap.add_argument("--json", metavar="FILE", help="write the raw numbers to FILE")
    ap.add_argument("--berth", metavar="PATH",
                    help="a berth executable (default: this working tree, python -m berth)")
    ap.add_argument("--smoke", action="store_true", help="1 round, for the test suite")
    args = ap.parse_args(argv)
    if args.smoke:
        args.runs = 1
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    if os.geteuid() != 0:
        log("error: run as root (containers and the podman store need it)")
        return 1

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    work = Path(tempfile.mkdtemp(prefix="bcb-", dir="/tmp"))  # short: podman's runroot limit
    tools: list[Tool] = []
    try:
        tarball = work / "busybox.tar"
        run(["sh", str(ROOTFS_SCRIPT), str(tarball)], what="busybox-rootfs.sh")
        skipped = {}
        for t in (Berth(work, find_berth(args.berth)), Podman(work), Docker(work)):
            tools.append(t)  # registered first, so a half set-up is cleaned up too
            try:
                t.setup(tarball)
            except Skip as e:
                skipped[t.name] = str(e)
                log(f"{t.name}: skipped: {e}")
        active = [t for t in tools if t.name not in skipped]
        versions = {t.name: t.version() for t in active}
        log(f"measuring {', '.join(versions)}: {args.runs} rounds")
        samples = measure(active, args.runs)
        result = report(samples, versions, skipped, args.runs)
        if args.json:
            Path(args.json).write_text(json.dumps({
                "benchmark": "commit", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "runs": args.runs, "versions": versions, "skipped": skipped,
                "samples_s": samples, **result}, indent=2) + "\n")
        return 0
    except BenchError as e:
        log(f"\nerror: {e}")
        return 1
    except KeyboardInterrupt:
        log("\ninterrupted: cleaning up")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for t in reversed(tools):
            try:
                t.cleanup()
            except Exception as e:  # the rest must still be removed
                log(f"warning: clean-up of {t.name}: {e}")
        with open("/proc/self/mountinfo") as f:
            left = [line.split()[4] for line in f if str(work) in line.split()[4]]
        for mountpoint in sorted(left, key=len, reverse=True):
            quiet(["umount", "-l", mountpoint])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
