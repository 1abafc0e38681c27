"""Garbage collection, prune, df, image filters and rmi rules, on real stores.

The mark is pure and tested on documents in a dict; everything else drives the real CLI
on a root of its own (fresh_berth), because these tests count and delete things.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- helpers --------------------------------------------------------------------------


def variant_tar(busybox_tar: str, dest: str, files: dict[str, bytes]) -> str:
    """The busybox root filesystem plus `files`: a runnable image with a layer of its own."""
    with tarfile.open(busybox_tar) as src, tarfile.open(dest, "w") as out:
        for member in src:
            out.addfile(member, src.extractfile(member) if member.isfile() else None)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            out.addfile(info, io.BytesIO(data))
    return dest


def parse_size(text: str) -> float:
    """Docker's human sizes back to bytes: '2.14MB' -> 2140000."""
    m = re.fullmatch(r"([0-9.]+)(B|kB|MB|GB|TB)", text.strip())
    assert m, text
    return float(m.group(1)) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[m.group(2)]


def human(size: float) -> str:
    units = ("B", "kB", "MB", "GB", "TB")
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.4g}{units[i]}"


def tree_bytes(path: str, seen: set | None = None) -> int:
    """Apparent bytes of everything under `path` (directories included), each inode once."""
    seen = set() if seen is None else seen
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in filenames + dirnames
                                 if not os.path.isdir(os.path.join(dirpath, n))
                                 or os.path.islink(os.path.join(dirpath, n))]:
            st = os.lstat(name)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def store_bytes(root: str) -> int:
    """What the image store holds: blob files plus every snapshot's tree."""
    blobs = os.path.join(root, "content", "blobs", "sha256")
    total = sum(os.lstat(os.path.join(blobs, n)).st_size for n in os.listdir(blobs))
    snaps = os.path.join(root, "snapshots")
    for name in os.listdir(snaps) if os.path.isdir(snaps) else ():
        total += tree_bytes(os.path.join(snaps, name))
    return total


def snapshots(root: str) -> list[str]:
    path = os.path.join(root, "snapshots")
    return sorted(n for n in os.listdir(path) if not n.startswith("."))


def blobs(root: str) -> set[str]:
    return set(os.listdir(os.path.join(root, "content", "blobs", "sha256")))


def image_ids(b, *args) -> list[str]:
    return b.out("images", "-q", "--no-trunc", *args).split()


def reclaimed(out: str) -> float:
    m = re.search(r"^Total reclaimed space: (\S+)$", out, re.M)
    assert m, out
    return parse_size(m.group(1))


# --- mark: pure -----------------------------------------------------------------------


def _doc(docs: dict, obj) -> tuple[str, int]:
    raw = json.dumps(obj).encode()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    docs[digest] = raw
    return digest, len(raw)


def _fake(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def _image(docs: dict, layers: list[str], media: str, arch: str = "amd64") -> dict:
    config_digest, config_size = _doc(docs, {
        "architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": layers}})
    config_media = ("application/vnd.docker.container.image.v1+json" if "docker" in media
                    else "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": media,
                "config": {"mediaType": config_media, "digest": config_digest,
                           "size": config_size},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": d, "size": 1} for d in layers]}
    digest, size = _doc(docs, manifest)
    return {"mediaType": media, "digest": digest, "size": size, "config": config_digest}


def test_mark_follows_manifests_of_both_kinds_and_indexes_recursively():
    from berth.image.gc import mark
    from berth.oci import digest as _digest
    from berth.oci.image import Descriptor

    docs: dict = {}
    base, top, other = _fake("base"), _fake("top"), _fake("other")
    oci_img = _image(docs, [base, top], "application/vnd.oci.image.manifest.v1+json")
    docker_img = _image(docs, [base], "application/vnd.docker.distribution.manifest.v2+json",
                        arch="arm64")
    nested = _image(docs, [other], "application/vnd.oci.image.manifest.v1+json", arch="s390x")
    inner_index, inner_size = _doc(docs, {"schemaVersion": 2, "manifests": [
        {"mediaType": nested["mediaType"], "digest": nested["digest"], "size": nested["size"]}]})
    index, index_size = _doc(docs, {
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {"mediaType": docker_img["mediaType"], "digest": docker_img["digest"],
             "size": docker_img["size"], "platform": {"architecture": "arm64", "os": "linux"}},
            {"digest": inner_index, "size": inner_size,  # no media type: its shape decides
             "mediaType": "application/vnd.oci.image.index.v1+json"}]})
    garbage = _image(docs, [_fake("garbage")], "application/vnd.oci.image.manifest.v1+json")

    roots = [Descriptor(oci_img["mediaType"], oci_img["digest"], oci_img["size"]),
             Descriptor(None, index, index_size)]
    marked = mark(roots, docs.get)

    assert marked.blobs == {oci_img["digest"], oci_img["config"], base, top, index,
                            docker_img["digest"], docker_img["config"], inner_index,
                            nested["digest"], nested["config"], other}
    assert garbage["digest"] not in marked.blobs and garbage["config"] not in marked.blobs
    assert marked.chains == set(_digest.chain_ids([base, top])) | {base, other}
    assert marked.missing == set()


