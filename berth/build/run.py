"""RUN: a command in a throw-away container of the stage, and the layer it leaves.

No hub and no container record: the builder is the container's monitor, in the
foreground, as ``berth run`` is. The container is an overlay over the stage's unpacked
layers with an upper dir in the build's workspace; its mounts live only in its own mount
namespace and its processes die with the builder (the runtime's PR_SET_PDEATHSIG), so an
interrupted or failed step leaves nothing mounted or running; the runtime removes the
cgroup when the process is reaped, and `Sandbox.close` removes the directory.

Afterwards the upper dir is the step's change, exactly as for ``berth commit``: its tar
(berth.layer.diff.write_layer) is streamed into the image store, which stores the blob
and unpacks the snapshot in one pass (ImageStore.import_layer), so the next step finds
the layer ready.
"""

from __future__ import annotations

import os

from berth.errors import BerthError, ContainerStartError


class RunFailed(BerthError):
    """A RUN's command exited non-zero; the build exits with its code, as docker's does."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Sandbox:
    """The directory of one RUN: upper, work and merged dirs and the container's /etc files."""

    def __init__(self, workspace: str) -> None:
        from berth.container.service import new_id

        self.id = new_id()
        # named after the container's cgroup (build-<id>), for the next build to remove
        # should this one be killed
        self.dir = os.path.join(workspace, "run-" + self.id)
        os.makedirs(self.dir, mode=0o700)
        self.upper = os.path.join(self.dir, "diff")
        for sub in ("diff", "work", "merged"):
            os.mkdir(os.path.join(self.dir, sub), 0o755)

    def close(self) -> None:
        from berth.fsutil import remove_tree

        remove_tree(self.dir)

    def run(self, *, lowers: list[str], config, args: tuple[str, ...], env: tuple[str, ...],
            network: str, cgroup_parent: str, seccomp_cache: str, output,
            binds=()) -> int:
        """Run `args` in a container of `config` (the stage's image config) over `lowers`;
        the command's output goes to `output(bytes)`. Returns its exit code."""
        from berth.container import spec as specmod
        from berth.container import users
        from berth.container.service import HOSTS_BASE, resolv_conf
        from berth.runtime import ContainerProcess, Stdio
        from berth.snapshot import overlay_mount, read_layered

        if not lowers:
            # a stage FROM scratch: overlayfs still needs a lower dir
            empty = os.path.join(self.dir, "empty")
            os.makedirs(empty, exist_ok=True)
            lowers = [empty]
        opts = specmod.RunOptions(command=tuple(args), entrypoint=(), env=tuple(env),
                                  hostname=self.id[:12], network=network, binds=tuple(binds))
        container_id = f"build-{self.id}"
        resources = specmod.resources(opts, specmod.device_rules(opts))
        proc = ContainerProcess(cgroup_path=f"{cgroup_parent}/{container_id}",
                                resources=resources, seccomp_cache=seccomp_cache)
        proc.prepare()  # the cgroup join overlaps the spec building below
        r = w = None
        try:
            passwd = read_layered(lowers, "/etc/passwd")
            group = read_layered(lowers, "/etc/group")
            user = users.resolve(config.user, passwd.decode(errors="replace") if passwd else None,
                                 group.decode(errors="replace") if group else None)
            files = {}
            for name, text in (("hostname", self.id[:12] + "\n"), ("hosts", HOSTS_BASE),
                               ("resolv.conf", resolv_conf(_host_resolv(),
                                                           host_network=network == "host"))):
                files[name] = os.path.join(self.dir, name)
                with open(files[name], "w") as f:
                    f.write(text)
            ctx = specmod.Context(
                container_id=container_id, rootfs=os.path.join(self.dir, "merged"),
                hostname_file=files["hostname"], hosts_file=files["hosts"],
                resolv_file=files["resolv.conf"], ncpus=os.cpu_count() or 1,
                host_hostname=os.uname().nodename, cgroup_parent=cgroup_parent)
            spec = _with_default_seccomp(specmod.build(config, opts, user, ctx))
            r, w = os.pipe2(os.O_CLOEXEC)
            proc.stdio = Stdio(None, w, w)
            mount = overlay_mount(lowers, self.upper, os.path.join(self.dir, "work"))
            proc.start(spec, (mount,))
            os.close(w)
            w = None
            while chunk := os.read(r, 65536):
                output(chunk)
            status = proc.wait()
            return status.code
        except ContainerStartError:
            raise
        except BaseException:
            proc.abort()
            raise
        finally:
            for fd in (r, w):
                if fd is not None:
                    os.close(fd)


