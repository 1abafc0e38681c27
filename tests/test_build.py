"""berth build, for real: Dockerfiles built into images in a throw-away root, their RUN
steps in real containers, the results checked from inside containers of the images."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import tarfile
import time


from conftest import REPO, berth_cgroups, berth_mounts


def write(directory, files: dict) -> str:
    for name, content in files.items():
        path = os.path.join(str(directory), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
    return str(directory)


def steps(output: str) -> list[tuple[str, bool]]:
    """(instruction, cache hit) of each step after FROM, from docker-style output."""
    out = []
    for line in output.splitlines():
        m = re.match(r"Step \d+/\d+ : (.*)", line)
        if m:
            out.append([m.group(1), False])
        elif line == " ---> Using cache" and out:
            out[-1][1] = True
    return [(text, hit) for text, hit in out if not text.startswith(("FROM", "ARG BASE"))]


def run(b, image: str, *cmd: str) -> str:
    return b.out("run", "--rm", "--network", "none", image, *cmd)


def built_id(output: str) -> str:
    return re.search(r"Successfully built ([0-9a-f]{12})", output).group(1)


def store_state(root: str) -> dict:
    """Everything an image store holds, to tell whether a build created anything."""
    def names(*parts):
        path = os.path.join(root, *parts)
        return sorted(os.listdir(path)) if os.path.isdir(path) else []

    with open(os.path.join(root, "content", "index.json"), "rb") as f:
        index = f.read()
    return {"blobs": names("content", "blobs", "sha256"), "snapshots": names("snapshots"),
            "steps": names("build-cache", "steps"), "index": index}


def assert_nothing_left(b) -> None:
    """No container, mount, cgroup or temporary of a build remains."""
    root = b.root
    assert not berth_mounts(root), "a build left mounts on the host"
    assert not [c for c in berth_cgroups() if "build-" in os.path.basename(c)], \
        "a build left its cgroup"
    assert os.listdir(os.path.join(root, "build-cache", "tmp")) == []
    assert not [n for n in os.listdir(os.path.join(root, "snapshots")) if n.startswith(".tmp-")]
    ingest = os.path.join(root, "content", "ingest")
    assert not os.path.isdir(ingest) or os.listdir(ingest) == []
    assert b.out("ps", "-aq") == ""


def history(b, image: str) -> list[str]:
    from berth.image import ImageStore

    return [h.created_by or "" for h in ImageStore(b.root).resolve(image).config.history]


def image_config(b, image: str):
    from berth.image import ImageStore

    return ImageStore(b.root).resolve(image).config


# --- a build, and what its RUN steps see


def test_run_steps_see_the_stages_env_args_user_workdir_and_shell(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"Dockerfile": """\
FROM busybox
ENV GREETING=hello
ARG WHO=world
WORKDIR /work
RUN echo "$GREETING $WHO from $(pwd)" > /tmp/said
USER daemon
RUN id -un > /tmp/user
SHELL ["/bin/sh", "-xc"]
RUN echo traced
CMD ["cat", "/tmp/said", "/tmp/user"]
"""})
    out = fresh_berth.out("build", "-t", "app", ctx)
    assert "+ echo traced" in out  # the SHELL's -x, so the stage's shell ran it
    assert run(fresh_berth, "app") == "hello world from /work\ndaemon\n"
    env = run(fresh_berth, "app", "env")
    assert "GREETING=hello" in env and "WHO=" not in env  # build args exist only in RUN
    config = image_config(fresh_berth, "app").config
    assert (config.user, config.working_dir) == ("daemon", "/work")


def test_history_and_config_read_like_dockers(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"a.txt": "a\n", "Dockerfile": """\
FROM busybox
LABEL maintainer=me
ENV A=1 B="two words"
ARG X=5
WORKDIR /app
COPY a.txt .
RUN echo hi $X
EXPOSE 8080 53/udp
HEALTHCHECK --interval=5s --retries=3 CMD wget -q localhost || exit 1
ENTRYPOINT ["sh"]
CMD echo cmd
"""})
    fresh_berth("build", "-t", "app", ctx)
    lines = history(fresh_berth, "app")[1:]
    assert lines[:4] == ["/bin/sh -c #(nop)  LABEL maintainer=me",
                         "/bin/sh -c #(nop)  ENV A=1 B=two words",
                         "/bin/sh -c #(nop)  ARG X=5",
                         "/bin/sh -c #(nop) WORKDIR /app"]
    assert re.fullmatch(r"/bin/sh -c #\(nop\) COPY file:[0-9a-f]{64} in \. ", lines[4])
    assert lines[5:] == [
        "|1 X=5 /bin/sh -c echo hi $X",
        "/bin/sh -c #(nop)  EXPOSE 8080 53/udp",
        "/bin/sh -c #(nop)  HEALTHCHECK &{[\"CMD-SHELL\" \"wget -q localhost || exit 1\"] "
        "\"5s\" \"0s\" \"0s\" '\\x03'}",
        '/bin/sh -c #(nop)  ENTRYPOINT ["sh"]',
        '/bin/sh -c #(nop)  CMD ["/bin/sh" "-c" "echo cmd"]']
    config = image_config(fresh_berth, "app")
    # layers: busybox, WORKDIR's new /app, the COPY; metadata and the RUN that changed
    # nothing are history entries marked empty_layer
    assert len(config.rootfs.diff_ids) == 3
    assert [bool(h.empty_layer) for h in config.history] == [
        False, True, True, True, False, False, True, True, True, True, True]
    cc = config.config
    assert cc.env == ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1",
                      "B=two words")
    assert cc.exposed_ports == {"8080/tcp": {}, "53/udp": {}}
    assert (cc.entrypoint, cc.cmd) == (("sh",), ("/bin/sh", "-c", "echo cmd"))
    assert cc.healthcheck.interval == 5_000_000_000 and cc.healthcheck.retries == 3
    table = fresh_berth.out("history", "--no-trunc", "app")
    assert "|1 X=5 /bin/sh -c echo hi $X" in table


def test_quiet_prints_only_the_image_id(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo noisy\n"})
    out = fresh_berth.out("build", "-q", ctx)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", out)
    assert fresh_berth.out("images", "-q", "--no-trunc").count(out.strip()) == 1


def test_iidfile_and_label_flags(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nLABEL a=1\n"})
    out = fresh_berth.out("build", "--label", "b=2", "--label", "c=x y", "--iidfile",
                          str(tmp_path / "iid"), "-t", "labelled", ctx)
    assert "Step 3/4 : LABEL b=2" in out and "Step 4/4 : LABEL c=x y" in out
    with open(tmp_path / "iid") as f:
        assert f.read().startswith("sha256:")
    assert image_config(fresh_berth, "labelled").config.labels == {"a": "1", "b": "2",
                                                                   "c": "x y"}


def test_onbuild_triggers_run_when_the_image_is_a_base(fresh_berth, tmp_path):
    parent = write(tmp_path / "parent", {"Dockerfile": "FROM busybox\n"
                                         "ONBUILD RUN echo triggered > /trigger\n"
                                         "ONBUILD COPY marker /marker\n"})
    fresh_berth("build", "-t", "base-with-triggers", parent)
    assert image_config(fresh_berth, "base-with-triggers").config.on_build == (
        "RUN echo triggered > /trigger", "COPY marker /marker")
    child = write(tmp_path / "child", {"marker": "m\n",
                                       "Dockerfile": "FROM base-with-triggers\nCMD [\"true\"]\n"})
    out = fresh_berth.out("build", "-t", "child", child)
    assert "# Executing 2 build triggers" in out
    assert run(fresh_berth, "child", "cat", "/trigger", "/marker") == "triggered\nm\n"
    assert image_config(fresh_berth, "child").config.on_build == ()


# --- the cache


CACHED = """\
FROM busybox
ARG X=1
WORKDIR /app
COPY first.txt .
RUN echo run1 $X > /run1
COPY second.txt .
RUN cat /app/second.txt > /run2
CMD ["cat", "/run2"]
"""


def test_unchanged_rebuild_uses_the_cache_for_every_step_and_creates_nothing(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"Dockerfile": CACHED, "first.txt": "1\n", "second.txt": "2\n"})
    first = fresh_berth.out("build", "-t", "cached", ctx)
    assert not any(hit for _text, hit in steps(first))
    before = store_state(fresh_berth.root)
    again = fresh_berth.out("build", "-t", "cached", ctx)
    assert all(hit for _text, hit in steps(again)) and len(steps(again)) == 7
    assert "Running in" not in again
    assert built_id(again) == built_id(first)
    assert store_state(fresh_berth.root) == before


def test_changing_one_file_rebuilds_from_its_copy_on(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"Dockerfile": CACHED, "first.txt": "1\n", "second.txt": "2\n"})
    first = built_id(fresh_berth.out("build", "-t", "cached", ctx))
    write(ctx, {"second.txt": "changed\n"})
    out = fresh_berth.out("build", "-t", "cached", ctx)
    assert [hit for _text, hit in steps(out)] == [True, True, True, True, False, False, False]
    assert built_id(out) != first
    assert run(fresh_berth, "cached") == "changed\n"


def test_cache_ignores_mtimes_but_not_modes(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"Dockerfile": CACHED, "first.txt": "1\n", "second.txt": "2\n"})
    fresh_berth("build", ctx)
    os.utime(os.path.join(ctx, "first.txt"), (1, 1))
    assert all(hit for _t, hit in steps(fresh_berth.out("build", ctx)))
    os.chmod(os.path.join(ctx, "first.txt"), 0o600)
    hits = [hit for _t, hit in steps(fresh_berth.out("build", ctx))]
    assert hits == [True, True, False, False, False, False, False]


def test_a_changed_build_arg_misses_from_the_first_run_that_sees_it(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"Dockerfile": CACHED, "first.txt": "1\n", "second.txt": "2\n"})
    fresh_berth("build", ctx)
    out = fresh_berth.out("build", "--build-arg", "X=2", ctx)
    # the ARG step, WORKDIR and the COPY do not use X; the RUN runs with it, as docker's
    assert [hit for _t, hit in steps(out)] == [True, True, True, False, False, False, False]
    assert "|1 X=2 /bin/sh -c echo run1 $X > /run1" in history(fresh_berth, built_id(out))


def test_no_cache_rebuilds_every_step(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"Dockerfile": CACHED, "first.txt": "1\n", "second.txt": "2\n"})
    first = built_id(fresh_berth.out("build", ctx))
    out = fresh_berth.out("build", "--no-cache", ctx)
    assert not any(hit for _t, hit in steps(out))
    assert out.count("Running in") == 2
    assert built_id(out) != first


def test_cache_outlives_rmi_and_goes_with_system_prune(fresh_berth, tmp_path):
    # like BuildKit's cache (not the classic builder's intermediate images): the steps are
    # roots of their own, so rmi keeps them, and system prune clears them
    ctx = write(tmp_path / "ctx", {"Dockerfile": CACHED, "first.txt": "1\n", "second.txt": "2\n"})
    fresh_berth("build", "-t", "gone", ctx)
    fresh_berth("rmi", "gone")
    out = fresh_berth.out("build", "-t", "gone", ctx)
    assert all(hit for _t, hit in steps(out))
    assert run(fresh_berth, "gone") == "2\n"
    fresh_berth("rmi", "gone")
    fresh_berth("system", "prune", "-f")
    out = fresh_berth.out("build", "-t", "gone", ctx)
    assert not steps(out)[-1][1]  # the cache and its blobs are gone: rebuilt
    assert run(fresh_berth, "gone") == "2\n"


# --- multi-stage builds


MULTI = """\
FROM busybox AS base
RUN echo base > /base

