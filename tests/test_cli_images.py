"""import, images, tag, rmi, image inspect; the store is a valid OCI image layout."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess


def test_import_stores_a_content_addressed_oci_layout(fresh_berth):
    content = os.path.join(fresh_berth.root, "content")
    with open(os.path.join(content, "oci-layout")) as f:
        assert json.load(f) == {"imageLayoutVersion": "1.0.0"}
    with open(os.path.join(content, "index.json")) as f:
        index = json.load(f)
    [record] = index["manifests"]
    assert record["annotations"]["org.opencontainers.image.ref.name"] == \
        "docker.io/library/busybox:latest"
    # every blob's name is its sha256
    blobs = os.path.join(content, "blobs", "sha256")
    for name in os.listdir(blobs):
        with open(os.path.join(blobs, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == name
    with open(os.path.join(blobs, record["digest"].split(":")[1])) as f:
        manifest = json.load(f)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    with open(os.path.join(blobs, manifest["config"]["digest"].split(":")[1])) as f:
        config = json.load(f)
    assert config["config"]["Cmd"] == ["sh"]
    assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]
    assert config["os"] == "linux"


def test_import_from_stdin_gzip_with_changes(fresh_berth, busybox_tar):
    with open(busybox_tar, "rb") as f:
        data = gzip.compress(f.read(), compresslevel=1)
    image_id = fresh_berth.out("import", "-c", "ENV GREETING=hi", "-c", 'CMD ["env"]',
                               "-m", "from stdin", "-", "local/gz:v1", input=data).strip()
    assert image_id.startswith("sha256:")
    out = fresh_berth.out("run", "--rm", "local/gz:v1")
    assert "GREETING=hi" in out
    info = json.loads(fresh_berth.out("image", "inspect", "local/gz:v1"))[0]
    assert info["Id"] == image_id
    assert info["RepoTags"] == ["local/gz:v1"]
    assert info["Comment"] == "from stdin"
    assert info["Config"]["Env"] == ["GREETING=hi"]
    assert info["RootFS"]["Type"] == "layers"


def test_same_tarball_imported_twice_shares_the_layer(fresh_berth, busybox_tar):
    fresh_berth("import", busybox_tar, "second")
    snapshots = [n for n in os.listdir(os.path.join(fresh_berth.root, "snapshots"))
                 if not n.startswith(".")]
    assert len(snapshots) == 1


def test_import_of_garbage_fails_cleanly_and_stores_nothing(fresh_berth, tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"this is not a tar archive" * 100)
    blobs = os.path.join(fresh_berth.root, "content", "blobs", "sha256")
    before = set(os.listdir(blobs))
    proc = fresh_berth("import", str(bad), "bad", check=False)
    assert proc.returncode == 1
    assert proc.stderr.count(b"\n") == 1 and b"Traceback" not in proc.stderr
    assert set(os.listdir(blobs)) == before
    assert not [n for n in os.listdir(os.path.join(fresh_berth.root, "snapshots"))
                if n.startswith(".tmp")]
    assert "bad" not in fresh_berth.out("images")


def test_images_lists_like_docker(fresh_berth):
    out = fresh_berth.out("images")
    header, row = out.splitlines()
    assert header.split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert row.split()[:2] == ["busybox", "latest"]
    assert len(row.split()[2]) == 12
    image_id = fresh_berth.out("images", "-q").strip()
    assert len(image_id) == 12
    assert fresh_berth.out("images", "--no-trunc", "-q").strip().startswith("sha256:")


def test_tag_and_rmi_untag_then_delete(fresh_berth):
    fresh_berth("tag", "busybox", "mine:1")
    assert "mine" in fresh_berth.out("images")
    assert fresh_berth.out("rmi", "mine:1").strip() == "Untagged: mine:1"
    image_id = json.loads(fresh_berth.out("image", "inspect", "busybox"))[0]["Id"]
    out = fresh_berth.out("rmi", "busybox").splitlines()
    assert out == ["Untagged: busybox:latest", f"Deleted: {image_id}"]
    assert fresh_berth.out("images", "-q") == ""
    blobs = os.listdir(os.path.join(fresh_berth.root, "content", "blobs", "sha256"))
    assert blobs == []
    assert [n for n in os.listdir(os.path.join(fresh_berth.root, "snapshots"))] == []


def test_rmi_refuses_an_image_in_use_unless_forced(fresh_berth):
    fresh_berth("run", "--name", "user", "busybox", "true")
    proc = fresh_berth("rmi", "busybox", check=False)
    assert proc.returncode == 1
    assert b"container" in proc.stderr and b"is using its referenced image" in proc.stderr
    fresh_berth("rmi", "-f", "busybox")
    # the container still runs from its (now untagged) image
    fresh_berth("start", "-a", "user")
    fresh_berth("rm", "user")


def test_unknown_image_and_bad_reference(fresh_berth):
    proc = fresh_berth("rmi", "nothere", check=False)
    assert proc.returncode == 1 and b"No such image: nothere" in proc.stderr
    proc = fresh_berth("tag", "busybox", "Bad/Upper", check=False)
    assert proc.returncode == 1 and b"invalid reference format" in proc.stderr


def test_store_is_readable_by_skopeo_as_an_oci_layout(fresh_berth, tmp_path):
    if subprocess.run(["which", "skopeo"], capture_output=True).returncode != 0:
        import pytest

        pytest.skip("skopeo is not installed")
    content = os.path.join(fresh_berth.root, "content")
    out = subprocess.run(["skopeo", "inspect", "--raw",
                          f"oci:{content}:docker.io/library/busybox:latest"],
                         capture_output=True, check=True).stdout
    assert json.loads(out)["schemaVersion"] == 2
