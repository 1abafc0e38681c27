"""The same Dockerfiles built by berth and by buildah (Debian's package) give containers
that behave the same: the same files, with the same types, modes, owners and sizes, the
same image settings, and the same output from their CMD.

buildah gets berth's busybox straight from berth's store (an OCI image layout), builds
with ``--isolation chroot`` in a store of its own, and its image comes back into berth
as a docker-archive (``buildah push ... docker-archive:`` then ``berth load``), so both
images run in berth containers and are probed from inside with busybox applets.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import time

import pytest

from conftest import REPO

pytestmark = pytest.mark.peers

# what the probe lists: the build's own paths, never the engine's (/etc/hosts, /proc)
PROBE = ("find {paths} 2>/dev/null | sort | "
         "xargs stat -c '%n %F %a %u %g %s' | sed 's/ 4096$/ DIR/'")


@pytest.fixture
def buildah(tmp_path, fresh_berth):
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed (apt-get install buildah)")
    store = tmp_path / "buildah"
    base = ["buildah", "--root", str(store / "root"), "--runroot", str(store / "runroot"),
            "--storage-driver", "overlay"]

    def run(*args, check=True):
        proc = subprocess.run(base + list(args), capture_output=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"buildah {' '.join(args)} exited {proc.returncode}:\n"
                                 + proc.stderr.decode(errors="replace")[-3000:])
        return proc

    layout = os.path.join(fresh_berth.root, "content")
    image_id = run("pull", "-q", f"oci:{layout}:docker.io/library/busybox:latest").stdout.split()[-1]
    run("tag", image_id.decode(), "docker.io/library/busybox:latest")
    yield run
    run("rm", "--all", check=False)
    run("rmi", "--all", "--force", check=False)
    with open("/proc/self/mountinfo") as f:
        assert str(store) not in f.read(), "buildah left mounts behind"


def both(b, buildah, ctx: str, name: str, *args: str) -> tuple[str, str]:
    """Build `ctx` with berth (as NAME) and with buildah (as buildah-NAME, loaded into berth)."""
    b("build", "-t", name, *args, ctx)
    buildah("bud", "--isolation", "chroot", "--pull=never", "--format", "docker", "--layers",
            "-t", name, *args, ctx)
    archive = os.path.join(os.path.dirname(ctx), f"{name}.tar")
    buildah("push", name, f"docker-archive:{archive}:buildah-{name}:latest")
    b("load", "-i", archive)
    return name, f"buildah-{name}"


def probe(b, image: str, paths: str) -> list[str]:
    out = b.out("run", "--rm", "--network", "none", "--entrypoint", "", "--user", "0", image,
                "sh", "-c", PROBE.format(paths=paths))
    return out.splitlines()


def settings(b, image: str) -> dict:
    config = json.loads(b.out("image", "inspect", "-f", "{{json .Config}}", image))
    labels = {k: v for k, v in (config.get("Labels") or {}).items()
              if not k.startswith("io.buildah")}
    keys = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes",
            "StopSignal")
    # an empty list or map and none at all mean the same to a container
    return {"Labels": labels, **{k: config.get(k) or None for k in keys}}


def write(directory, files: dict) -> str:
    for name, content in files.items():
        path = os.path.join(str(directory), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
    return str(directory)


def _archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data, mode in (("pkg/bin/tool", b"#!/bin/sh\necho tool\n", 0o755),
                                 ("pkg/README", b"readme\n", 0o644)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), mode, 0, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


RULES = """\
FROM busybox
ARG VERSION=1
ENV APP=/app
WORKDIR $APP
COPY a.txt .
COPY dir /contents
COPY dir/ /contents2/
COPY *.txt /globbed/
COPY a.txt /etc
COPY --chown=daemon:daemon a.txt /owned/
ADD pkg.tar.gz /opt/
RUN mkdir -p /made && echo "$VERSION $APP" > /made/info && ln -s /made/info /made/link \\
    && rm /etc/nsswitch.conf