FROM busybox AS broken
RUN echo "this stage must not be built"; exit 1

FROM base AS builder
RUN echo built > /artifact

FROM busybox
COPY --from=builder /artifact /base /from-builder/
COPY --from=0 /base /from-index
CMD ["cat", "/from-builder/artifact", "/from-builder/base", "/from-index"]
"""


def test_multi_stage_builds_only_the_stages_the_target_needs(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"Dockerfile": MULTI})
    out = fresh_berth.out("build", "-t", "multi", ctx)
    assert "must not be built" not in out
    assert re.search(r"Step 1/8 : FROM busybox AS base", out)  # the broken stage is not counted
    assert run(fresh_berth, "multi") == "built\nbase\nbase\n"


def test_target_stops_at_the_named_stage(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"Dockerfile": MULTI})
    out = fresh_berth.out("build", "--target", "builder", "-t", "stage", ctx)
    assert "Step 4/4 : RUN echo built > /artifact" in out
    assert run(fresh_berth, "stage", "cat", "/base", "/artifact") == "base\nbuilt\n"
    bad = fresh_berth("build", "--target", "nope", ctx, check=False)
    assert bad.returncode == 1
    assert b"failed to reach build target nope in Dockerfile" in bad.stderr


def test_copy_from_an_image_and_global_args_in_from(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"Dockerfile": """\
ARG BASE=busybox
FROM ${BASE}
COPY --from=busybox /etc/passwd /copied-passwd
"""})
    fresh_berth("build", "-t", "fromimage", ctx)
    assert run(fresh_berth, "fromimage", "head", "-1", "/copied-passwd") == "root:x:0:0:root:/root:/bin/sh\n"
    bad = fresh_berth("build", "--build-arg", "BASE=nosuchimage", ctx, check=False)
    assert bad.returncode == 1
    assert b"Dockerfile:2: Unable to find image 'nosuchimage:latest' locally" in bad.stderr


# --- COPY and ADD


def test_copy_follows_dockers_directory_and_slash_rules(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {
        "a.txt": "a\n", "b.txt": "b\n", "dir/x": "x\n", "dir/sub/y": "y\n", "run.sh": "#!/bin/sh\n",
        "Dockerfile": """\
