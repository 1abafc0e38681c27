"""Failures give one clear line, and no run -- failed or not -- leaves anything behind."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import berth_cgroups, berth_mounts


def _container_dirs(berth) -> set[str]:
    path = os.path.join(berth.root, "containers")
    return set(os.listdir(path)) if os.path.isdir(path) else set()


def _snapshot(berth):
    return (_container_dirs(berth), set(os.listdir(os.path.join(berth.root, "names")))
            if os.path.isdir(os.path.join(berth.root, "names")) else set(),
            set(berth_cgroups()))


def test_rm_flag_leaves_nothing(fresh_berth):
    before = _snapshot(fresh_berth)
    fresh_berth("run", "--rm", "--name", "gone", "--memory", "64m", "busybox", "sh", "-c",
                "echo data > /file")
    assert _snapshot(fresh_berth) == before
    assert not berth_mounts(fresh_berth.root)
    assert fresh_berth.out("ps", "-aq") == ""


@pytest.mark.parametrize("args, code, message", [
    (["--pull", "never", "no-such-image"], 125, b"No such image: no-such-image:latest"),
    (["busybox", "no-such-command"], 127, b"executable file not found"),
    (["-u", "ghost", "busybox", "true"], 125, b"unable to find user ghost"),
    (["--memory", "64x", "busybox", "true"], 125, b"invalid size"),
    (["--security-opt", "seccomp=/nonexistent.json", "busybox", "true"], 125, b"seccomp profile"),
    (["-v", "bad name:/x", "busybox", "true"], 125, b"includes invalid characters"),
    (["--ulimit", "nofile=99999999999:99999999999", "busybox", "true"], 125, b"RLIMIT_NOFILE"),
    (["-w", "/etc/passwd", "busybox", "true"], 125, b"/etc/passwd"),
])
def test_failed_runs_leave_nothing_behind(fresh_berth, args, code, message):
    before = _snapshot(fresh_berth)
    proc = fresh_berth("run", "--rm", *args, check=False)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert proc.stderr.count(b"\n") == 1, proc.stderr
    assert b"Traceback" not in proc.stderr
    assert _snapshot(fresh_berth) == before
    assert not berth_mounts(fresh_berth.root)


def test_a_missing_image_is_pulled_and_a_failed_pull_leaves_nothing(fresh_berth, tmp_path):
    # a registries.json mirror on a closed port: the pull fails at once, never the internet
    (tmp_path / "registries.json").write_text('{"mirrors": {"docker.io": ["http://127.0.0.1:9"]},'
                                              ' "endpoints": {"docker.io": "http://127.0.0.1:9"}}')
    env = dict(fresh_berth.env, BERTH_REGISTRIES_CONFIG=str(tmp_path / "registries.json"))
    before = _snapshot(fresh_berth)
    proc = subprocess.run(fresh_berth.cmd("run", "--rm", "no-such-image"), env=env,
                          capture_output=True, timeout=120)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 125
    assert lines[0] == "Unable to find image 'no-such-image:latest' locally"  # as Docker says
    assert len(lines) == 2 and lines[1].startswith("berth: ")
    assert _snapshot(fresh_berth) == before


def test_failed_run_without_rm_keeps_a_record_like_docker(fresh_berth):
    proc = fresh_berth("run", "--name", "broken", "busybox", "no-such-command", check=False)
    assert proc.returncode == 127
    out = fresh_berth.out("ps", "-a")
    assert "broken" in out and "Created" in out
    assert not berth_mounts(fresh_berth.root)
    fresh_berth("rm", "broken")
    assert "broken" not in fresh_berth.out("ps", "-a")


def test_not_root_gets_one_clear_line(fresh_berth):
    def drop():
        os.setgid(65534)
        os.setuid(65534)

    proc = subprocess.run(fresh_berth.cmd("run", "--rm", "busybox", "true"), env=fresh_berth.env,
                          capture_output=True, preexec_fn=drop, cwd="/")
    assert proc.returncode == 125
    assert proc.stderr.count(b"\n") == 1
    assert b"root" in proc.stderr
    assert b"Traceback" not in proc.stderr


def test_name_conflict_is_refused(fresh_berth):
    fresh_berth("run", "--name", "dup", "busybox", "true")
    proc = fresh_berth("run", "--name", "dup", "busybox", "true", check=False)
    assert proc.returncode == 125
    assert b'The container name "/dup" is already in use' in proc.stderr
    fresh_berth("rm", "dup")
