"""commit, diff, history and image diff on real containers, checked from inside new ones,
and the committed image read by skopeo and run by podman."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
import uuid

import pytest

# what the container in `changed` does to the busybox image
CHANGES = ("echo hi > /new.txt; mkdir -p /opt/app; echo run > /opt/app/run; "
           "echo extra:x:9:9::/:/bin/sh >> /etc/passwd; rm /bin/ls; "
           "rm -rf /usr/sbin && mkdir /usr/sbin && echo x > /usr/sbin/only")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def inspect(berth, ref: str) -> dict:
    return json.loads(berth.out("inspect", ref))[0]


def layer_members(berth, image: str, index: int = -1) -> dict[str, tarfile.TarInfo]:
    info = json.loads(berth.out("image", "inspect", image))[0]
    digest = info["RootFS"]["Layers"][index]
    blob = os.path.join(berth.root, "content", "blobs", "sha256", digest.split(":")[1])
    with tarfile.open(blob) as tf:
        return {m.name: m for m in tf.getmembers()}


@pytest.fixture
def changed(berth):
    """A stopped container that added, changed and deleted files, an opaque dir included."""
    name = unique("changed")
    berth("run", "--name", name, "busybox", "sh", "-c", CHANGES)
    sbin = berth.out("run", "--rm", "busybox", "ls", "/usr/sbin").split()
    yield name, sbin
    berth("rm", "-f", name, check=False)


@pytest.fixture
def committed(berth, changed):
    name, sbin = changed
    tag = unique("committed") + ":v1"
    image_id = berth.out("commit", "-m", "my changes", "-a", "Ann <ann@example.org>",
                         name, tag).strip()
    yield tag, image_id, name, sbin
    berth("rmi", "-f", tag, check=False)


def test_commit_prints_the_new_image_id(berth, committed):
    tag, image_id, _, _ = committed
    assert image_id.startswith("sha256:") and len(image_id) == 71
    assert inspect(berth, tag)["Id"] == image_id


def test_committed_image_shows_exactly_the_container_changes(berth, committed):
    tag, _, _, _ = committed
    script = ("cat /new.txt /opt/app/run; tail -1 /etc/passwd; ls /usr/sbin; "
              "test -e /bin/ls || echo no-ls; test -e /bin/cat && echo has-cat")
    out = berth.out("run", "--rm", tag, "sh", "-c", script)
    assert out == "hi\nrun\nextra:x:9:9::/:/bin/sh\nonly\nno-ls\nhas-cat\n"


def test_committed_layer_holds_oci_whiteouts_and_no_engine_stubs(berth, committed):
    tag, _, _, _ = committed
    layer = layer_members(berth, tag)
    assert "bin/.wh.ls" in layer and layer["bin/.wh.ls"].isreg()
    assert "usr/sbin/.wh..wh..opq" in layer
    assert {"new.txt", "opt/app/run", "etc/passwd", "usr/sbin/only"} <= set(layer)
    assert not {"etc/hosts", "etc/hostname", "etc/resolv.conf"} & set(layer)


def test_commit_keeps_the_parent_chain(berth, committed):
    tag, _, _, _ = committed
    parent = inspect(berth, "busybox")["RootFS"]["Layers"]
    layers = inspect(berth, tag)["RootFS"]["Layers"]
    assert layers[:-1] == parent and len(layers) == len(parent) + 1


def test_diff_lists_exactly_the_container_changes(berth, changed):
    name, sbin = changed
    expected = ["C /bin", "D /bin/ls", "C /etc", "C /etc/passwd", "A /new.txt", "A /opt",
                "A /opt/app", "A /opt/app/run", "C /usr", "C /usr/sbin"]
    expected += sorted([f"D /usr/sbin/{n}" for n in sbin] + ["A /usr/sbin/only"],
                       key=lambda line: line[2:])
    assert berth.out("diff", name).splitlines() == expected


def test_image_diff_lists_what_the_commit_changed(berth, committed):
    tag, _, name, _ = committed
    assert berth.out("image", "diff", "busybox", tag) == berth.out("diff", name)
    assert berth.out("image", "diff", tag, tag) == ""


def test_author_and_message_are_in_image_inspect(berth, committed):
    tag, _, _, _ = committed
    info = inspect(berth, tag)
    assert info["Author"] == "Ann <ann@example.org>"
    assert info["Comment"] == "my changes"
    assert info["Config"]["Cmd"] == ["sh", "-c", CHANGES]
    assert not any(e.startswith(("HOSTNAME=", "HOME=")) for e in info["Config"]["Env"] or ())


def test_history_shows_the_commit_on_top_of_the_parent(berth, committed):
    tag, image_id, _, _ = committed
    lines = berth.out("history", tag).splitlines()
    parent = berth.out("history", "busybox").splitlines()

    assert lines[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert lines[1].startswith(image_id[7:19] + " ")
    assert "  sh -c echo hi > /new.txt; mkdir -p /opt/app;…  " in lines[1]  # 45 wide
    assert lines[1].endswith("my changes")
    # the parent's rows follow, named by the parent's ID, as Docker names kept parents
    assert [l.split()[0] for l in lines[2:]] == [l.split()[0] for l in parent[1:]]
    assert berth.out("history", "-q", "--no-trunc", tag).split()[0] == image_id
    raw = berth.out("history", "--human=false", "--no-trunc", tag).splitlines()
    assert raw[0].split()[:3] == ["IMAGE", "CREATED", "AT"]
    assert CHANGES in raw[1] and " 20" in raw[1] and "ago" not in raw[1]


def test_setuid_xattr_capability_and_hardlink_survive_commit_and_run(berth):
    name = unique("meta")
    berth("run", "--name", name, "busybox", "sh", "-c",
          "cp /bin/busybox /suid && chmod 4755 /suid && ln /suid /suid.link && echo n > /noted")
    tag = unique("meta") + ":v1"
    try:
        upper = inspect(berth, name)["GraphDriver"]["Data"]["UpperDir"]
        os.setxattr(os.path.join(upper, "noted"), "user.note", b"kept")
        cap = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_raw+ep
        os.setxattr(os.path.join(upper, "suid"), "security.capability", cap)
        berth("commit", name, tag)

        out = berth.out("run", "--rm", tag, "stat", "-c", "%a %h %i", "/suid", "/suid.link")
        first, second = out.splitlines()
        assert first.split()[:2] == ["4755", "2"] and first.split()[2] == second.split()[2]
        layer = layer_members(berth, tag)
        assert layer["suid.link"].islnk()
        assert layer["noted"].pax_headers["SCHILY.xattr.user.note"] == "kept"
        # the run unpacked the layer: the snapshot has the xattrs back
        lower = inspect(berth, tag)["GraphDriver"]["Data"]["LowerDir"].split(":")[0]
        assert os.getxattr(os.path.join(lower, "noted"), "user.note") == b"kept"
        assert os.getxattr(os.path.join(lower, "suid"), "security.capability") == cap
    finally:
        berth("rm", "-f", name, check=False)
        berth("rmi", "-f", tag, check=False)


def test_change_sets_the_command_of_the_committed_image(berth):
    name = unique("cmd")
    berth("run", "--name", name, "busybox", "touch", "/x")
    tag = unique("cmd") + ":v1"
    try:
        berth("commit", "--change", 'CMD ["echo","changed"]', "-c", "ENV MODE=test", name, tag)
        assert berth.out("run", "--rm", tag) == "changed\n"
        assert berth.out("run", "--rm", tag, "sh", "-c", "echo $MODE") == "test\n"
    finally:
        berth("rm", "-f", name, check=False)
        berth("rmi", "-f", tag, check=False)


def test_unchanged_container_commits_without_a_new_layer(berth):
    name = unique("same")
    berth("run", "--name", name, "busybox", "true")
    tag = unique("same") + ":v1"
    try:
        assert berth.out("diff", name) == ""
        berth("commit", name, tag)
        assert inspect(berth, tag)["RootFS"]["Layers"] == inspect(berth, "busybox")["RootFS"][
            "Layers"]
        assert "0B" in berth.out("history", tag).splitlines()[1]
    finally:
        berth("rm", "-f", name, check=False)
        berth("rmi", "-f", tag, check=False)


def test_two_commits_on_one_base_share_its_layer(fresh_berth):
    b = fresh_berth
    snapshots = os.path.join(b.root, "snapshots")
    blobs = os.path.join(b.root, "content", "blobs", "sha256")
    base_layer = inspect(b, "busybox")["RootFS"]["Layers"][0]
    for n in ("one", "two"):
        b("run", "--name", n, "busybox", "sh", "-c", f"echo {n} > /{n}")
        b("commit", n, f"img:{n}")

    # commit does not unpack: the base is still the only snapshot
    assert len([s for s in os.listdir(snapshots) if not s.startswith(".")]) == 1
    for n in ("one", "two"):
        assert b.out("run", "--rm", f"img:{n}", "cat", f"/{n}") == f"{n}\n"
        assert inspect(b, f"img:{n}")["RootFS"]["Layers"][0] == base_layer
    chains = {base_layer.split(":")[1]}
    for n in ("one", "two"):
        top = inspect(b, f"img:{n}")["RootFS"]["Layers"][1]
        chains.add(hashlib.sha256(f"{base_layer} {top}".encode()).hexdigest())
    assert {s for s in os.listdir(snapshots) if not s.startswith(".")} == chains
    assert os.listdir(blobs).count(base_layer.split(":")[1]) == 1


def test_running_container_is_committed_and_keeps_running(berth):
    name = unique("live")
    proc = berth.popen("run", "--name", name, "busybox", "sh", "-c",
                       "echo ready; echo state > /state; i=0; while true; do i=$((i+1)); "
                       "echo $i > /counter; sleep 0.05; done", stdout=subprocess.PIPE)
    tag = unique("live") + ":v1"
    try:
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(0.2)
        image_id = berth.out("commit", name, tag).strip()
        assert image_id.startswith("sha256:")
        assert inspect(berth, name)["State"]["Running"] is True
        before = berth.out("diff", name)
        time.sleep(0.3)
        counter = inspect(berth, name)["GraphDriver"]["Data"]["UpperDir"] + "/counter"
        with open(counter) as f:
            first = int(f.read() or 0)
        time.sleep(0.3)
        with open(counter) as f:
            assert int(f.read() or 0) > first  # thawed: still counting
        assert "A /state" in before
        assert berth.out("run", "--rm", tag, "cat", "/state") == "state\n"
    finally:
        berth("rm", "-f", name, check=False)
        proc.wait(timeout=30)
        berth("rmi", "-f", tag, check=False)


def test_commit_of_an_unknown_container_is_one_line(berth):
    proc = berth("commit", "no-such-container", "x:y", check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == "berth: No such container: no-such-container\n"
    proc = berth("diff", "no-such-container", check=False)
    assert (proc.returncode, proc.stderr.decode()) == (
        1, "berth: No such container: no-such-container\n")


def test_commit_refuses_a_bad_change_before_writing_anything(fresh_berth):
    b = fresh_berth
    b("run", "--name", "cc", "busybox", "touch", "/x")
    blobs = os.path.join(b.root, "content", "blobs", "sha256")
    before = sorted(os.listdir(blobs))
    proc = b("commit", "-c", "RUN echo no", "cc", "bad:v1", check=False)
    assert proc.returncode == 1 and proc.stderr.decode().count("\n") == 1
    assert "RUN" in proc.stderr.decode()
    assert sorted(os.listdir(blobs)) == before


# --- peers -----------------------------------------------------------------------------------


@pytest.fixture
def podman():
    """podman on a store of its own, cleaned up afterwards, mounts included."""
    if shutil.which("podman") is None or shutil.which("skopeo") is None:
        pytest.skip("podman and skopeo are needed")
    import pathlib
    import tempfile

    base = pathlib.Path(tempfile.mkdtemp(prefix="berth-podman-"))  # podman: runroot < 50 chars
    conf = base / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n')
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    store = f"containers-storage:[overlay@{base}/root+{base}/runroot]"

    def run(*args, check=True, tool="podman"):
        prefix = ["podman", "--root", str(base / "root"), "--runroot", str(base / "runroot"),
                  "--runtime", "runc"] if tool == "podman" else [tool]
        proc = subprocess.run(prefix + list(args), env=env, capture_output=True, timeout=300)
        if check and proc.returncode:
            raise AssertionError(f"{tool} {' '.join(args)}: {proc.stderr.decode()}")
        return proc

    run.store = store
    yield run
    run("rmi", "-af", check=False)
    with open("/proc/self/mountinfo") as f:
        mounted = [line.split()[4] for line in f if str(base) in line.split()[4]]
    for mountpoint in sorted(mounted, key=len, reverse=True):
        subprocess.run(["umount", "-l", mountpoint], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.peers
@pytest.mark.slow
def test_skopeo_reads_and_podman_runs_a_committed_image(berth, changed, podman):
    name, _ = changed
    repo = unique("peer")
    berth("commit", "-m", "for podman", name, f"{repo}:v1")
    ref = f"docker.io/library/{repo}:v1"
    layout = os.path.join(berth.root, "content")
    try:
        raw = podman("inspect", "--raw", f"oci:{layout}:{ref}", tool="skopeo").stdout
        manifest = json.loads(raw)
        assert manifest["layers"][-1]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
        assert len(manifest["layers"]) == len(inspect(berth, "busybox")["RootFS"]["Layers"]) + 1

        podman("copy", f"oci:{layout}:{ref}", f"{podman.store}localhost/x:y", tool="skopeo")
        out = podman("run", "--rm", "--network", "none", "localhost/x:y", "sh", "-c",
                     "cat /new.txt /opt/app/run; ls /usr/sbin; test -e /bin/ls || echo no-ls")
        assert out.stdout.decode() == "hi\nrun\nonly\nno-ls\n"
    finally:
        berth("rmi", "-f", f"{repo}:v1", check=False)
