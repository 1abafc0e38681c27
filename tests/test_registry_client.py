"""berth's registry client against real registries on 127.0.0.1, never the internet.

* Debian's docker-registry (the CNCF distribution registry, 2.8): push, pull, pull by
  digest, indexes, cross-repository mounts, chunked uploads, htpasswd basic auth. What
  it was asked is read from its access log.
* A small registry written here (``Stub``, http.server) that serves real blobs and
  manifests and can demand a bearer token from its own realm, drop a connection in the
  middle of a blob, ignore Range, or send corrupt bytes: the faults a real registry will
  not produce on request.
* Peers: skopeo reads what berth pushes and pushes what berth pulls; podman pulls and
  runs what berth pushed.

Credentials never touch root's ~/.docker: every test has a DOCKER_CONFIG of its own.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import Berth

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc=None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise AssertionError("the registry exited at start")
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(autouse=True)
def _own_docker_config(tmp_path, monkeypatch):
    """Credentials of this test only; no registries config but the test's own."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.delenv("BERTH_REGISTRIES_CONFIG", raising=False)


# --- Debian's docker-registry --------------------------------------------------------------


class DockerRegistry:
    """A docker-registry process on a free port, storage and access log under `base`."""

    def __init__(self, base: str, htpasswd: str | None = None,
                 tls: tuple[str, str] | None = None) -> None:
        self.base = base
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log = os.path.join(base, "registry.log")
        auth = (f"auth:\n  htpasswd:\n    realm: berth-test\n    path: {htpasswd}\n"
                if htpasswd else "")
        if tls:
            auth = f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" + auth
        config = os.path.join(base, "config.yml")
        with open(config, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n"
                    f"    rootdirectory: {base}/data\n  delete:\n    enabled: true\n"
                    f"http:\n  addr: {self.host}\n{auth}")
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", config], stdout=self._log,
                                     stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)

    def mark(self) -> int:
        return os.path.getsize(self.log)

    def requests(self, since: int = 0) -> list[str]:
        """"METHOD /path" of every request answered since the log offset `since`."""
        time.sleep(0.1)  # the access log is written after the response
        with open(self.log, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        return [f"{m} {p}" for m, p in re.findall(r'"([A-Z]+) (/v2/[^ "]*) HTTP/1\.1"', text)]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    reg = DockerRegistry(str(tmp_path_factory.mktemp("docker-registry")))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    if shutil.which("docker-registry") is None or shutil.which("htpasswd") is None:
        pytest.skip("docker-registry and htpasswd (apache2-utils) are needed")
    base = str(tmp_path_factory.mktemp("auth-registry"))
    entry = subprocess.run(["htpasswd", "-Bbn", "alice", "s3cret"], check=True,
                           capture_output=True, text=True).stdout.strip()
    with open(os.path.join(base, "htpasswd"), "w") as f:
        f.write(entry + "\n")
    reg = DockerRegistry(base, htpasswd=os.path.join(base, "htpasswd"))
    yield reg
    reg.stop()


def cli(tmp_path, name: str = "client") -> Berth:
    """A berth root with nothing in it."""
    b = Berth(str(tmp_path / name))
    return b


def push_busybox(b: Berth, target: str) -> str:
    """Tag busybox as `target`, push it; the digest pushed."""
    b("tag", "busybox", target)
    out = b.out("push", target)
    return re.search(r"digest: (sha256:[0-9a-f]{64}) size:", out).group(1)


# --- push and pull with docker-registry --------------------------------------------------


def test_pushed_image_removed_locally_pulls_back_and_runs(fresh_berth, registry):
    name = f"{registry.host}/roundtrip/busybox:v1"
    pushed = push_busybox(fresh_berth, name)
    image_id = fresh_berth.out("inspect", "-f", "{{.Id}}", name).strip()
    fresh_berth("rmi", name)
    assert fresh_berth("inspect", name, check=False).returncode != 0

    out = fresh_berth.out("pull", name)
    assert f"Digest: {pushed}" in out
    assert f"Status: Downloaded newer image for {name}" in out
    assert out.splitlines()[-1] == name
    assert fresh_berth.out("inspect", "-f", "{{.Id}}", name).strip() == image_id
    assert fresh_berth.out("run", "--rm", name, "echo", "pulled and ran") == "pulled and ran\n"
    assert "No problems found" in fresh_berth.out("system", "check")


def test_pull_into_an_empty_store_unpacks_every_layer(registry, fresh_berth, tmp_path):
    name = f"{registry.host}/empty/busybox:latest"
    push_busybox(fresh_berth, name)
    b = cli(tmp_path)
    out = b.out("pull", name)
    assert re.search(r"^[0-9a-f]{12}: Pull complete$", out, re.M)
    assert b.out("run", "--rm", "--network", "none", name, "cat", "/etc/hostname")
    # up to date the second time: one manifest request, no layer lines
    again = b.out("pull", name)
    assert f"Status: Image is up to date for {name}" in again
    assert "Pull complete" not in again
    b.shutdown()


def test_pull_by_digest_records_an_image_found_by_that_digest(fresh_berth, registry, tmp_path):
    name = f"{registry.host}/bydigest/busybox:latest"
    digest = push_busybox(fresh_berth, name)
    b = cli(tmp_path)
    ref = f"{registry.host}/bydigest/busybox@{digest}"
    out = b.out("pull", ref)
    assert out.splitlines()[-1] == ref
    assert digest in b.out("images", "--digests")
    assert b.out("run", "--rm", ref, "echo", "by digest") == "by digest\n"
    b.shutdown()


def test_pull_all_tags_pulls_every_tag_the_registry_lists(fresh_berth, registry, tmp_path):
    for tag in ("one", "two"):
        push_busybox(fresh_berth, f"{registry.host}/alltags/busybox:{tag}")
    b = cli(tmp_path)
    assert b.out("pull", "-q", "-a", f"{registry.host}/alltags/busybox") == \
        f"{registry.host}/alltags/busybox\n"
    shown = b.out("images")
    assert " one " in shown and " two " in shown
    proc = b("pull", "-a", f"{registry.host}/alltags/busybox:one", check=False)
    assert proc.returncode == 1 and "--all-tags" in proc.stderr.decode()


def test_pull_of_an_unknown_tag_says_manifest_unknown_and_stores_nothing(registry, tmp_path):
    b = cli(tmp_path)
    proc = b("pull", f"{registry.host}/nothing/here:nope", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert err.count("\n") == 1 and err.startswith("berth: ")
    assert "manifest unknown" in err or "not found" in err
    assert b.out("images", "-q") == ""


def test_a_second_push_uploads_nothing(fresh_berth, registry):
    name = f"{registry.host}/twice/busybox:latest"
    push_busybox(fresh_berth, name)
    mark = registry.mark()
    out = fresh_berth.out("push", name)
    asked = registry.requests(mark)
    assert "Layer already exists" in out and "Pushed" not in out
    assert not [r for r in asked if r.startswith(("PATCH", "POST"))], asked
    assert [r for r in asked if r.startswith("PUT")] == ["PUT /v2/twice/busybox/manifests/latest"]


def test_push_to_a_second_repository_mounts_the_blobs_across(fresh_berth, registry):
    push_busybox(fresh_berth, f"{registry.host}/mount-a/busybox:latest")
    fresh_berth("tag", "busybox", f"{registry.host}/mount-b/busybox:latest")
    mark = registry.mark()
    out = fresh_berth.out("push", f"{registry.host}/mount-b/busybox:latest")
    asked = registry.requests(mark)
    assert "Mounted from mount-a/busybox" in out
    assert [r for r in asked if r.startswith("POST") and "mount=" in r and "from=mount-a" in r]
    assert not [r for r in asked if r.startswith("PATCH")], asked


def test_push_compresses_a_plain_layer_once_and_records_the_pushed_manifest(
        fresh_berth, registry, monkeypatch):
    from berth.image import ImageStore
    from berth.registry import push as pushmod

    calls = []
    real = pushmod.compress
    monkeypatch.setattr(pushmod, "compress", lambda *a: calls.append(a) or real(*a))
    images = ImageStore(fresh_berth.root)
    busybox = images.resolve("busybox")
    assert busybox.manifest.layers[0].media_type.endswith(".tar")  # imported: plain
    for repo in ("once-a", "once-b"):
        images.tag("busybox", f"{registry.host}/{repo}/busybox:latest")
        result = pushmod.push(images, f"{registry.host}/{repo}/busybox:latest")
        pushed = images.resolve(f"{registry.host}/{repo}/busybox:latest")
        assert pushed.manifest_digest == result.digest
        assert pushed.id == busybox.id  # the same image, its layers now gzip-encoded
        assert pushed.manifest.layers[0].media_type == OCI_LAYER_GZIP
    assert len(calls) == 1


def test_chunked_upload_sends_ranges_the_registry_accepts(fresh_berth, registry, tmp_path):
    from berth.image import ImageStore
    from berth.registry.push import push

    images = ImageStore(fresh_berth.root)
    name = f"{registry.host}/chunked/busybox:latest"
    images.tag("busybox", name)
    mark = registry.mark()
    push(images, name, chunk=256 << 10)
    patches = [r for r in registry.requests(mark) if r.startswith("PATCH")]
    assert len(patches) >= 4  # a ~1 MB layer in 256 KiB ranges, and the config
    b = cli(tmp_path)
    b.out("pull", name)
    assert b.out("run", "--rm", "--network", "none", name, "echo", "chunks") == "chunks\n"
    b.shutdown()


def test_push_of_a_digest_or_an_unknown_name_is_refused(fresh_berth, registry):
    proc = fresh_berth("push", f"{registry.host}/x/y@sha256:{'a' * 64}", check=False)
    assert proc.returncode == 1 and "digest" in proc.stderr.decode()
    proc = fresh_berth("push", f"{registry.host}/not/tagged/here", check=False)
    assert proc.returncode == 1
    assert "An image does not exist locally with the tag" in proc.stderr.decode()


# --- indexes and platforms -------------------------------------------------------------


def _store_two_platform_index(root: str, name: str) -> tuple[str, str, str]:
    """Record `name` as an index of busybox (this host) and an arm64 twin; returns the
    digests of the index, the host manifest and the arm64 manifest."""
    from berth.image import ImageStore
    from berth.oci import image as oci

    images = ImageStore(root)
    bb = images.resolve("busybox")
    host = oci.host_platform()
    other = "arm64" if host.architecture != "arm64" else "amd64"
    config = json.loads(images.content.read(bb.id))
    config["architecture"] = other
    config.pop("variant", None)
    config_raw = json.dumps(config).encode()
    images.content.put(config_raw)
    twin = dict(json.loads(images.content.read(bb.manifest_digest)))
    twin["config"] = {"mediaType": OCI_CONFIG, "digest": sha(config_raw), "size": len(config_raw)}
    twin_raw = json.dumps(twin).encode()
    images.content.put(twin_raw)
    host_raw = images.content.read(bb.manifest_digest)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": bb.manifest_digest, "size": len(host_raw),
         "platform": {"architecture": host.architecture, "os": "linux"}},
        {"mediaType": OCI_MANIFEST, "digest": sha(twin_raw), "size": len(twin_raw),
         "platform": {"architecture": other, "os": "linux"}}]}
    index_raw = json.dumps(index).encode()
    images.content.put(index_raw)
    images.add(sha(index_raw), name)
    return sha(index_raw), bb.manifest_digest, sha(twin_raw)


