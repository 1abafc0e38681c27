"""The store survives kill -9, concurrent prunes, and damage: system check finds it, --repair
removes what cannot be used and nothing else. Docker schema2 and OCI index records read."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile
import threading
import time

import pytest


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


def blob_dir(root: str) -> str:
    return os.path.join(root, "content", "blobs", "sha256")


def assert_every_blob_hashes_to_its_name(root: str) -> None:
    for name in os.listdir(blob_dir(root)):
        h = hashlib.sha256()
        with open(os.path.join(blob_dir(root), name), "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        assert h.hexdigest() == name, f"half or corrupt blob visible: {name}"


def index_records(root: str) -> dict[str, str]:
    """name -> manifest digest, from index.json (which must parse)."""
    with open(os.path.join(root, "content", "index.json")) as f:
        return {r["annotations"].get("org.opencontainers.image.ref.name"): r["digest"]
                for r in json.load(f)["manifests"]}


def manifest_of(root: str, digest: str) -> dict:
    with open(os.path.join(blob_dir(root), digest.split(":")[1])) as f:
        return json.load(f)


def check_lines(b, *args) -> tuple[int, list[str]]:
    proc = b("system", "check", *args, check=False)
    assert b"Traceback" not in proc.stderr
    return proc.returncode, proc.stdout.decode().splitlines()


# --- the content store ----------------------------------------------------------------


def test_content_store_verifies_blobs_and_writes_them_atomically(tmp_path):
    from berth.content import ContentStore
    from berth.errors import DataLoss, NotFound

    store = ContentStore(str(tmp_path / "content"))
    digest = store.put(b"hello")
    assert store.verify(digest)
    with pytest.raises(DataLoss):
        store.put(b"hello", expected_digest="sha256:" + "0" * 64)
    with store.writer() as w:
        w.write(b"partial")  # never committed
    assert os.listdir(store.ingest_dir) == []
    assert store.list() == [digest]
    with open(store.path(digest), "r+b") as f:
        f.write(b"j")
    assert not store.verify(digest)
    # storing the same content again replaces a damaged copy of the wrong size
    with open(store.path(digest), "ab") as f:
        f.write(b"!")
    store.put(b"hello")
    assert store.verify(digest)
    with pytest.raises(NotFound):
        store.verify("sha256:" + "1" * 64)


@pytest.fixture(scope="module")
def big_tar(tmp_path_factory, busybox_tar) -> str:
    """~200 MB: busybox plus a large random file, so an import takes a while to kill."""
    dest = str(tmp_path_factory.mktemp("big") / "big.tar")
    with tarfile.open(busybox_tar) as src, tarfile.open(dest, "w") as out:
        for member in src:
            out.addfile(member, src.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo("big")
        info.size = 200 << 20

        class Random:
            left = info.size

            def read(self, n: int) -> bytes:
                n = min(n, self.left)
                self.left -= n
                return os.urandom(n)

        out.addfile(info, Random())
    return dest


def test_kill_9_during_an_import_leaves_no_half_blob_and_is_repaired(fresh_berth, big_tar):
    b = fresh_berth
    rng = random.Random(os.getpid())
    start = time.monotonic()
    b("import", big_tar, "timing")
    duration = time.monotonic() - start
    b("rmi", "timing")
    for trial in range(6):
        # early, middle and late: while the blob streams, while it is renamed and
        # unpacked, and in the last steps that write the config, manifest and record
        delay = rng.uniform(0.05, duration * 1.05)
        proc = b.popen("import", big_tar, f"big:{trial}")
        time.sleep(delay)
        proc.kill()
        proc.wait()

        assert_every_blob_hashes_to_its_name(b.root)
        index_records(b.root)
        code, lines = check_lines(b)
        assert all(line.startswith("leftover: ") for line in lines if code), (delay, lines)
        code, lines = check_lines(b, "--repair")
        assert code == 0, (delay, lines)
        assert check_lines(b)[0] == 0
        assert "busybox" in b.out("images")
        assert os.listdir(os.path.join(b.root, "content", "ingest")) == []
        assert not [n for n in os.listdir(os.path.join(b.root, "snapshots"))
                    if n.startswith(".")]
        b("rmi", f"big:{trial}", check=False)  # if it finished: the next trial starts anew
    b("run", "--rm", "busybox", "true")


def test_a_writer_that_dies_before_its_record_leaves_only_leftovers(fresh_berth, busybox_tar,
                                                                    tmp_path):
    """The narrowest window of an import, hit on purpose: layer stored and unpacked, no image."""
    import subprocess
    import sys

    b = fresh_berth
    tar = variant_tar(busybox_tar, str(tmp_path / "v.tar"), {"v": os.urandom(10_000)})
    code = ("import os, sys\nfrom berth.image import ImageStore\n"
            "store = ImageStore(sys.argv[1])\nlease = store.lease().acquire()\n"
            "with open(sys.argv[2], 'rb') as f:\n    store.import_layer(f)\n"
            "os.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", code, b.root, tar], env=b.env)
    assert proc.returncode == -9
    code, lines = check_lines(b)
    assert code == 1 and len(lines) == 2, lines
    assert lines[0].startswith("leftover: blob sha256:") and "referenced by no image" in lines[0]
    assert lines[1].startswith("leftover: snapshot sha256:") and "used by no" in lines[1]
    # the collector takes them too, without --repair
    out = b.out("image", "prune", "-f")
    assert out.startswith("Deleted Images:\ndeleted: sha256:")
    assert check_lines(b)[0] == 0


# --- concurrency ----------------------------------------------------------------------


def test_prune_loses_nothing_while_imports_tags_and_runs_go_on(fresh_berth, busybox_tar,
                                                              tmp_path):
    b = fresh_berth
    # busybox is in use, so prune -a never takes it and every run must succeed
    b("create", "--name", "keeper", "busybox", "true")
    tars = [variant_tar(busybox_tar, str(tmp_path / f"v{i}.tar"),
                        {f"v{i}": os.urandom(50_000)}) for i in range(40)]
    deadline = time.monotonic() + 8
    failures: list[str] = []
    counts = {"prune": 0, "deleted": 0, "import": 0, "run": 0}

    def loop(name, step):
        i = 0
        while time.monotonic() < deadline:
            try:
                step(i)
            except Exception as exc:  # noqa: BLE001 - reported below
                failures.append(f"{name}: {exc}")
            i += 1

    def prune(_i):
        out = b.out("image", "prune", "-a", "-f")
        counts["prune"] += 1
        counts["deleted"] += out.count("deleted: ")

    def import_and_tag(i):
        b("import", "-c", f'CMD ["echo", "{i}"]', tars[i % len(tars)], f"imp:{i}")
        counts["import"] += 1
        proc = b("tag", f"imp:{i}", f"tagged:{i}", check=False)
        # the prune may take the new image before it is tagged; nothing else may fail
        assert proc.returncode == 0 or b"No such image" in proc.stderr, proc.stderr

    def run(_i):
        b("run", "--rm", "busybox", "true")
        counts["run"] += 1

    threads = [threading.Thread(target=loop, args=(name, step))
               for name, step in (("prune", prune), ("import", import_and_tag), ("run", run))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    assert counts["prune"] >= 3 and counts["import"] >= 3 and counts["run"] >= 3, counts
    assert counts["deleted"] > 0, counts

    code, lines = check_lines(b)
    assert code == 0, lines
    for image_id in b.out("images", "-q", "--no-trunc").split():
        b("run", "--rm", image_id, "true")
    b("start", "-a", "keeper")


# --- check and repair -----------------------------------------------------------------


def _blob_state(root: str, digests) -> dict:
    out = {}
    for d in digests:
        st = os.stat(os.path.join(blob_dir(root), d.split(":")[1]))
        out[d] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def _closure(root: str, manifest_digest: str) -> list[str]:
    m = manifest_of(root, manifest_digest)
    return [manifest_digest, m["config"]["digest"]] + [layer["digest"] for layer in m["layers"]]


def test_check_finds_a_corrupt_and_a_missing_blob_and_repair_removes_only_their_images(
        fresh_berth, busybox_tar, tmp_path):
    b = fresh_berth
    for name in ("damaged", "incomplete", "bystander"):
        b("import", variant_tar(busybox_tar, str(tmp_path / f"{name}.tar"),
                                {name: os.urandom(20_000)}), name)
    b("tag", "busybox", "busybox-copy")
    b("create", "--name", "user", "bystander", "true")
    records = index_records(b.root)
    full = {n.split("/")[-1].split(":")[0]: d for n, d in records.items()}
    sound = _closure(b.root, full["busybox"]) + _closure(b.root, full["bystander"])
    before = _blob_state(b.root, sound)

    damaged_layer = manifest_of(b.root, full["damaged"])["layers"][0]["digest"]
    path = os.path.join(blob_dir(b.root), damaged_layer.split(":")[1])
    with open(path, "r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 0x01]))
    lost_config = manifest_of(b.root, full["incomplete"])["config"]["digest"]
    os.unlink(os.path.join(blob_dir(b.root), lost_config.split(":")[1]))

    code, lines = check_lines(b)
    assert code == 1
    assert any(line.startswith(f"corrupt: blob {damaged_layer}: its content hashes to")
               for line in lines), lines
    assert any(line.startswith("broken: image damaged:latest ") and damaged_layer in line
               and "corrupt" in line for line in lines), lines
    assert any(line.startswith("broken: image incomplete:latest ") and f"config {lost_config} is missing"
               in line for line in lines), lines
    assert not any("busybox" in line or "bystander" in line for line in lines), lines

    code, lines = check_lines(b, "--repair")
    assert code == 0, lines
    assert f"removed corrupt blob {damaged_layer}" in "\n".join(lines)
    assert any(line.startswith("removed broken image damaged:latest ") for line in lines), lines
    assert any(line.startswith("removed broken image incomplete:latest ") for line in lines), lines
    assert check_lines(b)[0] == 0

    names = sorted(n.split("/")[-1] for n in index_records(b.root))
    assert names == ["busybox-copy:latest", "busybox:latest", "bystander:latest"]
    assert _blob_state(b.root, sound) == before  # untouched, not rewritten
    b("run", "--rm", "busybox", "true")
    b("start", "-a", "user")


def test_check_finds_leftovers_and_bad_snapshots_and_repair_restores_a_containers_layer(
        fresh_berth, busybox_tar, tmp_path):
    from berth.oci import digest as _digest

    b = fresh_berth
    b("import", variant_tar(busybox_tar, str(tmp_path / "own.tar"), {"own": b"x" * 5000}), "own")
    b("create", "--name", "user", "own", "cat", "/own")
    snaps = os.path.join(b.root, "snapshots")
    own_chain = json.loads(b.out("image", "inspect", "own"))[0]["RootFS"]["Layers"][0]
    # what a killed writer leaves
    with open(os.path.join(b.root, "content", "ingest", "0123abcd"), "wb") as f:
        f.write(b"partial")
    os.makedirs(os.path.join(snaps, ".tmp-1-abcdef", "fs", "bin"))
    with open(os.path.join(blob_dir(b.root), "not-a-digest"), "wb") as f:
        f.write(b"?")
    # an orphan snapshot, well formed, and one whose metadata disagrees with its name
    orphan = _digest.sha256_bytes(b"orphan")
    os.makedirs(os.path.join(snaps, orphan.split(":")[1], "fs"))
    with open(os.path.join(snaps, orphan.split(":")[1], "diffid"), "w") as f:
        f.write(orphan)
    liar = _digest.sha256_bytes(b"liar")
    os.makedirs(os.path.join(snaps, liar.split(":")[1], "fs"))
    with open(os.path.join(snaps, liar.split(":")[1], "diffid"), "w") as f:
        f.write(orphan)
    # the container's own layer is lost; its image can unpack it again
    import shutil

    shutil.rmtree(os.path.join(snaps, own_chain.split(":")[1]))

    code, lines = check_lines(b)
    assert code == 1
    text = "\n".join(lines)
    assert "leftover: " + os.path.join(b.root, "content", "ingest", "0123abcd") in text
    assert "leftover: " + os.path.join(snaps, ".tmp-1-abcdef") in text
    assert "not-a-digest: not a blob name" in text
    assert f"leftover: snapshot {orphan}: used by no image or container" in text
    assert f"corrupt: snapshot {liar}: its diffid and parent make chain ID {orphan}" in text
    assert f"its layer {own_chain} is not unpacked" in text

    code, lines = check_lines(b, "--repair")
    assert code == 0, lines
    assert any(line.startswith(f"unpacked {own_chain} for container ") for line in lines), lines
    assert check_lines(b)[0] == 0
    assert sorted(os.listdir(snaps)) == sorted(
        c.split(":")[1] for c in (own_chain, json.loads(b.out(
            "image", "inspect", "busybox"))[0]["RootFS"]["Layers"][0]))
    assert b.out("start", "-a", "user") == "x" * 5000


def test_check_reports_what_it_cannot_repair(fresh_berth):
    """A container whose image record is gone keeps its layers; only the user can decide."""
    b = fresh_berth
    b("create", "--name", "user", "busybox", "true")
    image_id = json.loads(b.out("image", "inspect", "busybox"))[0]["Id"]
    with open(os.path.join(b.root, "content", "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": []}, f)
    code, lines = check_lines(b, "--repair")
    assert code == 1
    assert any(line.startswith("missing: container ") and image_id in line for line in lines)
    b("start", "-a", "user")  # its layer was kept for it


def test_check_of_a_clean_store_says_so(fresh_berth):
    code, lines = check_lines(fresh_berth)
    assert code == 0
    assert lines == ["No problems found: 1 images, 3 blobs, 1 layers, 0 containers checked"]


# --- Docker schema2 and indexes -------------------------------------------------------


def _put_json(store, obj) -> tuple[str, int]:
    raw = json.dumps(obj).encode()
    return store.content.put(raw), len(raw)


def test_docker_schema2_manifests_and_indexes_resolve_for_this_platform(fresh_berth):
    from berth.image import ImageStore
    from berth.oci import image as oci

    b = fresh_berth
    store = ImageStore(b.root)
    busybox = store.resolve("busybox")
    layer = busybox.manifest.layers[0]
    config = busybox.manifest.config
    schema2, size2 = _put_json(store, {
        "schemaVersion": 2, "mediaType": oci.DOCKER_MANIFEST,
        "config": {"mediaType": oci.DOCKER_CONFIG, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": oci.DOCKER_LAYER, "digest": layer.digest, "size": layer.size}]})
    store.add(schema2, "docker.io/library/schema2:latest")
    host = oci.host_platform()
    elsewhere = "s390x" if host.architecture != "s390x" else "amd64"
    for media, name in ((oci.OCI_INDEX, "oci-index"), (oci.DOCKER_MANIFEST_LIST, "manifest-list")):
        index, _ = _put_json(store, {"schemaVersion": 2, "mediaType": media, "manifests": [
            # a platform whose blobs were never fetched: not this host's problem
            {"mediaType": oci.OCI_MANIFEST, "digest": "sha256:" + "5" * 64, "size": 10,
             "platform": {"architecture": elsewhere, "os": "linux"}},
            {"mediaType": oci.DOCKER_MANIFEST, "digest": schema2, "size": size2,
             "platform": {"architecture": host.architecture, "os": "linux",
                          **({"variant": host.variant} if host.variant else {})}}]})
        store.add(index, f"docker.io/library/{name}:latest")

    for name in ("schema2", "oci-index", "manifest-list"):
        info = json.loads(b.out("image", "inspect", name))[0]
        assert info["Id"] == busybox.id
        b("run", "--rm", name, "true")
    assert check_lines(b)[0] == 0
    lines = b.out("images").splitlines()[1:]
    assert sorted(line.split()[0] for line in lines) == \
        ["busybox", "manifest-list", "oci-index", "schema2"]

    # deleting the index keeps what busybox and schema2 still use
    b("rmi", "oci-index")
    b("rmi", "manifest-list")
    assert check_lines(b)[0] == 0
    b("run", "--rm", "schema2", "true")
    b("rmi", "schema2")
    assert sorted(os.listdir(blob_dir(b.root))) == sorted(
        d.split(":")[1] for d in (busybox.manifest_digest, config.digest, layer.digest))


def test_an_index_without_this_platform_is_refused_to_run_but_kept(fresh_berth):
    from berth.image import ImageStore
    from berth.oci import image as oci

    b = fresh_berth
    store = ImageStore(b.root)
    busybox = store.resolve("busybox")
    index, _ = _put_json(store, {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [
        {"mediaType": oci.OCI_MANIFEST, "digest": busybox.manifest_digest, "size": 1,
         "platform": {"architecture": "nonesuch", "os": "linux"}}]})
    store.add(index, "docker.io/library/foreign:latest")
    proc = b("run", "--rm", "foreign", "true", check=False)
    assert proc.returncode == 125 and b"no manifest for platform" in proc.stderr
    assert b"Traceback" not in proc.stderr
    proc = b("images", check=False)
    assert proc.returncode == 0 and b"foreign" in proc.stderr  # warned, not listed
    # of no use here, but sound: check has nothing to say and repair leaves it alone
    assert check_lines(b, "--repair") == (0, [
        "No problems found: 2 images, 4 blobs, 1 layers, 0 containers checked"])
    assert "docker.io/library/foreign:latest" in index_records(b.root)
    # its platforms all incomplete: broken
    os.unlink(os.path.join(blob_dir(b.root), busybox.manifest_digest.split(":")[1]))
    code, lines = check_lines(b, "--repair")
    assert code == 0
    assert any(line.startswith("removed broken image foreign:latest") for line in lines), lines