FROM busybox
RUN mkdir /real && ln -s /real /link
COPY a.txt /into/
COPY a.txt /renamed
COPY dir /contents
COPY *.txt /globbed/
COPY a.txt /etc
COPY a.txt /link/
WORKDIR /w
COPY b.txt .
COPY b.txt rel/
COPY run.sh /
"""})
    os.chmod(os.path.join(ctx, "run.sh"), 0o741)
    fresh_berth("build", "-t", "copies", ctx)
    listing = run(fresh_berth, "copies", "sh", "-c",
                  "cd / && ls -d into/a.txt renamed contents/x contents/sub/y globbed/a.txt "
                  "globbed/b.txt etc/a.txt real/a.txt w/b.txt w/rel/b.txt && stat -c '%a %u:%g' "
                  "/run.sh /renamed && test -f /renamed && ! test -e /contents/dir")
    words = listing.split()
    assert sorted(words[:10]) == sorted(["into/a.txt", "renamed", "contents/x", "contents/sub/y",
                                         "globbed/a.txt", "globbed/b.txt", "etc/a.txt",
                                         "real/a.txt", "w/b.txt", "w/rel/b.txt"])
    assert words[10:] == ["741", "0:0", "644", "0:0"]


def test_copy_chown_and_chmod(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"f": "f\n", "d/g": "g\n", "Dockerfile": """\
FROM busybox
COPY --chown=daemon:daemon f /owned/f
COPY --chown=1234 --chmod=700 d /d
"""})
    fresh_berth("build", "-t", "owned", ctx)
    out = run(fresh_berth, "owned", "stat", "-c", "%n %a %u:%g", "/owned/f", "/d", "/d/g", "/owned")
    assert out.splitlines() == ["/owned/f 644 1:1", "/d 700 1234:1234", "/d/g 700 1234:1234",
                                "/owned 755 1:1"]


def test_copy_errors_name_the_file_and_line(fresh_berth, tmp_path):
    cases = {
        "FROM busybox\nRUN true\nCOPY missing.txt /x\n":
            "Dockerfile:3: COPY failed: file not found in build context or excluded by "
            ".dockerignore: stat missing.txt: file does not exist",
        "FROM busybox\nCOPY *.nothing /x/\n": "Dockerfile:2: COPY failed: no source files were specified",
        "FROM busybox\nCOPY a b /x\n": "Dockerfile:2: When using COPY with more than one source "
                                       "file, the destination must be a directory and end with a /",
        "FROM busybox\nCOPY ../outside /x\n": "Dockerfile:2: COPY failed: forbidden path outside "
                                              "the build context: ../outside",
        "FROM busybox\n\nFOO bar\n": "Dockerfile:3: unknown instruction: FOO",
        "FROM busybox\nADD https://example.com/x.tgz /x\n": "Dockerfile:2: ADD "
            "https://example.com/x.tgz: berth builds have no network",
    }
    for dockerfile, message in cases.items():
        ctx = write(tmp_path / f"ctx{len(message)}", {"Dockerfile": dockerfile, "a": "", "b": ""})
        result = fresh_berth("build", ctx, check=False)
        assert result.returncode == 1, dockerfile
        assert message in result.stderr.decode(), result.stderr.decode()
        assert b"Traceback" not in result.stderr


def test_add_extracts_local_archives_and_copies_other_files(fresh_berth, tmp_path):
    def archive(mode: str) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as tar:
            data = f"in {mode}\n".encode()
            info = tarfile.TarInfo("pkg/file.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    import gzip

    ctx = write(tmp_path / "ctx", {
        "a.tar": archive("w"), "a.tar.gz": archive("w:gz"), "a.tar.bz2": archive("w:bz2"),
        "a.tar.xz": archive("w:xz"), "notatar.gz": gzip.compress(b"just data\n"),
        "Dockerfile": """\
