"""save / load / export: round trips, interop with podman and skopeo, hostile archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import pathlib
import pty
import shutil
import subprocess
import tarfile
import tempfile

import pytest

from conftest import Berth

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


# --- helpers -------------------------------------------------------------------------------


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_tar(members) -> bytes:
    """members: (name, bytes) for files, (name, None, target) for symlinks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info = tarfile.TarInfo(member[0])
            if member[1] is None:
                info.type, info.linkname = tarfile.SYMTYPE, member[2]
                tar.addfile(info)
            else:
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
    return buf.getvalue()


def hello_layer() -> bytes:
    """A layer no store here has yet: a leaked blob or snapshot of it would show."""
    return make_tar([("hello", b"hello from a hostile archive\n" * 3000)])


def config_for(diff_ids) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                       "rootfs": {"type": "layers", "diff_ids": list(diff_ids)}}).encode()


def docker_archive(layer: bytes, *, diff_id: str | None = None, layer_path: str = "abc/layer.tar",
                   listed: str | None = None, extra=(), config: bytes | None = None) -> bytes:
    """A classic docker-archive: <id>/layer.tar, <hex>.json, manifest.json."""
    config = config or config_for([diff_id or sha(layer)])
    config_name = sha(config)[7:] + ".json"
    manifest = [{"Config": config_name, "RepoTags": ["hostile:latest"],
                 "Layers": [listed or layer_path]}]
    return make_tar([(layer_path, layer), (config_name, config),
                     ("manifest.json", json.dumps(manifest).encode()), *extra])


def oci_archive(layer: bytes, *, stored_layer: bytes | None = None, media_type: str = OCI_LAYER,
                diff_id: str | None = None) -> bytes:
    """An OCI archive of one image; `layer` is the blob as the manifest describes it."""
    config = config_for([diff_id or sha(layer)])
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": media_type, "digest": sha(layer), "size": len(layer)}]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest),
         "size": len(manifest), "annotations": {
             "org.opencontainers.image.ref.name": "docker.io/library/hostile:latest"}}]}).encode()
    stored = layer if stored_layer is None else stored_layer
    return make_tar([("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index),
                     ("blobs/sha256/" + sha(config)[7:], config),
                     ("blobs/sha256/" + sha(manifest)[7:], manifest),
                     ("blobs/sha256/" + sha(layer)[7:], stored)])


def store_files(root: str) -> set[str]:
    out = set()
    for sub in ("content", "snapshots"):
        base = os.path.join(root, sub)
        for dirpath, dirnames, filenames in os.walk(base):
            for name in dirnames + filenames:
                out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def members(path: str) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name.rstrip("/"): m for m in tar.getmembers()}


def read_member(path: str, name: str) -> bytes:
    with tarfile.open(path) as tar:
        return tar.extractfile(name).read()


def image_ids(b: Berth) -> dict[str, str]:
    """name -> image ID, as `images` lists them."""
    out = {}
    for line in b.out("images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}",
                      check=False).splitlines():
        name, _, image_id = line.partition(" ")
        out[name] = image_id
    return out


def inspect_id(b: Berth, ref: str) -> str:
    return b.out("image", "inspect", "-f", "{{.Id}}", ref).strip()


@pytest.fixture
def other_root(tmp_path) -> Berth:
    """A second, empty berth root to load into."""
    return Berth(str(tmp_path / "other"))


# --- save and load ---------------------------------------------------------------------------


def test_save_then_load_into_a_fresh_root_keeps_id_names_and_runs(fresh_berth, other_root,
                                                                    tmp_path):
    fresh_berth("tag", "busybox", "busybox:v2")
    archive = str(tmp_path / "busybox.tar")
    fresh_berth("save", "-o", archive, "busybox")
    image_id = inspect_id(fresh_berth, "busybox")

    out = other_root.out("load", "-i", archive)

    assert out.splitlines() == ["Loaded image: busybox:latest", "Loaded image: busybox:v2"]
    assert inspect_id(other_root, "busybox:latest") == image_id
    assert inspect_id(other_root, "busybox:v2") == image_id
    assert other_root.out("run", "--rm", "--network", "none", "busybox:v2",
                          "echo", "round trip") == "round trip\n"


