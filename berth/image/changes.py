"""Dockerfile instructions applied to an image config, for `import -c` and `commit -c`.

Docker accepts CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME
and WORKDIR here; anything else is refused by name.
"""

from __future__ import annotations

import json
import shlex
from berth.oci.record import replace

from berth.errors import InvalidArgument
from berth.oci.image import ContainerConfig


def _json_or_shell(args: str, *, shell_form: bool = True) -> tuple[str, ...]:
    text = args.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    if shell_form:
        return ("/bin/sh", "-c", text)
    return tuple(shlex.split(text))


def _pairs(instruction: str, args: str) -> list[tuple[str, str]]:
    """ENV/LABEL: `k=v k2="v 2"` or the legacy one-pair form `k v`."""
    words = shlex.split(args)
    if not words:
        raise InvalidArgument(f"{instruction} requires at least one argument")
    if "=" not in words[0]:
        # legacy form: the rest of the line is the value, its quotes removed by shell words
        key, _, value = args.strip().partition(" ")
        try:
            value = " ".join(shlex.split(value))
        except ValueError:
            value = value.strip()
        return [(key, value)]
    out = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise InvalidArgument(f"{instruction} names can not be blank: {word!r}")
        out.append((key, value))
    return out


def apply(config: ContainerConfig, changes: list[str] | tuple[str, ...]) -> ContainerConfig:
    for change in changes:
        instruction, _, args = change.strip().partition(" ")
        instruction = instruction.upper()
        args = args.strip()
        if instruction == "CMD":
            config = replace(config, cmd=_json_or_shell(args))
        elif instruction == "ENTRYPOINT":
            config = replace(config, entrypoint=_json_or_shell(args))
        elif instruction == "ENV":
            env = {e.partition("=")[0]: e for e in config.env}
            for key, value in _pairs("ENV", args):
                env[key] = f"{key}={value}"
            config = replace(config, env=tuple(env.values()))
        elif instruction == "LABEL":
            labels = dict(config.labels or {})
            labels.update(_pairs("LABEL", args))
            config = replace(config, labels=labels)
        elif instruction == "EXPOSE":
            ports = dict(config.exposed_ports or {})
            for port in args.split():
                ports[port if "/" in port else f"{port}/tcp"] = {}
            config = replace(config, exposed_ports=ports)
        elif instruction == "VOLUME":
            volumes = dict(config.volumes or {})
            for path in _json_or_shell(args, shell_form=False):
                volumes[path] = {}
            config = replace(config, volumes=volumes)
        elif instruction == "USER":
            config = replace(config, user=args)
        elif instruction == "WORKDIR":
            config = replace(config, working_dir=args)
        elif instruction == "STOPSIGNAL":
            config = replace(config, stop_signal=args)
        elif instruction == "ONBUILD":
            config = replace(config, on_build=config.on_build + (args,))
        else:
            raise InvalidArgument(f"{instruction or change!r} is not a valid change command "
                                  "(CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, "
                                  "USER, VOLUME, WORKDIR)")
    return config