def test_mark_reports_missing_documents_and_survives_garbage_and_cycles():
    from berth.image.gc import mark
    from berth.oci.image import Descriptor

    docs: dict = {}
    img = _image(docs, [_fake("l")], "application/vnd.oci.image.manifest.v1+json")
    del docs[img["config"]]  # the config is gone: its layers are still kept
    not_json = "sha256:" + hashlib.sha256(b"{nope").hexdigest()
    docs[not_json] = b"{nope"
    # an index that lists itself cannot be written by content addressing, but a
    # reader must not trust that
    loop = _fake("loop")
    docs[loop] = json.dumps({"manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
                                            "digest": loop, "size": 1}]}).encode()
    roots = [Descriptor(img["mediaType"], img["digest"], img["size"]),
             Descriptor(None, not_json, 5), Descriptor(None, loop, 1),
             Descriptor(None, _fake("absent"), 1)]
    marked = mark(roots, docs.get)
    assert {img["digest"], _fake("l"), not_json, loop} <= marked.blobs
    assert marked.missing == {img["config"], _fake("absent")}
    assert marked.chains == set()


# --- leases ---------------------------------------------------------------------------


def test_lease_is_reentrant_and_never_upgraded(tmp_path):
    from berth.content import ContentStore

    store = ContentStore(str(tmp_path / "content"))
    with store.lease():
        with store.lease():
            pass
        with pytest.raises(RuntimeError):
            store.lease(exclusive=True).acquire()
    with store.lease(exclusive=True):
        with store.lease():  # the collector may unpack while it holds the store
            pass


def _can_lock_exclusively(path: str) -> bool:
    code = ("import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n"
            "    sys.exit(1)\n")
    return subprocess.run([sys.executable, "-c", code, path]).returncode == 0


def test_nested_leases_on_two_spellings_of_one_store_share_one_lock(tmp_path):
    """POSIX locks drop when any descriptor of the file closes: the inner lease must not
    open (and then close) one of its own."""
    from berth.content import ContentStore

    outer = ContentStore(str(tmp_path / "content"))
    inner = ContentStore(str(tmp_path / "." / "content") + "/")
    lock = os.path.join(outer.root, "gc.lock")
    with outer.lease():
        with inner.lease():
            pass
        assert not _can_lock_exclusively(lock)
    assert _can_lock_exclusively(lock)


