"""berth build: flags -> berth.build.build; Docker's output, its exit codes."""

from __future__ import annotations

import os
import sys

from berth.cli.flags import BOOL, LIST, VALUE, Flag, UsageError, parse, usage

HELP_FLAG = Flag(("--help",), BOOL, "Print usage")
BUILD_FLAGS = (
    Flag(("-t", "--tag"), LIST, "Name and optionally a tag in the 'name:tag' format"),
    Flag(("-f", "--file"), VALUE, "Name of the Dockerfile (default: 'PATH/Dockerfile'; '-' reads "
         "it from stdin)"),
    Flag(("--build-arg",), LIST, "Set build-time variables"),
    Flag(("--target",), VALUE, "Set the target build stage to build"),
    Flag(("--no-cache",), BOOL, "Do not use cache when building the image"),
    Flag(("--pull",), BOOL, "Always attempt to pull a newer version of the image"),
    Flag(("--label",), LIST, "Set metadata for an image"),
    Flag(("-q", "--quiet"), BOOL, "Suppress the build output and print image ID on success"),
    Flag(("--iidfile",), VALUE, "Write the image ID to the file"),
    Flag(("--network",), VALUE, "Set the networking mode for the RUN instructions during build "
         "(default, none, host)", default="default"),
    Flag(("--platform",), VALUE, "Set platform if server is multi-platform capable"),
    Flag(("--rm",), BOOL, "Remove intermediate containers after a successful build (always)",
         default=True),
    Flag(("--force-rm",), BOOL, "Always remove intermediate containers (always)"),
)


def _pairs(items: list[str], what: str, from_env: bool) -> dict:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid {what}: {item!r}")
        if not eq:
            # docker's CLI: `--build-arg NAME` takes NAME from the environment, if set
            value = os.environ.get(key) if from_env else ""
        out[key] = value
    return out


def cmd_build(g, argv) -> int:
    values, pos = parse(argv, BUILD_FLAGS + (HELP_FLAG,))
    if values["help"]:
        sys.stdout.write(usage("build", "[OPTIONS] PATH | -",
                               "Build an image from a Dockerfile", BUILD_FLAGS) + "\n")
        return 0
    if len(pos) != 1:
        raise UsageError('"berth build" requires exactly 1 argument.')
    from berth.build import BuildOptions, Progress
    from berth.build.run import RunFailed
    from berth.oci import reference

    for tag in values["tag"]:
        ref = reference.parse(tag)
        if ref.digest:
            raise UsageError(f"invalid tag {tag!r}: a digest is not a tag")
    network = values["network"]
    if network not in ("default", "none", "host", "bridge"):
        raise UsageError(f"invalid --network {network!r}: use default, none or host")
    options = BuildOptions(
        tags=tuple(values["tag"]), build_args=_pairs(values["build_arg"], "build-arg", True),
        target=values["target"], no_cache=values["no_cache"], pull=values["pull"],
        labels=_pairs(values["label"], "label", False),
        network="default" if network == "bridge" else network, platform=values["platform"])
    quiet = values["quiet"]
    progress = Progress(sys.stdout, quiet)
    import signal

    def terminate(signum, frame):
        raise KeyboardInterrupt  # the build's clean-up runs, as on Ctrl-C

    signal.signal(signal.SIGTERM, terminate)
    from berth import build

    try:
        image = build.build(g.root, pos[0], values["file"], sys.stdin.buffer, options, progress)
    except RunFailed as exc:
        _show_kept(progress)
        progress.end_line()
        sys.stderr.write(f"berth: {exc}\n")
        return exc.exit_code
    except BaseException:
        _show_kept(progress)
        progress.end_line()
        raise
    if quiet:
        sys.stdout.write(image.id + "\n")
    if values["iidfile"]:
        from berth.fsutil import write_atomic

        write_atomic(values["iidfile"], image.id.encode(), durable=False)
    return 0


def _show_kept(progress) -> None:
    """Quiet, the RUN output was kept: a failed build shows it, as docker build -q does."""
    if progress.quiet and progress.kept:
        sys.stderr.buffer.write(bytes(progress.kept))
        sys.stderr.flush()
