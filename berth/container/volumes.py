"""A container's side of volumes: which mounts it gets from -v/--mount, --volumes-from and
the image's VOLUMEs, the host directories behind them, and removing its anonymous ones.
The volume layer (berth.volume) keeps the volumes; this is the glue that knows a
container's options, records and layers.
"""

from __future__ import annotations

import os

from berth import errors
from berth.container import spec as specmod


def resolve_volumes(volumes, image, opts: specmod.RunOptions, cdir: str, lowerdirs: list[str],
                    made: list[str], get) -> specmod.RunOptions:
    """Docker's mount sources, highest first: -v/--mount/--tmpfs, --volumes-from, the
    image's VOLUMEs. Every volume gets a host directory; an empty one gets the image's
    files at its destination (not with nocopy, not from --volumes-from). The anonymous
    volumes made are added to `made`, for the caller to remove if the create fails;
    `get(ref)` is the service's container lookup."""
    from berth.container import rootwrite
    from berth.oci.record import replace

    binds, wanted = list(opts.binds), list(opts.volumes)
    taken = ({b.destination for b in binds} | {v.destination for v in wanted}
             | {os.path.normpath(d) for d, _ in opts.tmpfs})
    for item in opts.volumes_from:
        ref, _, mode = item.partition(":")
        for m in get(ref).get("Mounts") or ():
            dest = m["Destination"]
            if dest in taken or m.get("Type") not in ("volume", "bind"):
                continue
            taken.add(dest)
            ro = mode == "ro" if mode in ("ro", "rw") else not m.get("RW", True)
            if m["Type"] == "bind":
                binds.append(specmod.BindSpec(m["Source"], dest, ro,
                                              m.get("Propagation") or "rprivate"))
            else:
                wanted.append(specmod.VolumeSpec(dest, m["Name"], ro, nocopy=True))
    for path in sorted(image.config.config.volumes or ()):
        dest = "/" + os.path.normpath(path).lstrip("/")
        if dest not in taken:
            taken.add(dest)
            wanted.append(specmod.VolumeSpec(dest))
    layers = [os.path.join(cdir, "diff")] + lowerdirs
    resolved = []
    for v in wanted:
        info = volumes.create(v.name or None)
        if not v.name:
            made.append(info["Name"])
        options = info.get("Options") or {}
        fstype, data, source = "", "", info["Mountpoint"]
        if options.get("type") == "tmpfs":
            fstype, data = "tmpfs", options.get("o", "")
        elif options:
            source = options["device"]  # a bind of another directory
        elif not v.nocopy and volumes.is_empty(info["Name"]):
            rootwrite.populate(layers, v.destination, source)
        resolved.append(replace(v, name=info["Name"], source=source, fstype=fstype,
                                data=data))
    return replace(opts, binds=tuple(binds), volumes=tuple(resolved))


def remove_anonymous_volumes(root: str, record: dict, records) -> None:
    """The removed container's anonymous volumes that no other container uses; `records()`
    lists the containers, asked under the volumes' lock so no create takes one meanwhile."""
    names = [m["Name"] for m in record.get("Mounts") or () if m.get("Type") == "volume"]
    if not names:
        return
    from berth.volume import VolumeStore, is_anonymous, users_of

    volumes = VolumeStore(root)
    for name in names:
        try:
            if is_anonymous(volumes.get(name)):
                volumes.remove(name, lambda n=name: users_of(records(), n))
        except errors.BerthError:
            pass  # gone already, or shared through --volumes-from: it stays, as in Docker
