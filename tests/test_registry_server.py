"""berth's registry server, proven the way the distribution spec's conformance suite does it
(raw HTTP, endpoint by endpoint, error code by error code), then with real peers: skopeo
copies to and from it, podman pulls from it and runs what it pulled.

Every server is a real `python -m berth registry serve` on 127.0.0.1 with a port the
kernel picked (--addr 127.0.0.1:0; the server prints the port it got).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
EMPTY_JSON = "application/vnd.oci.empty.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Response:
    def __init__(self, resp: http.client.HTTPResponse, body: bytes) -> None:
        self.status = resp.status
        self.headers = resp.headers
        self.body = body

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self):
        return json.loads(self.body)

    @property
    def codes(self) -> list[str]:
        return [e["code"] for e in self.json()["errors"]]


class Server:
    """A `berth registry serve` subprocess on a root of its own."""

    def __init__(self, root: str, *args: str) -> None:
        self.root = root
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> "Server":
        env = dict(os.environ, PYTHONPATH=REPO)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "berth", "registry", "serve", "--addr", "127.0.0.1:0",
             "--root", self.root, *self.args], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if "http://" not in line:
            self.proc.kill()
            raise AssertionError(f"registry did not start: {line}{self.proc.stderr.read()}")
        self.port = int(line.rsplit(":", 1)[1].split()[0])
        return self

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> str:
        """SIGTERM, as an operator would; return what the server wrote to stderr."""
        if self.proc is None:
            return ""
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.proc = None
        return err

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.communicate()
        self.proc = None

    def request(self, method: str, path: str, body=None,
                headers: dict | None = None, auth: tuple[str, str] | None = None) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(
                f"{auth[0]}:{auth[1]}".encode()).decode()
        try:
            chunked = body is not None and not isinstance(body, bytes)
            if chunked:
                headers["Transfer-Encoding"] = "chunked"
            conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
            resp = conn.getresponse()
            return Response(resp, resp.read())
        finally:
            conn.close()

    # -- the steps a client takes ----------------------------------------------------------

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = sha(data)
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", data,
                         {"Content-Type": "application/octet-stream"})
        assert r.status == 201, r.body
        return digest

    def push_manifest(self, repo: str, reference: str, raw: bytes,
                      media_type: str = OCI_MANIFEST) -> Response:
        return self.request("PUT", f"/v2/{repo}/manifests/{reference}", raw,
                            {"Content-Type": media_type})

    def push_image(self, repo: str, tag: str, layers: list[bytes], *,
                   extra: dict | None = None) -> tuple[str, bytes]:
        """Push config + layers + manifest; return (manifest digest, manifest bytes)."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
            "type": "layers", "diff_ids": [sha(layer) for layer in layers]}}).encode()
        self.push_blob(repo, config)
        descriptors = []
        for layer in layers:
            self.push_blob(repo, layer)
            descriptors.append({"mediaType": OCI_LAYER, "digest": sha(layer), "size": len(layer)})
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": OCI_CONFIG, "digest": sha(config), "size": len(config)},
               "layers": descriptors, **(extra or {})}
        raw = json.dumps(doc, indent=3).encode()  # stored as pushed: odd spacing must survive
        r = self.push_manifest(repo, tag, raw)
        assert r.status == 201, r.body
        return sha(raw), raw


@pytest.fixture
def registry(tmp_path):
    server = Server(str(tmp_path / "registry")).start()
    yield server
    err = server.stop()
    assert "Traceback" not in err, err


def blob_files(root: str) -> list[str]:
    base = os.path.join(root, "blobs")
    return sorted(name for _, _, names in os.walk(base) for name in names)


# -- base and pull -------------------------------------------------------------------------


def test_base_endpoint_answers_200_with_the_api_version_header(registry):
    r = registry.request("GET", "/v2/")
    assert r.status == 200
    assert r.header("Docker-Distribution-API-Version") == "registry/2.0"
    assert r.json() == {}


def test_monolithic_push_then_head_and_get_serve_the_blob_with_its_digest(registry):
    data = os.urandom(100_000)
    digest = sha(data)
    r = registry.request("POST", f"/v2/team/app/blobs/uploads/?digest={digest}", data,
                         {"Content-Type": "application/octet-stream"})
    assert r.status == 201
    assert r.header("Location") == f"/v2/team/app/blobs/{digest}"
    assert r.header("Docker-Content-Digest") == digest
    head = registry.request("HEAD", f"/v2/team/app/blobs/{digest}")
    assert head.status == 200 and head.body == b""
    assert head.header("Content-Length") == str(len(data))
    assert head.header("Docker-Content-Digest") == digest
    get = registry.request("GET", f"/v2/team/app/blobs/{digest}")
    assert get.status == 200 and get.body == data


def test_blob_get_with_range_answers_206_with_content_range(registry):
    data = bytes(range(256)) * 40
    digest = registry.push_blob("r", data)
    r = registry.request("GET", f"/v2/r/blobs/{digest}", headers={"Range": "bytes=100-199"})
    assert r.status == 206
    assert r.body == data[100:200]
    assert r.header("Content-Range") == f"bytes 100-199/{len(data)}"
    assert r.header("Accept-Ranges") == "bytes"
    tail = registry.request("GET", f"/v2/r/blobs/{digest}", headers={"Range": "bytes=10000-"})
    assert tail.status == 206 and tail.body == data[10000:]
    past = registry.request("GET", f"/v2/r/blobs/{digest}", headers={"Range": "bytes=99999-"})
    assert past.status == 416