LABEL org.example.kind=rules
EXPOSE 8080/tcp 53/udp
VOLUME /data
STOPSIGNAL SIGINT
USER daemon
CMD ["sh", "-c", "cat /made/info; id -un; pwd; /opt/pkg/bin/tool"]
"""


def test_copy_add_run_and_settings_agree_with_buildah(fresh_berth, buildah, tmp_path):
    ctx = write(tmp_path / "rules", {
        "Dockerfile": RULES, "a.txt": "a\n", "b.txt": "bb\n", "dir/x": "x\n",
        "dir/sub/y": "yyy\n", "ignored.txt": "no\n", ".dockerignore": "ignored.txt\n",
        "pkg.tar.gz": _archive()})
    os.chmod(os.path.join(ctx, "dir", "x"), 0o640)
    ours, theirs = both(fresh_berth, buildah, ctx, "rules", "--build-arg", "VERSION=7")
    paths = "/app /contents /contents2 /globbed /etc/a.txt /etc/nsswitch.conf /owned /opt /made"
    listing = probe(fresh_berth, ours, paths)
    assert listing == probe(fresh_berth, theirs, paths)
    assert "/globbed/ignored.txt" not in " ".join(listing)
    assert "/contents/x regular file 640 0 0 2" in listing
    assert "/owned/a.txt regular file 644 1 1 2" in listing
    assert settings(fresh_berth, ours) == settings(fresh_berth, theirs)
    run = ["run", "--rm", "--network", "none"]
    expected = "7 /app\ndaemon\n/app\ntool\n"
    assert fresh_berth.out(*run, ours) == fresh_berth.out(*run, theirs) == expected


MULTI = """\
FROM busybox AS build
WORKDIR /src
COPY src/ .
RUN mkdir -p /out && for f in *.txt; do tr a-z A-Z < "$f" > "/out/$f"; done

FROM busybox
COPY --from=build /out/ /srv/
CMD ["cat", "/srv/one.txt", "/srv/two.txt"]
"""


def test_a_multi_stage_build_agrees_with_buildah(fresh_berth, buildah, tmp_path):
    ctx = write(tmp_path / "multi", {"Dockerfile": MULTI, "src/one.txt": "one\n",
                                     "src/two.txt": "two\n"})
    ours, theirs = both(fresh_berth, buildah, ctx, "multi")
    assert probe(fresh_berth, ours, "/srv /src") == probe(fresh_berth, theirs, "/srv /src")
    run = ["run", "--rm", "--network", "none"]
    assert fresh_berth.out(*run, ours) == fresh_berth.out(*run, theirs) == "ONE\nTWO\n"


def test_the_example_webapp_agrees_with_buildah(fresh_berth, buildah, tmp_path):
    ctx = str(tmp_path / "webapp")
    shutil.copytree(os.path.join(REPO, "examples", "webapp"), ctx)
    ours, theirs = both(fresh_berth, buildah, ctx, "webapp")
    paths = "/www /etc/httpd.conf /etc/passwd /etc/group"
    assert probe(fresh_berth, ours, paths) == probe(fresh_berth, theirs, paths)
    assert settings(fresh_berth, ours) == settings(fresh_berth, theirs)
    pages = {}
    for image in (ours, theirs):
        name = f"web-{image}"
        fresh_berth("run", "-d", "--network", "none", "--name", name, image)
        try:
            got = None
            for _ in range(50):
                got = fresh_berth("exec", name, "wget", "-qO-", "http://127.0.0.1:8080/",
                                  check=False)
                if got.returncode == 0:
                    break
                time.sleep(0.1)
            status = fresh_berth.out("exec", name, "wget", "-qO-",
                                     "http://127.0.0.1:8080/cgi-bin/status")
            pages[image] = (got.stdout.decode(), status)
        finally:
            fresh_berth("rm", "-f", name, check=False)
    assert pages[ours] == pages[theirs]
    assert "Hello from webapp 1.0.0" in pages[ours][0]


@pytest.fixture
def registry(tmp_path):
    """A CNCF distribution registry (Debian's docker-registry) on a free local port."""
    import socket

    exe = shutil.which("docker-registry")
    if exe is None or shutil.which("skopeo") is None:
        pytest.skip("docker-registry and skopeo are needed (apt-get install docker-registry skopeo)")
    pytest.importorskip("berth.registry.pull")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path}/data\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([exe, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_pull_fetches_the_base_image_from_its_registry(fresh_berth, registry, tmp_path):
    layout = os.path.join(fresh_berth.root, "content")
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false",
                    f"oci:{layout}:docker.io/library/busybox:latest",
                    f"docker://{registry}/base/busybox:latest"], check=True, capture_output=True)
    ctx = write(tmp_path / "pull", {"Dockerfile": f"FROM {registry}/base/busybox\n"
                                                  "RUN echo from-the-registry > /said\n"})
    missing = fresh_berth("build", ctx, check=False)
    assert b"locally; import, load or pull it first (or build with --pull)" in missing.stderr
    out = fresh_berth.out("build", "--pull", "-t", "pulled", ctx)
    assert "Pull complete" in out
    run = ["run", "--rm", "--network", "none"]
    assert fresh_berth.out(*run, "pulled", "cat", "/said") == "from-the-registry\n"
