#!/usr/bin/env python3
"""RESULTS.md and results.png from a directory of bench JSON results (what bench/run-all
writes: one JSON per script, floors.json, run.json with the machine and its load).

    bench/report.py DIR                # writes bench/RESULTS.md and bench/results.png
    bench/report.py DIR --out OUTDIR

Every ratio is berth/peer, the median of per-round ratios (the tools took turns, so a
round's ratio cancels the machine's drift), computed here from the raw samples. Times and
memory: lower is better. Throughputs (pull, registry) are given as rates, so their
targets read ">= Nx"; the chart turns them into time ratios, so that everywhere a bar
under its target line is a target met. The chart needs matplotlib (`pip install
.[bench]`); without it only RESULTS.md is written.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TABLE_HEADER = "| operation | berth | peer | ratio | target | met? |"
# PEERS.md, the same machine type: a peer far off its figure there means a set-up problem
PEERS_MD = {("run_none", "podman"): (329, "ms"), ("run_none", "docker"): (508, "ms"),
            ("run_none", "runc"): (50, "ms"), ("run_bridge", "podman"): (569, "ms"),
            ("exec", "podman"): (235, "ms"), ("exec", "docker"): (130, "ms"),
            ("start", "podman"): (187, "ms"), ("start", "docker"): (305, "ms"),
            ("memory", "podman"): (369, "KiB"), ("memory", "docker"): (2658, "KiB"),
            ("commit", "podman"): (3.06, "s"), ("commit", "docker"): (1.04, "s"),
            ("build_cold", "buildah"): (2.17, "s"), ("build_cold", "docker"): (2.83, "s"),
            ("build_cached", "buildah"): (0.93, "s"), ("build_cached", "docker"): (0.58, "s"),
            ("pull", "podman"): (68, "MB/s"), ("pull", "docker"): (57, "MB/s"),
            ("pull", "skopeo"): (176, "MB/s"), ("push", "distribution"): (96, "MB/s"),
            ("registry_pull", "distribution"): (176, "MB/s")}


# chart labels, one bar group per operation
SHORT = {"run_none": "run --rm\n(network none)", "startup": "CLI start-up", "run_bridge":
         "run --rm\n(default bridge)", "net_added": "what the bridge\nadds", "start":
         "run -d\n(per container)", "exec": "exec", "memory": "memory per\nidle container",
         "commit": "commit\n100 MiB", "build_cold": "build\ncold", "build_cached": "build\ncached",
         "extract": "layer\nextraction", "pull": "pull\n(time)", "push": "registry push\n(time)",
         "registry_pull": "registry pull\n(time)", "registry_get": "registry GET\n(curl, time)"}


def per_round(a: list[float], b: list[float]) -> float | None:
    pairs = [x / y for x, y in zip(a, b) if y > 0]
    return statistics.median(pairs) if pairs else None


class Row:
    """berth against one peer on one operation. `samples` are costs (time or memory);
    with `rate_bytes` they are seconds and the row shows MB/s."""

    def __init__(self, key: str, op: str, unit: str, berth: list[float], peer: str,
                 samples: list[float] | None, target: float | None = None,
                 rate_bytes: float = 0, note: str = "", berth_note: str = "",
                 peer_note: str = "", ratio: float | None | str = "per round",
                 met: bool | None = None):
        self.key, self.op, self.unit, self.peer = key, op, unit, peer
        self.berth, self.samples, self.target, self.rate_bytes = berth, samples or [], target, rate_bytes
        self.note, self.berth_note, self.peer_note = note, berth_note, peer_note
        # cost ratio berth/peer (lower is better), whatever the row displays
        self.cost = per_round(berth, self.samples) if ratio == "per round" else ratio
        self.met = met if met is not None or self.cost is None or target is None else \
            self.cost <= (1 / target if rate_bytes else target)

    def cost_target(self) -> float | None:
        return None if self.target is None else (1 / self.target if self.rate_bytes else self.target)

    def shown_ratio(self) -> float | None:
        if self.cost is None:
            return None
        return 1 / self.cost if self.rate_bytes else self.cost

    def fmt(self, xs: list[float], note: str) -> str:
        if not xs:  # the first clause of a skip reason says it; the script's log has the rest
            short = note.split(" (")[0].split(";")[0].split(": ")[0]
            return "not measured" + (f" ({short})" if short else "")
        med, lo, hi = statistics.median(xs), min(xs), max(xs)
        if self.rate_bytes:
            med, lo, hi = (self.rate_bytes / 1e6 / v for v in (med, hi, lo))
        spread = f" ({num(lo)}–{num(hi)})" if len(xs) > 1 else ""
        return f"{num(med)} {self.unit}{spread}" + (f"; {note}" if note else "")

    def median(self, xs: list[float]) -> float | None:
        if not xs:
            return None
        m = statistics.median(xs)
        return self.rate_bytes / 1e6 / m if self.rate_bytes else m

    def line(self) -> str:
        r = self.shown_ratio()
        ratio = "—" if r is None else f"{r:.2f}x" + (" (rate)" if self.rate_bytes else "")
        if self.target is None:
            target, met = "—", "—"
        else:
            target = (f">= {self.target:g}x (rate)" if self.rate_bytes else f"<= {self.target:g}x")
            met = "—" if self.met is None else ("yes" if self.met else "**NO**")
        peer = f"{self.peer}: {self.fmt(self.samples, self.peer_note)}"
        op = self.op + (f" ({self.note})" if self.note else "")
        return f"| {op} | {self.fmt(self.berth, self.berth_note)} | {peer} | {ratio} | {target} | {met} |"


def num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}" \
        if abs(v) >= 1 else f"{v:.3f}"


def load(d: Path, name: str) -> dict | None:
    try:
        return json.loads((d / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- rows per script

def rows_run_latency(d: dict) -> list[Row]:
    s, skipped = d["run"]["samples_ms"], d["run"].get("skipped", {})
    op = "`run --rm --network none busybox true`"
    rows = [Row("run_none", op, "ms", s["berth"], p, s.get(p), t, peer_note=skipped.get(p, ""))
            for p, t in (("podman", 0.25), ("runc", 2.0), ("docker", None))
            if p in s or t is not None]
    st = (d.get("startup") or {}).get("samples_ms")
    if st:
        rows.append(Row("startup", "`berth --version` (CLI start-up)", "ms", st["berth --version"],
                        "`python3 -I -S -c pass` (interpreter floor)", st["python3 -I -S -c pass"]))
    return rows


def rows_network(d: dict) -> list[Row]:
    s, skipped = d["samples_ms"], d.get("skipped", {})
    rows = [Row("run_bridge", "`run --rm busybox true`, default bridge", "ms", s["berth bridge"],
                "podman", s.get("podman bridge"), 0.25, peer_note=skipped.get("podman", ""))]
    added = d.get("added_by_network_ms", {})
    if "berth" in added and "podman" in added:
        mine, theirs = (added[n]["median_of_round_differences"] for n in ("berth", "podman"))
        rows.append(Row("net_added", "what the bridge adds over `--network none`", "ms", [mine],
                        "podman", [theirs], 1.0, ratio=mine / theirs if theirs > 0 and mine > 0 else None,
                        met=mine < theirs, note="median of per-round differences"))
    return rows


def rows_lifecycle(d: dict) -> list[Row]:
    n, skipped = d["args"]["count"], d.get("skipped", {})
    st, ex, mem = d["start"]["samples_ms"], d["exec"]["samples_ms"], d["memory"]
    rows = [Row("start", f"{n} × `run -d`, per container", "ms", st["berth"], p, st.get(p), t,
                peer_note=skipped.get(p, "")) for p, t in (("podman", 0.5), ("docker", None))]
    rows += [Row("exec", "`exec CTR true`", "ms", ex["berth"], p, ex.get(p), t,
                 peer_note=skipped.get(p, "")) for p, t in (("docker", 0.5), ("podman", None))]

    def per_ctr(tool: str) -> tuple[list[float], str]:
        if tool not in mem:
            return [], skipped.get(tool, "")
        m = mem[tool]
        what = ", ".join(f"{r['count']} {role}" for role, r in m["roles"].items())
        return [m["per_container_kib"]], what
    b, bwhat = per_ctr("berth")
    for p, name, t in (("podman", "conmon", 1.0), ("docker", "containerd-shim", None)):
        xs, what = per_ctr(p)
        rows.append(Row("memory", f"engine memory per idle container ({n} containers, PSS)", "KiB",
                        b, f"{p} ({name})", xs, t, berth_note=bwhat, peer_note=what))
    return rows


def rows_commit(d: dict) -> list[Row]:
    s, skipped = d["samples_s"], d.get("skipped", {})
    return [Row("commit", "`commit` of 100 MiB in 1,000 files", "s", s["berth"], p, s.get(p), t,
                peer_note=skipped.get(p, "")) for p, t in (("docker", 0.5), ("podman", None))]


def rows_extract(d: dict) -> list[Row]:
    mb = d["size_bytes"] / 1e6
    return [Row("extract", f"layer extraction, {mb:.0f} MB (large and small files)", "s",
                d["times"]["berth"], "GNU tar -xf", d["times"]["tar"], 1.2,
                berth_note="sha256 included")]


def rows_pull(d: dict) -> list[Row]:
    size, res = d["image_bytes"], d["results"]
    op = f"pull of {size / 1e6:.0f} MB from a local registry into a cold store"
    rows = []
    for p, t, note in (("podman", 2.0, ""), ("skopeo", None, "download only, no unpack"),
                       ("docker", None, "")):
        if p in res or t is not None:
            rows.append(Row("pull", op, "MB/s", res["berth"]["runs"], p,
                            res.get(p, {}).get("runs"), t, rate_bytes=size, peer_note=note))
    return rows


def rows_registry(d: dict) -> list[Row]:
    size, s = d["image_bytes"], d["seconds"]
    rows = [Row(key, f"registry server, skopeo {way} of {size / 1e6:.0f} MB", "MB/s",
                s["berth"][way], "distribution", s.get("distribution", {}).get(way), 1.0,
                rate_bytes=size) for key, way in (("push", "push"), ("registry_pull", "pull"))]
    if s["berth"].get("get") and d.get("layer_bytes"):
        # skopeo's pull is bound by skopeo (it hashes and writes what it gets): what the
        # servers themselves can hand out is the context for judging that row
        rows.append(Row("registry_get", "registry server, every layer GET at once by curl "
                        "(the server's own pace)", "MB/s", s["berth"]["get"], "distribution",
                        s.get("distribution", {}).get("get"), None, rate_bytes=d["layer_bytes"]))
    return rows


def rows_build(d: dict) -> list[Row]:
    s, skipped = d["samples_s"], d.get("skipped", {})
    rows = [Row("build_cold", "build, cold (50 MiB COPY, 2 RUN)", "s", s["cold"]["berth"], p,
                s["cold"].get(p), t, peer_note=skipped.get(p, ""))
            for p, t in (("buildah", 0.8), ("docker", None))]
    peers = [p for p in s["cached"] if p != "berth"]
    fastest = min(peers, key=lambda p: statistics.median(s["cached"][p])) if peers else None
    for p in ("buildah", "docker"):
        rows.append(Row("build_cached", "build, cached (nothing changed)", "s", s["cached"]["berth"],
                        p, s["cached"].get(p), 0.5 if p == fastest else None,
                        note="target: the fastest peer" if p == fastest else "",
                        peer_note=skipped.get(p, "")))
    return rows


EXTRACTORS = [("run_latency", rows_run_latency), ("network", rows_network),
              ("lifecycle", rows_lifecycle), ("commit", rows_commit), ("build", rows_build),
              ("extract", rows_extract), ("pull", rows_pull), ("registry", rows_registry)]


# --------------------------------------------------------------------------- floors

def floor_lines(data: dict[str, dict], rows: list[Row]) -> list[str]:
    out = []
    by_key: dict[str, dict[str, Row]] = {}
    for r in rows:
        by_key.setdefault(r.key, {})[r.peer] = r
    fl = data.get("floors")

    def against(key: str, floor: float, fmt) -> str:
        peers = by_key.get(key, {})
        if not peers:
            return "not measured | — | —"
        first = next(iter(peers.values()))
        b = statistics.median(first.berth)
        others = "; ".join(f"{p.split()[0]} {statistics.median(r.samples) / floor:.1f}x"
                           for p, r in peers.items() if r.samples and "floor" not in p)
        return f"{fmt(b)} | {b / floor:.1f}x | {others or '—'}"
    if fl:
        u, t = fl["run"]["samples_ms"]["unshare"], fl["run"]["samples_ms"]["true"]
        f = statistics.median(u)
        out.append(f"| `run --rm --network none true` | `unshare -pfmiunC --mount-proc true` "
                   f"{f:.1f} ms (min {min(u):.1f}; a bare fork+exec of `true` "
                   f"{statistics.median(t):.1f} ms) | " + against("run_none", f, lambda v: f"{v:.1f} ms") + " |")
    if "run_latency" in data and (data["run_latency"].get("startup") or {}).get("samples_ms"):
        py = data["run_latency"]["startup"]["samples_ms"]["python3 -I -S -c pass"]
        b = data["run_latency"]["startup"]["samples_ms"]["berth --version"]
        out.append(f"| `berth --version` | `python3 -I -S -c pass` {statistics.median(py):.1f} ms | "
                   f"{statistics.median(b):.1f} ms | {statistics.median(b) / statistics.median(py):.1f}x | — |")
    if fl:
        tar, cp = fl["commit"]["samples_s"]["tar"], fl["commit"]["samples_s"]["cp"]
        f = statistics.median(tar)
        out.append(f"| `commit` of 100 MiB in 1,000 files | `tar -cf` of the same files to the same "
                   f"disk {f:.2f} s (`cp -a` {statistics.median(cp):.2f} s) | "
                   + against("commit", f, lambda v: f"{v:.2f} s") + " |")
    if "extract" in by_key:
        r = by_key["extract"]["GNU tar -xf"]
        out.append(f"| layer extraction | GNU `tar -xf` {statistics.median(r.samples):.2f} s "
                   f"(it is the peer) | {statistics.median(r.berth):.2f} s | {r.cost:.2f}x | — |")
    pull = data.get("pull")
    if pull and "floor" in pull:
        pf, size = pull["floor"], pull["image_bytes"]
        f = size / 1e6 / pf["sha256_MBps"] + size / 1e6 / pf["gunzip_zlib_MBps"]
        out.append(f"| pull | sha256 {pf['sha256_MBps']:.0f} MB/s + gunzip {pf['gunzip_zlib_MBps']:.0f}"
                   f" MB/s of the same bytes, one core, one after the other: {f:.2f} s "
                   f"({size / 1e6 / f:.0f} MB/s) | " + against("pull", f, lambda v: f"{v:.2f} s") + " |")
    return out


# --------------------------------------------------------------------------- the report

def write(json_dir: Path, out_dir: Path) -> Path:
    json_dir, out_dir = Path(json_dir), Path(out_dir)
    meta = load(json_dir, "run") or {}
    data = {n: d for n, _ in EXTRACTORS + [("floors", None)] if (d := load(json_dir, n))}
    rows: list[Row] = []
    problems: list[str] = []
    for name, fn in EXTRACTORS:
        if name in data:
            try:
                rows += fn(data[name])
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
                problems.append(f"{name}: its JSON has an unexpected shape ({type(e).__name__}: {e})")
    steps = meta.get("steps", {})
    for name, _ in EXTRACTORS + [("floors", None)]:
        st = steps.get(name, {}).get("status")
        if name in data and st and st != "ok":
            problems.append(f"`{name}`: {st}")
        elif name not in data:
            problems.append(f"`{name}`: {st or ('not run (--only)' if steps else 'no results')}")

    lines = ["# berth against its peers", ""]
    when = meta.get("started", "")
    dur = meta.get("duration_s")
    smoke = (meta.get("args") or {}).get("smoke")
    lines.append(f"Generated by `bench/run-all`{' --smoke (ONE run each: not figures to quote)' if smoke else ''}"
                 f"{f', {when}' if when else ''}{f', in {dur / 60:.1f} min' if dur else ''}. "
                 "Each ratio is berth/peer, the median of per-round ratios (the tools took turns, "
                 "A B A B …); berth and peer cells are median (min–max). Lower is better except "
                 "for rates (MB/s).")
    lines.append("")
    judged = [r for r in rows if r.target is not None]
    met = [r for r in judged if r.met]
    missed = [r for r in judged if r.met is False]
    lines.append(f"**Targets: {len(met)} of {len(judged)} met"
                 + (f"; {len(judged) - len(met) - len(missed)} not measured" if len(judged) - len(met) - len(missed) else "")
                 + ".**" + ("" if not missed else " Not met:"))
    for r in missed:
        lines.append(f"- {r.op} against {r.peer}: {r.shown_ratio():.2f}x, target "
                     f"{'>=' if r.rate_bytes else '<='} {r.target:g}x.")
    lines += ["", TABLE_HEADER, "|---|---|---|---|---|---|"] + [r.line() for r in rows]
    out_dir.mkdir(parents=True, exist_ok=True)
    if chart(rows, out_dir / "results.png"):
        lines += ["", "![berth / peer per operation; a bar under its black line meets its target]"
                      "(results.png)"]

    fl = floor_lines(data, rows)
    if fl:
        lines += ["", "## Against the machine's floor", "",
                  "What the kernel or the hardware needs for the same work, without any engine.", "",
                  "| operation | floor | berth | berth / floor | peers / floor |",
                  "|---|---|---|---|---|"] + fl

    check = []
    for r in rows:
        ref = PEERS_MD.get((r.key, r.peer.split()[0]))
        m = r.median(r.samples)
        if ref and m:
            f = m / ref[0]
            slower = f < 0.5 if r.rate_bytes else f > 2
            faster = f > 2 if r.rate_bytes else f < 0.5
            # a handicapped peer flatters berth: that is the case to chase
            flag = "" if smoke else " **far off: check the set-up**" if slower else \
                " (faster than in PEERS.md)" if faster else ""
            check.append(f"| {r.op} | {r.peer} | {num(m)} {r.unit} | {num(ref[0])} {ref[1]} | {f:.2f}x{flag} |")
    if check:
        lines += ["", "## Peers against their PEERS.md figures", "",
                  "A peer much slower (more than 2x) than the figure measured on the same "
                  "machine type points to a set-up problem that flatters berth.", "",
                  "| operation | peer | here | PEERS.md | here / PEERS.md |", "|---|---|---|---|---|"] + check

    lines += ["", "## The machine", ""] + machine_lines(meta)
    if problems:
        lines += ["", "## Not measured", ""] + [f"- {p}" for p in problems]
    results = out_dir / "RESULTS.md"
    tmp = results.with_name(".RESULTS.md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(results)
    return results


def machine_lines(meta: dict) -> list[str]:
    m = meta.get("machine")
    if not m:
        return ["(not recorded: run.json is missing)"]
    out = [f"- {m['cores']} cores ({m.get('cpu') or '?'}), {m.get('memory', '?')} memory, "
           f"kernel {m['kernel']}, {m.get('os', '')}, cgroups {m.get('cgroups', '?')}"]
    load = meta.get("load") or {}
    if load.get("samples"):
        out.append(f"- load average (1 min) during the run: median {load['load1_median']:.2f}, "
                   f"min {load['load1_min']:.2f}, max {load['load1_max']:.2f} over {load['samples']} "
                   f"samples; other test runs (pytest) seen in {load['other_pytest_seen']} of them. "
                   "The machine is shared: only ratios measured in one run mean anything.")
    if meta.get("docker"):
        out.append(f"- dockerd for this run: {meta['docker']}")
    for tool, v in m.get("versions", {}).items():
        pkg = m.get("packages", {}).get({"docker": "docker.io"}.get(tool, tool), "")
        out.append(f"- {tool}: {v or 'not installed'}" + (f" (Debian {pkg})" if pkg else ""))
    for name, st in (meta.get("steps") or {}).items():
        if st.get("seconds") is not None:
            out.append(f"- `{name}`: {st['status']} in {st['seconds']:.0f} s")
    return out


# --------------------------------------------------------------------------- the chart

def chart(rows: list[Row], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"report: matplotlib not installed, {path.name} not written "
              "(pip install '.[bench]')", file=sys.stderr)
        return False
    groups: dict[str, list[Row]] = {}
    for r in rows:
        if r.cost is not None and r.cost > 0:
            groups.setdefault(r.key, []).append(r)
    if not groups:
        return False
    bars = sum(len(g) for g in groups.values())
    fig, ax = plt.subplots(figsize=(min(16, max(9, 0.5 * bars + 0.4 * len(groups))), 6.5))
    x, ticks, labels = 0.0, [], []
    for op, rs in groups.items():
        start = x
        for r in rs:
            color = "#9e9e9e" if r.target is None else ("#2e7d32" if r.met else "#c62828")
            ax.bar(x, r.cost, width=0.8, color=color)
            ax.text(x, r.cost * 1.06, f"{r.cost:.2f}", ha="center", va="bottom", fontsize=7)
            ax.text(x, 0.011, r.peer.split(" (")[0].replace("`", ""), rotation=90, ha="center",
                    va="bottom", fontsize=7, color="white" if r.cost > 0.1 else "black")
            if r.cost_target() is not None:
                ax.hlines(r.cost_target(), x - 0.5, x + 0.5, colors="black", linewidth=2)
            x += 1
        ticks.append((start + x - 1) / 2)
        labels.append(SHORT.get(op, op))
        x += 0.8
    ax.set_yscale("log")
    ax.set_ylim(0.01, max(3, max(r.cost for rs in groups.values() for r in rs) * 2))
    ax.axhline(1.0, color="#555", linewidth=0.8, linestyle=":")
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("berth / peer: time or memory (log; lower is better)")
    ax.set_title("berth against its peers: median of per-round ratios; black line = target "
                 "(green met, red not, grey no target)", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    tmp.replace(path)
    return True


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="Write RESULTS.md and results.png from bench JSON.")
    ap.add_argument("json_dir", help="a directory of bench JSON results (bench/run-all --json-dir)")
    ap.add_argument("--out", default=str(BENCH), help="where to write (default: bench/)")
    args = ap.parse_args(argv)
    if not Path(args.json_dir).is_dir():
        ap.error(f"{args.json_dir}: not a directory")
    print(write(Path(args.json_dir), Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