def test_unknown_blob_is_404_blob_unknown(registry):
    r = registry.request("GET", f"/v2/r/blobs/{sha(b'nothing')}")
    assert r.status == 404 and r.codes == ["BLOB_UNKNOWN"]
    head = registry.request("HEAD", f"/v2/r/blobs/{sha(b'nothing')}")
    assert head.status == 404 and head.body == b""


def test_a_repository_reads_only_blobs_pushed_or_mounted_into_it(registry):
    digest = registry.push_blob("mine", b"private layer")
    assert registry.request("GET", f"/v2/mine/blobs/{digest}").status == 200
    r = registry.request("GET", f"/v2/theirs/blobs/{digest}")
    assert r.status == 404 and r.codes == ["BLOB_UNKNOWN"]


# -- push: sessions, streamed, chunked -----------------------------------------------------


def test_post_opens_a_session_with_location_uuid_and_empty_range(registry):
    r = registry.request("POST", "/v2/r/blobs/uploads/")
    assert r.status == 202
    uuid = r.header("Docker-Upload-UUID")
    assert uuid and r.header("Location") == f"/v2/r/blobs/uploads/{uuid}"
    assert r.header("Range") == "0-0"


def test_streamed_upload_patches_then_put_finalises(registry):
    data = os.urandom(300_000)
    location = registry.request("POST", "/v2/r/blobs/uploads/").header("Location")
    r = registry.request("PATCH", location, data[:100_000],
                         {"Content-Type": "application/octet-stream"})
    assert r.status == 202 and r.header("Range") == "0-99999"
    location = r.header("Location")
    r = registry.request("PATCH", location, data[100_000:])
    assert r.status == 202 and r.header("Range") == f"0-{len(data) - 1}"
    status = registry.request("GET", location)
    assert status.status == 204 and status.header("Range") == f"0-{len(data) - 1}"
    r = registry.request("PUT", f"{location}?digest={sha(data)}", b"")
    assert r.status == 201
    assert r.header("Location") == f"/v2/r/blobs/{sha(data)}"
    assert registry.request("GET", f"/v2/r/blobs/{sha(data)}").body == data
    gone = registry.request("GET", location)
    assert gone.status == 404 and gone.codes == ["BLOB_UPLOAD_UNKNOWN"]


def _pieces(data: bytes, seed: int):
    """`data` in pieces of 1 byte to 300 KiB: a body sent with Transfer-Encoding: chunked."""
    import random

    rnd = random.Random(seed)
    i = 0
    while i < len(data):
        n = rnd.choice((1, 7, 4096, 65536, 300_000, rnd.randrange(1, 200_000)))
        yield data[i:i + n]
        i += n


def test_bodies_with_chunked_transfer_encoding_are_stored_whole(registry):
    for seed in range(4):
        data = os.urandom(3_000_000 + seed)
        location = registry.request("POST", "/v2/r/blobs/uploads/").header("Location")
        r = registry.request("PATCH", location, _pieces(data, seed))
        assert r.status == 202 and r.header("Range") == f"0-{len(data) - 1}"
        assert registry.request("PUT", f"{r.header('Location')}?digest={sha(data)}").status == 201
        mono = os.urandom(1_000_000 + seed)
        r = registry.request("POST", f"/v2/r/blobs/uploads/?digest={sha(mono)}",
                             _pieces(mono, seed + 10))
        assert r.status == 201, r.body
        assert registry.request("GET", f"/v2/r/blobs/{sha(data)}").body == data
        assert registry.request("GET", f"/v2/r/blobs/{sha(mono)}").body == mono