FROM busybox
ADD a.tar /plain
ADD a.tar.gz /gz/
ADD a.tar.bz2 /bz2
ADD a.tar.xz /xz
ADD notatar.gz /kept/
COPY a.tar.gz /copied/
"""})
    fresh_berth("build", "-t", "added", ctx)
    out = run(fresh_berth, "added", "sh", "-c",
              "cat /plain/pkg/file.txt /gz/pkg/file.txt /bz2/pkg/file.txt /xz/pkg/file.txt; "
              "ls /kept /copied")
    assert out.split("\n")[:4] == ["in w", "in w:gz", "in w:bz2", "in w:xz"]
    assert "notatar.gz" in out and "a.tar.gz" in out


def test_dockerignore_hides_files_from_copy_and_from_the_cache(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {
        ".dockerignore": "*.log\nsecrets\n!secrets/public.txt\n**/tmp\n",
        "app.py": "print()\n", "debug.log": "x\n", "secrets/key": "k\n",
        "secrets/public.txt": "p\n", "src/tmp/junk": "j\n", "src/main.c": "c\n",
        "Dockerfile": "FROM busybox\nCOPY . /ctx/\nRUN find /ctx | sort > /listing\n"})
    fresh_berth("build", "-t", "ignored", ctx)
    listing = run(fresh_berth, "ignored", "cat", "/listing").split()
    assert listing == ["/ctx", "/ctx/.dockerignore", "/ctx/Dockerfile", "/ctx/app.py",
                       "/ctx/secrets", "/ctx/secrets/public.txt", "/ctx/src", "/ctx/src/main.c"]
    write(ctx, {"debug.log": "changed\n", "secrets/key": "changed\n"})
    assert all(hit for _t, hit in steps(fresh_berth.out("build", ctx)))
    write(ctx, {"app.py": "changed\n"})
    assert not any(hit for _t, hit in steps(fresh_berth.out("build", ctx)))


def test_dockerignore_of_everything_but_one_directory(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {".dockerignore": "*\n!src\n", "src/a": "a\n", "b": "b\n",
                                   "Dockerfile": "FROM busybox\nCOPY . /app\n"})
    fresh_berth("build", "-t", "only-src", ctx)
    assert run(fresh_berth, "only-src", "find", "/app").split() == ["/app", "/app/src",
                                                                   "/app/src/a"]


def test_from_scratch_holds_only_what_was_copied(fresh_berth, tmp_path):
    import shutil

    ctx = write(tmp_path / "ctx", {"Dockerfile": 'FROM scratch\nCOPY busybox /bin/busybox\n'
                                                 'CMD ["/bin/busybox", "echo", "from scratch"]\n'})
    shutil.copy2("/bin/busybox", os.path.join(ctx, "busybox"))
    out = fresh_berth.out("build", "-t", "scratchy", ctx)
    assert "Step 1/3 : FROM scratch\n ---> \n" in out
    assert run(fresh_berth, "scratchy") == "from scratch\n"
    config = image_config(fresh_berth, "scratchy")
    assert len(config.rootfs.diff_ids) == 1 and len(config.history) == 2


def test_heredocs_in_run_and_copy(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"Dockerfile": """\
FROM busybox
ARG NAME=world
RUN <<EOF
echo "hello $NAME" > /greeting
echo second line >> /greeting
EOF
RUN <<EOF
#!/bin/sh
echo "from a script: $0" > /script
EOF
RUN cat <<A > /a && cat <<'B' > /b
first $NAME
A
literal $NAME
B
COPY <<EOF /etc/app.conf
name=${NAME}
EOF
"""})
    fresh_berth("build", "-t", "heredocs", ctx)
    out = run(fresh_berth, "heredocs", "cat", "/greeting", "/script", "/a", "/b", "/etc/app.conf")
    assert out == ("hello world\nsecond line\nfrom a script: /dev/pipes/EOF\nfirst world\n"
                   "literal $NAME\nname=world\n")


# --- contexts from stdin


def _tar_of(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_build_from_a_tar_context_on_stdin(fresh_berth):
    tar = _tar_of({"Dockerfile": "FROM busybox\nCOPY hello.txt /\n", "hello.txt": "from a tar\n",
                   "sub/Dockerfile.alt": "FROM busybox\nCOPY hello.txt /alt\n"})
    fresh_berth("build", "-t", "fromtar", "-", input=tar)
    assert run(fresh_berth, "fromtar", "cat", "/hello.txt") == "from a tar\n"
    fresh_berth("build", "-t", "fromtar-alt", "-f", "sub/Dockerfile.alt", "-", input=tar)
    assert run(fresh_berth, "fromtar-alt", "cat", "/alt") == "from a tar\n"
    assert os.listdir(os.path.join(fresh_berth.root, "build-cache", "tmp")) == []


def test_build_with_the_dockerfile_or_only_a_dockerfile_on_stdin(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"data.txt": "context file\n"})
    fresh_berth("build", "-t", "stdin-df", "-f", "-", ctx, input="FROM busybox\nCOPY data.txt /\n")
    assert run(fresh_berth, "stdin-df", "cat", "/data.txt") == "context file\n"
    fresh_berth("build", "-t", "df-only", "-", input="FROM busybox\nRUN echo alone > /alone\n")
    assert run(fresh_berth, "df-only", "cat", "/alone") == "alone\n"
    both = fresh_berth("build", "-f", "-", "-", input="FROM busybox\n", check=False)
    assert b"can't use stdin for both build context and dockerfile" in both.stderr


# --- failures leave nothing behind


def test_a_failing_run_shows_its_output_and_leaves_nothing_behind(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"f": "f\n", "Dockerfile": """\
FROM busybox
COPY f /f
RUN echo to-stdout; echo to-stderr >&2; touch /created; exit 3
CMD ["true"]
"""})
    images_before = fresh_berth.out("images", "-q")
    result = fresh_berth("build", "-t", "broken", ctx, check=False)
    assert result.returncode == 3  # docker build exits with the command's code
    out, err = result.stdout.decode(), result.stderr.decode()
    assert "to-stdout" in out and "to-stderr" in out
    assert ("The command '/bin/sh -c echo to-stdout; echo to-stderr >&2; touch /created; exit 3' "
            "returned a non-zero code: 3") in err
    assert fresh_berth.out("images", "-q") == images_before
    assert not fresh_berth("inspect", "broken", check=False).returncode == 0
    assert_nothing_left(fresh_berth)
    # the steps before the failure are cached, as docker's are
    again = fresh_berth("build", ctx, check=False)
    assert steps(again.stdout.decode())[0][1] is True


def test_quiet_build_shows_the_output_of_a_failing_run(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo why-it-failed; false\n"})
    result = fresh_berth("build", "-q", ctx, check=False)
    assert result.returncode == 1
    assert result.stdout == b""
    assert b"why-it-failed" in result.stderr and b"returned a non-zero code: 1" in result.stderr
    assert_nothing_left(fresh_berth)


def test_a_missing_command_fails_the_step_cleanly(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"Dockerfile": 'FROM busybox\nRUN ["/no/such/binary"]\n'})
    result = fresh_berth("build", ctx, check=False)
    assert result.returncode != 0
    assert b"Dockerfile:2:" in result.stderr and b"Traceback" not in result.stderr
    assert_nothing_left(fresh_berth)


def test_an_interrupted_build_leaves_nothing_behind(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo ready-$((6*7)); sleep 60\n"})
    proc = fresh_berth.popen("build", ctx, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        seen = b""
        while b"ready-42" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.read1(4096)  # the command's own output: it runs
        assert b"ready-42" in seen
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert_nothing_left(fresh_berth)


def test_a_killed_build_is_cleaned_up_by_the_next_one(fresh_berth, tmp_path):
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo ready-$((6*7)); sleep 60\n"})
    proc = fresh_berth.popen("build", ctx, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        seen = b""
        while b"ready-42" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.read1(4096)  # the command's own output: it runs
        proc.kill()  # SIGKILL: no clean-up of its own
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # what a build killed with -9 leaves: its workspace and its RUN step's cgroup
    assert os.listdir(os.path.join(fresh_berth.root, "build-cache", "tmp"))
    assert [c for c in berth_cgroups() if "build-" in os.path.basename(c)]
    other = write(tmp_path / "other", {"Dockerfile": "FROM busybox\nRUN true\n"})
    fresh_berth("build", other)
    assert_nothing_left(fresh_berth)


# --- the example app


def test_the_example_webapp_builds_and_serves_its_pages(fresh_berth):
    app = os.path.join(REPO, "examples", "webapp")
    out = fresh_berth.out("build", "-t", "webapp", "--build-arg", "VERSION=2.0.0", app)
    assert "Successfully tagged webapp:latest" in out
    fresh_berth("run", "-d", "--network", "none", "--name", "web", "webapp")
    try:
        page = ""
        for _ in range(50):
            got = fresh_berth("exec", "web", "wget", "-qO-", "http://127.0.0.1:8080/", check=False)
            if got.returncode == 0:
                page = got.stdout.decode()
                break
            time.sleep(0.1)
        assert "<h1>Hello from webapp 2.0.0</h1>" in page
        status = json.loads(fresh_berth.out("exec", "web", "wget", "-qO-",
                                            "http://127.0.0.1:8080/cgi-bin/status"))
        assert status == {"app": "webapp", "version": "2.0.0", "user": "www"}
        drafts = fresh_berth("exec", "web", "ls", "/www/drafts", check=False)
        assert drafts.returncode != 0  # .dockerignore kept the drafts out
    finally:
        fresh_berth("rm", "-f", "web", check=False)
    history_lines = history(fresh_berth, "webapp")
    assert history_lines[-1] == ('/bin/sh -c #(nop)  CMD ["sh" "-c" "exec httpd -f -p $PORT -h '
                                 '/www -c /etc/httpd.conf"]')


def test_build_cache_is_a_gc_root_and_system_prune_clears_it(fresh_berth, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo one > /one\nRUN echo two > /two\n")
    fresh_berth("build", "-q", "-t", "cached:1", str(ctx))
    # the intermediate steps' images are nobody's leftovers
    assert fresh_berth("system", "check", check=False).returncode == 0
    fresh_berth("rmi", "cached:1")
    fresh_berth("image", "prune", "-f")
    assert fresh_berth("system", "check", check=False).returncode == 0
    again = fresh_berth.out("build", "-t", "cached:2", str(ctx))
    assert again.count("Using cache") == 2  # the cache survived rmi and prune
    fresh_berth("rmi", "cached:2")
    fresh_berth("system", "prune", "-f")
    rebuilt = fresh_berth.out("build", "-t", "cached:3", str(ctx))
    assert "Using cache" not in rebuilt
    assert fresh_berth("system", "check", check=False).returncode == 0


def test_image_inspect_shows_healthcheck_and_shell(fresh_berth, tmp_path):
    ctx = tmp_path / "hc"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text('FROM busybox\nSHELL ["/bin/sh", "-ec"]\n'
                                    "HEALTHCHECK --interval=5s --retries=2 CMD true\n")
    fresh_berth("build", "-q", "-t", "hc", str(ctx))
    [info] = json.loads(fresh_berth.out("image", "inspect", "hc"))
    assert info["Config"]["Healthcheck"] == {"Test": ["CMD-SHELL", "true"],
                                             "Interval": 5_000_000_000, "Retries": 2}
    assert info["Config"]["Shell"] == ["/bin/sh", "-ec"]
