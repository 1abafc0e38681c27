"""-v/--volume, --mount and --tmpfs: Docker's mount flags, parsed into bind, volume and
tmpfs specs for RunOptions.

Apart from berth.cli.runopts because the three syntaxes (colon-separated -v, CSV --mount,
PATH[:OPTIONS] --tmpfs) and their Docker error messages are one concern, with their own
unit tests; whether a named volume exists is the engine's question, at create.
"""

from __future__ import annotations

import os

from berth.cli.flags import UsageError, parse_size
from berth.errors import InvalidArgument

_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")


def _host_path(text: str) -> str:
    # the docker CLI takes ./dir and ../dir as host paths relative to where it runs
    return os.path.normpath(os.path.abspath(text) if text.startswith(".") else text)


def parse_volume(text: str):
    """-v: HOST:CTR[:MODE] (a BindSpec), NAME:CTR[:MODE] or CTR (a VolumeSpec)."""
    from berth.container.spec import BindSpec, VolumeSpec

    parts = text.split(":")
    if len(parts) == 1 and text.startswith("/"):
        return VolumeSpec(os.path.normpath(text))  # anonymous
    if len(parts) < 2 or len(parts) > 3 or not parts[0] or not parts[1]:
        raise InvalidArgument(f"invalid volume specification: '{text}'")
    if len(parts) == 2 and parts[0].startswith("/") and _is_mode(parts[1]):
        raise InvalidArgument(f"invalid volume specification: '{text}'")  # /path:ro, as Docker
    source, dest = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    if not dest.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: '{text}': mount path must be "
                              "absolute")
    bind = source.startswith(("/", "."))
    readonly = nocopy = False
    propagation = "rprivate"
    for opt in options:
        if opt == "ro":
            readonly = True
        elif opt == "rw":
            readonly = False
        elif opt in _PROPAGATIONS and bind:
            propagation = opt
        elif opt == "nocopy":
            nocopy = True
        elif opt in ("z", "Z", "consistent", "cached", "delegated", ""):
            pass  # SELinux relabels and Docker Desktop hints: nothing to do here
        else:
            raise InvalidArgument(f"invalid mode: {opt} in volume specification '{text}'")
    if bind:
        return BindSpec(_host_path(source), os.path.normpath(dest), readonly, propagation)
    _check_volume_name(source)
    return VolumeSpec(os.path.normpath(dest), source, readonly, nocopy)


def _is_mode(text: str) -> bool:
    return all(o in ("ro", "rw", "z", "Z", "nocopy", *_PROPAGATIONS) for o in text.split(","))


def _check_volume_name(name: str) -> None:
    from berth.volume import NAME_RE

    if not NAME_RE.match(name):
        raise InvalidArgument(
            f'create {name}: "{name}" includes invalid characters for a local volume name, only '
            '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, '
            "use absolute path")


_MOUNT_KEYS = {"type", "source", "src", "target", "destination", "dst", "readonly", "ro",
               "bind-propagation", "volume-nocopy", "tmpfs-size", "tmpfs-mode", "consistency"}