def test_a_forked_child_does_not_keep_a_lease(tmp_path):
    """A monitor forked while a lease is held must not block garbage collection forever."""
    from berth.content import ContentStore

    store = ContentStore(str(tmp_path / "content"))
    lock = os.path.join(store.root, "gc.lock")
    lease = store.lease().acquire()
    assert not _can_lock_exclusively(lock)
    pid = os.fork()
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    try:
        lease.release()
        assert _can_lock_exclusively(lock)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_prune_waits_for_a_write_in_progress(fresh_berth):
    code = ("import sys, time\nfrom berth.image import ImageStore\n"
            "lease = ImageStore(sys.argv[1]).lease().acquire()\n"
            "print('held', flush=True)\ntime.sleep(1.5)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, fresh_berth.root],
                              env=fresh_berth.env, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        start = time.monotonic()
        fresh_berth("image", "prune", "-f")
        assert time.monotonic() - start > 1.0
    finally:
        holder.wait(10)


# --- prune ----------------------------------------------------------------------------


def test_image_prune_removes_dangling_images_and_keeps_what_containers_use(fresh_berth,
                                                                           busybox_tar):
    b = fresh_berth
    first = b.out("images", "-q", "--no-trunc").strip()
    second = b.out("import", "-c", 'CMD ["echo", "two"]', busybox_tar, "busybox").strip()
    assert image_ids(b, "--filter", "dangling=true") == [first]
    # a dangling image a container uses is not removed
    third = b.out("import", "-c", 'CMD ["echo", "three"]', busybox_tar, "busybox").strip()
    b("create", "--name", "user", second)
    assert set(image_ids(b, "-f", "dangling=true")) == {first, second}

    out = b.out("image", "prune", "-f")
    assert out.startswith("Deleted Images:\n")
    assert f"deleted: {first}\n" in out and second not in out and third not in out
    assert set(image_ids(b)) == {second, third}
    assert b.out("start", "-a", "user").strip() == "two"
    # nothing left to prune
    assert b.out("image", "prune", "-f") == "Total reclaimed space: 0B\n"


def test_image_prune_all_removes_unused_tagged_images_and_reports_what_it_freed(fresh_berth,
                                                                                busybox_tar,
                                                                                tmp_path):
    b = fresh_berth
    busybox = image_ids(b)[0]
    b("create", "--name", "user", "busybox", "true")
    tar = variant_tar(busybox_tar, str(tmp_path / "other.tar"), {"other": os.urandom(300_000)})
    other = b.out("import", tar, "other:1").strip()
    b("tag", "other:1", "other:2")
    assert len(snapshots(b.root)) == 2

    before = store_bytes(b.root)
    out = b.out("image", "prune", "-a", "-f")
    after = store_bytes(b.root)

    assert "untagged: other:1\n" in out and "untagged: other:2\n" in out
    assert f"deleted: {other}\n" in out
    assert "busybox" not in out
    assert image_ids(b) == [busybox]
    assert len(snapshots(b.root)) == 1
    # the total is what left the disk, to Docker's display precision
    assert human(before - after) == human(reclaimed(out))
    assert before - after > 300_000
    b("start", "-a", "user")


def test_system_prune_removes_stopped_containers_then_images(fresh_berth, busybox_tar):
    b = fresh_berth
    first = image_ids(b)[0]
    b("run", "--name", "done", "busybox", "sh", "-c", "echo data > /written")
    b.out("import", "-c", 'CMD ["sh"]', busybox_tar, "busybox")  # the first is dangling now
    cid = json.loads(b.out("inspect", "done"))[0]["Id"]
    out = b.out("system", "prune", "-f")
    assert out.startswith(f"Deleted Containers:\n{cid}\n\nDeleted Images:\n")
    assert f"deleted: {first}" in out
    assert reclaimed(out) > 0
    assert b.out("ps", "-aq") == ""
    assert len(image_ids(b)) == 1
    out = b.out("system", "prune", "-a", "-f")
    assert "untagged: busybox:latest" in out
    assert image_ids(b) == [] and snapshots(b.root) == [] and blobs(b.root) == set()


def test_prune_never_prompts_without_a_terminal(fresh_berth, busybox_tar):
    fresh_berth.out("import", busybox_tar, "busybox")
    out = fresh_berth.out("image", "prune", input="n\n")  # stdin is a pipe: no question
    assert "Are you sure" not in out and "deleted:" in out


def _prune_at_a_terminal(b, answer: bytes) -> str:
    import pty

    master, slave = pty.openpty()
    proc = b.popen("image", "prune", stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while b"[y/N] " not in out:
        out += os.read(master, 4096)
    os.write(master, answer)
    proc.wait(30)
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return out.decode().replace("\r\n", "\n")


def test_prune_asks_a_person_at_a_terminal(fresh_berth, busybox_tar):
    dangling = image_ids(fresh_berth)[0]
    fresh_berth.out("import", busybox_tar, "busybox")
    out = _prune_at_a_terminal(fresh_berth, b"n\n")
    assert "WARNING! This will remove all dangling images." in out
    assert out.rstrip().endswith("Total reclaimed space: 0B")
    assert dangling in image_ids(fresh_berth)
    out = _prune_at_a_terminal(fresh_berth, b"y\n")
    assert f"deleted: {dangling}" in out
    assert dangling not in image_ids(fresh_berth)


# --- sharing --------------------------------------------------------------------------


def test_images_on_the_same_base_share_one_snapshot(fresh_berth, busybox_tar):
    fresh_berth("import", busybox_tar, "second")
    fresh_berth("import", "-c", 'CMD ["true"]', busybox_tar, "third")
    assert len(snapshots(fresh_berth.root)) == 1
    layer_blobs = [n for n in blobs(fresh_berth.root)
                   if os.path.getsize(os.path.join(fresh_berth.root, "content", "blobs",
                                                   "sha256", n)) > 100_000]
    assert len(layer_blobs) == 1


def _disk_usage(path: str) -> int:
    seen, total = set(), 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in filenames]:
            st = os.lstat(name)
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def test_twenty_containers_share_every_lower_dir_and_cost_less_than_one_image(fresh_berth,
                                                                            busybox_tar):
    b = fresh_berth
    image_size = os.path.getsize(busybox_tar)
    before = _disk_usage(b.root)
    for i in range(20):
        b("create", "--name", f"c{i}", "busybox", "true")
    after = _disk_usage(b.root)
    records = json.loads(b.out("inspect", *(f"c{i}" for i in range(20))))
    lowers = {r["GraphDriver"]["Data"]["LowerDir"] for r in records}
    uppers = {r["GraphDriver"]["Data"]["UpperDir"] for r in records}
    assert len(lowers) == 1 and len(uppers) == 20
    assert lowers.pop().startswith(os.path.join(b.root, "snapshots"))
    assert len(snapshots(b.root)) == 1
    assert after - before < image_size, (after - before, image_size)
    b("start", "-a", "c7")


# --- df -------------------------------------------------------------------------------


def test_system_df_counts_shared_layers_once_and_containers_by_their_upper_dir(fresh_berth,
                                                                               busybox_tar):
    b = fresh_berth
    b("tag", "busybox", "copy")
    b("import", "-c", 'CMD ["true"]', busybox_tar, "again")
    size = os.path.getsize(busybox_tar)  # an imported layer is the tar as given
    b("run", "--name", "writer", "busybox", "sh", "-c", "head -c 100000 /dev/zero > /file")
    lines = b.out("system", "df").splitlines()
    assert lines[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [line.split()[0] for line in lines[1:]] == ["Images", "Containers", "Local", "Build"]
    images = lines[1].split()
    assert images[1:3] == ["2", "1"]
    assert images[3] == human(size)
    assert images[4:] == ["0B", "(0%)"]  # the one layer is in use
    containers = lines[2].split()
    assert containers[1:3] == ["1", "0"]
    assert 100_000 <= parse_size(containers[3]) < 110_000
    assert containers[4] == containers[3] and containers[5] == "(100%)"
    assert lines[3].split()[2:] == ["0", "0", "0B", "0B"]

    verbose = b.out("system", "df", "-v")
    for title in ("Images space usage:", "Containers space usage:",
                  "Local Volumes space usage:", "Build cache usage: 0B"):
        assert title in verbose
    rows = {tuple(line.split()[:2]): line.split() for line in verbose.splitlines()
            if line.startswith(("busybox", "copy", "again"))}
    assert set(rows) == {("busybox", "latest"), ("copy", "latest"), ("again", "latest")}
    # SIZE, SHARED SIZE, UNIQUE SIZE, CONTAINERS
    assert rows[("busybox", "latest")][-4:] == [human(size), human(size), "0B", "1"]
    assert "writer" in verbose


# --- images and rmi -------------------------------------------------------------------


def test_images_filters_like_docker(fresh_berth, busybox_tar):
    b = fresh_berth
    old = image_ids(b)[0]
    time.sleep(1.1)  # created times are compared: keep them apart
    mid = b.out("import", "-c", 'LABEL tier=web', busybox_tar, "library/web:v1").strip()
    b("tag", "web:v1", "example.com/team/web:v2")
    time.sleep(1.1)
    new = b.out("import", "-c", 'CMD ["true"]', busybox_tar, "busybox").strip()  # old dangles

    def rows(*flt):
        return [line.split()[:2] for line in b.out("images", *flt).splitlines()[1:]]

    assert rows("--filter", "dangling=true") == [["<none>", "<none>"]]
    assert image_ids(b, "-f", "dangling=true") == [old]
    assert sorted(r[0] for r in rows("-f", "dangling=false")) == \
        ["busybox", "example.com/team/web", "web"]
    assert rows("-f", "reference=web") == [["web", "v1"]]
    assert rows("-f", "reference=*:v1") == [["web", "v1"]]
    assert rows("-f", "reference=example.com/*/web:v?") == [["example.com/team/web", "v2"]]
    assert rows("-f", "reference=*/web") == []  # '*' stops at '/'
    assert sorted(r[0] for r in rows("-f", "reference=web", "-f", "reference=busy*")) == \
        ["busybox", "web"]
    assert image_ids(b, "-f", "before=" + mid) == [old]
    assert image_ids(b, "-f", "since=" + mid) == [new]
    assert image_ids(b, "-f", "since=" + old[7:19], "-f", "dangling=false") == [new, mid]
    assert image_ids(b, "-f", "label=tier=web") == [mid]
    assert image_ids(b, "-f", "label=tier") == [mid]

    for bad, message in (("colour=red", b"invalid filter 'colour'"),
                         ("dangling=maybe", b"invalid filter 'dangling=maybe'"),
                         ("danglingtrue", b"bad format of filter"),
                         ("before=nothere", b"No such image: nothere")):
        proc = b("images", "-f", bad, check=False)
        assert proc.returncode == 1 and message in proc.stderr, (bad, proc.stderr)
        assert b"Traceback" not in proc.stderr


def test_images_shows_manifest_digests_and_uncompressed_sizes(fresh_berth, busybox_tar):
    import gzip

    b = fresh_berth
    with open(busybox_tar, "rb") as f:
        raw = f.read()
    b("import", "-", "zipped", input=gzip.compress(raw, compresslevel=1))
    with open(os.path.join(b.root, "content", "index.json")) as f:
        digests = {r["annotations"]["org.opencontainers.image.ref.name"]: r["digest"]
                   for r in json.load(f)["manifests"]}
    lines = b.out("images", "--digests").splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "DIGEST", "IMAGE", "ID", "CREATED", "SIZE"]
    for line in lines[1:]:
        repo, _tag, digest, *_rest, size = line.split()
        assert digest == digests[f"docker.io/library/{repo}:latest"]
        assert size == human(len(raw))  # gzip or not, the layer counts uncompressed
    inspect = json.loads(b.out("image", "inspect", "zipped"))[0]
    assert inspect["Size"] == len(raw)


def test_rmi_keeps_dockers_rules(fresh_berth):
    b = fresh_berth
    image_id = image_ids(b)[0]
    b("tag", "busybox", "busybox:two")
    b("tag", "busybox", "other:1")
    # by ID with several names: refused unless forced
    proc = b("rmi", image_id[7:19], check=False)
    assert proc.returncode == 1
    assert b"image is referenced in multiple repositories" in proc.stderr
    # by name while other names remain: only that name goes
    assert b.out("rmi", "other:1") == "Untagged: other:1\n"
    assert image_ids(b) == [image_id]
    # a stopped container's image: refused unless forced, and forcing keeps the image
    b("create", "--name", "user", "busybox", "true")
    proc = b("rmi", image_id, check=False)
    assert proc.returncode == 1 and b"must be forced" in proc.stderr
    out = b.out("rmi", "-f", image_id).splitlines()
    assert sorted(out) == ["Untagged: busybox:latest", "Untagged: busybox:two"]
    assert image_ids(b, "-f", "dangling=true") == [image_id]
    b("start", "-a", "user")
    # once the container is gone the image goes, blobs and layer too
    b("rm", "user")
    assert b.out("rmi", image_id).splitlines() == [f"Deleted: {image_id}"]
    assert blobs(b.root) == set() and snapshots(b.root) == []