def _host_resolv() -> str:
    try:
        with open("/etc/resolv.conf") as f:
            return f.read()
    except OSError:
        return ""


def _with_default_seccomp(spec):
    """Docker's default seccomp profile, as a build container gets it."""
    from berth.oci.record import replace
    from berth.runtime import seccomp

    caps = spec.process.capabilities.bounding if spec.process.capabilities else ()
    resolved = seccomp.resolve(seccomp.default_profile(), caps)
    return replace(spec, linux=replace(spec.linux, seccomp=resolved))


def import_upper(images, upper: str, lowers: list[str], parent_chain: str | None):
    """The layer of a RUN's upper dir into the image store, blob and snapshot in one pass.

    Returns (descriptor, chain ID), or None when the command changed nothing (Docker
    then records an empty layer: a history entry and no layer).
    """
    import threading

    from berth.image.commit import ENGINE_MOUNTPOINTS
    from berth.layer.diff import changes, write_layer

    if not changes(upper, lowers, exclude=ENGINE_MOUNTPOINTS):
        return None
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        import fcntl

        fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ: fewer switches between the two sides
    except OSError:
        pass
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with open(w, "wb", buffering=1 << 20) as out:
                write_layer(upper, out, lowers=lowers, exclude=ENGINE_MOUNTPOINTS)
        except BrokenPipeError:
            pass  # the reading side failed first; its error is the one to report
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            failure.append(exc)

    writer = threading.Thread(target=produce, name="layer-tar", daemon=True)
    writer.start()
    inp = open(r, "rb", buffering=1 << 20)
    try:
        result = images.import_layer(inp, parent_chain)
    except BaseException:
        inp.close()  # a writer still writing gets EPIPE rather than waiting forever
        writer.join()
        if failure:
            raise failure[0] from None  # the reader only saw the tar cut short
        raise
    inp.close()
    writer.join()
    if failure:
        raise failure[0]
    return result


def command(config, inst, workspace: str, escape: str = "\\"):
    """(argv, files to bind in as (host path, container path), here-document text) of a RUN.

    ``RUN <<EOF`` alone runs the document as the shell's script, or, when it starts with
    ``#!``, as a program of its own (bound at /dev/pipes/NAME, as BuildKit does); other
    here-documents stay in the line, and the shell reads them itself.
    """
    from berth.build.metadata import shell_of
    from berth.build.arguments import name_words, parse_heredoc

    if inst.exec_form:
        return tuple(inst.args), [], ""
    shell = shell_of(config)
    text = inst.args[0]
    if not inst.heredocs:
        return shell + (text,), [], ""
    script = "".join(d.content for d in inst.heredocs)
    words = name_words(text, escape)
    if len(inst.heredocs) == 1 and len(words) == 1 and parse_heredoc(words[0], escape):
        doc = inst.heredocs[0]
        if doc.content.startswith("#!"):
            path = os.path.join(workspace, f"heredoc-{os.urandom(6).hex()}")
            with open(path, "w") as f:
                f.write(doc.content)
            os.chmod(path, 0o755)
            return ("/dev/pipes/" + doc.name,), [(path, "/dev/pipes/" + doc.name)], script
        return shell + (doc.content,), [], script
    full = text + "\n" + "".join(d.content + d.name + "\n" for d in inst.heredocs)
    return shell + (full,), [], script


def arg_env(declared: dict, given: dict, config) -> tuple[tuple[str, ...], list[str] | None]:
    """The build args a RUN sees as environment, and the ones its history line names.

    `declared`: the stage's ARGs and their values; `given`: --build-arg. An ENV of the
    same name wins over an ARG. The proxy args need no ARG; the history names them only
    when declared. The second value is None when no build arg is visible at all (no
    ``|N`` prefix), as in Docker's classic builder.
    """
    from berth.build.metadata import BUILTIN_ARGS, env_dict

    env_keys = set(env_dict(config.env))
    visible = {k: v for k, v in declared.items() if v is not None and k not in env_keys}
    for key in BUILTIN_ARGS:
        value = given.get(key)
        if value is not None and key not in env_keys and key not in visible:
            visible[key] = value
    if not visible:
        return (), None
    env = tuple(f"{k}={v}" for k, v in visible.items())
    shown = sorted(f"{k}={v}" for k, v in visible.items() if k not in BUILTIN_ARGS or k in declared)
    return env, shown