def parse_mount(text: str):
    """--mount type=bind|volume|tmpfs,...: a BindSpec, a VolumeSpec or a tmpfs (dest, options)."""
    import csv

    from berth.container.spec import BindSpec, VolumeSpec

    try:
        fields = next(csv.reader([text]))
    except (csv.Error, StopIteration):
        raise UsageError(f'invalid argument "{text}" for "--mount" flag') from None
    values: dict[str, str | None] = {}
    for field in fields:
        key, eq, value = field.partition("=")
        key = key.strip().lower()
        if key not in _MOUNT_KEYS:
            raise UsageError(f'invalid argument "{text}" for "--mount" flag: unexpected key '
                             f"'{key}' in '{field}'")
        values[key] = value if eq else None
    kind = values.get("type") or "volume"
    source = values.get("source") or values.get("src") or ""
    target = values.get("target") or values.get("destination") or values.get("dst") or ""
    if not target:
        raise UsageError(f'invalid argument "{text}" for "--mount" flag: target is required')
    invalid = f'invalid mount config for type "{kind}": '
    if not target.startswith("/"):
        raise InvalidArgument(f"{invalid}invalid mount path: '{target}' mount path must be "
                              "absolute")
    readonly = _mount_bool(values, "readonly", text) or _mount_bool(values, "ro", text)
    given = set(values)

    def refuse(prefix: str, what: str) -> None:
        if any(k.startswith(prefix) for k in given):
            raise InvalidArgument(f"{invalid}field {what} must not be specified")

    target = os.path.normpath(target)
    if kind == "bind":
        refuse("volume-", "VolumeOptions")
        refuse("tmpfs-", "TmpfsOptions")
        if not source:
            raise InvalidArgument(f"{invalid}field Source must not be empty")
        source = _host_path(source)
        if not os.path.exists(source):  # unlike -v, --mount never creates the source
            raise InvalidArgument(f"{invalid}bind source path does not exist: {source}")
        propagation = values.get("bind-propagation") or "rprivate"
        if propagation not in _PROPAGATIONS:
            raise InvalidArgument(f"{invalid}invalid propagation mode: {propagation}")
        return BindSpec(source, target, readonly, propagation)
    if kind == "volume":
        refuse("bind-", "BindOptions")
        refuse("tmpfs-", "TmpfsOptions")
        if source:
            _check_volume_name(source)
        return VolumeSpec(target, source, readonly, _mount_bool(values, "volume-nocopy", text))
    if kind == "tmpfs":
        refuse("bind-", "BindOptions")
        refuse("volume-", "VolumeOptions")
        if source:
            raise InvalidArgument(f"{invalid}field Source must not be specified")
        options = []
        if values.get("tmpfs-size"):
            options.append(f"size={parse_size(values['tmpfs-size'], '--mount')}")
        if values.get("tmpfs-mode"):
            try:
                options.append(f"mode={int(values['tmpfs-mode'], 8):o}")
            except ValueError:
                raise InvalidArgument(f"{invalid}invalid tmpfs-mode: "
                                      f"{values['tmpfs-mode']}") from None
        if readonly:
            options.append("ro")
        return (target, ",".join(options))
    raise InvalidArgument(f"invalid mount type {kind!r} (bind, volume or tmpfs)")


def _mount_bool(values: dict, key: str, text: str) -> bool:
    if key not in values:
        return False
    value = (values[key] or "true").lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise UsageError(f'invalid argument "{text}" for "--mount" flag: invalid value for {key}: '
                     f"{values[key]}")


def parse_mounts(v: dict):
    """-v, --mount and --tmpfs -> (binds, volumes, tmpfs), with one mount per destination."""
    from berth.container.spec import BindSpec, VolumeSpec

    tmpfs = []
    for item in v["tmpfs"]:
        dest, _, options = item.partition(":")
        if not dest.startswith("/"):
            raise InvalidArgument(f"invalid tmpfs mount: {item}: the path must be absolute")
        tmpfs.append((dest, options))
    binds, volumes = [], []
    for spec in [parse_volume(x) for x in v["volume"]] + [parse_mount(x) for x in v["mount"]]:
        if isinstance(spec, BindSpec):
            binds.append(spec)
        elif isinstance(spec, VolumeSpec):
            volumes.append(spec)
        else:
            tmpfs.append(spec)
    seen = set()
    for dest in [b.destination for b in binds] + [m.destination for m in volumes] + \
            [os.path.normpath(d) for d, _ in tmpfs]:
        if dest in seen:
            raise InvalidArgument(f"Duplicate mount point: {dest}")
        seen.add(dest)
    for item in v["volumes_from"]:
        ref, _, mode = item.partition(":")
        if not ref or mode not in ("", "ro", "rw", "z", "Z"):
            raise InvalidArgument(f"invalid mode: {mode} in --volumes-from {item!r}")
    return tuple(binds), tuple(volumes), tuple(tmpfs)
