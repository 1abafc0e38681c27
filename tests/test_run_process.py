"""The container's process: command, environment, user, exit codes, signals, stdio, tty."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time

import pytest


def test_exit_code_passes_through(berth):
    assert berth("run", "--rm", "busybox", "sh", "-c", "exit 42", check=False).returncode == 42


def test_image_cmd_is_the_default_command(berth):
    proc = berth("run", "--rm", "-i", "busybox", input="echo from-stdin\n")
    assert proc.stdout == b"from-stdin\n"


def test_stdin_is_closed_without_i(berth):
    proc = berth("run", "--rm", "busybox", "cat", input="ignored")
    assert proc.stdout == b""


def test_entrypoint_rules(berth):
    assert berth.out("run", "--rm", "--entrypoint", "echo", "busybox").strip() == ""
    assert berth.out("run", "--rm", "--entrypoint", "echo", "busybox", "a", "b") == "a b\n"


def test_environment(berth, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROM_FILE=1\nOVERRIDE=file\n")
    out = berth.out("run", "--rm", "-h", "envhost", "--env-file", str(env_file), "-e",
                    "OVERRIDE=flag", "-e", "EMPTY=", "busybox", "env")
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["HOSTNAME"] == "envhost"
    assert env["HOME"] == "/root"
    assert env["FROM_FILE"] == "1"
    assert env["OVERRIDE"] == "flag"
    assert env["EMPTY"] == ""
    assert "TERM" not in env


def test_user_and_group_resolved_from_the_image(berth):
    assert berth.out("run", "--rm", "-u", "nobody", "busybox", "id").strip() == \
        "uid=65534(nobody) gid=65534(nogroup)"
    assert berth.out("run", "--rm", "-u", "1000", "busybox", "id", "-u").strip() == "1000"
    assert berth.out("run", "--rm", "-u", "1000", "busybox", "id", "-g").strip() == "0"
    assert berth.out("run", "--rm", "-u", "daemon:tty", "busybox", "id").strip().startswith(
        "uid=1(daemon) gid=5(tty)")
    proc = berth("run", "--rm", "-u", "nosuchuser", "busybox", "true", check=False)
    assert proc.returncode == 125
    assert b"unable to find user nosuchuser" in proc.stderr


def test_workdir_is_created(berth):
    assert berth.out("run", "--rm", "-w", "/new/dir", "busybox", "pwd").strip() == "/new/dir"


def test_bind_mounts_read_write_and_read_only(berth, tmp_path):
    host = tmp_path / "shared"
    host.mkdir()
    (host / "in").write_text("from host")
    out = berth.out("run", "--rm", "-v", f"{host}:/data", "busybox", "sh", "-c",
                    "cat /data/in; echo out > /data/out")
    assert out == "from host"
    assert (host / "out").read_text() == "out\n"
    proc = berth("run", "--rm", "-v", f"{host}:/data:ro", "busybox", "touch", "/data/x",
                 check=False)
    assert proc.returncode == 1
    assert not (host / "x").exists()
    missing = tmp_path / "created-by-v"
    berth("run", "--rm", "-v", f"{missing}:/m", "busybox", "true")
    assert missing.is_dir()


def test_tmpfs_mount(berth):
    out = berth.out("run", "--rm", "--tmpfs", "/run/x:size=1m", "busybox", "sh", "-c",
                    "grep ' /run/x ' /proc/self/mountinfo")
    assert "tmpfs" in out and "noexec" in out


def test_command_not_found_exits_127_with_one_line(berth):
    proc = berth("run", "--rm", "busybox", "no-such-command", check=False)
    assert proc.returncode == 127
    assert proc.stderr.decode().count("\n") == 1
    assert "executable file not found in $PATH" in proc.stderr.decode()
    proc = berth("run", "--rm", "busybox", "/no/such/path", check=False)
    assert proc.returncode == 127


def test_command_that_cannot_run_exits_126(berth):
    proc = berth("run", "--rm", "busybox", "/etc/passwd", check=False)
    assert proc.returncode == 126
    assert b"permission denied" in proc.stderr


def _run_and_signal(berth, sig: int, *args: str) -> int:
    proc = berth.popen("run", "--rm", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline()  # the container prints when it is ready
    assert line.strip() == b"ready", proc.stderr.read()
    proc.send_signal(sig)
    return proc.wait(timeout=30)


def test_signals_are_forwarded_to_the_containers_process(berth):
    code = _run_and_signal(berth, signal.SIGTERM, "busybox", "sh", "-c",
                           "trap 'exit 3' TERM; echo ready; while true; do sleep 0.1; done")
    assert code == 3


def test_exit_by_signal_is_128_plus_n_with_init(berth):
    code = _run_and_signal(berth, signal.SIGTERM, "--init", "busybox", "sh", "-c",
                           "echo ready; exec sleep 100")
    assert code == 128 + signal.SIGTERM


def test_init_reaps_orphans(berth):
    out = berth.out("run", "--rm", "--init", "busybox", "sh", "-c",
                    "(sleep 0.2 &) ; sleep 0.5; ps -o stat,comm | grep -c Z || true")
    assert out.strip() == "0"
    # with --init the command is not PID 1: berth's reaper is
    assert berth.out("run", "--rm", "--init", "busybox", "sh", "-c", "echo $$").strip() != "1"
    assert berth.out("run", "--rm", "busybox", "sh", "-c", "echo $$").strip() == "1"


def test_kill_of_pid_1_from_the_host_gives_137(berth):
    name = f"killed-{os.getpid()}"
    proc = berth.popen("run", "--name", name, "busybox", "sh", "-c", "echo ready; sleep 100",
                       stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    pid = json.loads(berth.out("inspect", name))[0]["State"]["Pid"]
    assert pid > 0
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == 137
    state = json.loads(berth.out("inspect", name))[0]["State"]
    assert state["ExitCode"] == 137 and state["Status"] == "exited" and not state["OOMKilled"]
    berth("rm", name)


def _pty_run(berth, *args: str, send: bytes = b"", timeout: float = 20) -> bytes:
    """Run berth with a real pty as its terminal; return everything it printed."""
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    proc = berth.popen(*args, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    if send:
        time.sleep(0.5)
        os.write(master, send)
    deadline = time.time() + timeout
    while time.time() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(master)
    return out


def test_tty_gives_the_container_a_terminal_of_its_own(berth):
    out = _pty_run(berth, "run", "--rm", "-t", "busybox", "sh", "-c", "tty; stty size; echo $TERM")
    lines = out.decode().replace("\r", "").split("\n")
    assert lines[0].startswith("/dev/pts/")
    assert lines[1] == "33 101"
    assert lines[2] == "xterm"


def test_interactive_tty_shell(berth):
    out = _pty_run(berth, "run", "--rm", "-it", "busybox", "sh", send=b"echo $((6*7))\rexit 5\r")
    assert b"42" in out


def test_tty_requires_a_terminal_on_stdin_with_i(berth):
    proc = berth("run", "--rm", "-it", "busybox", "true", check=False, input="")
    assert proc.returncode == 125
    assert b"the input device is not a TTY" in proc.stderr


@pytest.mark.parametrize("flag", ["--memory=lots", "--cpus=x", "--pids-limit=many",
                                  "--ulimit=nofile", "--no-such-flag"])
def test_bad_flag_values_fail_with_one_line(berth, flag):
    proc = berth("run", "--rm", flag, "busybox", "true", check=False)
    assert proc.returncode == 125
    assert b"Traceback" not in proc.stderr
    assert proc.stderr.startswith(b"berth: ")
