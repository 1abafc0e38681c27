"""`berth cp` both ways, on stopped and running containers, with Docker's path rules, tar
streams, overlay semantics, and no way out of the container through a symlink."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time

import pytest


def _tar(members: dict[str, bytes | None]) -> bytes:
    """A tar of files (bytes) and directories (None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name.rstrip("/"): m for m in tf}


@pytest.fixture
def stopped(fresh_berth):
    """A stopped container that changed its image: a file, a deletion, links out to /etc."""
    fresh_berth("run", "--name", "box", "busybox", "sh", "-c",
                "echo container > /etc/marker; mkdir -p /srv/d/sub; echo a > /srv/d/a; "
                "echo b > /srv/d/sub/b; rm /etc/group; ln -s /etc /evil; "
                "ln -s ../../../../../../../etc /evil-rel; ln -s /srv/d /dlink")
    return fresh_berth


# --- host <-> container -------------------------------------------------------------------

def test_cp_into_a_stopped_container_is_seen_when_it_starts(fresh_berth, tmp_path):
    fresh_berth("create", "--name", "later", "busybox", "sh", "-c",
                "cat /tmp/in.txt; stat -c '%u %a' /tmp /tmp/in.txt; cat /opt/deep.txt")
    src = tmp_path / "in.txt"
    src.write_text("copied in\n")
    os.chown(src, 4321, 4321)
    src.chmod(0o640)
    fresh_berth("cp", str(src), "later:/tmp/in.txt")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "deep.txt").write_text("deep\n")
    fresh_berth("cp", str(tmp_path / "new"), "later:/opt/")  # no /opt: it becomes /opt
    out = fresh_berth.out("start", "-a", "later")
    # root owns what is copied in (no -a); /tmp was copied up with its mode kept
    assert out == "copied in\n0 1777\n0 640\ndeep\n"
    fresh_berth("rm", "later")


def test_cp_a_keeps_the_owner(fresh_berth, tmp_path):
    fresh_berth("create", "--name", "own", "busybox", "stat", "-c", "%u:%g", "/kept", "/root")
    src = tmp_path / "kept"
    src.write_text("x")
    os.chown(src, 4321, 1234)
    fresh_berth("cp", "-a", str(src), "own:/kept")
    fresh_berth("cp", str(src), "own:/root/")
    assert fresh_berth.out("start", "-a", "own") == "4321:1234\n0:0\n"
    fresh_berth("rm", "own")


def test_cp_out_of_a_running_container_sees_what_it_just_wrote(fresh_berth, tmp_path):
    fresh_berth("run", "-d", "--name", "live", "busybox", "sh", "-c",
                "echo fresh > /tmp/now; sleep 60")
    deadline = time.time() + 10
    while fresh_berth("cp", "live:/tmp/now", str(tmp_path / "now"), check=False).returncode:
        assert time.time() < deadline
        time.sleep(0.1)
    assert (tmp_path / "now").read_text() == "fresh\n"
    fresh_berth("exec", "live", "sh", "-c", "echo again > /tmp/again")
    fresh_berth("cp", "live:/tmp/again", str(tmp_path))
    assert (tmp_path / "again").read_text() == "again\n"
    fresh_berth("rm", "-f", "live")


def test_cp_into_a_running_container_is_seen_by_it_at_once(fresh_berth, tmp_path):
    fresh_berth("run", "-d", "--name", "live", "--tmpfs", "/scratch", "-v", "vol:/data",
                "busybox", "sh", "-c", "while true; do ls /etc /tmp >/dev/null; sleep 0.05; done")
    src = tmp_path / "f"
    src.write_text("pushed\n")
    for dest in ("/tmp/f", "/etc/f", "/scratch/", "/data/"):
        fresh_berth("cp", str(src), f"live:{dest}")
    out = fresh_berth.out("exec", "live", "sh", "-c",
                          "cat /tmp/f /etc/f /scratch/f /data/f; ls /etc | grep -c '^f$'; "
                          "echo still-writable > /tmp/w && cat /tmp/w")
    assert out == "pushed\n" * 4 + "1\nstill-writable\n"
    fresh_berth("rm", "-f", "live")
    with open(os.path.join(fresh_berth.root, "volumes", "vol", "_data", "f")) as f:
        assert f.read() == "pushed\n"