def test_a_chunk_whose_end_arrives_late_loses_nothing(registry):
    """The server has read all of a chunk's data before the CRLF that ends it arrives, and
    that CRLF comes with the rest of the body and its end: none of the rest may be lost."""
    first, second = os.urandom(50_000), os.urandom(70_000)
    location = registry.request("POST", "/v2/r/blobs/uploads/").header("Location")
    with socket.create_connection(("127.0.0.1", registry.port)) as sock:
        sock.sendall(f"PATCH {location} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     f"\r\n{len(first):x}\r\n".encode() + first)
        time.sleep(0.3)
        sock.sendall(f"\r\n{len(second):x}\r\n".encode() + second + b"\r\n0\r\n\r\n")
        status = sock.makefile("rb").readline()
    assert b" 202 " in status
    r = registry.request("PUT", f"{location}?digest={sha(first + second)}")
    assert r.status == 201, r.body


def test_chunked_upload_refuses_an_out_of_order_chunk_with_416(registry):
    data = os.urandom(5000)
    location = registry.request("POST", "/v2/r/blobs/uploads/",
                                headers={"Content-Length": "0"}).header("Location")
    r = registry.request("PATCH", location, data[2000:], {
        "Content-Range": f"2000-{len(data) - 1}", "Content-Type": "application/octet-stream"})
    assert r.status == 416 and r.codes == ["RANGE_INVALID"]
    r = registry.request("PATCH", location, data[:2000], {"Content-Range": "0-1999"})
    assert r.status == 202 and r.header("Range") == "0-1999"
    again = registry.request("PATCH", location, data[:2000], {"Content-Range": "0-1999"})
    assert again.status == 416 and again.header("Range") == "0-1999"
    r = registry.request("PUT", f"{r.header('Location')}?digest={sha(data)}", data[2000:],
                         {"Content-Range": f"2000-{len(data) - 1}"})
    assert r.status == 201
    assert registry.request("GET", f"/v2/r/blobs/{sha(data)}").body == data


def test_content_range_that_disagrees_with_the_body_is_416(registry):
    location = registry.request("POST", "/v2/r/blobs/uploads/").header("Location")
    r = registry.request("PATCH", location, b"x" * 10, {"Content-Range": "0-19"})
    assert r.status == 416
    assert registry.request("GET", location).header("Range") == "0-0"


def test_wrong_digest_is_refused_and_nothing_is_stored(registry):
    data = b"the real content"
    location = registry.request("POST", "/v2/r/blobs/uploads/").header("Location")
    registry.request("PATCH", location, data)
    claimed = sha(b"something else")
    r = registry.request("PUT", f"{location}?digest={claimed}", b"")
    assert r.status == 400 and r.codes == ["DIGEST_INVALID"]
    assert registry.request("HEAD", f"/v2/r/blobs/{claimed}").status == 404
    assert registry.request("HEAD", f"/v2/r/blobs/{sha(data)}").status == 404
    assert blob_files(registry.root) == []
    assert registry.request("GET", location).codes == ["BLOB_UPLOAD_UNKNOWN"]
    mono = registry.request("POST", f"/v2/r/blobs/uploads/?digest={claimed}", data)
    assert mono.status == 400 and mono.codes == ["DIGEST_INVALID"]
    assert blob_files(registry.root) == []
    assert os.listdir(os.path.join(registry.root, "uploads")) == []


def test_put_without_digest_is_digest_invalid(registry):
    location = registry.request("POST", "/v2/r/blobs/uploads/").header("Location")
    r = registry.request("PUT", location, b"data")
    assert r.status == 400 and r.codes == ["DIGEST_INVALID"]


def test_cancelled_upload_is_forgotten(registry):
    location = registry.request("POST", "/v2/r/blobs/uploads/").header("Location")
    registry.request("PATCH", location, b"partial")
    assert registry.request("DELETE", location).status == 204
    r = registry.request("PATCH", location, b"more")
    assert r.status == 404 and r.codes == ["BLOB_UPLOAD_UNKNOWN"]
    assert os.listdir(os.path.join(registry.root, "uploads")) == []


def test_an_upload_belongs_to_its_repository(registry):
    uuid = registry.request("POST", "/v2/one/blobs/uploads/").header("Docker-Upload-UUID")
    r = registry.request("PATCH", f"/v2/two/blobs/uploads/{uuid}", b"x")
    assert r.status == 404 and r.codes == ["BLOB_UPLOAD_UNKNOWN"]
    bogus = registry.request("GET", "/v2/one/blobs/uploads/..%2F..%2Fetc")
    assert bogus.status == 404


def test_cross_repository_mount_links_a_blob_or_falls_back_to_an_upload(registry):
    digest = registry.push_blob("base/image", b"shared layer")
    r = registry.request("POST", f"/v2/app/blobs/uploads/?mount={digest}&from=base/image")
    assert r.status == 201
    assert r.header("Location") == f"/v2/app/blobs/{digest}"
    assert r.header("Docker-Content-Digest") == digest
    assert registry.request("GET", f"/v2/app/blobs/{digest}").body == b"shared layer"
    missing = sha(b"not pushed anywhere")
    r = registry.request("POST", f"/v2/app/blobs/uploads/?mount={missing}&from=base/image")
    assert r.status == 202 and r.header("Docker-Upload-UUID")
    # a repository that does not hold the blob cannot lend it
    r = registry.request("POST", f"/v2/thief/blobs/uploads/?mount={digest}&from=elsewhere")
    assert r.status == 202
    assert registry.request("GET", f"/v2/thief/blobs/{digest}").status == 404


def test_parallel_uploads_and_downloads_all_verify(registry):
    blobs = [os.urandom(2_000_000 + i) for i in range(8)]
    errors = []

    def push(data):
        try:
            location = registry.request("POST", "/v2/many/blobs/uploads/").header("Location")
            for start in range(0, len(data), 700_000):
                chunk = data[start:start + 700_000]
                r = registry.request("PATCH", location, chunk, {
                    "Content-Range": f"{start}-{start + len(chunk) - 1}"})
                assert r.status == 202, r.body
                location = r.header("Location")
            assert registry.request("PUT", f"{location}?digest={sha(data)}").status == 201
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def pull(data):
        try:
            assert sha(registry.request("GET", f"/v2/many/blobs/{sha(data)}").body) == sha(data)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    for work in (push, pull):
        threads = [threading.Thread(target=work, args=(b,)) for b in blobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors


# -- manifests -----------------------------------------------------------------------------


def test_manifest_is_stored_and_served_byte_for_byte_by_tag_and_digest(registry):
    digest, raw = registry.push_image("team/app", "v1", [b"layer one"])
    for ref in ("v1", digest):
        r = registry.request("GET", f"/v2/team/app/manifests/{ref}",
                             headers={"Accept": OCI_MANIFEST})
        assert r.status == 200 and r.body == raw
        assert r.header("Content-Type") == OCI_MANIFEST
        assert r.header("Docker-Content-Digest") == digest
    head = registry.request("HEAD", "/v2/team/app/manifests/v1")
    assert head.status == 200 and head.body == b""
    assert head.header("Content-Length") == str(len(raw))
    assert head.header("Docker-Content-Digest") == digest


def test_docker_schema2_manifest_keeps_its_media_type(registry):
    docker_manifest = "application/vnd.docker.distribution.manifest.v2+json"
    config = registry.push_blob("r", b'{"architecture":"amd64","os":"linux"}')
    layer = registry.push_blob("r", b"docker layer")
    raw = json.dumps({"schemaVersion": 2, "mediaType": docker_manifest, "config": {
        "mediaType": "application/vnd.docker.container.image.v1+json", "digest": config,
        "size": 37}, "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                 "digest": layer, "size": 12}]}).encode()
    assert registry.push_manifest("r", "docker", raw, docker_manifest).status == 201
    r = registry.request("GET", "/v2/r/manifests/docker")
    assert r.header("Content-Type") == docker_manifest and r.body == raw


def test_manifest_put_answers_201_with_location_and_digest(registry):
    config = registry.push_blob("r", b"{}")
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": OCI_CONFIG, "digest": config, "size": 2}, "layers": []}).encode()
    r = registry.push_manifest("r", "latest", raw)
    assert r.status == 201
    assert r.header("Location") == f"/v2/r/manifests/{sha(raw)}"
    assert r.header("Docker-Content-Digest") == sha(raw)
    by_digest = registry.push_manifest("r", sha(raw), raw)
    assert by_digest.status == 201


def test_manifest_naming_a_blob_the_repository_lacks_is_manifest_blob_unknown(registry):
    config = registry.push_blob("r", b"{}")
    elsewhere = registry.push_blob("other", b"layer pushed to another repository")
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "config": {"mediaType": OCI_CONFIG, "digest": config, "size": 2},
                      "layers": [{"mediaType": OCI_LAYER, "digest": elsewhere, "size": 34}]}
                     ).encode()
    r = registry.push_manifest("r", "latest", raw)
    assert r.status == 400 and r.codes == ["MANIFEST_BLOB_UNKNOWN"]
    assert r.json()["errors"][0]["detail"]["digest"] == elsewhere
    missing = registry.request("GET", "/v2/r/manifests/latest")
    assert missing.status == 404 and missing.codes == ["MANIFEST_UNKNOWN"]


def test_manifest_pushed_under_another_digest_is_digest_invalid(registry):
    config = registry.push_blob("r", b"{}")
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": OCI_CONFIG, "digest": config, "size": 2}, "layers": []}).encode()
    r = registry.push_manifest("r", sha(raw + b" "), raw)
    assert r.status == 400 and r.codes == ["DIGEST_INVALID"]
    assert registry.request("GET", f"/v2/r/manifests/{sha(raw)}").status == 404


@pytest.mark.parametrize("body, content_type", [
    (b"not json", OCI_MANIFEST),
    (b'{"schemaVersion": 1, "name": "r", "tag": "x", "fsLayers": []}', OCI_MANIFEST),
    (b'{"schemaVersion": 2, "mediaType": "%s", "manifests": []}' % OCI_INDEX.encode(),
     OCI_MANIFEST),
    (b'{"schemaVersion": 2, "mediaType": "%s", "layers": []}' % OCI_MANIFEST.encode(),
     OCI_MANIFEST),
    (b'{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:zz", "size": 1}}',
     OCI_MANIFEST),
    (b'{"schemaVersion": 2}', "application/vnd.docker.distribution.manifest.v1+prettyjws"),
])
def test_malformed_manifest_is_manifest_invalid(registry, body, content_type):
    r = registry.push_manifest("r", "bad", body, content_type)
    assert r.status == 400 and r.codes == ["MANIFEST_INVALID"], r.body


def test_manifest_over_4_mib_is_refused_with_413(registry):
    config = registry.push_blob("r", b"{}")
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": OCI_CONFIG, "digest": config, "size": 2}, "layers": [],
        "annotations": {"pad": "x" * (4 << 20)}}).encode()
    r = registry.push_manifest("r", "big", raw)
    assert r.status == 413 and r.codes == ["SIZE_INVALID"]