def test_an_index_pulls_the_hosts_platform_and_platform_picks_another(
        fresh_berth, registry, tmp_path):
    name = f"{registry.host}/multi/busybox:latest"
    _store_two_platform_index(fresh_berth.root, "docker.io/library/multi:latest")
    fresh_berth("tag", "multi", name)
    out = fresh_berth.out("push", name)
    index_digest = re.search(r"digest: (sha256:[0-9a-f]{64})", out).group(1)
    index = json.loads(subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{name}"],
        capture_output=True, check=True).stdout)
    assert index["mediaType"] == OCI_INDEX and len(index["manifests"]) == 2

    from berth.oci.image import host_platform

    host_arch = host_platform().architecture
    other = "arm64" if host_arch != "arm64" else "amd64"
    b = cli(tmp_path)
    assert f"Digest: {index_digest}" in b.out("pull", name)
    assert b.out("inspect", "-f", "{{.Architecture}}", name).strip() == host_arch
    assert b.out("run", "--rm", "--network", "none", name, "echo", "host") == "host\n"

    c = cli(tmp_path, "other")
    c.out("pull", "--platform", f"linux/{other}", name)
    assert c.out("inspect", "-f", "{{.Architecture}}", name).strip() == other
    proc = c("pull", "--platform", "linux/s390x", name, check=False)
    assert proc.returncode == 1 and "linux/s390x" in proc.stderr.decode()
    b.shutdown()
    c.shutdown()


