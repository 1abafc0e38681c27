"""Detached containers over their whole life: monitor, logs, stop/kill/restart, pause,
wait, attach, exec, top, stats, rename, restart policies, health checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

LOOP = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done"


def _state(berth, name: str) -> dict:
    return json.loads(berth.out("inspect", name))[0]["State"]


def _until(predicate, timeout: float = 15.0, step: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def test_run_d_prints_the_id_and_the_container_runs_on(fresh_berth):
    cid = fresh_berth.out("run", "-d", "--name", "bg", "busybox", "sh", "-c", LOOP).strip()
    assert len(cid) == 64
    state = _state(fresh_berth, "bg")
    assert state["Running"] and state["Status"] == "running" and state["Pid"] > 0
    assert cid[:12] in fresh_berth.out("ps")
    fresh_berth("rm", "-f", "bg")


def test_logs_are_json_file_and_support_tail_timestamps_since(fresh_berth):
    fresh_berth("run", "-d", "--name", "talker", "busybox", "sh", "-c",
                "echo out1; echo err1 >&2; sleep 0.3; echo out2; sleep 30")
    _until(lambda: "out2" in fresh_berth.out("logs", "talker"))
    proc = fresh_berth("logs", "talker")
    assert proc.stdout == b"out1\nout2\n"
    assert proc.stderr == b"err1\n"
    assert fresh_berth.out("logs", "--tail", "1", "talker") == "out2\n"
    stamped = fresh_berth.out("logs", "-t", "talker").splitlines()
    assert stamped[0].endswith(" out1") and stamped[0][:4].isdigit() and "T" in stamped[0]
    assert fresh_berth.out("logs", "--since", "1h", "talker") == "out1\nout2\n"
    assert fresh_berth.out("logs", "--until", "2000-01-01T00:00:00Z", "talker") == ""
    record = json.loads(fresh_berth.out("inspect", "talker"))[0]
    with open(record["LogPath"]) as f:
        first = json.loads(f.readline())
    assert first["log"] == "out1\n" and first["stream"] == "stdout" and first["time"].endswith("Z")
    fresh_berth("rm", "-f", "talker")


def test_logs_follow_ends_when_the_container_stops(fresh_berth):
    fresh_berth("run", "-d", "--name", "short", "busybox", "sh", "-c",
                "for i in 1 2 3; do echo tick $i; sleep 0.3; done")
    out = fresh_berth.out("logs", "-f", "short", timeout=30)
    assert out == "tick 1\ntick 2\ntick 3\n"
    fresh_berth("rm", "short")


def test_log_rotation_keeps_max_file_files_of_max_size(fresh_berth):
    fresh_berth("run", "--name", "chatty", "--log-opt", "max-size=2k", "--log-opt", "max-file=3",
                "busybox", "sh", "-c", "i=0; while [ $i -lt 400 ]; do echo line $i; i=$((i+1)); done")
    record = json.loads(fresh_berth.out("inspect", "chatty"))[0]
    path = record["LogPath"]
    files = sorted(f for f in os.listdir(os.path.dirname(path)) if f.startswith(record["Id"]))
    assert len(files) == 3
    for f in files:
        assert os.path.getsize(os.path.join(os.path.dirname(path), f)) <= 2048
    # the newest lines are kept, in order
    assert fresh_berth.out("logs", "--tail", "2", "chatty") == "line 398\nline 399\n"
    fresh_berth("rm", "chatty")


def test_stop_sends_the_stop_signal_then_kills(fresh_berth):
    fresh_berth("run", "-d", "--name", "polite", "busybox", "sh", "-c",
                "trap 'echo got term; exit 0' TERM; while true; do sleep 0.1; done")
    time.sleep(0.3)
    start = time.time()
    assert fresh_berth.out("stop", "polite").strip() == "polite"
    assert time.time() - start < 5
    assert _state(fresh_berth, "polite")["ExitCode"] == 0
    assert "got term" in fresh_berth.out("logs", "polite")
    fresh_berth("run", "-d", "--name", "stubborn", "busybox", "sleep", "100")
    start = time.time()
    fresh_berth("stop", "-t", "1", "stubborn")
    assert 0.9 < time.time() - start < 8
    assert _state(fresh_berth, "stubborn")["ExitCode"] == 137
    fresh_berth("run", "-d", "--name", "usr1", "--stop-signal", "USR1", "busybox", "sh", "-c",
                "trap 'exit 7' USR1; while true; do sleep 0.1; done")
    time.sleep(0.3)
    fresh_berth("stop", "usr1")
    assert _state(fresh_berth, "usr1")["ExitCode"] == 7
    fresh_berth("rm", "polite", "stubborn", "usr1")


def test_kill_sends_a_signal(fresh_berth):
    fresh_berth("run", "-d", "--name", "kk", "busybox", "sh", "-c",
                "trap 'exit 9' HUP; while true; do sleep 0.1; done")
    time.sleep(0.3)
    fresh_berth("kill", "-s", "HUP", "kk")
    _until(lambda: not _state(fresh_berth, "kk")["Running"])
    assert _state(fresh_berth, "kk")["ExitCode"] == 9
    proc = fresh_berth("kill", "kk", check=False)
    assert proc.returncode == 1 and b"is not running" in proc.stderr
    fresh_berth("rm", "kk")


def test_restart_and_start_again(fresh_berth):
    fresh_berth("run", "-d", "--name", "again", "busybox", "sleep", "100")
    first = _state(fresh_berth, "again")["Pid"]
    fresh_berth("restart", "-t", "0", "again")
    second = _state(fresh_berth, "again")
    assert second["Running"] and second["Pid"] != first
    fresh_berth("stop", "-t", "0", "again")
    assert not _state(fresh_berth, "again")["Running"]
    assert fresh_berth.out("start", "again").strip() == "again"
    assert _state(fresh_berth, "again")["Running"]
    fresh_berth("rm", "-f", "again")


def test_pause_freezes_every_process(fresh_berth):
    fresh_berth("run", "-d", "--name", "frozen", "busybox", "sh", "-c", LOOP)
    _until(lambda: "line 1" in fresh_berth.out("logs", "frozen"))
    fresh_berth("pause", "frozen")
    state = _state(fresh_berth, "frozen")
    assert state["Paused"] and state["Status"] == "paused"
    assert "(Paused)" in fresh_berth.out("ps")
    count = len(fresh_berth.out("logs", "frozen").splitlines())
    time.sleep(0.5)
    assert len(fresh_berth.out("logs", "frozen").splitlines()) == count
    fresh_berth("unpause", "frozen")
    _until(lambda: len(fresh_berth.out("logs", "frozen").splitlines()) > count)
    assert not _state(fresh_berth, "frozen")["Paused"]
    fresh_berth("rm", "-f", "frozen")


def test_wait_prints_the_exit_code(fresh_berth):
    fresh_berth("run", "-d", "--name", "ww", "busybox", "sh", "-c", "sleep 0.5; exit 4")
    assert fresh_berth.out("wait", "ww").strip() == "4"
    fresh_berth("rm", "ww")


def _exec_path(berth, path: str) -> None:
    """"hub": the running hub does the exec; "cli": no hub is up, the CLI does it."""
    from berth.container import client

    if path == "cli":
        client.stop_hub(berth.root)
    else:
        assert os.path.exists(os.path.join(berth.root, "run", "hub.sock"))


def _ancestors(pid: int) -> list[int]:
    out = []
    while pid > 1:
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
        out.append(pid)
    return out


def _pid_of(argv: list[str]) -> int | None:
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read().split(b"\0")[:-1] == [a.encode() for a in argv]:
                    return int(entry)
        except (OSError, ValueError):
            continue
    return None


@pytest.mark.parametrize("path", ["hub", "cli"])
def test_exec_joins_the_containers_namespaces_with_its_security(fresh_berth, path):
    fresh_berth("run", "-d", "--name", "host", "--hostname", "inside", "--network", "none",
                "busybox", "sleep", "100")
    _exec_path(fresh_berth, path)
    pid1 = _state(fresh_berth, "host")["Pid"]
    out = fresh_berth.out("exec", "host", "sh", "-c",
                          "hostname; ps -o pid,comm | grep -c sleep; ls /sys/class/net; "
                          "grep -E 'CapEff|NoNewPrivs|Seccomp:' /proc/self/status; "
                          "cat /proc/self/cgroup | head -1")
    lines = out.splitlines()
    assert lines[0] == "inside"
    assert lines[1] == "1"  # it sees the container's own sleep, as the pid namespace shows it
    assert lines[2] == "lo"
    assert "00000000a80425fb" in lines[3]
    assert lines[4].split()[1] == "0"
    assert lines[5].split()[1] == "2"
    assert lines[6].rsplit(":", 1)[1] == "/"
    for ns in ("pid", "mnt", "net", "uts", "ipc", "cgroup"):
        inside = fresh_berth.out("exec", "host", "readlink", f"/proc/self/ns/{ns}").strip()
        assert inside == os.readlink(f"/proc/{pid1}/ns/{ns}"), ns
    assert fresh_berth("exec", "host", "sh", "-c", "exit 5", check=False).returncode == 5
    assert fresh_berth.out("exec", "-u", "nobody", "-w", "/tmp", "-e", "X=1", "host", "sh", "-c",
                           "id -u; pwd; echo $X").split() == ["65534", "/tmp", "1"]
    missing = fresh_berth("exec", "host", "nope", check=False)
    assert missing.returncode == 127 and b"executable file not found" in missing.stderr
    fresh_berth("exec", "-d", "host", "sh", "-c", "echo detached > /tmp/d")
    _until(lambda: fresh_berth("exec", "host", "cat", "/tmp/d", check=False).stdout == b"detached\n")
    assert fresh_berth.out("exec", "-i", "host", "cat", input="piped") == "piped"
    fresh_berth("rm", "-f", "host")
    gone = fresh_berth("exec", "host", "true", check=False)
    assert gone.returncode == 1 and b"No such container" in gone.stderr


@pytest.mark.parametrize("path", ["hub", "cli"])
def test_exec_forwards_signals_and_stdin(fresh_berth, path):
    fresh_berth("run", "-d", "--name", "sig", "--network", "none", "busybox", "sleep", "100")
    _exec_path(fresh_berth, path)
    assert fresh_berth.out("exec", "-i", "sig", "cat", input="to stdin\n") == "to stdin\n"
    assert fresh_berth.out("exec", "sig", "cat", input="not attached\n") == ""
    proc = fresh_berth.popen("exec", "sig", "sh", "-c", "echo ready; exec sleep 30",
                             stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    # who started it: a child of the hub, or the CLI itself when no hub runs
    up = _ancestors(_until(lambda: _pid_of(["sleep", "30"])))
    if path == "hub":
        with open(os.path.join(fresh_berth.root, "run", "hub.pid")) as f:
            assert int(f.read()) in up and proc.pid not in up
    else:
        assert proc.pid in up
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 143  # the exec'd process got it and died of it
    assert fresh_berth.out("exec", "sig", "ps", "-o", "comm").split().count("sleep") == 1
    fresh_berth("stop", "-t", "1", "sig")
    stopped = fresh_berth("exec", "sig", "true", check=False)
    assert stopped.returncode == 1 and b"is not running" in stopped.stderr
    fresh_berth("rm", "sig")


def test_exec_keeps_no_new_privileges_and_drops_nothing_more(fresh_berth):
    fresh_berth("run", "-d", "--name", "nnp", "--security-opt", "no-new-privileges",
                "--cap-drop", "ALL", "busybox", "sleep", "100")
    out = fresh_berth.out("exec", "nnp", "grep", "-E", "CapBnd|NoNewPrivs", "/proc/self/status")
    assert "0000000000000000" in out and "NoNewPrivs:\t1" in out
    fresh_berth("rm", "-f", "nnp")


def test_top_stats_rename(fresh_berth):
    fresh_berth("run", "-d", "--name", "busy", "--memory", "64m", "busybox", "sleep", "100")
    top = fresh_berth.out("top", "busy").splitlines()
    assert top[0].split()[:3] == ["UID", "PID", "PPID"] and "sleep 100" in top[1]
    stats = fresh_berth.out("stats", "--no-stream").splitlines()
    assert stats[0].startswith("CONTAINER ID") and "busy" in stats[1] and "64MiB" not in stats[0]
    assert "/ 67.11MB" in stats[1]
    fresh_berth("rename", "busy", "quiet")
    names = [line.split()[-1] for line in fresh_berth.out("ps").splitlines()[1:]]
    assert names == ["quiet"]
    assert _state(fresh_berth, "quiet")["Running"]
    fresh_berth("rm", "-f", "quiet")


def test_attach_sees_the_output_of_a_running_container(fresh_berth):
    fresh_berth("run", "-d", "--name", "att", "busybox", "sh", "-c",
                "sleep 1; echo after-attach; sleep 1")
    out = fresh_berth.out("attach", "att", timeout=30)
    assert out == "after-attach\n"
    fresh_berth("rm", "att")


def test_restart_policy_on_failure_with_a_limit(fresh_berth):
    fresh_berth("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c",
                "echo try; exit 3")
    _until(lambda: fresh_berth.out("logs", "flaky").count("try") == 3, timeout=20)
    _until(lambda: not _state(fresh_berth, "flaky")["Restarting"]
           and not _state(fresh_berth, "flaky")["Running"])
    info = json.loads(fresh_berth.out("inspect", "flaky"))[0]
    assert info["RestartCount"] == 2 and info["State"]["ExitCode"] == 3
    time.sleep(1)
    assert fresh_berth.out("logs", "flaky").count("try") == 3
    fresh_berth("rm", "flaky")


def test_restart_always_until_stopped(fresh_berth):
    fresh_berth("run", "-d", "--name", "phoenix", "--restart", "always", "busybox", "sh", "-c",
                "echo up; sleep 0.2")
    _until(lambda: fresh_berth.out("logs", "phoenix").count("up") >= 3, timeout=20)
    fresh_berth("stop", "phoenix")
    time.sleep(1)
    count = fresh_berth.out("logs", "phoenix").count("up")
    time.sleep(1)
    assert fresh_berth.out("logs", "phoenix").count("up") == count
    assert not _state(fresh_berth, "phoenix")["Running"]
    fresh_berth("rm", "phoenix")


def test_restart_policy_survives_killed_monitors_and_hub(fresh_berth):
    import signal

    fresh_berth("run", "-d", "--name", "keeper", "--restart", "always", "busybox", "sleep", "100")
    record = json.loads(open(os.path.join(
        fresh_berth.root, "containers", json.loads(fresh_berth.out("inspect", "keeper"))[0]["Id"],
        "container.json")).read())
    pid = record["State"]["Pid"]
    # a host-level restart of berth's processes: monitors, the hub and the container die
    os.kill(record["Berth"]["Monitor"][0], signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    hub_pid = int(open(os.path.join(fresh_berth.root, "run", "hub.pid")).read())
    os.kill(hub_pid, signal.SIGKILL)
    _until(lambda: not os.path.exists(f"/proc/{pid}") or
           open(f"/proc/{pid}/stat").read().split()[2] == "Z")
    # the next berth command that starts the hub brings it back
    fresh_berth("run", "--rm", "busybox", "true")
    _until(lambda: _state(fresh_berth, "keeper")["Running"], timeout=20)
    assert _state(fresh_berth, "keeper")["Pid"] != pid
    fresh_berth("rm", "-f", "keeper")


def test_health_check_reports_healthy_then_unhealthy(fresh_berth):
    fresh_berth("run", "-d", "--name", "doc", "--health-cmd", "test -f /tmp/ok",
                "--health-interval", "200ms", "--health-retries", "2", "busybox", "sh", "-c",
                "touch /tmp/ok; sleep 2; rm /tmp/ok; sleep 100")
    _until(lambda: (_state(fresh_berth, "doc").get("Health") or {}).get("Status") == "healthy")
    assert "(healthy)" in fresh_berth.out("ps")
    _until(lambda: _state(fresh_berth, "doc")["Health"]["Status"] == "unhealthy", timeout=20)
    health = _state(fresh_berth, "doc")["Health"]
    assert health["FailingStreak"] >= 2 and health["Log"][-1]["ExitCode"] == 1
    assert "(unhealthy)" in fresh_berth.out("ps")
    fresh_berth("rm", "-f", "doc")


def test_container_prune_removes_only_stopped_ones(fresh_berth):
    fresh_berth("run", "--name", "old", "busybox", "true")
    fresh_berth("run", "-d", "--name", "live", "busybox", "sleep", "100")
    out = fresh_berth.out("container", "prune", "-f")
    assert "Deleted Containers:" in out
    names = fresh_berth.out("ps", "-a")
    assert "live" in names and "old" not in names
    fresh_berth("rm", "-f", "live")


@pytest.mark.slow
def test_parallel_run_d_and_rm_f_loops_corrupt_nothing(fresh_berth):
    errors = []

    def loop(n):
        for i in range(4):
            name = f"p{n}-{i}"
            try:
                fresh_berth("run", "-d", "--name", name, "busybox", "sleep", "30")
                fresh_berth("rm", "-f", name)
            except AssertionError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:2]
    assert fresh_berth.out("ps", "-aq") == ""
    assert os.listdir(os.path.join(fresh_berth.root, "names")) == []
    containers = os.path.join(fresh_berth.root, "containers")
    assert [c for c in os.listdir(containers)] == []


def test_twenty_containers_share_the_image_layers(fresh_berth):
    ids = [fresh_berth.out("run", "-d", "busybox", "sleep", "60").strip() for _ in range(20)]
    lowers = {json.loads(fresh_berth.out("inspect", c))[0]["GraphDriver"]["Data"]["LowerDir"]
              for c in ids}
    assert len(lowers) == 1  # one copy of the image for all twenty
    uppers = {json.loads(fresh_berth.out("inspect", c))[0]["GraphDriver"]["Data"]["UpperDir"]
              for c in ids}
    assert len(uppers) == 20
    fresh_berth("rm", "-f", *ids)