def test_index_needs_its_child_manifests_in_the_repository(registry):
    child, raw_child = registry.push_image("multi", "amd64", [b"amd64 layer"])
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child, "size": len(raw_child),
         "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    r = registry.push_manifest("multi", "latest", index, OCI_INDEX)
    assert r.status == 201
    got = registry.request("GET", "/v2/multi/manifests/latest")
    assert got.body == index and got.header("Content-Type") == OCI_INDEX
    orphan = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha(b"no such manifest"), "size": 1}]}).encode()
    r = registry.push_manifest("multi", "broken", orphan, OCI_INDEX)
    assert r.status == 400 and r.codes == ["MANIFEST_BLOB_UNKNOWN"]


# -- content management --------------------------------------------------------------------


def test_deleting_a_manifest_by_digest_removes_it_and_its_tags(registry):
    digest, _ = registry.push_image("r", "v1", [b"a layer"])
    registry.push_manifest("r", "v2", registry.request("GET", "/v2/r/manifests/v1").body)
    assert registry.request("DELETE", f"/v2/r/manifests/{digest}").status == 202
    for ref in (digest, "v1", "v2"):
        r = registry.request("GET", f"/v2/r/manifests/{ref}")
        assert r.status == 404 and r.codes == ["MANIFEST_UNKNOWN"]
    assert registry.request("GET", "/v2/r/tags/list").json()["tags"] == []
    assert registry.request("DELETE", f"/v2/r/manifests/{digest}").status == 404