# --- a registry of our own, with faults on request ---------------------------------------


class Stub:
    """A read-only registry on 127.0.0.1 serving one real image, with faults on request."""

    def __init__(self, busybox_tar: str, *, token: tuple[str, str] | None = None,
                 anonymous: bool = False, redirect: bool = False,
                 drop_after: int | None = None, drops: int = 1, ranges: bool = True,
                 corrupt: bool = False) -> None:
        with open(busybox_tar, "rb") as f:
            tar = f.read()
        self.layer = gzip.compress(tar, mtime=0)
        config = json.dumps({"architecture": _host_arch(), "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": [sha(tar)]},
                             "config": {"Cmd": ["sh"]}}).encode()
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": OCI_CONFIG, "digest": sha(config),
                                          "size": len(config)},
                               "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha(self.layer),
                                           "size": len(self.layer)}]}).encode()
        self.blobs = {sha(config): config, sha(self.layer): self.layer}
        self.manifest = manifest
        self.token, self.drop_after, self.drops = token, drop_after, drops
        self.anonymous, self.redirect = anonymous, redirect
        self.ranges, self.corrupt = ranges, corrupt
        self.log: list[tuple[str, str, dict]] = []
        self.tokens: dict[str, str] = {}  # token -> scope
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ranges_asked(self) -> list[str]:
        return [h["Range"] for m, p, h in self.log if "/blobs/" in p and h.get("Range")]

    def _handler(self):
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.do_GET(head=True)

            def do_GET(self, head=False):
                stub.log.append((self.command, self.path, dict(self.headers)))
                path = self.path.split("?")[0]
                if path == "/token":
                    return self._token()
                if path.startswith("/cdn/") and path[5:] in stub.blobs:
                    return self._blob(stub.blobs[path[5:]], head)
                if (stub.token or stub.anonymous) and not self._authorized(path):
                    return self._send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":'
                                           b'"authentication required"}]}', extra={
                        "WWW-Authenticate": f'Bearer realm="http://{stub.host}/token",'
                                            f'service="stub"'})
                if path == "/v2/":
                    return self._send(200, b"{}")
                m = re.match(r"^/v2/(.+)/(manifests|blobs)/([^/]+)$", path)
                if m and m.group(2) == "manifests" and m.group(3) in ("latest", sha(stub.manifest)):
                    return self._send(200, stub.manifest, head, {
                        "Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha(stub.manifest)})
                if m and m.group(2) == "blobs" and m.group(3) in stub.blobs:
                    if stub.redirect:  # as Docker Hub sends blobs to its CDN: another origin
                        port = stub.server.server_address[1]
                        return self._send(307, b"", head, {
                            "Location": f"http://localhost:{port}/cdn/{m.group(3)}"})
                    return self._blob(stub.blobs[m.group(3)], head)
                self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":'
                                b'"manifest unknown"}]}')

            def _authorized(self, path: str) -> bool:
                auth = self.headers.get("Authorization", "")
                scope = stub.tokens.get(auth.removeprefix("Bearer "))
                if scope is None:
                    return False
                m = re.match(r"^/v2/(.+)/(manifests|blobs)/", path)
                return m is None or f"repository:{m.group(1)}:pull" in scope

            def _token(self):
                from urllib.parse import parse_qs, urlsplit

                query = parse_qs(urlsplit(self.path).query)
                if not (stub.anonymous and "Authorization" not in self.headers):
                    user, password = stub.token or ("", "")
                    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
                    if self.headers.get("Authorization") != expected:
                        return self._send(401, b'{"details":"incorrect username or password"}')
                token = os.urandom(8).hex()
                stub.tokens[token] = " ".join(query.get("scope", []))
                self._send(200, json.dumps({"token": token, "expires_in": 300}).encode())

            def _blob(self, data: bytes, head: bool):
                start = 0
                rng = self.headers.get("Range")
                if rng and stub.ranges:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                body = data[start:]
                if stub.corrupt:
                    middle = len(data) // 2 - start
                    if 0 <= middle < len(body):
                        body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]
                extra = {"Content-Type": "application/octet-stream"}
                status = 200
                if start:
                    status = 206
                    extra["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                # drop_after is an offset in the blob: a resumed request past it gets nothing
                if head or stub.drop_after is None or stub.drops <= 0 or \
                        len(data) <= stub.drop_after:
                    return self._send(status, body, head, extra)
                stub.drops -= 1
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:max(0, stub.drop_after - start)])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def _send(self, status, body, head=False, extra=None):
                self.send_response(status)
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        return Handler


