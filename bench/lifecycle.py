#!/usr/bin/env python3
"""Benchmark of the container lifecycle (issue 6) against the peers (stdlib only).

On the same busybox image (scripts/busybox-rootfs.sh) in berth, podman (runtime runc,
an isolated store) and docker (a running dockerd, or a private one with --start-dockerd):

1. starts COUNT detached containers, `run -d --network none busybox sleep 3600`, the
   tools taking turns for every container (rotating who goes first), and times each
   whole `run -d` process;
2. once they idle, measures what the engine keeps running for them, as PSS (from
   /proc/PID/smaps_rollup) divided by COUNT:
     berth   the hub of its root and every monitor it forked: the processes whose argv is
             `... berth.container.hub ROOT` and their descendants, less the containers'
             own processes (those in a container's cgroup)
     podman  the conmon of each container
     docker  the containerd-shim of each container; dockerd + containerd shown apart
   and, for context, each container's own memory cgroup usage;
3. times `exec CTR true` on one running container per tool, alternating.

    bench/lifecycle.py                    # 50 containers, 2 warm-up + 20 exec runs
    bench/lifecycle.py --start-dockerd --json out.json
    bench/lifecycle.py --smoke            # 3 containers, 2 exec runs, missing peers skipped

Everything it creates is removed at the end, also on Ctrl-C: the containers, berth's hub,
the podman store, a private dockerd and what it did to the host, leftover mounts.
Targets: per-container start <= 0.5x podman; exec <= 0.5x docker; memory per container
<= podman's conmon.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (CMD_TIMEOUT, BenchError, Berth, Docker, Podman, Skip, Tool,  # noqa: E402
                    alternate, build_rootfs, find_berth, fmt_cmd, host_info, hub_processes,
                    log, proc_argv, ratios, run_bench, summarize, write_json)

START_ARGS = ["run", "-d", "--network", "none"]
CONTAINER_CMD = ["sleep", "3600"]
START_TARGET = ("podman", 0.5)
EXEC_TARGET = ("docker", 0.5)
# PEERS.md, same machine type: what to compare with when podman is not measured
CONMON_REFERENCE_KIB = 369
# network none never touches a bridge; without one the private dockerd leaves the host's
# network alone (another dockerd may be running on the machine)
DOCKERD_ARGS = ("--bridge", "none", "--iptables=false", "--ip-masq=false")


# --------------------------------------------------------------------------- /proc

def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, comm) of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        out[int(entry)] = (int(stat[stat.rindex(")") + 2:].split()[1]), comm)
    return out


def descendants(table: dict[int, tuple[int, str]], roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(roots), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def pss_kib(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return None


def cgroup_mounts() -> list[tuple[set[str], str, str]]:
    """(controllers, mount root, mount point) of each cgroup mount; {""} for cgroup2."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fields, sfields = pre.split(), post.split()
        if len(sfields) < 3 or sfields[0] not in ("cgroup", "cgroup2"):
            continue
        ctrls = {""} if sfields[0] == "cgroup2" else {
            o for o in sfields[2].split(",") if o not in ("rw", "ro") and "=" not in o
            or o.startswith("name=")}
        out.append((ctrls, fields[3], fields[4]))
    return out


def cgroups_of(pid: int, mounts) -> dict[str, str]:
    """controller list ("memory", "cpu,cpuacct", "" for v2) -> the directory of `pid`'s cgroup."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        want = set(ctrls.split(",")) if ctrls else {""}
        for have, root, mp in mounts:
            if want <= have:
                rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
                out[ctrls] = os.path.normpath(os.path.join(mp, rel))
                break
    return out


def memory_usage(dirs: dict[str, str]) -> int | None:
    """A container's memory cgroup usage in bytes: v1 memory.usage_in_bytes or v2 memory.current."""
    for ctrls, d in dirs.items():
        if "memory" in ctrls.split(","):
            name = "memory.usage_in_bytes"
        elif ctrls == "":
            name = "memory.current"
        else:
            continue
        try:
            return int(Path(d, name).read_text())
        except (OSError, ValueError):
            continue
    return None