def test_deleting_a_tag_keeps_the_manifest(registry):
    digest, _ = registry.push_image("r", "v1", [b"a layer"])
    registry.push_manifest("r", "v2", registry.request("GET", "/v2/r/manifests/v1").body)
    assert registry.request("DELETE", "/v2/r/manifests/v1").status == 202
    assert registry.request("GET", "/v2/r/manifests/v1").status == 404
    assert registry.request("GET", "/v2/r/manifests/v2").status == 200
    assert registry.request("GET", f"/v2/r/manifests/{digest}").status == 200


def test_deleting_a_blob_unlinks_it_from_the_repository(registry):
    digest = registry.push_blob("r", b"to delete")
    assert registry.request("DELETE", f"/v2/r/blobs/{digest}").status == 202
    r = registry.request("GET", f"/v2/r/blobs/{digest}")
    assert r.status == 404 and r.codes == ["BLOB_UNKNOWN"]
    assert registry.request("DELETE", f"/v2/r/blobs/{digest}").status == 404


# -- listing -------------------------------------------------------------------------------


def test_tags_list_paginates_with_n_last_and_a_link_header(registry):
    _, raw = registry.push_image("r", "t0", [b"layer"])
    names = ["t0"] + [f"t{i}" for i in range(1, 5)]
    for tag in names[1:]:
        assert registry.push_manifest("r", tag, raw).status == 201
    r = registry.request("GET", "/v2/r/tags/list")
    assert r.json() == {"name": "r", "tags": names}
    first = registry.request("GET", "/v2/r/tags/list?n=2")
    assert first.json()["tags"] == ["t0", "t1"]
    assert first.header("Link") == '</v2/r/tags/list?n=2&last=t1>; rel="next"'
    second = registry.request("GET", "/v2/r/tags/list?n=2&last=t1")
    assert second.json()["tags"] == ["t2", "t3"]
    last = registry.request("GET", "/v2/r/tags/list?n=2&last=t3")
    assert last.json()["tags"] == ["t4"] and last.header("Link") is None
    assert registry.request("GET", "/v2/r/tags/list?n=0").json()["tags"] == []
    bad = registry.request("GET", "/v2/r/tags/list?n=abc")
    assert bad.status == 400 and bad.codes == ["PAGINATION_NUMBER_INVALID"]


def test_tags_list_of_an_unknown_repository_is_name_unknown(registry):
    r = registry.request("GET", "/v2/nobody/tags/list")
    assert r.status == 404 and r.codes == ["NAME_UNKNOWN"]


def test_catalog_lists_repositories_with_pagination(registry):
    for name in ("zeta", "alpha/one", "alpha/two", "mid"):
        registry.push_blob(name, b"x")
    assert registry.request("GET", "/v2/_catalog").json() == {
        "repositories": ["alpha/one", "alpha/two", "mid", "zeta"]}
    page = registry.request("GET", "/v2/_catalog?n=3")
    assert page.json()["repositories"] == ["alpha/one", "alpha/two", "mid"]
    assert page.header("Link") == '</v2/_catalog?n=3&last=mid>; rel="next"'
    rest = registry.request("GET", "/v2/_catalog?n=3&last=mid")
    assert rest.json()["repositories"] == ["zeta"]


# -- referrers -----------------------------------------------------------------------------


def test_referrers_lists_manifests_whose_subject_is_the_digest(registry):
    subject, raw_subject = registry.push_image("r", "v1", [b"the image"])
    empty = registry.push_blob("r", b"{}")
    signature = registry.push_blob("r", b"a signature")
    refs = {}
    for kind in ("application/vnd.example.sig", "application/vnd.example.sbom"):
        raw = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": kind,
            "config": {"mediaType": EMPTY_JSON, "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": signature,
                        "size": 11}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(raw_subject)},
            "annotations": {"org.example.kind": kind}}).encode()
        r = registry.push_manifest("r", sha(raw), raw)
        assert r.status == 201 and r.header("OCI-Subject") == subject
        refs[sha(raw)] = kind
    r = registry.request("GET", f"/v2/r/referrers/{subject}")
    assert r.status == 200 and r.header("Content-Type") == OCI_INDEX
    index = r.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    assert {m["digest"]: m["artifactType"] for m in index["manifests"]} == refs
    for m in index["manifests"]:
        assert m["mediaType"] == OCI_MANIFEST
        assert m["annotations"] == {"org.example.kind": refs[m["digest"]]}
    filtered = registry.request(
        "GET", f"/v2/r/referrers/{subject}?artifactType=application/vnd.example.sbom")
    assert filtered.header("OCI-Filters-Applied") == "artifactType"
    assert [m["artifactType"] for m in filtered.json()["manifests"]] == [
        "application/vnd.example.sbom"]
    nothing = registry.request("GET", f"/v2/r/referrers/{sha(b'unknown')}")
    assert nothing.status == 200 and nothing.json()["manifests"] == []
    sbom = next(d for d, k in refs.items() if k.endswith("sbom"))
    assert registry.request("DELETE", f"/v2/r/manifests/{sbom}").status == 202
    after = registry.request("GET", f"/v2/r/referrers/{subject}").json()["manifests"]
    assert [m["digest"] for m in after] == [d for d in refs if d != sbom]
    invalid = registry.request("GET", "/v2/r/referrers/sha256:nothex")
    assert invalid.status == 400 and invalid.codes == ["DIGEST_INVALID"]