def test_save_writes_the_docker_layout_and_an_oci_layout_in_one_tar(fresh_berth, tmp_path):
    archive = str(tmp_path / "b.tar")
    fresh_berth("save", "-o", archive, "busybox")
    names = members(archive)
    manifest = json.loads(read_member(archive, "manifest.json"))
    index = json.loads(read_member(archive, "index.json"))

    assert manifest[0]["RepoTags"] == ["busybox:latest"]
    for path in [manifest[0]["Config"], *manifest[0]["Layers"]]:
        assert path.startswith("blobs/sha256/") and path in names
    assert json.loads(read_member(archive, "repositories")) == {
        "busybox": {"latest": manifest[0]["Layers"][-1].rpartition("/")[2]}}
    assert read_member(archive, "oci-layout") == b'{"imageLayoutVersion":"1.0.0"}'
    entry = index["manifests"][0]
    assert entry["annotations"] == {"io.containerd.image.name": "docker.io/library/busybox:latest",
                                    "org.opencontainers.image.ref.name": "latest"}
    blob = read_member(archive, "blobs/sha256/" + entry["digest"][7:])
    assert sha(blob) == entry["digest"]
    # every blob is named by what it hashes to
    for name, info in names.items():
        if info.isfile() and name.startswith("blobs/sha256/"):
            assert sha(read_member(archive, name))[7:] == name.rpartition("/")[2]


def test_save_of_two_images_and_two_tags_loads_every_name(fresh_berth, other_root, busybox_tar,
                                                           tmp_path):
    fresh_berth("tag", "busybox", "busybox:v2")
    fresh_berth("import", "-c", 'CMD ["echo", "other"]', busybox_tar, "localhost/other:1")
    archive = str(tmp_path / "two.tar")
    fresh_berth("save", "-o", archive, "busybox", "localhost/other:1")

    entries = json.loads(read_member(archive, "manifest.json"))
    assert sorted(tag for e in entries for tag in e["RepoTags"]) == \
        ["busybox:latest", "busybox:v2", "localhost/other:1"]
    # the shared layer is written once
    layer_names = [n for n in members(archive) if n.startswith("blobs/sha256/")]
    assert len(layer_names) == len(set(layer_names))

    out = other_root.out("load", "-i", archive)
    assert sorted(out.splitlines()) == ["Loaded image: busybox:latest",
                                        "Loaded image: busybox:v2",
                                        "Loaded image: localhost/other:1"]
    assert image_ids(other_root) == image_ids(fresh_berth)


def test_save_to_stdout_and_load_from_stdin(fresh_berth, other_root):
    data = fresh_berth("save", "busybox").stdout
    assert tarfile.is_tarfile(io.BytesIO(data))

    out = other_root.out("load", input=data)

    assert out == "Loaded image: busybox:latest\n"
    assert inspect_id(other_root, "busybox") == inspect_id(fresh_berth, "busybox")


