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


def test_killing_the_cli_leaves_the_container_to_its_monitor(fresh_berth):
    proc = fresh_berth.popen("run", "--name", "orphan", "busybox", "sh", "-c",
                             "echo ready; sleep 60", stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [info] = json.loads(fresh_berth.out("inspect", "orphan"))
    assert info["State"]["Running"], "the container died with the CLI"
    assert os.path.exists(f"/proc/{info['State']['Pid']}")
    assert "Up " in fresh_berth.out("ps")
    assert fresh_berth.out("logs", "orphan") == "ready\n"
    fresh_berth("rm", "-f", "orphan")
    assert not os.path.exists(f"/proc/{info['State']['Pid']}")


def test_a_killed_monitor_leaves_the_container_running_and_rm_f_still_works(fresh_berth):
    cid = fresh_berth.out("run", "-d", "--name", "lone", "busybox", "sleep", "60").strip()
    record = json.loads(open(os.path.join(fresh_berth.root, "containers", cid,
                                          "container.json")).read())
    monitor, pid = record["Berth"]["Monitor"][0], record["State"]["Pid"]
    os.kill(monitor, signal.SIGKILL)
    for _ in range(100):
        if not os.path.exists(f"/proc/{monitor}"):
            break
        time.sleep(0.02)
    assert os.path.exists(f"/proc/{pid}")
    assert json.loads(fresh_berth.out("inspect", "lone"))[0]["State"]["Running"]
    fresh_berth("rm", "-f", "lone")
    assert _dead(pid)  # killed; without its monitor, the host's init reaps it
    assert fresh_berth.out("ps", "-aq") == ""


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


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