def test_a_referrer_may_be_pushed_before_its_subject(registry):
    empty = registry.push_blob("r", b"{}")
    absent = sha(b"subject pushed later")
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "artifactType": "application/vnd.example.sig",
                      "config": {"mediaType": EMPTY_JSON, "digest": empty, "size": 2},
                      "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": absent,
                                                "size": 10}}).encode()
    r = registry.push_manifest("r", sha(raw), raw)
    assert r.status == 201 and r.header("OCI-Subject") == absent
    listed = registry.request("GET", f"/v2/r/referrers/{absent}").json()["manifests"]
    assert [m["digest"] for m in listed] == [sha(raw)]


# -- grammar and error codes ---------------------------------------------------------------


@pytest.mark.parametrize("path, code", [
    ("/v2/UPPER/tags/list", "NAME_INVALID"),
    ("/v2/a/../b/tags/list", "NAME_INVALID"),
    ("/v2/a//b/tags/list", "NAME_INVALID"),
    ("/v2/-lead/tags/list", "NAME_INVALID"),
    ("/v2/" + "a" * 256 + "/tags/list", "NAME_INVALID"),
    ("/v2/r/manifests/" + "t" * 300, "TAG_INVALID"),
    ("/v2/r/manifests/.hidden", "TAG_INVALID"),
    ("/v2/r/manifests/sha256:1234", "DIGEST_INVALID"),
    ("/v2/r/blobs/sha256:" + "A" * 64, "DIGEST_INVALID"),
    ("/v2/r/blobs/md5:" + "a" * 32, "DIGEST_INVALID"),
])
def test_names_tags_and_digests_follow_the_spec_grammar(registry, path, code):
    r = registry.request("GET", path)
    assert r.status == 400 and r.codes == [code], r.body


def test_error_bodies_have_the_spec_shape_and_methods_are_checked(registry):
    r = registry.request("GET", "/v2/r/manifests/nothing")
    assert r.status == 404
    assert r.header("Content-Type").startswith("application/json")
    error = r.json()["errors"][0]
    assert error["code"] == "MANIFEST_UNKNOWN" and error["message"]
    r = registry.request("PATCH", "/v2/r/manifests/latest", b"")
    assert r.status == 405 and r.codes == ["UNSUPPORTED"]
    r = registry.request("GET", "/v3/")
    assert r.status == 404


def test_max_upload_refuses_larger_blobs_with_413(tmp_path):
    server = Server(str(tmp_path / "small"), "--max-upload", "64k").start()
    try:
        data = os.urandom(100_000)
        r = server.request("POST", f"/v2/r/blobs/uploads/?digest={sha(data)}", data)
        assert r.status == 413 and r.codes == ["SIZE_INVALID"]
        location = server.request("POST", "/v2/r/blobs/uploads/").header("Location")
        assert server.request("PATCH", location, data[:60_000]).status == 202
        r = server.request("PATCH", location, data[60_000:])
        assert r.status == 413 and r.codes == ["SIZE_INVALID"]
        assert blob_files(server.root) == []
        assert os.listdir(os.path.join(server.root, "uploads")) == []
        assert server.push_blob("r", data[:60_000])
    finally:
        server.stop()


def test_read_only_registry_serves_pulls_and_denies_pushes(tmp_path):
    root = str(tmp_path / "ro")
    writer = Server(root).start()
    digest = writer.push_blob("r", b"published")
    writer.stop()
    server = Server(root, "--read-only").start()
    try:
        assert server.request("GET", f"/v2/r/blobs/{digest}").body == b"published"
        r = server.request("POST", "/v2/r/blobs/uploads/")
        assert r.status == 403 and r.codes == ["DENIED"]
        assert server.request("DELETE", f"/v2/r/blobs/{digest}").codes == ["DENIED"]
    finally:
        server.stop()


# -- auth ----------------------------------------------------------------------------------


def _htpasswd(path: str) -> None:
    import bcrypt

    # what `htpasswd -B` writes ($2y$, cost 5), and the older {SHA} form
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(5)).decode().replace("$2b$", "$2y$", 1)
    sha1 = base64.b64encode(hashlib.sha1(b"old-pass").digest()).decode()
    with open(path, "w") as f:
        f.write(f"alice:{hashed}\nbob:{{SHA}}{sha1}\n")


def test_basic_auth_against_htpasswd(tmp_path):
    path = str(tmp_path / "htpasswd")
    _htpasswd(path)
    server = Server(str(tmp_path / "auth"), "--htpasswd", path).start()
    try:
        r = server.request("GET", "/v2/")
        assert r.status == 401 and r.codes == ["UNAUTHORIZED"]
        assert r.header("WWW-Authenticate") == 'Basic realm="berth-registry"'
        assert server.request("GET", "/v2/", auth=("alice", "s3cret")).status == 200
        assert server.request("GET", "/v2/", auth=("alice", "s3cret")).status == 200  # cached
        assert server.request("GET", "/v2/", auth=("bob", "old-pass")).status == 200
        assert server.request("GET", "/v2/", auth=("alice", "wrong")).status == 401
        assert server.request("GET", "/v2/", auth=("mallory", "s3cret")).status == 401
        blob = server.request("POST", "/v2/r/blobs/uploads/")
        assert blob.status == 401
    finally:
        server.stop()


def test_repeated_failed_logins_get_toomanyrequests(tmp_path):
    path = str(tmp_path / "htpasswd")
    _htpasswd(path)
    server = Server(str(tmp_path / "auth"), "--htpasswd", path).start()
    try:
        for _ in range(10):
            assert server.request("GET", "/v2/", auth=("alice", "guess")).status == 401
        r = server.request("GET", "/v2/", auth=("alice", "s3cret"))
        assert r.status == 429 and r.codes == ["TOOMANYREQUESTS"]
        assert int(r.header("Retry-After")) > 0
    finally:
        server.stop()


