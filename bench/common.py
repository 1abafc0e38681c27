"""What the bench scripts share (stdlib only): the engines set up on one busybox image,
clean-up of everything they leave behind, and alternating timing with medians and ratios.

Each engine gets the same busybox root filesystem (scripts/busybox-rootfs.sh) imported as
an image: berth in its own root, podman (runtime runc) in an isolated store with a
containers.conf whose ulimits root can set here, docker only on a dockerd that already
runs or a private one started for the benchmark. `run_bench` makes the work dir that
holds all of it and removes it at the end, also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTFS_SCRIPT = REPO / "scripts" / "busybox-rootfs.sh"
CMD_TIMEOUT = 120  # seconds, for any single command


class BenchError(Exception):
    """A fatal problem: printed as a clear message, exit status 1."""


class Skip(Exception):
    """A peer cannot be measured here: reported as skipped."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt_cmd(cmd: list[str]) -> str:
    import shlex
    return " ".join(shlex.quote(c) for c in cmd)


def run_checked(cmd: list[str], env: dict | None = None, what: str = "",
                timeout: float = CMD_TIMEOUT, cwd: str | None = None,
                exc: type[Exception] = BenchError) -> subprocess.CompletedProcess:
    """Run a set-up/clean-up command, capture its output, raise `exc` if it fails."""
    try:
        p = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise exc(f"{what or cmd[0]}: {e}") from None
    except subprocess.TimeoutExpired:
        raise exc(f"{what or cmd[0]}: timed out after {timeout}s: {fmt_cmd(cmd)}") from None
    if p.returncode != 0:
        out = (p.stderr.strip() or p.stdout.strip())[-2000:]
        raise exc(f"{what or cmd[0]}: exit status {p.returncode}: {fmt_cmd(cmd)}\n{out}")
    return p


def run_quiet(cmd: list[str], env: dict | None = None, timeout: float = 60) -> int:
    """Best-effort command for clean-up; never raises."""
    try:
        return subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=timeout).returncode
    except (OSError, subprocess.SubprocessError):
        return -1


def ulimit_pair(res: int, wanted: int) -> int:
    """`wanted`, lowered to the hard limit the caller actually has (no CAP_SYS_RESOURCE here)."""
    hard = resource.getrlimit(res)[1]
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


def tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# --------------------------------------------------------------------------- tools

class Tool:
    """One engine or command to time; `setup` prepares it (may raise Skip), `cleanup`
    undoes it. Engines run as `prefix + [verb, ...]` on `image`."""
    name = "?"
    cmd: list[str] = []
    env: dict | None = None
    prefix: list[str] = []
    image = "busybox"
    critical = False  # a failure of berth is fatal; a missing peer is skipped

    def setup(self) -> None: ...
    def cleanup(self) -> None: ...
    def version(self) -> str: return ""