def _host_arch() -> str:
    from berth.oci.image import host_platform

    return host_platform().architecture


@pytest.fixture
def stub(busybox_tar):
    servers = []

    def make(**kw) -> Stub:
        servers.append(Stub(busybox_tar, **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def partials(root: str) -> list[str]:
    ingest = os.path.join(root, "content", "ingest")
    return [n for n in os.listdir(ingest) if n.endswith(".partial")] if os.path.isdir(ingest) else []


def stored_blobs(root: str) -> set[str]:
    d = os.path.join(root, "content", "blobs", "sha256")
    return {"sha256:" + n for n in os.listdir(d)} if os.path.isdir(d) else set()


def test_a_dropped_connection_resumes_with_a_range_request(stub, tmp_path):
    s = stub(drop_after=300_000)
    b = cli(tmp_path)
    out = b.out("pull", f"{s.host}/resume/busybox")
    assert "Retrying in" in out and "Pull complete" in out
    assert s.ranges_asked() == ["bytes=300000-"]
    assert b.out("run", "--rm", "--network", "none", f"{s.host}/resume/busybox", "echo", "ok") == "ok\n"
    assert partials(b.root) == []
    b.shutdown()


def test_a_server_that_ignores_range_has_the_received_bytes_skipped(stub, tmp_path):
    s = stub(drop_after=300_000, ranges=False)
    b = cli(tmp_path)
    b.out("pull", f"{s.host}/norange/busybox")
    assert s.ranges_asked() == ["bytes=300000-"]
    assert sha(s.layer) in stored_blobs(b.root)


def test_a_registry_that_keeps_dropping_gives_one_line_and_the_next_pull_resumes(stub, tmp_path):
    s = stub(drop_after=400_000, drops=100)
    b = cli(tmp_path)
    proc = b("pull", f"{s.host}/flaky/busybox", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert err.startswith("berth: downloading layer") and err.count("\n") == 1
    assert "run the pull again to resume" in err
    assert b.out("images", "-q") == ""
    assert sha(s.layer) not in stored_blobs(b.root)
    assert len(partials(b.root)) == 1  # kept for the next pull

    s.drops = 0
    b.out("pull", f"{s.host}/flaky/busybox")
    assert s.ranges_asked()[-1] == "bytes=400000-"  # not from the start
    assert sha(s.layer) in stored_blobs(b.root) and partials(b.root) == []


def test_a_corrupt_blob_is_refused_and_nothing_is_stored(stub, tmp_path):
    s = stub(corrupt=True)
    b = cli(tmp_path)
    proc = b("pull", f"{s.host}/corrupt/busybox", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1
    assert "does not match its digest" in err
    assert stored_blobs(b.root) == set()
    assert partials(b.root) == []
    snaps = os.path.join(b.root, "snapshots")
    assert not os.path.isdir(snaps) or os.listdir(snaps) == []
    assert b.out("images", "-q") == ""


def test_bearer_token_flow_login_pull_logout(stub, tmp_path):
    s = stub(token=("bob", "hunter2"))
    b = cli(tmp_path)
    name = f"{s.host}/private/busybox"
    proc = b("pull", name, check=False)
    assert proc.returncode == 1 and f"berth login {s.host}" in proc.stderr.decode()

    bad = b("login", "-u", "bob", "--password-stdin", s.host, input="wrong\n", check=False)
    assert bad.returncode == 1 and "incorrect username or password" in bad.stderr.decode()
    assert b.out("login", "-u", "bob", "--password-stdin", s.host, input="hunter2\n") == \
        "Login Succeeded\n"
    with open(os.path.join(os.environ["DOCKER_CONFIG"], "config.json")) as f:
        saved = json.load(f)["auths"][s.host]["auth"]
    assert base64.b64decode(saved) == b"bob:hunter2"
    assert os.stat(os.path.join(os.environ["DOCKER_CONFIG"], "config.json")).st_mode & 0o077 == 0

    b.out("pull", name)
    scopes = [p for m, p, h in s.log if p.startswith("/token") and "scope=" in p]
    assert scopes and all("repository%3Aprivate%2Fbusybox%3Apull" in p for p in scopes)
    assert b.out("logout", s.host) == f"Removing login credentials for {s.host}\n"
    assert b.out("logout", s.host) == f"Not logged in to {s.host}\n"


def test_anonymous_bearer_token_and_a_blob_redirect_to_another_origin(stub, tmp_path):
    s = stub(anonymous=True, redirect=True)
    b = cli(tmp_path)
    b.out("pull", f"{s.host}/public/busybox")
    token_asks = [h for m, p, h in s.log if p.startswith("/token")]
    assert token_asks and all("Authorization" not in h for h in token_asks)
    cdn = [h for m, p, h in s.log if p.startswith("/cdn/")]
    assert len(cdn) == 2  # config and layer, both fetched where the redirect said
    assert all("Authorization" not in h for h in cdn)  # the token stays with its registry
    blobs = [h for m, p, h in s.log if "/blobs/" in p]
    assert blobs and all(h.get("Authorization", "").startswith("Bearer ") for h in blobs)


def test_credentials_docker_wrote_and_credential_helpers_are_used(stub, tmp_path, monkeypatch):
    s = stub(token=("carol", "pw"))
    config_dir = os.environ["DOCKER_CONFIG"]
    os.makedirs(config_dir)
    with open(os.path.join(config_dir, "config.json"), "w") as f:
        json.dump({"auths": {f"http://{s.host}/v2/": {
            "auth": base64.b64encode(b"carol:pw").decode()}}, "detachKeys": "ctrl-x"}, f)
    b = cli(tmp_path)
    b.out("pull", f"{s.host}/fromdocker/busybox")

    # a credential helper named for the registry wins over the file
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-berthtest"
    helper.write_text('#!/bin/sh\n[ "$1" = get ] || exit 1\nread server\n'
                      'echo "{\\"Username\\":\\"carol\\",\\"Secret\\":\\"pw\\"}"\n')
    helper.chmod(0o755)
    with open(os.path.join(config_dir, "config.json"), "w") as f:
        json.dump({"auths": {s.host: {"auth": base64.b64encode(b"carol:wrong").decode()}},
                   "credHelpers": {s.host: "berthtest"}}, f)
    b.env["PATH"] = f"{bindir}:{os.environ['PATH']}"
    b.out("pull", f"{s.host}/fromhelper/busybox")


def test_basic_auth_against_docker_registry_htpasswd(fresh_berth, auth_registry, tmp_path):
    name = f"{auth_registry.host}/basic/busybox:latest"
    fresh_berth("tag", "busybox", name)
    denied = fresh_berth("push", name, check=False)
    assert denied.returncode == 1 and "berth login" in denied.stderr.decode()
    bad = fresh_berth("login", "-u", "alice", "-p", "nope", auth_registry.host, check=False)
    assert bad.returncode == 1 and "incorrect username or password" in bad.stderr.decode()
    login = fresh_berth("login", "-u", "alice", "-p", "s3cret", auth_registry.host)
    assert login.stdout == b"Login Succeeded\n"
    assert b"Using --password via the CLI is insecure" in login.stderr
    fresh_berth.out("push", name)

    b = cli(tmp_path)
    b.out("pull", name)
    assert b.out("run", "--rm", "--network", "none", name, "echo", "basic") == "basic\n"
    b.shutdown()


def test_tls_registry_on_loopback_is_used_without_verification(fresh_berth, tmp_path):
    if shutil.which("docker-registry") is None or shutil.which("openssl") is None:
        pytest.skip("docker-registry and openssl are needed")
    base = tmp_path / "tls"
    base.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(base / "key.pem"),
                    "-out", str(base / "cert.pem")], check=True, capture_output=True)
    reg = DockerRegistry(str(base), tls=(str(base / "cert.pem"), str(base / "key.pem")))
    try:
        name = f"{reg.host}/tls/busybox:latest"
        push_busybox(fresh_berth, name)
        b = cli(tmp_path)
        b.out("pull", name)
        assert b.out("run", "--rm", "--network", "none", name, "echo", "tls") == "tls\n"
        b.shutdown()
    finally:
        reg.stop()


def test_a_mirror_that_fails_hands_over_to_the_next(fresh_berth, registry, tmp_path, monkeypatch):
    push_busybox(fresh_berth, f"{registry.host}/library/busybox:latest")
    config = tmp_path / "registries.json"
    config.write_text(json.dumps({"mirrors": {"docker.io": [
        f"http://127.0.0.1:{free_port()}", f"http://{registry.host}"]}}))
    monkeypatch.setenv("BERTH_REGISTRIES_CONFIG", str(config))
    b = cli(tmp_path)
    assert b.out("pull", "-q", "busybox") == "docker.io/library/busybox:latest\n"


def test_unreachable_registry_is_one_line(tmp_path):
    b = cli(tmp_path)
    proc = b("pull", f"127.0.0.1:{free_port()}/nobody/home", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1 and "refused" in err.lower()


def test_a_full_disk_fails_cleanly(registry, fresh_berth, tmp_path):
    name = f"{registry.host}/fulldisk/busybox:latest"
    push_busybox(fresh_berth, name)
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1600k", "tmpfs", str(mnt)], check=True)
    try:
        b = Berth(str(mnt / "root"))
        proc = b("pull", name, check=False)
        err = proc.stderr.decode()
        assert proc.returncode == 1 and err.count("\n") == 1
        assert "No space left on device" in err
        assert partials(b.root) == []
        snaps = os.path.join(b.root, "snapshots")
        assert not os.path.isdir(snaps) or os.listdir(snaps) == []
        index = os.path.join(b.root, "content", "index.json")
        assert not os.path.exists(index) or json.load(open(index))["manifests"] == []
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


# --- auto-pull on run and create, through a mirror for docker.io --------------------------


@pytest.fixture
def mirrored(fresh_berth, registry, tmp_path, monkeypatch):
    """`busybox` served by the local registry as docker.io's mirror; a client root with
    nothing in it that uses that mirror."""
    push_busybox(fresh_berth, f"{registry.host}/library/busybox:latest")
    config = tmp_path / "registries.json"
    config.write_text(json.dumps({"mirrors": {"docker.io": [f"http://{registry.host}"]}}))
    monkeypatch.setenv("BERTH_REGISTRIES_CONFIG", str(config))
    b = cli(tmp_path, "mirror-client")
    yield b
    b.shutdown()


def test_run_pulls_a_missing_image_from_the_mirror(mirrored, registry):
    mark = registry.mark()
    proc = mirrored("run", "--rm", "--network", "none", "busybox", "echo", "auto")
    assert proc.stdout == b"auto\n"
    err = proc.stderr.decode()
    assert "Unable to find image 'busybox:latest' locally" in err
    assert "Status: Downloaded newer image for busybox:latest" in err
    assert "GET /v2/library/busybox/manifests/latest" in registry.requests(mark)
    # present now: no request at all with the default --pull=missing
    mark = registry.mark()
    assert mirrored.out("run", "--rm", "--network", "none", "busybox", "true") == ""
    assert registry.requests(mark) == []


def test_run_pull_never_and_always(mirrored, registry):
    proc = mirrored("run", "--rm", "--pull=never", "busybox", "true", check=False)
    assert proc.returncode == 125 and "No such image: busybox:latest" in proc.stderr.decode()
    mark = registry.mark()
    mirrored("run", "--rm", "--network", "none", "--pull=always", "busybox", "true")
    mirrored("run", "--rm", "--network", "none", "--pull", "always", "busybox", "true")
    asked = registry.requests(mark)
    assert asked.count("GET /v2/library/busybox/manifests/latest") == 2
    bad = mirrored("run", "--rm", "--pull=sometimes", "busybox", "true", check=False)
    assert bad.returncode == 125 and "invalid pull option" in bad.stderr.decode()


def test_create_pulls_a_missing_image(mirrored):
    cid = mirrored.out("create", "busybox", "true").strip()
    assert len(cid) == 64
    assert mirrored.out("inspect", "-f", "{{.Config.Image}}", cid).strip() == "busybox"
    mirrored("rm", cid)


def test_ensure_image_pulls_only_what_is_missing(mirrored, registry):
    from berth.image import ImageStore
    from berth.registry.pull import ensure_image

    images = ImageStore(mirrored.root)
    out = io.StringIO()
    image = ensure_image(images, "busybox", "missing", out)
    assert "Unable to find image 'busybox:latest' locally" in out.getvalue()
    assert image.names == ("docker.io/library/busybox:latest",)
    again = io.StringIO()
    assert ensure_image(images, "busybox", "missing", again).id == image.id
    assert again.getvalue() == ""
    with pytest.raises(Exception, match="No such image"):
        ensure_image(images, "busybox:other", "never", again)


# --- peers -------------------------------------------------------------------------------


@pytest.mark.peers
def test_skopeo_reads_what_berth_pushed(fresh_berth, registry):
    name = f"{registry.host}/forskopeo/busybox:latest"
    digest = push_busybox(fresh_berth, name)
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{name}"],
                         capture_output=True, check=True).stdout
    info = json.loads(out)
    assert info["Digest"] == digest
    assert info["Architecture"] == _host_arch()


@pytest.mark.peers
def test_berth_pulls_and_runs_what_skopeo_pushed(fresh_berth, registry, tmp_path):
    name = f"{registry.host}/fromskopeo/busybox:latest"
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false",
                    f"oci:{fresh_berth.root}/content:docker.io/library/busybox:latest",
                    f"docker://{name}"], capture_output=True, check=True)
    b = cli(tmp_path)
    b.out("pull", name)
    assert b.out("run", "--rm", "--network", "none", name, "echo", "via skopeo") == "via skopeo\n"
    b.shutdown()