def test_bad_htpasswd_file_is_one_clear_line(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text("carol:$apr1$abc$def\n")
    proc = subprocess.run([sys.executable, "-m", "berth", "registry", "serve", "--addr",
                           "127.0.0.1:0", "--root", str(tmp_path / "r"), "--htpasswd", str(path)],
                          env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 1
    assert "unsupported hash" in proc.stderr and "no usable entries" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- crash safety and restarts -------------------------------------------------------------


def test_kill_9_mid_upload_leaves_no_visible_blob_and_the_upload_resumes(tmp_path):
    root = str(tmp_path / "crash")
    server = Server(root).start()
    data = os.urandom(8 << 20)
    digest = sha(data)
    location = server.request("POST", "/v2/r/blobs/uploads/").header("Location")
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n".encode())
    sock.sendall(data[:3 << 20])
    upload_data = os.path.join(root, "uploads", location.rsplit("/", 1)[1], "data")
    deadline = time.monotonic() + 10
    while os.path.getsize(upload_data) < (1 << 20) and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill9()
    sock.close()
    assert blob_files(root) == []
    server = Server(root).start()
    try:
        assert server.request("HEAD", f"/v2/r/blobs/{digest}").status == 404
        status = server.request("GET", location)
        assert status.status == 204
        done = int(status.header("Range").split("-")[1]) + 1
        assert 0 < done <= 3 << 20
        r = server.request("PATCH", location, data[done:], {
            "Content-Range": f"{done}-{len(data) - 1}"})
        assert r.status == 202
        assert server.request("PUT", f"{location}?digest={digest}").status == 201
        assert sha(server.request("GET", f"/v2/r/blobs/{digest}").body) == digest
    finally:
        server.stop()


def test_a_full_disk_fails_the_upload_cleanly_and_the_server_goes_on(tmp_path):
    root = tmp_path / "full"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)], check=True)
    try:
        server = Server(str(root)).start()
        try:
            data = os.urandom(3 << 20)
            location = server.request("POST", "/v2/r/blobs/uploads/").header("Location")
            r = server.request("PATCH", location, data)
            assert r.status == 500 and r.codes == ["UNKNOWN"]
            assert "No space left on device" in r.json()["errors"][0]["message"]
            assert server.request("HEAD", f"/v2/r/blobs/{sha(data)}").status == 404
            assert server.request("DELETE", location).status == 204
            assert server.push_blob("r", b"small enough")
        finally:
            err = server.stop()
        assert "Traceback" not in err and "No space left on device" in err
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_uploads_abandoned_for_a_day_are_purged_at_start(tmp_path):
    root = str(tmp_path / "purge")
    server = Server(root).start()
    old = server.request("POST", "/v2/r/blobs/uploads/").header("Docker-Upload-UUID")
    new = server.request("POST", "/v2/r/blobs/uploads/").header("Docker-Upload-UUID")
    server.stop()
    two_days_ago = time.time() - 2 * 86400
    os.utime(os.path.join(root, "uploads", old, "repo"), (two_days_ago, two_days_ago))
    server = Server(root).start()
    try:
        assert server.request("GET", f"/v2/r/blobs/uploads/{old}").status == 404
        assert server.request("GET", f"/v2/r/blobs/uploads/{new}").status == 204
    finally:
        server.stop()


# -- garbage collection --------------------------------------------------------------------


def _gc(root: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "berth", "registry", "gc", "--root", root, *args],
                          env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
                          timeout=60)


def test_gc_keeps_a_shared_layer_and_removes_the_deleted_images_own(tmp_path):
    root = str(tmp_path / "gc")
    server = Server(root).start()
    shared, own_a, own_b = b"shared base layer", b"only in image a", b"only in image b"
    digest_a, _ = server.push_image("app", "a", [shared, own_a])
    digest_b, _ = server.push_image("app", "b", [shared, own_b])
    stray = server.push_blob("app", b"pushed, never referenced")
    assert server.request("DELETE", f"/v2/app/manifests/{digest_a}").status == 202
    refused = _gc(root)
    assert refused.returncode == 1 and "stop it first" in refused.stderr
    server.stop()

    dry = _gc(root, "--dry-run")
    assert dry.returncode == 0 and sha(own_a) in dry.stdout and sha(shared) not in dry.stdout
    assert len(blob_files(root)) == 8  # 2 configs, 3 layers, 2 manifests, the stray blob
    done = _gc(root)
    assert done.returncode == 0, done.stderr
    left = set(blob_files(root))
    for kept in (sha(shared), sha(own_b), digest_b):
        assert kept.split(":")[1] in left
    for gone in (sha(own_a), digest_a, stray):
        assert gone.split(":")[1] not in left

    server = Server(root).start()
    try:
        r = server.request("GET", "/v2/app/manifests/b")
        layers = [d["digest"] for d in r.json()["layers"]] + [r.json()["config"]["digest"]]
        for digest in layers:
            assert server.request("GET", f"/v2/app/blobs/{digest}").status == 200
        assert server.request("HEAD", f"/v2/app/blobs/{sha(own_a)}").status == 404
    finally:
        server.stop()