def test_docker_path_rules_out_of_a_container(stopped, tmp_path):
    b = stopped
    b("cp", "box:/srv/d", str(tmp_path / "new"))  # dir -> missing: created with the contents
    assert sorted(os.listdir(tmp_path / "new")) == ["a", "sub"]
    b("cp", "box:/srv/d", str(tmp_path / "new"))  # dir -> existing dir: copied into it
    assert sorted(os.listdir(tmp_path / "new")) == ["a", "d", "sub"]
    (tmp_path / "dots").mkdir()
    b("cp", "box:/srv/d/.", str(tmp_path / "dots"))  # trailing /. : the contents
    assert sorted(os.listdir(tmp_path / "dots")) == ["a", "sub"]
    b("cp", "box:/srv/d/a", str(tmp_path / "dots"))  # file -> existing dir: into it, by name
    b("cp", "box:/srv/d/sub/b", str(tmp_path / "dots" / "a"))  # file -> file: overwritten
    assert (tmp_path / "dots" / "a").read_text() == "b\n"
    b("cp", "box:/srv/d/a", str(tmp_path / "renamed"))  # file -> missing: that name
    assert (tmp_path / "renamed").read_text() == "a\n"
    err = b("cp", "box:/srv/d", str(tmp_path / "renamed"), check=False)
    assert err.returncode == 1 and err.stderr == b"berth: cannot copy directory\n"
    err = b("cp", "box:/srv/d/a", str(tmp_path / "nodir") + "/", check=False)
    assert err.returncode == 1 and b"no such directory" in err.stderr
    err = b("cp", "box:/nothing", str(tmp_path), check=False)
    assert err.stderr == b"berth: Could not find the file /nothing in container box\n"
    err = b("cp", "box:/etc/group", str(tmp_path), check=False)  # deleted in the container
    assert b"Could not find the file" in err.stderr
    assert b("cp", "box:/srv", "box:/tmp", check=False).stderr == \
        b"berth: copying between containers is not supported\n"
    assert b("cp", str(tmp_path), str(tmp_path), check=False).stderr == \
        b"berth: must specify at least one container source\n"


def test_docker_path_rules_into_a_container(stopped, tmp_path):
    b = stopped
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x\n")
    (tmp_path / "f").write_text("f\n")
    b("cp", str(tmp_path / "d"), "box:/srv/fresh")
    b("cp", str(tmp_path / "d"), "box:/srv/d")
    b("cp", str(tmp_path / "d") + "/.", "box:/srv/d/sub")
    b("cp", str(tmp_path / "f"), "box:/srv/d/a")
    err = b("cp", str(tmp_path / "d"), "box:/srv/d/a", check=False)
    assert err.stderr == b"berth: cannot copy directory\n"
    err = b("cp", str(tmp_path / "f"), "box:/srv/nodir/", check=False)
    assert b"no such directory" in err.stderr
    err = b("cp", str(tmp_path / "f"), "box:/no/such/dir/f", check=False)
    assert err.stderr == b"berth: Could not find the file /no/such/dir in container box\n"
    listing = tarfile.open(fileobj=io.BytesIO(b("cp", "box:/srv", "-").stdout))
    names = sorted(m.name for m in listing)
    assert names == ["srv", "srv/d", "srv/d/a", "srv/d/d", "srv/d/d/x", "srv/d/sub", "srv/d/sub/b",
                     "srv/d/sub/x", "srv/fresh", "srv/fresh/x"]
    assert _members(b("cp", "box:/srv/d/a", "-").stdout)["a"].size == 2


# --- tar streams ---------------------------------------------------------------------------

def test_tar_streams_on_stdin_and_stdout(stopped):
    b = stopped
    members = _members(b("cp", "box:/etc/marker", "-").stdout)
    assert list(members) == ["marker"] and members["marker"].size == len("container\n")
    b("cp", "-", "box:/srv", input=_tar({"in": None, "in/f": b"streamed\n"}))
    out = b("cp", "box:/srv/in/f", "-").stdout
    with tarfile.open(fileobj=io.BytesIO(out)) as tf:
        assert tf.extractfile("f").read() == b"streamed\n"
    err = b("cp", "-", "box:/etc/marker", input=_tar({"x": b""}), check=False)
    assert err.stderr == b'berth: destination "box:/etc/marker" must be a directory\n'
    err = b("cp", "-", "box:/srv", input=_tar({"../escape": b"x"}), check=False)
    assert err.returncode == 1 and b"invalid path in archive" in err.stderr
    err = b("cp", "-", "box:/srv", input=b"not a tar at all" * 64, check=False)
    assert err.returncode == 1 and b"not a valid tar" in err.stderr


# --- symlinks never lead out -----------------------------------------------------------------

def test_reading_through_a_link_to_etc_reads_the_containers_etc(stopped, tmp_path):
    b = stopped
    b("cp", "box:/evil/marker", str(tmp_path / "m1"))
    b("cp", "box:/evil-rel/marker", str(tmp_path / "m2"))
    b("cp", "box:/evil/passwd", str(tmp_path / "passwd"))
    assert (tmp_path / "m1").read_text() == (tmp_path / "m2").read_text() == "container\n"
    image_passwd = b.out("run", "--rm", "busybox", "cat", "/etc/passwd")
    assert (tmp_path / "passwd").read_text() == image_passwd
    with open("/etc/passwd") as f:
        assert f.read() != image_passwd
    # the link itself is copied as a link, unless -L
    b("cp", "box:/evil", str(tmp_path / "link"))
    assert os.readlink(tmp_path / "link") == "/etc"
    b("cp", "-L", "box:/dlink", str(tmp_path / "followed"))
    assert sorted(os.listdir(tmp_path / "followed")) == ["a", "sub"]


