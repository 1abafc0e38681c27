"""berth's runtime on its own, over an OCI bundle, the way runc is used:

    python -m berth.runtime run [--bundle DIR] CONTAINER_ID

Reads DIR/config.json (root.path relative to the bundle), runs the process in the
foreground with this process as its monitor, and exits with its exit code. The engine
never goes through here; this is for other engines, for comparing with runc on the same
bundle, and for proving the runtime needs nothing but a spec and a root filesystem.
"""

from __future__ import annotations

import os
import signal
import sys

from berth.errors import BerthError, InvalidArgument
from berth.oci.record import replace
from berth.oci.runtime import Device, DeviceRule, Resources, Spec

# The runtime spec says these must exist whatever config.json lists (runc adds them too),
# and the device cgroup must let the container use them.
REQUIRED_DEVICES = (
    Device("c", "/dev/null", 1, 3, 0o666, 0, 0), Device("c", "/dev/zero", 1, 5, 0o666, 0, 0),
    Device("c", "/dev/full", 1, 7, 0o666, 0, 0), Device("c", "/dev/random", 1, 8, 0o666, 0, 0),
    Device("c", "/dev/urandom", 1, 9, 0o666, 0, 0), Device("c", "/dev/tty", 5, 0, 0o666, 0, 0),
)
REQUIRED_RULES = tuple(DeviceRule(True, "c", d.major, d.minor, "rwm") for d in REQUIRED_DEVICES) + (
    DeviceRule(True, "c", 5, 2, "rwm"), DeviceRule(True, "c", 136, None, "rwm"))


def with_required_devices(spec: Spec) -> Spec:
    paths = {d.path for d in spec.linux.devices}
    devices = spec.linux.devices + tuple(d for d in REQUIRED_DEVICES if d.path not in paths)
    resources = spec.linux.resources or Resources()
    resources = replace(resources, devices=resources.devices + REQUIRED_RULES)
    return replace(spec, linux=replace(spec.linux, devices=devices, resources=resources))


def load_bundle(bundle: str) -> Spec:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            spec = Spec.from_json(f.read())
    except FileNotFoundError:
        raise InvalidArgument(f"{path}: no such file (is {bundle} an OCI bundle?)") from None
    except ValueError as exc:
        raise InvalidArgument(f"{path}: {exc}") from None
    root = spec.root.path
    if not os.path.isabs(root):
        root = os.path.join(os.path.abspath(bundle), root)
    if spec.process.terminal:
        raise InvalidArgument(f"{path}: process.terminal is not supported here; set it to false")
    return with_required_devices(replace(spec, root=replace(spec.root, path=root)))


def run(bundle: str, container_id: str) -> int:
    from berth.runtime import ContainerProcess, Stdio

    spec = load_bundle(bundle)
    cgroup = spec.linux.cgroups_path or f"berth-runtime/{container_id}"
    cache = os.path.join(os.environ.get("XDG_RUNTIME_DIR") or "/run", "berth-runtime", "seccomp")
    proc = ContainerProcess(cgroup_path=cgroup.strip("/"), resources=spec.linux.resources,
                            stdio=Stdio(0, 1, 2), seccomp_cache=cache)
    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                 signal.SIGUSR2)
    for sig in forwarded:
        signal.signal(sig, lambda signum, _frame: proc.kill(signum))
    proc.start(spec)
    return proc.wait().code


def main(argv: list[str]) -> int:
    bundle = "."
    args = list(argv)
    if not args or args[0] != "run":
        sys.stderr.write("usage: python -m berth.runtime run [--bundle DIR] CONTAINER_ID\n")
        return 2
    args.pop(0)
    while args and args[0].startswith("-"):
        flag = args.pop(0)
        if flag in ("-b", "--bundle") and args:
            bundle = args.pop(0)
        elif flag.startswith("--bundle="):
            bundle = flag.partition("=")[2]
        else:
            sys.stderr.write(f"berth-runtime: unknown flag {flag}\n")
            return 2
    if len(args) != 1:
        sys.stderr.write("usage: python -m berth.runtime run [--bundle DIR] CONTAINER_ID\n")
        return 2
    try:
        return run(bundle, args[0])
    except BerthError as exc:
        sys.stderr.write(f"berth-runtime: {exc}\n")
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