def test_gc_keeps_what_an_index_and_a_referrer_reach(tmp_path):
    root = str(tmp_path / "gc")
    server = Server(root).start()
    child, raw_child = server.push_image("multi", "child", [b"child layer"])
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child, "size": len(raw_child)}]}).encode()
    assert server.push_manifest("multi", "latest", index, OCI_INDEX).status == 201
    # the child's own revision goes: the index still needs it and its layer
    assert server.request("DELETE", f"/v2/multi/manifests/{child}").status == 202
    empty = server.push_blob("multi", b"{}")
    sig = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "x/sig",
                      "config": {"mediaType": EMPTY_JSON, "digest": empty, "size": 2},
                      "layers": [], "subject": {"mediaType": OCI_INDEX, "digest": sha(index),
                                                "size": len(index)}}).encode()
    assert server.push_manifest("multi", sha(sig), sig).status == 201
    server.stop()
    assert _gc(root).returncode == 0
    left = set(blob_files(root))
    for kept in (child, sha(b"child layer"), sha(index), sha(sig), empty):
        assert kept.split(":")[1] in left


# -- real peers ----------------------------------------------------------------------------


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


def _busybox_layout(berth) -> str:
    """An OCI layout holding berth's busybox, as docker.io/library/busybox:latest."""
    return f"oci:{berth.root}/content:docker.io/library/busybox:latest"


@pytest.mark.peers
def test_skopeo_copies_to_and_from_berth_registry(berth, registry, tmp_path):
    _need("skopeo")
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", _busybox_layout(berth),
                    f"docker://{registry.host}/library/busybox:1"], check=True,
                   capture_output=True, timeout=120)
    tags = registry.request("GET", "/v2/library/busybox/tags/list").json()["tags"]
    assert tags == ["1"]
    out = tmp_path / "pulled"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false",
                    f"docker://{registry.host}/library/busybox:1", f"oci:{out}:busybox"],
                   check=True, capture_output=True, timeout=120)
    index = json.loads((out / "index.json").read_text())
    pushed = registry.request("GET", "/v2/library/busybox/manifests/1")
    assert index["manifests"][0]["digest"] == pushed.header("Docker-Content-Digest")
    inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                              f"docker://{registry.host}/library/busybox:1"], check=True,
                             capture_output=True, text=True, timeout=60)
    assert json.loads(inspect.stdout)["Digest"] == pushed.header("Docker-Content-Digest")
    # a second copy into another repository mounts the blobs instead of uploading them
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{registry.host}/library/busybox:1",
                    f"docker://{registry.host}/mirror/busybox:1"], check=True,
                   capture_output=True, timeout=120)
    assert registry.request("GET", "/v2/mirror/busybox/manifests/1").status == 200


@pytest.mark.peers
def test_skopeo_pushes_with_credentials_to_an_htpasswd_registry(berth, tmp_path):
    _need("skopeo")
    path = str(tmp_path / "htpasswd")
    _htpasswd(path)
    server = Server(str(tmp_path / "auth"), "--htpasswd", path).start()
    try:
        dest = f"docker://{server.host}/library/busybox:latest"
        denied = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false",
                                 "--dest-creds", "alice:wrong", _busybox_layout(berth), dest],
                                capture_output=True, text=True, timeout=120)
        assert denied.returncode != 0
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--dest-creds",
                        "alice:s3cret", _busybox_layout(berth), dest], check=True,
                       capture_output=True, timeout=120)
        r = server.request("GET", "/v2/library/busybox/tags/list", auth=("alice", "s3cret"))
        assert r.json()["tags"] == ["latest"]
    finally:
        server.stop()


@pytest.mark.peers
def test_podman_pulls_from_berth_registry_and_runs_the_image(berth, registry):
    _need("skopeo", "podman", "runc")
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", _busybox_layout(berth),
                    f"docker://{registry.host}/library/busybox:latest"], check=True,
                   capture_output=True, timeout=120)
    base = f"/tmp/bpr-{os.getpid()}"  # short: overlay mount options have a length limit
    os.makedirs(base, exist_ok=True)
    conf = os.path.join(base, "containers.conf")
    with open(conf, "w") as f:
        f.write('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n')
    env = dict(os.environ, CONTAINERS_CONF=conf)
    podman = ["podman", "--root", f"{base}/root", "--runroot", f"{base}/run", "--runtime", "runc"]
    image = f"{registry.host}/library/busybox:latest"
    try:
        subprocess.run(podman + ["pull", "--tls-verify=false", image], check=True, env=env,
                       capture_output=True, timeout=180)
        run = subprocess.run(podman + ["run", "--rm", "--network", "none", image, "sh", "-c",
                                       "echo pulled-from-berth; busybox | head -1"],
                             env=env, capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines()[0] == "pulled-from-berth"
        # and back: podman pushes from its own store (compressing as it goes)
        subprocess.run(podman + ["push", "--tls-verify=false", image,
                                 f"docker://{registry.host}/copies/busybox:pushed"],
                       check=True, env=env, capture_output=True, timeout=180)
        assert registry.request("GET", "/v2/copies/busybox/tags/list").json()["tags"] == [
            "pushed"]
    finally:
        subprocess.run(podman + ["rmi", "-a", "-f"], env=env, capture_output=True, timeout=120)
        subprocess.run(podman + ["system", "reset", "-f"], env=env, capture_output=True,
                       timeout=120)
        with open("/proc/self/mountinfo") as f:
            leaked = [line for line in f if base in line]
        for line in leaked:
            subprocess.run(["umount", "-l", line.split()[4]], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
        assert not leaked, leaked
