"""ps, rm, inspect, version, info: output shaped like Docker's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time


def test_ps_shows_running_and_ps_a_shows_exited(fresh_berth):
    proc = fresh_berth.popen("run", "--name", "runner", "busybox", "sh", "-c",
                             "echo ready; sleep 30", stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    fresh_berth("run", "--name", "done", "busybox", "sh", "-c", "exit 3", check=False)
    running = fresh_berth.out("ps")
    header, *rows = running.splitlines()
    assert header.split()[:2] == ["CONTAINER", "ID"]
    assert len(rows) == 1 and rows[0].split()[-1] == "runner"
    assert "Up " in rows[0]
    everything = fresh_berth.out("ps", "-a")
    assert "Exited (3)" in everything and "done" in everything
    assert len(fresh_berth.out("ps", "-aq").split()) == 2
    # rm refuses a running container, rm -f kills it
    stuck = fresh_berth("rm", "runner", check=False)
    assert stuck.returncode == 1 and b"container is running" in stuck.stderr
    assert fresh_berth.out("rm", "-f", "runner", "done").split() == ["runner", "done"]
    assert proc.wait(timeout=30) == 137
    assert fresh_berth.out("ps", "-aq") == ""


def test_inspect_is_shaped_like_docker(fresh_berth):
    fresh_berth("run", "--name", "shape", "-e", "A=1", "--memory", "64m", "busybox", "true")
    [info] = json.loads(fresh_berth.out("inspect", "shape"))
    for key in ("Id", "Created", "Path", "Args", "State", "Image", "ResolvConfPath",
                "HostnamePath", "HostsPath", "Name", "RestartCount", "Driver", "Platform",
                "HostConfig", "GraphDriver", "Mounts", "Config", "NetworkSettings"):
        assert key in info, key
    assert "Berth" not in info
    state = info["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 0 and not state["Running"]
    for key in ("Paused", "Restarting", "OOMKilled", "Dead", "Pid", "Error", "StartedAt",
                "FinishedAt"):
        assert key in state
    assert info["Name"] == "/shape"
    assert info["Path"] == "true"
    assert info["Image"].startswith("sha256:")
    assert info["Config"]["Image"] == "busybox"
    assert "A=1" in info["Config"]["Env"]
    assert info["HostConfig"]["Memory"] == 64 << 20
    # by ID prefix, with a template, and for images
    prefix = info["Id"][:8]
    assert fresh_berth.out("inspect", "-f", "{{.Name}} {{.State.Status}}", prefix).strip() == \
        "/shape exited"
    [image] = json.loads(fresh_berth.out("inspect", "busybox"))
    assert image["RepoTags"] == ["busybox:latest"]
    assert fresh_berth.out("inspect", "--type", "image", "-f", "{{json .Config.Cmd}}",
                           "busybox").strip() == '["sh"]'
    missing = fresh_berth("inspect", "nothing-here", check=False)
    assert missing.returncode == 1 and b"No such object: nothing-here" in missing.stderr


def test_killed_monitor_takes_the_container_with_it_and_ps_notices(fresh_berth):
    proc = fresh_berth.popen("run", "--name", "orphan", "busybox", "sh", "-c",
                             "echo ready; sleep 60", stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    pid = json.loads(fresh_berth.out("inspect", "orphan"))[0]["State"]["Pid"]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for _ in range(100):
        if not os.path.exists(f"/proc/{pid}"):
            break
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), "the container outlived its monitor"
    state = json.loads(fresh_berth.out("inspect", "orphan"))[0]["State"]
    assert state["Status"] == "exited" and not state["Running"]
    fresh_berth("rm", "orphan")


def test_version_and_info(fresh_berth):
    assert fresh_berth.out("--version").startswith("berth version ")
    assert "Version:" in fresh_berth.out("version")
    info = fresh_berth.out("info")
    assert "Cgroup Version:" in info and "Images: 1" in info
    assert fresh_berth.out("info", "-f", "{{.Images}}").strip() == "1"


def test_help_and_unknown_commands(fresh_berth):
    assert "Usage:  berth run" in fresh_berth.out("run", "--help")
    assert "Commands:" in fresh_berth.out("--help")
    proc = fresh_berth("frobnicate", check=False)
    assert proc.returncode == 1 and b"'frobnicate' is not a berth command" in proc.stderr
    assert fresh_berth.out("image", "ls").startswith("REPOSITORY")
    assert fresh_berth.out("container", "ls").startswith("CONTAINER ID")