def test_save_refuses_to_write_to_a_terminal(berth):
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run(berth.cmd("save", "busybox"), env=berth.env, stdout=terminal,
                              stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(terminal)
        os.close(controller)
    assert proc.returncode == 1
    assert proc.stderr.decode() == ("berth: cowardly refusing to save to a terminal. Use the -o "
                                    "flag or redirect\n")


@pytest.mark.parametrize("compress", [lambda d: gzip.compress(d, compresslevel=1),
                                      lambda d: lzma.compress(d, preset=0)], ids=["gzip", "xz"])
def test_compressed_archive_loads(fresh_berth, other_root, tmp_path, compress):
    archive = tmp_path / "b.tar.z"
    archive.write_bytes(compress(fresh_berth("save", "busybox").stdout))

    assert other_root.out("load", "-q", "-i", str(archive)) == "Loaded image: busybox:latest\n"
    assert inspect_id(other_root, "busybox") == inspect_id(fresh_berth, "busybox")


def test_save_is_byte_for_byte_repeatable(berth):
    assert berth("save", "busybox").stdout == berth("save", "busybox").stdout


def test_save_of_a_repository_takes_all_its_tags_and_an_id_none(fresh_berth, other_root,
                                                                  tmp_path):
    fresh_berth("tag", "busybox", "busybox:v2")
    by_repo, by_id = str(tmp_path / "repo.tar"), str(tmp_path / "id.tar")
    fresh_berth("save", "-o", by_repo, "busybox")
    fresh_berth("save", "-o", by_id, inspect_id(fresh_berth, "busybox")[7:19])

    assert json.loads(read_member(by_repo, "manifest.json"))[0]["RepoTags"] == \
        ["busybox:latest", "busybox:v2"]
    assert json.loads(read_member(by_id, "manifest.json"))[0]["RepoTags"] is None
    out = other_root.out("load", "-i", by_id)
    assert out == f"Loaded image ID: {inspect_id(fresh_berth, 'busybox')}\n"


def test_oci_archive_format_is_a_plain_oci_layout(fresh_berth, other_root, tmp_path):
    archive = str(tmp_path / "oci.tar")
    fresh_berth("save", "--format", "oci-archive", "-o", archive, "busybox")

    assert "manifest.json" not in members(archive)
    assert other_root.out("load", "-i", archive) == "Loaded image: busybox:latest\n"


def test_load_of_a_taken_name_leaves_the_old_image_untagged(fresh_berth, busybox_tar, tmp_path):
    archive = str(tmp_path / "b.tar")
    fresh_berth("save", "-o", archive, "busybox")
    old = inspect_id(fresh_berth, "busybox")
    fresh_berth("rmi", "busybox")
    fresh_berth("import", "-c", 'CMD ["true"]', busybox_tar, "busybox")
    displaced = inspect_id(fresh_berth, "busybox")

    out = fresh_berth.out("load", "-i", archive)

    assert out.splitlines() == [
        f"The image busybox:latest already exists, renaming the old one with ID {displaced} "
        "to empty string", "Loaded image: busybox:latest"]
    assert inspect_id(fresh_berth, "busybox") == old
    assert inspect_id(fresh_berth, displaced) == displaced


def test_save_of_an_unknown_image_fails_without_output(berth, tmp_path):
    target = tmp_path / "never.tar"
    proc = berth("save", "-o", str(target), "busybox", "nosuchimage", check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode().startswith("berth: No such image: nosuchimage")
    assert list(tmp_path.iterdir()) == []


def test_gzip_layers_are_kept_and_saved_plain_in_a_docker_archive(fresh_berth, other_root,
                                                                   tmp_path):
    layer = hello_layer()
    (tmp_path / "gz.tar").write_bytes(oci_archive(gzip.compress(layer), diff_id=sha(layer),
                                                  media_type=OCI_LAYER + "+gzip"))
    fresh_berth("load", "-i", str(tmp_path / "gz.tar"))
    saved = str(tmp_path / "saved.tar")
    fresh_berth("save", "-o", saved, "hostile")

    entry = json.loads(read_member(saved, "manifest.json"))[0]
    assert entry["Layers"] == ["blobs/sha256/" + sha(layer)[7:]]
    assert read_member(saved, entry["Layers"][0]) == layer  # docker-archive layers are plain
    # the OCI view keeps the stored, compressed blob and its manifest
    index = json.loads(read_member(saved, "index.json"))
    manifest = json.loads(read_member(saved, "blobs/sha256/" + index["manifests"][0]["digest"][7:]))
    assert manifest["layers"][0]["mediaType"] == OCI_LAYER + "+gzip"
    assert other_root.out("load", "-i", saved) == "Loaded image: hostile:latest\n"
    assert inspect_id(other_root, "hostile") == inspect_id(fresh_berth, "hostile")
    oci_only = str(tmp_path / "oci.tar")
    fresh_berth("save", "--format", "oci-archive", "-o", oci_only, "hostile")
    assert "blobs/sha256/" + sha(layer)[7:] not in members(oci_only)


def test_an_old_archive_with_an_xz_layer_is_stored_plain(fresh_berth, tmp_path):
    layer = hello_layer()
    archive = docker_archive(lzma.compress(layer, preset=0), diff_id=sha(layer))
    (tmp_path / "xz.tar").write_bytes(archive)

    assert fresh_berth.out("load", "-i", str(tmp_path / "xz.tar")) == \
        "Loaded image: hostile:latest\n"
    assert os.path.exists(os.path.join(fresh_berth.root, "content", "blobs", "sha256",
                                       sha(layer)[7:]))


# --- hostile archives ------------------------------------------------------------------------


def _truncated() -> bytes:
    whole = docker_archive(hello_layer())
    return whole[: len(whole) // 2]


def _bad_oci_blob() -> bytes:
    layer = hello_layer()
    return oci_archive(layer, stored_layer=layer[:-600] + b"X" * 600)


HOSTILE = {
    "diff_id_mismatch": (lambda: docker_archive(hello_layer(), diff_id="sha256:" + "0" * 64),
                         "diff ID"),
    "missing_layer": (lambda: docker_archive(hello_layer(), listed="gone/layer.tar"),
                      "manifest.json names layer gone/layer.tar, which the archive does not"),
    "truncated": (_truncated, "the archive is truncated"),
    "oci_blob_mismatch": (_bad_oci_blob, "does not match its digest"),
    "gzip_layer_diff_id_mismatch": (
        lambda: oci_archive(gzip.compress(hello_layer()), media_type=OCI_LAYER + "+gzip",
                            diff_id=sha(b"not this layer")), "has diff ID"),
    "unknown_media_type": (lambda: oci_archive(hello_layer(), media_type="application/x-unknown"),
                           "unsupported media type application/x-unknown"),
    "escaping_member": (lambda: docker_archive(hello_layer(), extra=[("../evil", b"x")]),
                        "archive member '../evil' points outside the archive"),
    "absolute_member": (lambda: docker_archive(hello_layer(), extra=[("/etc/evil", b"x")]),
                        "archive member '/etc/evil' points outside the archive"),
    "escaping_symlink": (lambda: docker_archive(hello_layer(), extra=[("up", None, "../../etc")]),
                         "links to '../../etc', outside the archive"),
    "malformed_config": (
        lambda: docker_archive(hello_layer(), config=b'{"architecture":"amd64","os":"linux",'
                                                     b'"rootfs":"nope"}'),
        "is not a valid ImageConfig"),
    "not_a_tar": (lambda: os.urandom(4096), "not a tar archive"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_fails_with_one_line_and_leaves_the_store_as_it_was(fresh_berth,
                                                                          tmp_path, case):
    build, expected = HOSTILE[case]
    archive = tmp_path / f"{case}.tar"
    archive.write_bytes(build())
    before = store_files(fresh_berth.root)

    proc = fresh_berth("load", "-i", str(archive), check=False)

    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.startswith("berth: ") and err.count("\n") == 1, err
    assert expected in err
    assert "Traceback" not in err
    assert store_files(fresh_berth.root) == before
    assert os.listdir(os.path.join(fresh_berth.root, "content", "ingest")) == []


def test_the_hostile_fixtures_are_otherwise_loadable(fresh_berth, tmp_path):
    """The hostile cases differ from these only in the one thing they break."""
    for name, data in (("d", docker_archive(hello_layer())), ("o", oci_archive(hello_layer()))):
        (tmp_path / name).write_bytes(data)
        assert fresh_berth.out("load", "-i", str(tmp_path / name)) == \
            "Loaded image: hostile:latest\n"


def test_load_follows_podman_style_layer_symlinks(fresh_berth, tmp_path):
    layer = hello_layer()
    hexname = sha(layer)[7:]
    config = config_for([sha(layer)])
    manifest = [{"Config": sha(config)[7:] + ".json", "RepoTags": ["localhost/linked:1"],
                 "Layers": ["v1id/layer.tar"]}]
    (tmp_path / "l.tar").write_bytes(make_tar([
        (hexname + ".tar", layer), ("v1id/layer.tar", None, "../" + hexname + ".tar"),
        (sha(config)[7:] + ".json", config), ("manifest.json", json.dumps(manifest).encode())]))

    assert fresh_berth.out("load", "-i", str(tmp_path / "l.tar")) == \
        "Loaded image: localhost/linked:1\n"


# --- export ----------------------------------------------------------------------------------


def test_export_round_trips_through_import(berth, tmp_path):
    name = f"exp-{os.getpid()}"
    berth("run", "--name", name, "--network", "none", "busybox", "sh", "-c",
          "mkdir -p /data/sub && echo kept > /data/sub/file && ln -s sub/file /data/link "
          "&& ln /data/sub/file /data/hard && mkfifo /data/fifo")
    archive = str(tmp_path / "c.tar")
    try:
        berth("export", "-o", archive, name)
        berth("import", archive, "exported-copy")
        out = berth.out("run", "--rm", "--network", "none", "exported-copy", "sh", "-c",
                        "cat /data/sub/file /data/link; stat -c '%h %F' /data/hard /data/fifo; "
                        "ls /bin/busybox")
    finally:
        berth("rm", "-f", name, check=False)
        berth("rmi", "exported-copy", check=False)
    assert out == "kept\nkept\n2 regular file\n1 fifo\n/bin/busybox\n"
    names = members(archive)
    assert "data/sub/file" in names and not any(n.startswith(("./", "/")) for n in names)


def test_export_leaves_out_what_the_container_deleted(berth, tmp_path):
    name = f"exp-del-{os.getpid()}"
    berth("run", "--name", name, "--network", "none", "busybox", "sh", "-c",
          "rm /bin/ls && rm -rf /home && mkdir /home && touch /home/new")
    try:
        data = berth("export", name).stdout
    finally:
        berth("rm", "-f", name, check=False)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = {m.name.rstrip("/") for m in tar.getmembers()}
        kinds = {m.name.rstrip("/"): m.type for m in tar.getmembers()}
    assert "bin/ls" not in names
    assert "bin/cat" in names and kinds["bin/cat"] == tarfile.SYMTYPE
    assert "home/new" in names
    assert not any(n.rpartition("/")[2].startswith(".wh.") for n in names)
    # nothing of a running container's mounts: /proc and /sys are empty directories
    assert not any(n.startswith(("proc/", "sys/")) for n in names)


def test_export_of_an_unknown_container_fails(berth):
    proc = berth("export", "nosuchcontainer", check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode().startswith("berth: ") and "nosuchcontainer" in proc.stderr.decode()


# --- peers -----------------------------------------------------------------------------------


@pytest.fixture
def podman():
    """podman on a store of its own, cleaned up afterwards, mounts included."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    # podman refuses a runroot path of 50 characters or more: pytest's tmp_path is longer
    base = pathlib.Path(tempfile.mkdtemp(prefix="berth-podman-", dir="/tmp"))
    conf = base / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n')
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    prefix = ["podman", "--root", str(base / "root"), "--runroot", str(base / "runroot"),
              "--runtime", "runc"]

    def run(*args, check=True):
        proc = subprocess.run(prefix + list(args), env=env, capture_output=True, timeout=300)
        if check and proc.returncode:
            raise AssertionError(f"podman {' '.join(args)}: {proc.stderr.decode()}")
        return proc

    yield run
    run("rmi", "-af", check=False)
    with open("/proc/self/mountinfo") as f:
        mounted = [line.split()[4] for line in f if str(base) in line.split()[4]]
    for mountpoint in sorted(mounted, key=len, reverse=True):
        subprocess.run(["umount", "-l", mountpoint], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.peers
def test_podman_loads_and_runs_what_berth_saves(berth, podman, tmp_path):
    archive = str(tmp_path / "b.tar")
    berth("save", "-o", archive, "busybox")

    loaded = podman("load", "-i", archive).stdout.decode()
    out = podman("run", "--rm", "--network", "none", "busybox", "echo", "hello from podman")

    assert "Loaded image: docker.io/library/busybox:latest" in loaded
    assert out.stdout.decode() == "hello from podman\n"
    assert podman("image", "inspect", "-f", "{{.Id}}", "busybox").stdout.decode().strip() == \
        inspect_id(berth, "busybox")[7:]


@pytest.mark.peers
def test_podman_loads_an_archive_of_two_tags(berth, podman, tmp_path):
    berth("tag", "busybox", "busybox:peer-two")
    try:
        archive = str(tmp_path / "b.tar")
        berth("save", "-o", archive, "busybox:latest", "busybox:peer-two")
    finally:
        berth("rmi", "busybox:peer-two")
    loaded = podman("load", "-i", archive).stdout.decode()
    assert "busybox:latest" in loaded and "busybox:peer-two" in loaded
    assert podman("run", "--rm", "--network", "none", "busybox:peer-two", "true").returncode == 0


@pytest.mark.peers
@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_berth_loads_and_runs_what_podman_saves(fresh_berth, podman, busybox_tar, tmp_path, fmt):
    podman("import", busybox_tar, "localhost/pbox")
    archive = str(tmp_path / f"{fmt}.tar")
    podman("save", "--format", fmt, "-o", archive, "localhost/pbox")
    podman_id = podman("image", "inspect", "-f", "{{.Id}}", "localhost/pbox").stdout.decode()

    assert fresh_berth.out("load", "-i", archive) == "Loaded image: localhost/pbox:latest\n"
    assert inspect_id(fresh_berth, "localhost/pbox") == "sha256:" + podman_id.strip()
    assert fresh_berth.out("run", "--rm", "--network", "none", "localhost/pbox", "echo",
                           fmt) == f"{fmt}\n"


@pytest.mark.peers
def test_skopeo_reads_the_store_and_berth_loads_skopeo_archives(berth, other_root, tmp_path):
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    layout = f"oci:{tmp_path}/layout:busybox"
    image_id = inspect_id(berth, "busybox")

    def skopeo(*args):
        subprocess.run(["skopeo", "copy", "-q", *args], check=True, capture_output=True,
                       timeout=120)

    # berth's content store is an OCI layout skopeo reads as is
    skopeo(f"oci:{berth.root}/content:docker.io/library/busybox:latest", layout)
    skopeo(layout, f"oci-archive:{tmp_path}/x.tar:busybox")
    skopeo(layout, f"oci-archive:{tmp_path}/named.tar:docker.io/library/busybox:skopeo")
    skopeo(layout, f"docker-archive:{tmp_path}/d.tar:busybox:latest")

    # a bare ref.name ("busybox") is only a tag, as containerd reads it: the image loads untagged
    assert other_root.out("load", "-i", f"{tmp_path}/x.tar") == f"Loaded image ID: {image_id}\n"
    assert other_root.out("load", "-i", f"{tmp_path}/named.tar") == \
        "Loaded image: busybox:skopeo\n"
    assert other_root.out("load", "-i", f"{tmp_path}/d.tar") == "Loaded image: busybox:latest\n"
    assert inspect_id(other_root, "busybox:latest") == image_id
    assert other_root.out("run", "--rm", "--network", "none", image_id, "echo", "via skopeo") == \
        "via skopeo\n"