class Berth(Tool):
    name = "berth"
    critical = True

    def __init__(self, exe: str, work: Path, tarball: Path, cgroup_parent: str | None = None):
        self.exe, self.root, self.tarball = exe, work / "berth-root", tarball
        self.env = dict(os.environ, BERTH_ROOT=str(self.root))
        # a parent cgroup of our own makes whatever berth leaves in it provably ours
        self.cgroup_parent = cgroup_parent
        if cgroup_parent:
            self.env["BERTH_CGROUP_PARENT"] = cgroup_parent
        self.prefix = [exe, "--root", str(self.root)]

    def setup(self) -> None:
        self.root.mkdir()
        run_checked(self.prefix + ["import", "-c", 'CMD ["sh"]', str(self.tarball), "busybox"],
                    env=self.env, what="berth import")

    def cleanup(self) -> None:
        if not self.root.exists():
            return
        ids = run_quiet_out(self.prefix + ["ps", "-aq", "--no-trunc"], self.env).split()
        if ids:
            run_quiet(self.prefix + ["rm", "-f"] + ids, env=self.env, timeout=300)
        self.stop_hub()
        if self.cgroup_parent:
            time.sleep(0.5)  # the last monitors are still removing their cgroups
            dirs = cgroup_dirs_named(self.cgroup_parent)
            left = [sub for d in dirs for sub in sorted(os.listdir(d))
                    if os.path.isdir(os.path.join(d, sub))]
            if left:
                log(f"warning: berth left {len(left)} cgroup(s) under its parent "
                    f"{self.cgroup_parent}: {sorted(set(left))[:5]}; removing the empty ones")
            remove_empty_cgroups(dirs)

    def stop_hub(self) -> None:
        """Ask the root's hub to exit, then end whatever of this root still runs (the
        hub, monitors of containers that would not go), by pid."""
        env = dict(self.env, PYTHONPATH=str(REPO))
        run_quiet([interpreter_of(self.exe), "-c",
                   "import sys; from berth.container import client; client.stop_hub(sys.argv[1])",
                   str(self.root)], env=env, timeout=30)
        deadline = time.monotonic() + 10
        while hub_processes(str(self.root)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = hub_processes(str(self.root))
            if not pids:
                break
            log(f"warning: berth processes of {self.root} still running after stop: "
                f"{sorted(pids)}; sending {signal.Signals(sig).name}")
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            time.sleep(1)

    def version(self) -> str:
        try:
            return run_checked([self.exe, "--version"], env=self.env).stdout.strip()
        except BenchError:
            return "?"


class Podman(Tool):
    name = "podman"
    image = "localhost/busybox"

    def __init__(self, work: Path, tarball: Path):
        self.dir, self.tarball = work / "podman", tarball
        self.ready = False

    def setup(self) -> None:
        exe = shutil.which("podman")
        if not exe:
            raise Skip("podman not found on PATH")
        if not shutil.which("runc"):
            raise Skip("runc not found on PATH (podman's crun does not run on hybrid cgroups)")
        self.dir.mkdir()
        conf = self.dir / "containers.conf"
        nofile, nproc = ulimit_pair(resource.RLIMIT_NOFILE, 20000), ulimit_pair(resource.RLIMIT_NPROC, 32768)
        conf.write_text("[containers]\n"
                        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n')
        self.env = dict(os.environ, CONTAINERS_CONF=str(conf))
        self.prefix = [exe, "--root", str(self.dir / "root"), "--runroot", str(self.dir / "runroot"),
                       "--runtime", "runc"]
        self.ready = True
        run_checked(self.prefix + ["import", str(self.tarball), "busybox"], env=self.env,
                    what="podman import", exc=Skip)

    def cleanup(self) -> None:
        if self.ready:
            # -t 0: a `sleep` PID 1 ignores SIGTERM, so the default would wait 10 s each
            run_quiet(self.prefix + ["rm", "-af", "-t", "0"], env=self.env, timeout=300)
            run_quiet(self.prefix + ["rmi", "-af"], env=self.env)

    def version(self) -> str:
        try:
            return run_checked(["podman", "--version"]).stdout.strip() + " (runtime runc)"
        except BenchError:
            return "?"


class Docker(Tool):
    """docker on a dockerd that runs already (DOCKER_HOST or /var/run/docker.sock), or on
    a private one in the work dir with `start_dockerd`. On somebody else's daemon the
    image gets a unique name and whatever we create carries `label`."""
    name = "docker"

    def __init__(self, work: Path, tarball: Path, start_dockerd: bool,
                 dockerd_args: tuple[str, ...] = ("--bip", "172.30.0.1/24")):
        self.dir, self.tarball, self.start = work / "docker", tarball, start_dockerd
        self.dockerd_args = list(dockerd_args)
        self.exe = ""
        self.imported = False
        self.dockerd: subprocess.Popen | None = None
        self.fw_before: dict = {}
        self.had_docker0 = False
        self.cgroups_before: set[str] = set()
        self.server_version = "?"
        self.label = f"berth-bench={os.getpid()}"

    def _reachable(self, env: dict) -> bool:
        try:
            p = subprocess.run([self.exe, "version", "--format", "{{.Server.Version}}"], env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=15)
        except (OSError, subprocess.SubprocessError):
            return False
        if p.returncode == 0:
            self.server_version = p.stdout.strip()
        return p.returncode == 0

    def setup(self) -> None:
        exe = shutil.which("docker")
        if not exe:
            raise Skip("docker CLI not found on PATH")
        self.exe = exe
        self.prefix = [exe]
        self.dir.mkdir()
        # a private CLI config dir, so the benchmark writes nothing under ~/.docker
        base_env = dict(os.environ, DOCKER_CONFIG=str(self.dir / "cli-config"))
        existing = os.environ.get("DOCKER_HOST") or (
            "unix:///var/run/docker.sock" if os.path.exists("/var/run/docker.sock") else "")
        if existing and self._reachable(dict(base_env, DOCKER_HOST=existing)):
            self.env = dict(base_env, DOCKER_HOST=existing)
            # somebody else's daemon: don't clobber their "busybox", use a unique name
            self.image = f"berth-bench-busybox:{os.getpid()}"
            log(f"docker: using the running dockerd at {existing}")
        elif self.start:
            self._start_dockerd(base_env)
            self.image = "busybox"
        elif existing:
            raise Skip(f"dockerd at {existing} not reachable (try --start-dockerd)")
        else:
            raise Skip("no dockerd running (no DOCKER_HOST, no /var/run/docker.sock); "
                       "use --start-dockerd to start one")
        run_checked([exe, "import", str(self.tarball), self.image], env=self.env,
                    what="docker import", exc=Skip)
        self.imported = True

    def _start_dockerd(self, base_env: dict) -> None:
        dockerd = shutil.which("dockerd")
        if not dockerd:
            raise Skip("--start-dockerd: dockerd not found (apt-get install docker.io)")
        d = self.dir
        sock = d / "docker.sock"
        if len(str(sock)) > 100:  # sun_path holds 108 bytes
            raise Skip(f"--start-dockerd: socket path too long ({sock}); use a shorter --tmpdir")
        self.had_docker0 = os.path.exists("/sys/class/net/docker0")
        self.cgroups_before = docker_cgroups()
        self.fw_before = firewall_snapshot()
        log(f"docker: starting a private dockerd in {d}")
        logf = open(d / "dockerd.log", "wb")
        try:
            self.dockerd = subprocess.Popen(
                [dockerd, "-H", f"unix://{sock}", "--data-root", str(d / "data"),
                 "--exec-root", str(d / "exec"), "--pidfile", str(d / "docker.pid"),
                 "--storage-driver", "overlay2"] + self.dockerd_args,
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            logf.close()
        self.env = dict(base_env, DOCKER_HOST=f"unix://{sock}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.dockerd.poll() is not None:
                raise Skip(f"dockerd exited with status {self.dockerd.returncode}: "
                           + tail(d / "dockerd.log"))
            if sock.exists() and self._reachable(self.env):
                return
            time.sleep(0.2)
        raise Skip("dockerd did not answer within 60 s: " + tail(d / "dockerd.log"))

    def remove_containers(self) -> None:
        """Every container of ours: all of a private daemon's, those with our label on
        somebody else's."""
        if not self.imported:
            return
        listing = ["ps", "-aq"] + ([] if self.dockerd else ["--filter", f"label={self.label}"])
        ids = run_quiet_out(self.prefix + listing, self.env).split()
        if ids:
            run_quiet(self.prefix + ["rm", "-f"] + ids, env=self.env, timeout=300)

    def cleanup(self) -> None:
        self.remove_containers()
        if self.imported and self.dockerd is None:
            run_quiet([self.exe, "rmi", "-f", self.image], env=self.env)
        if self.dockerd is None:
            return
        p = self.dockerd
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
            except ProcessLookupError:
                pass
        # its managed containerd (and any shim) carry our temp path on their command line
        kill_processes_mentioning(str(self.dir))
        cleanup_docker_network(self.had_docker0, self.fw_before)
        # berth's and podman's parent cgroups are left alone: other berth/podman
        # processes on this machine may be using them right now
        remove_empty_cgroups(docker_cgroups() - self.cgroups_before)

    def version(self) -> str:
        return f"docker server {self.server_version}" + (" (private dockerd)" if self.dockerd else "")


def run_quiet_out(cmd: list[str], env: dict | None = None, timeout: float = 60) -> str:
    """stdout of a best-effort command ("" if it fails); never raises."""
    try:
        p = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return ""
    return p.stdout if p.returncode == 0 else ""


# --------------------------------------------------------------------------- processes

def proc_argv(pid: int | str) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


def hub_processes(root: str) -> set[int]:
    """berth's hub of `root` and the monitors it forked: their argv is
    `python -m berth.container.hub ROOT`, with exactly this root."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = proc_argv(entry)
        for i, a in enumerate(argv[:-1]):
            if a == "berth.container.hub" and argv[i + 1] == root:
                out.add(int(entry))
                break
    return out


def kill_processes_mentioning(path: str) -> None:
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if path.encode() in cmdline:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


# --------------------------------------------------------------------------- clean-up helpers

FW_TOOLS = ("iptables", "ip6tables")
FW_TABLES = ("filter", "nat")
FW_SYSCTLS = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")


def firewall_snapshot() -> dict:
    """What a dockerd changes on the host network: iptables rules, chains and chain
    policies (filter, nat; v4 and v6), which nftables tables exist, IP forwarding."""
    snap: dict = {"rules": {}, "nft_tables": None, "sysctl": {}}
    for tool in FW_TOOLS:
        if not shutil.which(tool):
            continue
        for table in FW_TABLES:
            try:
                p = subprocess.run([tool, "-w", "-t", table, "-S"], capture_output=True,
                                   text=True, timeout=30, stdin=subprocess.DEVNULL)
            except (OSError, subprocess.SubprocessError):
                continue
            if p.returncode == 0:
                snap["rules"][f"{tool}/{table}"] = p.stdout.splitlines()
    if shutil.which("nft"):
        try:
            p = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                               timeout=30, stdin=subprocess.DEVNULL)
            if p.returncode == 0:
                snap["nft_tables"] = [ln.strip() for ln in p.stdout.splitlines() if ln.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    for key in FW_SYSCTLS:
        try:
            snap["sysctl"][key] = Path(key).read_text().strip()
        except OSError:
            pass
    return snap


def cleanup_docker_network(had_docker0: bool, before: dict) -> None:
    """Undo what our dockerd did to the host network (and only that): the rules and chains
    it added, the chain policies it changed (FORWARD DROP), the nftables tables that
    iptables-nft created for it, IP forwarding it switched on, and its docker0 bridge."""
    import shlex
    if not had_docker0 and os.path.exists("/sys/class/net/docker0"):
        run_quiet(["ip", "link", "delete", "docker0"])
    after = firewall_snapshot()
    for key, lines in after["rules"].items():
        tool, table = key.split("/")
        old_lines = before["rules"].get(key, [])
        old = set(old_lines)
        new = [ln for ln in lines if ln not in old]
        rules = [ln for ln in new if ln.startswith("-A ")]
        chains = [ln.split()[1] for ln in new if ln.startswith("-N ")]
        # rules first (last added first), then the now empty chains
        for rule in reversed(rules):
            args = shlex.split(rule)
            args[0] = "-D"
            run_quiet([tool, "-w", "-t", table] + args)
        for chain in chains:
            run_quiet([tool, "-w", "-t", table, "-F", chain])
        for chain in chains:
            run_quiet([tool, "-w", "-t", table, "-X", chain])
        # policies of built-in chains: "-P FORWARD DROP" -> back to what it was
        old_pol = dict(ln.split()[1:3] for ln in old_lines if ln.startswith("-P ") and len(ln.split()) >= 3)
        for ln in lines:
            f = ln.split()
            if ln.startswith("-P ") and len(f) >= 3 and f[1] in old_pol and old_pol[f[1]] != f[2]:
                run_quiet([tool, "-w", "-t", table, "-P", f[1], old_pol[f[1]]])
    # tables that did not exist before (iptables-nft creates "table ip filter" etc.):
    # drop them if nothing but default ACCEPT policies is left in them
    if before["nft_tables"] is not None and after["nft_tables"] is not None:
        now = firewall_snapshot()
        for t in after["nft_tables"]:
            if t in before["nft_tables"]:
                continue
            f = t.split()  # "table ip filter"
            if len(f) != 3 or f[1] not in ("ip", "ip6") or f[2] not in FW_TABLES:
                continue
            tool = "iptables" if f[1] == "ip" else "ip6tables"
            lines = now["rules"].get(f"{tool}/{f[2]}", [])
            if all(ln.startswith("-P ") and ln.split()[-1] == "ACCEPT" for ln in lines):
                run_quiet(["nft", "delete", "table", f[1], f[2]])
    for key, val in before["sysctl"].items():
        if after["sysctl"].get(key) != val:
            try:
                Path(key).write_text(val + "\n")
            except OSError:
                pass


def cgroup_dirs_named(name: str) -> set[str]:
    """A top-level cgroup `name` in every hierarchy that has one."""
    base = Path("/sys/fs/cgroup")
    try:
        dirs = [base] + [h for h in base.iterdir() if h.is_dir() and not h.is_symlink()]
    except OSError:
        return set()
    return {str(h / name) for h in dirs if (h / name).is_dir()}


def docker_cgroups() -> set[str]:
    """The "docker" parent cgroups (one per hierarchy) that a dockerd makes and leaves."""
    return cgroup_dirs_named("docker")


def remove_empty_cgroups(paths: set[str]) -> None:
    """rmdir cgroup trees, children first; a cgroup that still has processes stays."""
    for d in sorted(paths):
        for root, _, _ in os.walk(d, topdown=False):
            try:
                os.rmdir(root)
            except OSError:
                pass


def mounts_under(path: str) -> list[str]:
    out = []
    prefix = path.rstrip("/") + "/"
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) < 2:
            continue
        mp = fields[1].encode().decode("unicode_escape")  # \040 etc.
        if mp == path or mp.startswith(prefix):
            out.append(mp)
    return out


def unmount_all_under(path: str) -> list[str]:
    """Lazily unmount whatever is still mounted under `path`, deepest first."""
    left = []
    for _ in range(5):
        mps = sorted(set(mounts_under(path)), key=len, reverse=True)
        if not mps:
            break
        left = mps
        for mp in mps:
            run_quiet(["umount", "-l", mp])
    return left


def cleanup(work: Path, tools: list) -> None:
    for t in reversed(tools):
        try:
            t.cleanup()
        except Exception as e:  # keep going: the rest must still be removed
            log(f"warning: clean-up of {t.name}: {e}")
    left = unmount_all_under(str(work))
    if left:
        log(f"warning: lazily unmounted {len(left)} leftover mount(s) under {work}")
    still = mounts_under(str(work))
    if still:
        log(f"warning: still mounted, not removing {work}: {still}")
        return
    shutil.rmtree(work, ignore_errors=True)
    if work.exists():
        log(f"warning: could not remove all of {work}")


def run_bench(bench, args, prefix: str) -> int:
    """Run `bench(args, work, tools)` in a fresh work dir; whatever happens (an error,
    Ctrl-C, SIGTERM), clean up every tool it registered in `tools` and remove the dir."""
    if os.geteuid() != 0:
        log("error: run as root (containers, mounts and the podman/runc/docker stores need it)")
        return 1
    if not ROOTFS_SCRIPT.exists():
        log(f"error: {ROOTFS_SCRIPT} not found")
        return 1

    # SIGTERM behaves like Ctrl-C: clean up, then leave
    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    work = Path(tempfile.mkdtemp(prefix=prefix, dir=getattr(args, "tmpdir", None)))
    tools: list[Tool] = []
    status = 1
    try:
        status = bench(args, work, tools)
    except BenchError as e:
        log(f"\nerror: {e}")
        status = 1
    except KeyboardInterrupt:
        log("\ninterrupted: cleaning up")
        status = 130
    finally:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # don't let a 2nd Ctrl-C stop clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            cleanup(work, tools)
        finally:
            signal.signal(signal.SIGINT, old)
    return status


def build_rootfs(work: Path) -> Path:
    tarball = work / "busybox-rootfs.tar"
    log(f"work dir {work}; building the busybox rootfs with {ROOTFS_SCRIPT.name}")
    run_checked(["sh", str(ROOTFS_SCRIPT), str(tarball)], what="busybox-rootfs.sh")
    return tarball


def set_up(candidates: list[Tool], tools: list[Tool],
           fatal: bool = False) -> tuple[list[Tool], dict[str, str]]:
    """Set up each candidate; a peer that cannot run is skipped (or fatal with `fatal`),
    berth never is. Returns the active tools and why the others were skipped."""
    active: list[Tool] = []
    skipped: dict[str, str] = {}
    for t in candidates:
        tools.append(t)  # registered before set-up, so a half set-up is cleaned too
        try:
            t.setup()
        except Skip as e:
            if t.critical or fatal:
                raise BenchError(f"{t.name}: {e}") from None
            skipped[t.name] = str(e)
            log(f"{t.name}: skipped: {e}")
            continue
        active.append(t)
    return active, skipped


# --------------------------------------------------------------------------- measuring

def diagnose(cmd: list[str], env: dict | None) -> str:
    """A timed run went to /dev/null: run it once more to show what it says."""
    try:
        d = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=CMD_TIMEOUT)
        return f"a diagnostic re-run exited {d.returncode} and printed:\n" + \
               ((d.stderr + d.stdout).strip()[-3000:] or "(nothing)")
    except (OSError, subprocess.SubprocessError) as e:
        return f"(diagnostic re-run failed: {e})"


def time_once(cmd: list[str], env: dict | None, label: str) -> float:
    """Wall time of one whole process, in ms; abort with a clear message if it fails.

    Not subprocess.run(timeout=...): its wait polls with sleeps that double up to 50 ms,
    which rounds a 52 ms run up to 64 ms. A blocking wait, with a timer that kills, does
    not lag the exit."""
    t0 = time.perf_counter()
    try:
        p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    except OSError as e:
        raise BenchError(f"{label}: cannot run {fmt_cmd(cmd)}: {e}") from None
    timer = threading.Timer(CMD_TIMEOUT, p.kill)
    timer.start()
    try:
        returncode = p.wait()
    finally:
        timer.cancel()
    dt = (time.perf_counter() - t0) * 1000.0
    if dt >= CMD_TIMEOUT * 1000.0:
        raise BenchError(f"{label}: timed out after {CMD_TIMEOUT}s: {fmt_cmd(cmd)}")
    if returncode != 0:
        raise BenchError(f"{label} failed with exit status {returncode}: {fmt_cmd(cmd)}\n"
                         + diagnose(cmd, env))
    return dt


def alternate(tools: list[tuple[str, list[str], dict | None]], warmup: int, runs: int,
              title: str) -> dict[str, list[float]]:
    """Warm-ups, then `runs` rounds of A B C D ...; returns samples in ms per tool."""
    for i in range(warmup):
        for name, cmd, env in tools:
            time_once(cmd, env, f"{name} (warm-up {i + 1})")
    samples: dict[str, list[float]] = {name: [] for name, _, _ in tools}
    for r in range(runs):
        for name, cmd, env in tools:
            samples[name].append(time_once(cmd, env, f"{name} (round {r + 1})"))
        log(f"  {title} round {r + 1}/{runs}: " +
            "  ".join(f"{n} {samples[n][-1]:.1f}" for n, _, _ in tools) + " ms")
    return samples


def summarize(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {name: {"median": statistics.median(v), "min": min(v), "max": max(v),
                   "mean": statistics.fmean(v), "n": len(v)}
            for name, v in samples.items() if v}


def ratios(samples: dict[str, list[float]], subject: str) -> dict[str, dict[str, float]]:
    out = {}
    base = samples.get(subject) or []
    for peer, v in samples.items():
        if peer == subject or not v or not base:
            continue
        per_round = [a / b for a, b in zip(base, v) if b > 0]
        out[peer] = {"median_of_round_ratios": statistics.median(per_round),
                     "ratio_of_medians": statistics.median(base) / statistics.median(v)}
    return out


def print_table(title: str, stats: dict, order: list[str]) -> None:
    print(f"\n{title}")
    w = max(len(n) for n in order) if order else 6
    w = max(w, 4)
    print(f"  {'tool':<{w}} | {'median ms':>9} | {'min':>7} | {'max':>7}")
    print(f"  {'-' * w}-+-{'-' * 9}-+-{'-' * 7}-+-{'-' * 7}")
    for n in order:
        s = stats[n]
        print(f"  {n:<{w}} | {s['median']:>9.1f} | {s['min']:>7.1f} | {s['max']:>7.1f}")


def print_ratios(subject: str, rat: dict, targets: dict[str, float] | None = None) -> dict:
    verdicts = {}
    for peer, r in rat.items():
        line = (f"  {subject}/{peer}: median of per-round ratios {r['median_of_round_ratios']:.3f}x, "
                f"ratio of medians {r['ratio_of_medians']:.3f}x")
        print(line)
    if targets:
        print("\nTargets (judged on the median of per-round ratios; ratio of medians in brackets):")
        for peer, limit in targets.items():
            if peer not in rat:
                print(f"  {subject} <= {limit:g}x {peer}: not measured ({peer} skipped)")
                verdicts[peer] = None
                continue
            r = rat[peer]
            met = r["median_of_round_ratios"] <= limit
            verdicts[peer] = met
            print(f"  {subject} <= {limit:g}x {peer}: {r['median_of_round_ratios']:.3f}x "
                  f"[{r['ratio_of_medians']:.3f}x] -> {'MET' if met else 'NOT MET'}")
    return verdicts


def interpreter_of(script: str) -> str:
    """The python that runs `script` (its #! line), for the start-up floor."""
    try:
        with open(script, "rb") as f:
            first = f.readline().decode(errors="replace").strip()
    except OSError:
        first = ""
    if first.startswith("#!"):
        parts = first[2:].split()
        if parts and os.path.basename(parts[0]) == "env" and len(parts) > 1:
            found = shutil.which(parts[1])
            if found:
                return found
        elif parts and os.access(parts[0], os.X_OK):
            return parts[0]
    return shutil.which("python3") or sys.executable


def find_berth(arg: str | None) -> str:
    if arg:
        p = shutil.which(arg) or (arg if os.access(arg, os.X_OK) else None)
        if not p:
            raise BenchError(f"--berth {arg}: not an executable")
        return os.path.abspath(p)
    venv = REPO / ".venv" / "bin" / "berth"
    if os.access(venv, os.X_OK):
        return str(venv)
    p = shutil.which("berth")
    if not p:
        raise BenchError("berth not found: no .venv/bin/berth in the repository and none on PATH "
                         "(give --berth PATH)")
    return p


def host_info() -> dict:
    import platform
    return {"node": platform.node(), "kernel": platform.release(),
            "cpus": os.cpu_count(), "python": platform.python_version()}


def write_json(path: str, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
    log(f"raw numbers written to {path}")
