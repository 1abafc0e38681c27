"""Named and anonymous volumes, --mount, --volumes-from and Docker's copy-up, with real
containers; and the pure parsers and spec rules behind them."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading

import pytest

from berth.cli.mountopts import parse_mount, parse_volume
from berth.container.spec import BindSpec, RunOptions, VolumeSpec, user_mounts
from berth.errors import InvalidArgument
from berth.volume import VolumeStore


def _volumes(berth) -> set[str]:
    return set(berth.out("volume", "ls", "-q").split())


def _mounts(berth, name: str) -> list[dict]:
    return json.loads(berth.out("inspect", name))[0]["Mounts"]


@pytest.fixture
def seeded_image(fresh_berth, busybox_tar, tmp_path):
    """busybox plus /data/seed (uid 1000, mode 0640) in a 0750 /data, and VOLUME /data."""
    path = str(tmp_path / "seeded.tar")
    with tarfile.open(busybox_tar) as src, tarfile.open(path, "w") as out:
        for member in src:
            out.addfile(member, src.extractfile(member) if member.isreg() else None)
        d = tarfile.TarInfo("data")
        d.type, d.mode, d.uid, d.gid = tarfile.DIRTYPE, 0o750, 1000, 1000
        out.addfile(d)
        f = tarfile.TarInfo("data/seed")
        f.size, f.mode, f.uid, f.gid = 5, 0o640, 1000, 1000
        out.addfile(f, io.BytesIO(b"seed\n"))
    fresh_berth("import", "-c", "VOLUME /data", "-c", 'CMD ["sh"]', path, "seeded")
    return "seeded"


# --- named volumes ---------------------------------------------------------------------

def test_named_volume_outlives_the_containers_that_use_it(fresh_berth):
    assert fresh_berth.out("volume", "create", "keep").strip() == "keep"
    fresh_berth("run", "--name", "writer", "-v", "keep:/data", "busybox", "sh", "-c",
                "echo kept > /data/f")
    fresh_berth("rm", "writer")
    assert fresh_berth.out("run", "--rm", "-v", "keep:/data", "busybox", "cat", "/data/f") == \
        "kept\n"
    info = json.loads(fresh_berth.out("volume", "inspect", "keep"))
    assert len(info) == 1 and info[0]["Name"] == "keep"
    assert info[0]["Driver"] == "local" and info[0]["Scope"] == "local"
    assert info[0]["Mountpoint"] == os.path.join(fresh_berth.root, "volumes", "keep", "_data")
    assert info[0]["CreatedAt"].endswith("Z")
    with open(os.path.join(info[0]["Mountpoint"], "f")) as f:
        assert f.read() == "kept\n"


def test_a_named_volume_is_made_on_first_use_and_shows_in_inspect(fresh_berth):
    fresh_berth("run", "--name", "first", "-v", "fresh:/v:ro", "busybox", "true")
    assert _volumes(fresh_berth) == {"fresh"}
    [mount] = _mounts(fresh_berth, "first")
    assert mount == {"Type": "volume", "Name": "fresh", "Destination": "/v", "Driver": "local",
                     "Mode": "ro", "RW": False, "Propagation": "",
                     "Source": os.path.join(fresh_berth.root, "volumes", "fresh", "_data")}
    fresh_berth("rm", "first")


def test_rm_v_removes_anonymous_volumes_but_not_named_ones(fresh_berth):
    fresh_berth("run", "--name", "both", "-v", "/scratch", "-v", "named:/named", "busybox", "sh",
                "-c", "echo a > /scratch/a; echo n > /named/n")
    anonymous = [m["Name"] for m in _mounts(fresh_berth, "both") if m["Destination"] == "/scratch"]
    assert len(anonymous[0]) == 64
    assert _volumes(fresh_berth) == {"named", anonymous[0]}
    fresh_berth("rm", "-v", "both")
    assert _volumes(fresh_berth) == {"named"}


def test_run_rm_takes_its_anonymous_volumes_along(fresh_berth):
    fresh_berth("run", "--rm", "-v", "/scratch", "-v", "stays:/s", "busybox", "true")
    assert _volumes(fresh_berth) == {"stays"}


def test_rm_without_v_leaves_a_dangling_anonymous_volume_for_prune(fresh_berth):
    fresh_berth("run", "--name", "anon", "-v", "/scratch", "busybox", "sh", "-c",
                "echo 12345 > /scratch/x")
    fresh_berth("volume", "create", "mine")
    fresh_berth("rm", "anon")
    [anonymous] = _volumes(fresh_berth) - {"mine"}
    dangling = fresh_berth.out("volume", "ls", "-q", "--filter", "dangling=true").split()
    assert sorted(dangling) == sorted([anonymous, "mine"])
    out = fresh_berth.out("volume", "prune", "-f")
    assert out == f"Deleted Volumes:\n{anonymous}\n\nTotal reclaimed space: 6B\n"
    assert _volumes(fresh_berth) == {"mine"}  # named ones only with -a
    assert fresh_berth.out("volume", "prune", "-f").strip() == "Total reclaimed space: 0B"
    assert "mine" in fresh_berth.out("volume", "prune", "-f", "-a")
    assert _volumes(fresh_berth) == set()


def test_prune_keeps_volumes_in_use(fresh_berth):
    fresh_berth("create", "--name", "holder", "-v", "/held", "busybox", "true")
    fresh_berth("volume", "prune", "-f", "-a")
    assert len(_volumes(fresh_berth)) == 1
    fresh_berth("rm", "-v", "holder")
    assert _volumes(fresh_berth) == set()


# --- copy-up ---------------------------------------------------------------------------

def test_image_volume_is_anonymous_and_gets_the_images_files(fresh_berth, seeded_image):
    out = fresh_berth.out("run", "--name", "sc", seeded_image, "sh", "-c",
                          "cat /data/seed; stat -c '%u %a' /data /data/seed")
    assert out == "seed\n1000 750\n1000 640\n"
    [mount] = _mounts(fresh_berth, "sc")
    assert mount["Type"] == "volume" and mount["Destination"] == "/data"
    assert len(mount["Name"]) == 64 and mount["RW"] is True
    info = json.loads(fresh_berth.out("volume", "inspect", mount["Name"]))[0]
    assert info["Labels"] == {"com.docker.volume.anonymous": ""}
    fresh_berth("rm", "-v", "sc")
    assert _volumes(fresh_berth) == set()


def test_copy_up_fills_an_empty_named_volume_once(fresh_berth, seeded_image):
    fresh_berth("run", "--rm", "-v", "shared:/data", seeded_image, "sh", "-c",
                "rm /data/seed; echo mine > /data/mine")
    # the volume is not empty any more: a second container sees it as it was left
    assert fresh_berth.out("run", "--rm", "-v", "shared:/data", seeded_image, "ls", "/data") == \
        "mine\n"


def test_copy_up_skips_non_empty_volumes_nocopy_and_binds(fresh_berth, seeded_image, tmp_path):
    fresh_berth("volume", "create", "full")
    with open(os.path.join(fresh_berth.root, "volumes", "full", "_data", "own"), "w") as f:
        f.write("own\n")
    assert fresh_berth.out("run", "--rm", "-v", "full:/data", seeded_image, "ls", "/data") == \
        "own\n"
    assert fresh_berth.out("run", "--rm", "--mount", "type=volume,source=nc,target=/data,"
                           "volume-nocopy", seeded_image, "ls", "/data") == ""
    host = tmp_path / "bind"
    host.mkdir()
    assert fresh_berth.out("run", "--rm", "-v", f"{host}:/data", seeded_image, "ls", "/data") == ""
    assert os.listdir(host) == []


def test_an_explicit_mount_replaces_the_image_volume(fresh_berth, seeded_image):
    fresh_berth("run", "--name", "tc", "--tmpfs", "/data", seeded_image, "true")
    assert [m["Type"] for m in _mounts(fresh_berth, "tc")] == ["tmpfs"]
    assert _volumes(fresh_berth) == set()
    fresh_berth("rm", "tc")


# --- in use ------------------------------------------------------------------------------

def test_volume_rm_refuses_a_volume_any_container_uses(fresh_berth):
    cid = fresh_berth.out("create", "--name", "idle", "-v", "busy:/b", "busybox", "true").strip()
    proc = fresh_berth("volume", "rm", "busy", check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"berth: remove busy: volume is in use - [{cid}]\n"
    assert fresh_berth("volume", "rm", "-f", "busy", check=False).returncode == 1
    fresh_berth("rm", "idle")
    assert fresh_berth.out("volume", "rm", "busy") == "busy\n"
    assert _volumes(fresh_berth) == set()


def test_volume_rm_of_a_running_containers_volume_fails_and_missing_ones_need_f(fresh_berth):
    fresh_berth("run", "-d", "--name", "live", "-v", "inuse:/x", "busybox", "sleep", "60")
    assert b"volume is in use" in fresh_berth("volume", "rm", "inuse", check=False).stderr
    missing = fresh_berth("volume", "rm", "nope", check=False)
    assert missing.returncode == 1 and missing.stderr == b"berth: get nope: no such volume\n"
    assert fresh_berth("volume", "rm", "-f", "nope").returncode == 0
    fresh_berth("rm", "-f", "live")
    fresh_berth("volume", "rm", "inuse")


def test_volumes_from_shares_volumes_and_binds_with_their_modes(fresh_berth, tmp_path):
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "h").write_text("host\n")
    fresh_berth("run", "--name", "src", "-v", "data:/data", "-v", f"{host}:/hb:ro", "busybox",
                "sh", "-c", "echo from-src > /data/f")
    out = fresh_berth.out("run", "--rm", "--volumes-from", "src", "busybox", "sh", "-c",
                          "cat /data/f /hb/h; echo more >> /data/f; touch /hb/x 2>/dev/null "
                          "|| echo hb-ro")
    assert out == "from-src\nhost\nhb-ro\n"
    ro = fresh_berth("run", "--rm", "--volumes-from", "src:ro", "busybox", "sh", "-c",
                     "cat /data/f; touch /data/g", check=False)
    assert ro.stdout == b"from-src\nmore\n" and ro.returncode != 0
    missing = fresh_berth("run", "--rm", "--volumes-from", "nope", "busybox", "true",
                          check=False)
    assert missing.returncode == 125 and b"No such container: nope" in missing.stderr
    fresh_berth("rm", "src")


# --- --mount -----------------------------------------------------------------------------

def test_mount_bind_readonly_and_missing_source(fresh_berth, tmp_path):
    host = tmp_path / "src"
    host.mkdir()
    (host / "f").write_text("bound\n")
    out = fresh_berth.out("run", "--rm", "--mount",
                          f"type=bind,source={host},target=/b,readonly,bind-propagation=rslave",
                          "busybox", "sh", "-c", "cat /b/f; touch /b/x 2>/dev/null || echo ro")
    assert out == "bound\nro\n"
    proc = fresh_berth("run", "--rm", "--mount", f"type=bind,src={tmp_path}/nope,dst=/b",
                       "busybox", "true", check=False)
    assert proc.returncode == 125
    assert proc.stderr.decode() == ('berth: invalid mount config for type "bind": bind source '
                                    f"path does not exist: {tmp_path}/nope\n")
    assert not (tmp_path / "nope").exists()  # unlike -v, --mount makes nothing


def test_mount_volume_readonly_and_tmpfs_size_and_mode(fresh_berth):
    fresh_berth("run", "--rm", "--mount", "source=mv,target=/v", "busybox", "sh", "-c",
                "echo x > /v/x")
    out = fresh_berth.out("run", "--rm", "--mount", "type=volume,source=mv,target=/v,ro=true",
                          "busybox", "sh", "-c", "cat /v/x; touch /v/y 2>/dev/null || echo ro")
    assert out == "x\nro\n"
    out = fresh_berth.out("run", "--rm", "--mount", "type=tmpfs,target=/t,tmpfs-size=1m,"
                          "tmpfs-mode=1770", "busybox", "sh", "-c",
                          "grep ' /t ' /proc/mounts; stat -c %a /t")
    line, mode = out.splitlines()
    assert "tmpfs /t tmpfs" in line and "size=1024k" in line and mode == "1770"


def test_volume_options_mount_a_tmpfs_or_bind_another_directory(fresh_berth, tmp_path):
    fresh_berth("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=1m",
                "tv")
    line = fresh_berth.out("run", "--rm", "-v", "tv:/t", "busybox", "grep", " /t ", "/proc/mounts")
    assert line.startswith("tmpfs /t tmpfs ") and "size=1024k" in line
    (tmp_path / "f").write_text("elsewhere\n")
    fresh_berth("volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={tmp_path}",
                "bv")
    assert fresh_berth.out("run", "--rm", "-v", "bv:/b", "busybox", "cat", "/b/f") == "elsewhere\n"
    assert json.loads(fresh_berth.out("volume", "inspect", "bv"))[0]["Options"] == {
        "type": "none", "o": "bind", "device": str(tmp_path)}
    for args, message in ((["-o", "type=nfs"], b"mounts only type=tmpfs"),
                          (["-o", "foo=1"], b"invalid option key: 'foo'"),
                          (["-d", "flocker"], b"volume driver 'flocker' is not supported")):
        proc = fresh_berth("volume", "create", *args, "nope", check=False)
        assert proc.returncode == 1 and message in proc.stderr
    assert _volumes(fresh_berth) == {"tv", "bv"}


# --- ls, inspect, concurrency --------------------------------------------------------------

def test_volume_ls_filters_and_inspect(fresh_berth):
    fresh_berth("volume", "create", "-l", "team=a", "alpha")
    fresh_berth("volume", "create", "--name", "beta", "--label", "team=b")
    fresh_berth("create", "--name", "user", "-v", "beta:/b", "busybox", "true")
    table = fresh_berth.out("volume", "ls").splitlines()
    assert table[0].split() == ["DRIVER", "VOLUME", "NAME"]
    assert [line.split() for line in table[1:]] == [["local", "alpha"], ["local", "beta"]]
    assert fresh_berth.out("volume", "ls", "-q", "-f", "label=team=b") == "beta\n"
    assert fresh_berth.out("volume", "ls", "-q", "-f", "label=team") == "alpha\nbeta\n"
    assert fresh_berth.out("volume", "ls", "-q", "-f", "name=alp") == "alpha\n"
    assert fresh_berth.out("volume", "ls", "-q", "-f", "dangling=false") == "beta\n"
    assert fresh_berth.out("volume", "inspect", "-f", "{{.Name}} {{.Labels}}", "alpha") == \
        "alpha map[team:a]\n"
    proc = fresh_berth("volume", "inspect", "alpha", "ghost", check=False)
    assert proc.returncode == 1 and json.loads(proc.stdout)[0]["Name"] == "alpha"
    assert b"no such volume" in proc.stderr
    bad = fresh_berth("volume", "create", "bad/name", check=False)
    assert bad.returncode == 1 and b"includes invalid characters" in bad.stderr
    fresh_berth("rm", "user")


def test_concurrent_creates_of_one_name_make_one_volume(tmp_path):
    store = VolumeStore(str(tmp_path))
    results, errors = [], []

    def create():
        try:
            results.append(store.create("racy", labels={"n": "1"}))
        except Exception as exc:  # noqa: BLE001 - any failure fails the test
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({json.dumps(r, sort_keys=True) for r in results}) == 1
    assert sorted(os.listdir(tmp_path / "volumes")) == [".lock", "racy"] or \
        sorted(os.listdir(tmp_path / "volumes")) == ["racy"]


# --- pure parts ------------------------------------------------------------------------------

def test_dash_v_tells_binds_named_and_anonymous_volumes_apart():
    assert parse_volume("/srv:/data:ro") == BindSpec("/srv", "/data", True)
    assert parse_volume("cache:/data:ro,nocopy") == VolumeSpec("/data", "cache", True, True)
    assert parse_volume("/data/") == VolumeSpec("/data")
    assert parse_volume("./rel:/r").source == os.path.abspath("rel")
    for bad in ("/data:ro", "a:b:c:d", "bad name:/x"):
        with pytest.raises(InvalidArgument):
            parse_volume(bad)


def test_mount_flag_parses_docker_csv_and_rejects_what_does_not_fit(tmp_path):
    assert parse_mount(f"type=bind,source={tmp_path},target=/b,readonly") == \
        BindSpec(str(tmp_path), "/b", True)
    assert parse_mount("target=/v") == VolumeSpec("/v")
    assert parse_mount("type=tmpfs,dst=/t,tmpfs-size=64k,tmpfs-mode=700") == \
        ("/t", "size=65536,mode=700")
    for bad, message in (("type=bind,target=/b", "field Source must not be empty"),
                         ("type=tmpfs,source=x,target=/t", "Source must not be specified"),
                         ("type=volume,target=rel", "mount path must be absolute"),
                         ("type=volume,target=/v,bind-propagation=rslave", "BindOptions"),
                         ("type=volume,source=v", "target is required"),
                         ("type=volume,target=/v,bogus=1", "unexpected key 'bogus'")):
        with pytest.raises(InvalidArgument, match=message):
            parse_mount(bad)


def test_user_mounts_put_parents_before_children_and_bind_volumes():
    opts = RunOptions(volumes=(VolumeSpec("/data/logs", "l", source="/v/l"),
                               VolumeSpec("/data", "d", True, source="/v/d")),
                      tmpfs=(("/data/logs/tmp", ""),))
    mounts = user_mounts(opts)
    assert [m.destination for m in mounts] == ["/data", "/data/logs", "/data/logs/tmp"]
    assert mounts[0].type == "bind" and mounts[0].options == ("rbind", "rprivate", "ro")
    with pytest.raises(InvalidArgument, match="no host directory"):
        user_mounts(RunOptions(volumes=(VolumeSpec("/x", "unresolved"),)))