@pytest.fixture
def podman():
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    base = tempfile.mkdtemp(prefix="berth-podman-", dir="/tmp")  # runroot must be short
    conf = os.path.join(base, "containers.conf")
    with open(conf, "w") as f:
        f.write('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n')
    env = dict(os.environ, CONTAINERS_CONF=conf)
    env.pop("DOCKER_CONFIG", None)  # podman insists the file exist when the variable is set
    prefix = ["podman", "--root", f"{base}/root", "--runroot", f"{base}/run", "--runtime", "runc"]

    def run(*args, check=True):
        proc = subprocess.run(prefix + list(args), env=env, capture_output=True, timeout=300)
        if check and proc.returncode:
            raise AssertionError(f"podman {' '.join(args)}: {proc.stderr.decode()}")
        return proc

    yield run
    run("rmi", "-af", check=False)
    with open("/proc/self/mountinfo") as f:
        mounted = [line.split()[4] for line in f if base in line.split()[4]]
    for mountpoint in sorted(mounted, key=len, reverse=True):
        subprocess.run(["umount", "-l", mountpoint], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.peers
def test_podman_pulls_and_runs_what_berth_pushed(fresh_berth, registry, podman):
    name = f"{registry.host}/forpodman/busybox:latest"
    push_busybox(fresh_berth, name)
    podman("pull", "--tls-verify=false", name)
    out = podman("run", "--rm", "--network", "none", name, "echo", "hello from podman")
    assert out.stdout == b"hello from podman\n"


# --- units: config, challenges, progress, the CLI's hot path ------------------------------


def test_registries_config_orders_mirrors_before_the_registry():
    from berth.registry.config import parse

    cfg = parse({"mirrors": {"docker.io": ["http://10.1.2.3:5000/prefix/"]},
                 "insecure": ["registry.lan:5000", "10.0.0.0/8"]})
    eps = cfg.pull_endpoints("docker.io")
    assert [e.url for e in eps] == ["http://10.1.2.3:5000/prefix", "https://registry-1.docker.io"]
    assert eps[0].mirror and not eps[1].mirror and not eps[0].verify_tls
    assert cfg.endpoint("registry.lan:5000").http_fallback
    assert cfg.endpoint("localhost:5000").http_fallback  # loopback is insecure by default
    assert cfg.endpoint("ghcr.io").verify_tls and not cfg.endpoint("ghcr.io").http_fallback
    assert [e.url for e in cfg.pull_endpoints("quay.io")] == ["https://quay.io"]


@pytest.mark.parametrize("doc", [[], {"mirror": {}}, {"mirrors": {"docker.io": "x"}},
                                 {"insecure": "a"}, {"endpoints": {"docker.io": "ftp://x"}}])
def test_registries_config_mistakes_are_named(doc):
    from berth.errors import InvalidArgument
    from berth.registry.config import parse

    with pytest.raises(InvalidArgument):
        parse(doc, "/etc/berth/registries.json")


def test_bearer_challenges_are_parsed_with_quoted_commas():
    from berth.registry.auth import parse_challenges

    got = parse_challenges(['Bearer realm="https://auth.docker.io/token",service="registry.docker.io"'
                            ',scope="repository:a/b:pull,push",error="insufficient_scope"',
                            'Basic realm="x \\"y\\""'])
    assert got[0] == ("bearer", {"realm": "https://auth.docker.io/token",
                                 "service": "registry.docker.io",
                                 "scope": "repository:a/b:pull,push", "error": "insufficient_scope"})
    assert got[1] == ("basic", {"realm": 'x "y"'})


def test_server_arguments_fold_into_registry_names():
    from berth.registry.auth import registry_host, server_key

    assert registry_host("https://index.docker.io/v1/") == "docker.io"
    assert registry_host("registry-1.docker.io") == "docker.io"
    assert registry_host("http://LocalHost:5000/v2/") == "localhost:5000"
    assert server_key("docker.io") == "https://index.docker.io/v1/"


def test_progress_redraws_layer_lines_in_place_on_a_terminal():
    from berth.registry import Progress

    out = io.StringIO()
    p = Progress(out, tty=True)
    p.status("aaa", "Pulling fs layer")
    p.status("bbb", "Pulling fs layer")
    p.bytes("aaa", "Downloading", 5, 10)
    p.status("bbb", "Pull complete")
    text = out.getvalue()
    assert text.startswith("aaa: Pulling fs layer\nbbb: Pulling fs layer\n")
    assert "\x1b[2A\r\x1b[2Kaaa: Downloading [=========================>" in text
    assert "5B/10B" in text
    assert text.endswith("\x1b[1A\r\x1b[2Kbbb: Pull complete\x1b[1B\r")

    plain = io.StringIO()
    q = Progress(plain, tty=False)
    q.status("aaa", "Pulling fs layer")
    q.bytes("aaa", "Downloading", 5, 10)
    q.status("aaa", "Pull complete")
    assert plain.getvalue() == "aaa: Pulling fs layer\naaa: Pull complete\n"


def test_the_cli_hot_path_loads_no_http_code():
    code = ("import sys\nfrom berth.cli import main, run, images, containers\n"
            "import berth.registry\n"
            "print(' '.join(m for m in ('http.client', 'ssl', 'berth.registry.client', "
            "'berth.registry.pull', 'urllib.request') if m in sys.modules))")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": REPO, "PYTHONNOUSERSITE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.strip()
    assert out == ""