def memory_key(dirs: dict[str, str]) -> str:
    """Which cgroup a process is in, for "is it a container's": its memory (or v2) cgroup."""
    for ctrls, d in dirs.items():
        if "memory" in ctrls.split(","):
            return d
    return dirs.get("", "")


# --------------------------------------------------------------------------- containers

class Fleet(Tool):
    """The containers one engine runs for this benchmark; its clean-up removes them
    (before the engine's own clean-up, which runs after it) and checks what they leave."""

    def __init__(self, engine: Tool):
        self.engine = engine
        self.name = f"{engine.name} containers"
        self.ids: list[str] = []
        self.start_ms: list[float] = []
        self.pids: dict[str, int] = {}
        self.cgroup_dirs: list[str] = []
        self.engine_pids: dict[int, list[str]] = {}  # pid -> argv, checked before a kill
        self.extra = (["--label", engine.label]
                      if isinstance(engine, Docker) and engine.dockerd is None else [])

    def start(self, i: int) -> float:
        e = self.engine
        cmd = e.prefix + START_ARGS + self.extra + [e.image] + CONTAINER_CMD
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, env=e.env, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=CMD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{e.name}: container {i + 1}: timed out after {CMD_TIMEOUT}s: "
                             f"{fmt_cmd(cmd)}") from None
        dt = (time.perf_counter() - t0) * 1000.0
        lines = p.stdout.split()
        if p.returncode != 0 or not lines:
            raise BenchError(f"{e.name}: container {i + 1}: exit status {p.returncode}: "
                             f"{fmt_cmd(cmd)}\n{(p.stderr + p.stdout).strip()[-3000:]}")
        self.ids.append(lines[-1])
        self.start_ms.append(dt)
        return dt

    def inspect_pids(self) -> None:
        e = self.engine
        p = inspect(e, "{{.State.Pid}}", self.ids)
        pids = p.stdout.split()
        if p.returncode != 0 or len(pids) != len(self.ids):
            raise BenchError(f"{e.name}: inspect of the containers' PIDs: exit status "
                             f"{p.returncode}: {(p.stderr + p.stdout).strip()[-2000:]}")
        self.pids = dict(zip(self.ids, map(int, pids)))
        dead = [cid[:12] for cid, pid in self.pids.items() if pid <= 0 or not os.path.exists(f"/proc/{pid}")]
        if dead:
            raise BenchError(f"{e.name}: {len(dead)} of {len(self.ids)} containers are not "
                             f"running any more: {' '.join(dead[:10])}")

    def cleanup(self) -> None:
        e = self.engine
        if self.ids:
            rm = e.prefix + ["rm", "-f"] + (["-t", "0"] if isinstance(e, Podman) else [])
            p = subprocess.run(rm + self.ids, env=e.env, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                log(f"warning: {fmt_cmd(rm)} <{len(self.ids)} ids> exited {p.returncode}: "
                    f"{(p.stderr + p.stdout).strip()[-1500:]}")
        # what the engine kept for them should go with them
        deadline = time.monotonic() + 10
        alive = self._alive()
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = self._alive()
        if alive:
            log(f"warning: {e.name}: {len(alive)} engine process(es) still running 10 s after "
                f"rm -f: {sorted(alive)}; ending them")
            for pid in alive:  # by pid, and only while its argv is still the one we saw
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
        left = [d for d in self.cgroup_dirs if os.path.isdir(d)]
        if left:
            log(f"warning: {e.name}: {len(left)} container cgroup(s) left behind after rm -f, "
                f"e.g. {left[0]}; removing the empty ones")
            for d in sorted(left, key=len, reverse=True):
                try:
                    os.rmdir(d)
                except OSError:
                    pass

    def _alive(self) -> list[int]:
        return [pid for pid, argv in self.engine_pids.items()
                if proc_argv(pid) == argv and argv]


def inspect(e: Tool, template: str, ids: list[str]) -> subprocess.CompletedProcess:
    cmd = e.prefix + ["inspect", "-f", template] + ids
    try:
        return subprocess.run(cmd, env=e.env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=CMD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{e.name}: inspect timed out after {CMD_TIMEOUT}s") from None


# --------------------------------------------------------------------------- memory

def measure_memory(fleet: Fleet) -> dict:
    """PSS of what the engine keeps running for the fleet, and the containers' cgroups."""
    e = fleet.engine
    fleet.inspect_pids()
    mounts = cgroup_mounts()
    table = process_table()
    ctr_pids = set(fleet.pids.values())
    ctr_dirs = {pid: cgroups_of(pid, mounts) for pid in ctr_pids}
    for cid, pid in fleet.pids.items():
        fleet.cgroup_dirs += [d for d in ctr_dirs[pid].values() if cid in d]
    ctr_keys = {memory_key(d) for d in ctr_dirs.values()} - {""}
    in_containers = descendants(table, ctr_pids)

    daemons: dict[int, str] = {}
    if isinstance(e, Berth):
        hubs = hub_processes(str(e.root))
        engine: dict[int, str] = {}
        for pid in descendants(table, hubs) - in_containers:
            if pid not in table or memory_key(cgroups_of(pid, mounts)) in ctr_keys:
                continue
            if pid in hubs and table[pid][0] not in hubs:
                engine[pid] = "hub"
            elif pid in hubs:
                # a monitor forked ahead of time holds no container yet (a spare)
                has = bool(descendants(table, {pid}) & ctr_pids)
                engine[pid] = "monitor" if has else "monitor without container"
            else:
                engine[pid] = f"other ({table[pid][1]})"
        # each container's monitor is its PID 1's parent, whatever it runs (Python, or
        # berth-shim once the container settled) and whether or not the hub is still up
        for pid in ctr_pids:
            ppid = table.get(pid, (0, ""))[0]
            if ppid and ppid not in hubs:
                engine[ppid] = "monitor"
    elif isinstance(e, Podman):
        p = inspect(e, "{{.State.ConmonPid}}", fleet.ids)
        engine = {int(x): table.get(int(x), (0, "?"))[1] for x in p.stdout.split() if x.isdigit()}
        if p.returncode != 0 or len(engine) != len(fleet.ids):
            log(f"warning: podman: conmon PIDs of {len(engine)} of {len(fleet.ids)} containers: "
                f"{p.stderr.strip()[-500:]}")
    else:
        # the shim is the parent of each container's PID 1 (it is the subreaper)
        engine = {}
        for pid in ctr_pids:
            ppid = table.get(pid, (0, ""))[0]
            engine[ppid] = table.get(ppid, (0, "?"))[1]
        daemons = docker_daemons(e, table)
    # the hub outlives its containers; Berth.cleanup stops it
    fleet.engine_pids = {pid: proc_argv(pid) for pid, role in engine.items() if role != "hub"}

    n = len(fleet.ids)
    procs = [{"pid": pid, "role": role, "pss_kib": pss_kib(pid)} for pid, role in sorted(engine.items())]
    missing = [p["pid"] for p in procs if p["pss_kib"] is None]
    if missing:
        log(f"warning: {e.name}: no smaps_rollup for {missing} (gone?)")
    total = sum(p["pss_kib"] or 0 for p in procs)
    roles: dict[str, dict] = {}
    for p in sorted(procs, key=lambda p: (p["role"] != "hub", p["role"])):
        r = roles.setdefault(p["role"], {"count": 0, "pss_kib": []})
        r["count"] += 1
        r["pss_kib"].append(p["pss_kib"] or 0)
    role_stats = {name: {"count": r["count"], "total_kib": sum(r["pss_kib"]),
                         "median_kib": statistics.median(r["pss_kib"]),
                         "min_kib": min(r["pss_kib"]), "max_kib": max(r["pss_kib"])}
                  for name, r in roles.items()}
    daemon_procs = [{"pid": pid, "role": comm, "pss_kib": pss_kib(pid)} for pid, comm in daemons.items()]
    daemon_total = sum(p["pss_kib"] or 0 for p in daemon_procs)
    usage = [memory_usage(ctr_dirs[pid]) for pid in ctr_pids]
    found = [u for u in usage if u is not None]
    return {
        "containers": n,
        "processes": procs,
        "roles": role_stats,
        "engine_pss_kib": total,
        "per_container_kib": total / n,
        "daemons": daemon_procs,
        "daemon_pss_kib": daemon_total if daemon_procs else None,
        "per_container_with_daemons_kib": (total + daemon_total) / n if daemon_procs else None,
        "cgroup_usage_bytes_total": sum(found) if found else None,
        "cgroup_usage_found": len(found),
        "cgroup_per_container_kib": sum(found) / len(found) / 1024 if found else None,
    }


def docker_daemons(e: Docker, table: dict[int, tuple[int, str]]) -> dict[int, str]:
    """dockerd and its containerd: ours when we started it, else found by name."""
    if e.dockerd is not None:
        out = {e.dockerd.pid: "dockerd"}
        out.update({pid: comm for pid, (ppid, comm) in table.items()
                    if ppid == e.dockerd.pid and comm == "containerd"})
        return out
    found: dict[int, str] = {}
    for name in ("dockerd", "containerd"):
        pids = [pid for pid, (_, comm) in table.items() if comm == name]
        if len(pids) == 1:  # with several, which one is the daemon we talk to is unclear
            found[pids[0]] = name
    return found


# --------------------------------------------------------------------------- the benchmark

def bench(args, work: Path, tools: list) -> int:
    berth_exe = find_berth(args.berth)
    tarball = build_rootfs(work)

    candidates: list[Tool] = [Berth(berth_exe, work, tarball, f"berth-bench-{os.getpid()}"),
                              Podman(work, tarball),
                              Docker(work, tarball, args.start_dockerd, DOCKERD_ARGS)]
    active: list[Tool] = []
    skipped: dict[str, str] = {}
    for t in candidates:
        tools.append(t)
        try:
            t.setup()
        except Skip as e:
            # outside --smoke, a peer that should run here must: podman always, docker
            # when asked to start one
            must = t.critical or (not args.smoke and (isinstance(t, Podman) or
                                                      (isinstance(t, Docker) and args.start_dockerd)))
            if must:
                raise BenchError(f"{t.name}: {e}") from None
            skipped[t.name] = str(e)
            log(f"{t.name}: skipped: {e}")
            continue
        active.append(t)
    versions = {t.name: t.version() for t in active}
    order = [t.name for t in active]
    fleets = {}
    for t in active:
        fleets[t.name] = Fleet(t)
        tools.append(fleets[t.name])  # cleaned up before its engine: tools run in reverse

    # 1. starts, taking turns container by container
    log(f"starting {args.count} detached containers per tool ({' '.join(order)}), taking turns")
    t_all = {n: 0.0 for n in order}
    for i in range(args.count):
        k = i % len(order)
        for name in order[k:] + order[:k]:
            fleets[name].start(i)
        if (i + 1) % 10 == 0 or i + 1 == args.count:
            log(f"  container {i + 1}/{args.count}: " +
                "  ".join(f"{n} {fleets[n].start_ms[-1]:.0f}" for n in order) + " ms")
    start_samples = {n: fleets[n].start_ms for n in order}
    for n in order:
        t_all[n] = sum(start_samples[n]) / 1000.0

    # 2. memory of idle containers
    log(f"letting them idle {args.settle:g} s, then measuring memory")
    time.sleep(args.settle)
    memory = {n: measure_memory(fleets[n]) for n in order}

    # 3. exec
    exec_tools = [(n, fleets[n].engine.prefix + ["exec", fleets[n].ids[0], "true"],
                   fleets[n].engine.env) for n in order]
    log(f"exec: {args.warmup} warm-up + {args.runs} measured runs each, alternating")
    exec_samples = alternate(exec_tools, args.warmup, args.runs, "exec")
    for n in order:  # an exec must not take its container down
        pid = fleets[n].pids[fleets[n].ids[0]]
        if not os.path.exists(f"/proc/{pid}"):
            raise BenchError(f"{n}: the container used for exec ({fleets[n].ids[0][:12]}) "
                             "stopped running during the exec runs")

    result = report(args, order, versions, skipped, start_samples, t_all, memory, exec_samples)
    if args.json:
        write_json(args.json, {
            "benchmark": "lifecycle",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": host_info(),
            "args": {"count": args.count, "runs": args.runs, "warmup": args.warmup,
                     "settle": args.settle, "smoke": args.smoke,
                     "start_dockerd": args.start_dockerd},
            "order": order, "versions": versions, "skipped": skipped,
            "commands": {n: {"start": fleets[n].engine.prefix + START_ARGS + fleets[n].extra
                             + [fleets[n].engine.image] + CONTAINER_CMD,
                             "exec": exec_tools[i][1]} for i, n in enumerate(order)},
            **result,
        })
    return 0


def report(args, order, versions, skipped, start_samples, t_all, memory, exec_samples) -> dict:
    w = max(6, *(len(n) for n in order))
    print(f"\nlifecycle: {args.count} detached containers per tool, "
          f"`run -d --network none busybox {' '.join(CONTAINER_CMD)}`")
    for n in order:
        print(f"  {n}: {versions.get(n, '')}")
    for n, why in skipped.items():
        print(f"  {n}: skipped: {why}")

    start_stats = summarize(start_samples)
    print("\nStart, per container (ms; whole `run -d` process, tools taking turns):")
    print(f"  {'tool':<{w}} | {'median':>7} | {'min':>7} | {'max':>7} | {'first':>7} | {'total s':>7}")
    print(f"  {'-' * w}-+-{'-' * 7}-+-{'-' * 7}-+-{'-' * 7}-+-{'-' * 7}-+-{'-' * 7}")
    for n in order:
        s = start_stats[n]
        print(f"  {n:<{w}} | {s['median']:>7.1f} | {s['min']:>7.1f} | {s['max']:>7.1f} | "
              f"{start_samples[n][0]:>7.1f} | {t_all[n]:>7.2f}")
    start_rat = ratios(start_samples, "berth")

    exec_stats = summarize(exec_samples)
    print(f"\nexec CTR true ({args.runs} runs + {args.warmup} warm-up, alternating; ms):")
    print(f"  {'tool':<{w}} | {'median':>7} | {'min':>7} | {'max':>7}")
    print(f"  {'-' * w}-+-{'-' * 7}-+-{'-' * 7}-+-{'-' * 7}")
    for n in order:
        s = exec_stats[n]
        print(f"  {n:<{w}} | {s['median']:>7.1f} | {s['min']:>7.1f} | {s['max']:>7.1f}")
    exec_rat = ratios(exec_samples, "berth")

    print(f"\nMemory per idle container (KiB; PSS from /proc/PID/smaps_rollup, "
          f"divided by {args.count}):")
    print(f"  {'tool':<{w}} | {'engine processes':<34} | {'PSS total':>9} | {'per ctr':>8} | "
          f"{'+ daemons':>9} | {'w/ daemons':>10} | {'ctr cgroup':>10}")
    print(f"  {'-' * w}-+-{'-' * 34}-+-{'-' * 9}-+-{'-' * 8}-+-{'-' * 9}-+-{'-' * 10}-+-{'-' * 10}")
    for n in order:
        m = memory[n]
        procs = " + ".join(f"{r['count']} {role}" for role, r in m["roles"].items()) or "none found"
        dae = f"{m['daemon_pss_kib']:>9,}" if m["daemon_pss_kib"] is not None else f"{'-':>9}"
        wd = (f"{m['per_container_with_daemons_kib']:>10,.0f}"
              if m["per_container_with_daemons_kib"] is not None else f"{'-':>10}")
        cg = f"{m['cgroup_per_container_kib']:>10,.0f}" if m["cgroup_per_container_kib"] else f"{'?':>10}"
        print(f"  {n:<{w}} | {procs:<34} | {m['engine_pss_kib']:>9,} | "
              f"{m['per_container_kib']:>8,.0f} | {dae} | {wd} | {cg}")
    for n in order:
        for role, r in memory[n]["roles"].items():
            if r["count"] > 1 or n == "berth":
                print(f"  {n} {role}: {r['count']} x, PSS median {r['median_kib']:,.0f} KiB "
                      f"(min {r['min_kib']:,}, max {r['max_kib']:,}; total {r['total_kib']:,})")
        if memory[n]["daemons"]:
            print(f"  {n} daemons: " + ", ".join(f"{p['role']} {p['pss_kib'] or 0:,} KiB"
                                                for p in memory[n]["daemons"]))
    print("  (ctr cgroup: the containers' own memory cgroup usage, per container, for context)")

    verdicts: dict[str, bool | None] = {}
    notes: list[str] = []
    print("\nTargets (times judged on the median of per-container/per-round ratios; "
          "ratio of medians in brackets):")
    peer, limit = START_TARGET
    verdicts["start"] = verdict_line(f"start per container: berth <= {limit:g}x {peer}",
                                     start_rat.get(peer), limit, f"{peer} skipped")
    peer, limit = EXEC_TARGET
    if peer not in exec_rat and "podman" in exec_rat:
        notes.append("exec: docker was not measured; judged against podman instead")
        verdicts["exec"] = verdict_line(f"exec: berth <= {limit:g}x podman (docker NOT measured)",
                                        exec_rat["podman"], limit, "")
        exec_target = "podman"
    else:
        verdicts["exec"] = verdict_line(f"exec: berth <= {limit:g}x {peer}", exec_rat.get(peer),
                                        limit, f"{peer} skipped")
        exec_target = peer
    mine = memory["berth"]["per_container_kib"]
    if "podman" in memory:
        ref, what = memory["podman"]["per_container_kib"], "podman's conmon (this run)"
    else:
        ref, what = CONMON_REFERENCE_KIB, "conmon as PEERS.md measured it (podman not run here)"
        notes.append("memory: podman not measured; compared with PEERS.md's conmon figure")
    met = mine <= ref
    verdicts["memory"] = met
    print(f"  memory per container: berth (hub + monitors) {mine:,.0f} KiB <= {what} {ref:,.0f} KiB "
          f"-> {'MET' if met else 'NOT MET'} ({mine / ref:.2f}x)")
    return {"start": {"samples_ms": start_samples, "stats": start_stats, "ratios": start_rat,
                      "total_s": t_all},
            "exec": {"samples_ms": exec_samples, "stats": exec_stats, "ratios": exec_rat},
            "memory": memory,
            "targets": {"start": f"berth <= {START_TARGET[1]:g}x {START_TARGET[0]}",
                        "exec": f"berth <= {EXEC_TARGET[1]:g}x {exec_target}",
                        "memory": f"berth per container <= {what}"},
            "targets_met": verdicts, "notes": notes}


def verdict_line(label: str, r: dict | None, limit: float, why_missing: str) -> bool | None:
    if r is None:
        print(f"  {label}: not measured ({why_missing})")
        return None
    met = r["median_of_round_ratios"] <= limit
    print(f"  {label}: {r['median_of_round_ratios']:.3f}x [{r['ratio_of_medians']:.3f}x] "
          f"-> {'MET' if met else 'NOT MET'}")
    return met


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Start N detached containers, measure memory per "
                                             "idle container and exec latency: berth against "
                                             "podman and docker.")
    ap.add_argument("--count", type=int, default=50, help="containers per tool (default 50)")
    ap.add_argument("--runs", type=int, default=20, help="measured exec runs per tool (default 20)")
    ap.add_argument("--warmup", type=int, default=2, help="exec warm-up runs per tool (default 2)")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds to let the containers idle before measuring memory (default 2)")
    ap.add_argument("--json", metavar="FILE", help="write the raw numbers to FILE")
    ap.add_argument("--smoke", action="store_true",
                    help="3 containers, 2 exec runs, no warm-up, missing peers skipped (for tests)")
    ap.add_argument("--start-dockerd", action="store_true",
                    help="if no dockerd is reachable, start a private one (in the temp dir) and stop it after")
    ap.add_argument("--berth", metavar="PATH", help="the berth executable (default: the repo's .venv/bin/berth)")
    ap.add_argument("--tmpdir", metavar="DIR", help="where to make the work dir (default: $TMPDIR or /tmp)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.count, args.runs, args.warmup, args.settle = 3, 2, 0, 0.5
    if args.count < 1 or args.runs < 1 or args.warmup < 0 or args.settle < 0:
        ap.error("--count and --runs must be >= 1, --warmup and --settle >= 0")
    return run_bench(bench, args, "berth-bench-lc.")


if __name__ == "__main__":
    sys.exit(main())