@pytest.mark.parametrize("running", [False, True])
def test_writing_through_a_link_to_etc_writes_the_containers_etc(stopped, tmp_path, running):
    b = stopped
    name = f"berth-cp-escape-{os.getpid()}-{int(running)}"
    target = "box"
    if running:
        target = "up"
        b("run", "-d", "--name", "up", "busybox", "sh", "-c",
          "ln -s /etc /evil; ln -s ../../../../../../../etc /evil-rel; sleep 60")
        deadline = time.time() + 10
        while b("exec", "up", "test", "-L", "/evil-rel", check=False).returncode:
            assert time.time() < deadline
            time.sleep(0.05)
    src = tmp_path / name
    src.write_text("payload\n")
    b("cp", str(src), f"{target}:/evil/{name}-abs")
    b("cp", str(src), f"{target}:/evil-rel/{name}-rel")
    b("cp", "-", f"{target}:/evil", input=_tar({f"{name}-tar": b"t"}))
    b("cp", str(src), f"{target}:/evil")  # the destination itself a link: into its target
    for leaf in (f"{name}-abs", f"{name}-rel", f"{name}-tar", name):
        assert not os.path.lexists(f"/etc/{leaf}"), "written on the host"
    inside = _members(b("cp", f"{target}:/etc/.", "-").stdout)
    assert {f"{name}-abs", f"{name}-rel", f"{name}-tar", name} <= set(inside)
    assert inside[name].size == len("payload\n")
    if running:
        assert b.out("exec", "up", "cat", f"/etc/{name}-rel") == "payload\n"
        b("rm", "-f", "up")


# --- volumes and read-only --------------------------------------------------------------------

def test_cp_reads_and_writes_a_stopped_containers_volume(fresh_berth, tmp_path):
    fresh_berth("create", "--name", "vc", "-v", "cpvol:/data", "-v", "rovol:/ro:ro", "busybox",
                "cat", "/data/f")
    src = tmp_path / "f"
    src.write_text("in the volume\n")
    fresh_berth("cp", str(src), "vc:/data/")
    with open(os.path.join(fresh_berth.root, "volumes", "cpvol", "_data", "f")) as f:
        assert f.read() == "in the volume\n"
    upper = json.loads(fresh_berth.out("inspect", "vc"))[0]["GraphDriver"]["Data"]["UpperDir"]
    assert not os.path.exists(os.path.join(upper, "data", "f"))
    # never started: the runtime made no mount point yet, and the volume shows all the same
    assert "data/f" in _members(fresh_berth("cp", "vc:/", "-").stdout)
    err = fresh_berth("cp", str(src), "vc:/ro/", check=False)
    assert err.stderr == b"berth: mounted volume is marked read-only\n"
    assert fresh_berth.out("start", "-a", "vc") == "in the volume\n"
    fresh_berth("cp", "vc:/data/f", str(tmp_path / "back"))
    assert (tmp_path / "back").read_text() == "in the volume\n"
    fresh_berth("rm", "vc")


def test_cp_into_a_read_only_root_is_refused(fresh_berth, tmp_path):
    fresh_berth("create", "--name", "rofs", "--read-only", "busybox", "true")
    src = tmp_path / "f"
    src.write_text("x")
    err = fresh_berth("cp", str(src), "rofs:/tmp/", check=False)
    assert err.returncode == 1 and err.stderr == b"berth: container rootfs is marked read-only\n"
    fresh_berth("rm", "rofs")


def test_a_directory_deleted_in_the_container_comes_back_empty(fresh_berth, tmp_path):
    fresh_berth("run", "--name", "gone", "busybox", "rm", "-rf", "/usr/bin")
    assert b"Could not find" in fresh_berth("cp", "gone:/usr/bin", "-", check=False).stderr
    (tmp_path / "mine").write_text("mine\n")
    fresh_berth("cp", "-", "gone:/usr", input=_tar({"bin": None}))
    fresh_berth("cp", str(tmp_path / "mine"), "gone:/usr/bin/")
    assert sorted(_members(fresh_berth("cp", "gone:/usr/bin", "-").stdout)) == ["bin", "bin/mine"]
    # the kernel's overlay agrees: the image's applets stay deleted under the new directory
    fresh_berth("commit", "gone", "after-gone")
    assert fresh_berth.out("run", "--rm", "after-gone", "/bin/ls", "/usr/bin") == "mine\n"
    fresh_berth("rm", "gone")
