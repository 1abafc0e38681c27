"""A settled container's monitor becomes berth-shim and everything still works through it."""

from __future__ import annotations

import json
import os
import subprocess
import time

from test_lifecycle import _state, _until


def _monitor_pid(berth, name: str) -> int:
    cid = json.loads(berth.out("inspect", name))[0]["Id"]
    with open(os.path.join(berth.root, "containers", cid, "container.json")) as f:
        return json.load(f)["Berth"]["Monitor"][0]


def _is_shim(pid: int) -> bool:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "berth-shim"
    except OSError:
        return False


def _pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise AssertionError("no Pss")


def test_monitor_becomes_the_shim_and_logs_keep_flowing(fresh_berth):
    fresh_berth("run", "-d", "--name", "settled", "busybox", "sh", "-c",
                "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done")
    monitor = _monitor_pid(fresh_berth, "settled")
    _until(lambda: _is_shim(monitor), timeout=10)
    assert _pss_kib(monitor) < 369  # conmon's figure on our machines
    before = fresh_berth.out("logs", "settled").count("tick")
    _until(lambda: fresh_berth.out("logs", "settled").count("tick") > before + 3)
    record = json.loads(fresh_berth.out("inspect", "settled"))[0]
    with open(record["LogPath"]) as f:
        lines = [json.loads(line) for line in f]
    assert all(e["stream"] == "stdout" and e["time"].endswith("Z") for e in lines)
    assert [e["log"] for e in lines[:2]] == ["tick 0\n", "tick 1\n"]
    fresh_berth("stop", "-t", "1", "settled")
    state = _state(fresh_berth, "settled")
    assert state["Status"] == "exited" and state["ExitCode"] == 137
    fresh_berth("rm", "settled")


def test_exit_code_and_attach_through_the_shim(fresh_berth):
    fresh_berth("run", "-d", "--name", "later", "busybox", "sh", "-c",
                "sleep 2; echo from-the-shim; echo err >&2; exit 6")
    monitor = _monitor_pid(fresh_berth, "later")
    _until(lambda: _is_shim(monitor), timeout=10)
    proc = fresh_berth("attach", "later", check=False, timeout=30)
    assert proc.stdout == b"from-the-shim\n" and proc.stderr == b"err\n"
    assert proc.returncode == 6
    assert _state(fresh_berth, "later")["ExitCode"] == 6
    fresh_berth("rm", "later")


def test_attached_run_outlasting_the_shim_switch_gets_output_and_exit_code(fresh_berth):
    proc = fresh_berth("run", "--rm", "busybox", "sh", "-c",
                       "echo start; sleep 2; echo end; exit 3", check=False, timeout=30)
    assert proc.stdout == b"start\nend\n" and proc.returncode == 3
    assert fresh_berth.out("ps", "-aq") == ""


def test_interactive_stdin_through_the_shim(fresh_berth):
    proc = subprocess.Popen(fresh_berth.cmd("run", "-i", "--rm", "busybox", "sh", "-c",
                                            "sleep 1.5; cat"),
                            env=fresh_berth.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    time.sleep(2.5)
    out, _ = proc.communicate(b"typed after the switch\n", timeout=30)
    assert out == b"typed after the switch\n" and proc.returncode == 0


def test_restart_policy_and_health_checks_work_under_the_shim(fresh_berth):
    fresh_berth("run", "-d", "--name", "again", "--restart", "on-failure:1", "busybox", "sh", "-c",
                "echo run; sleep 1.5; exit 2")
    _until(lambda: fresh_berth.out("logs", "again").count("run") == 2, timeout=30)
    _until(lambda: not _state(fresh_berth, "again")["Running"]
           and not _state(fresh_berth, "again")["Restarting"], timeout=30)
    assert json.loads(fresh_berth.out("inspect", "again"))[0]["RestartCount"] == 1
    fresh_berth("rm", "again")
    fresh_berth("run", "-d", "--name", "checked", "--health-cmd", "true", "--health-interval",
                "300ms", "busybox", "sleep", "100")
    monitor = _monitor_pid(fresh_berth, "checked")
    _until(lambda: _is_shim(monitor), timeout=10)

    def last_check() -> str:
        log = _state(fresh_berth, "checked")["Health"]["Log"]
        return log[-1]["End"] if log else ""

    at_switch = last_check()
    _until(lambda: last_check() != at_switch, timeout=20)  # a check the shim started
    assert _state(fresh_berth, "checked")["Health"]["Status"] == "healthy"
    fresh_berth("rm", "-f", "checked")
