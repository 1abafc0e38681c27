"""Images as history: commit a container, and what a container or an image changed.

``commit`` turns a container's overlay upper dir into one more layer on its image, as
``docker commit`` does: the layer is streamed straight into the content store (hashed
once on the way, never staged on disk), the config is the parent's plus the layer, a
history entry and the container's settings. The new layer is not unpacked here; the
first container that runs the image unpacks it (ImageStore.ensure_unpacked), which
keeps commit about as fast as writing the layer's bytes once.

The container service is passed in, not imported: containers sit above images.
"""

from __future__ import annotations

from berth.errors import InvalidArgument, NotFound
from berth.image import Image, ImageStore, now_rfc3339
from berth.oci import image as oci
from berth.oci.record import Record, replace

# The runtime makes these mount points in the upper dir when the image lacks them; Docker
# keeps them in a per-container "init" layer, so they are in neither its diffs nor its
# commits. Relative to the container's root.
ENGINE_MOUNTPOINTS = ("etc/hostname", "etc/hosts", "etc/resolv.conf", "proc", "sys", "dev")

# The tar of an empty directory: two zero blocks. Docker adds no layer for it, only a
# history entry marked empty_layer, and so does berth.
EMPTY_LAYER = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"

# Environment the engine gives every process (berth.container.spec), which belongs to the
# container rather than to what it ran: kept in the image only when the parent had it.
_DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def commit(images: ImageStore, containers, ref: str, repo_tag: str | None = None,
           message: str = "", author: str = "", changes=(), pause: bool = True) -> Image:
    """``docker commit``: a new image from container `ref`'s changes; returns it.

    A running container is frozen while its changes are read (`pause`), so the layer is
    one consistent moment of it, and thawed whatever happens.
    """
    from berth.layer.diff import write_layer

    record = containers.get(ref)
    name = _target_name(repo_tag)
    try:
        parent = images.resolve(record["Image"])
    except NotFound:
        raise NotFound(f"the image {record['Image'][7:19]} of container {ref} no longer "
                       "exists") from None
    settings = _apply_changes(_container_config(record, parent.config.config), changes)
    data = record["GraphDriver"]["Data"]
    lowers = [d for d in data["LowerDir"].split(":") if d]
    with images.lease():  # from the layer blob until the image that refers to it
        frozen = None
        state = record["State"]
        if pause and state["Running"] and not state.get("Paused"):
            frozen = containers.cgroup_of(record)
            frozen.freeze()
        try:
            with images.content.writer() as writer:
                diff_id, size = write_layer(data["UpperDir"], writer, lowers=lowers,
                                            exclude=ENGINE_MOUNTPOINTS)
                if diff_id != EMPTY_LAYER:
                    writer.commit(diff_id, size)
        finally:
            if frozen is not None:
                frozen.thaw()
        created = now_rfc3339()
        layers = list(parent.manifest.layers)
        diff_ids = parent.diff_ids
        empty = diff_id == EMPTY_LAYER
        if not empty:
            layers.append(oci.Descriptor(oci.OCI_LAYER, diff_id, size))
            diff_ids += (diff_id,)
        entry = oci.History(created=created, created_by=" ".join(record["Config"].get("Cmd") or ()),
                            author=author or None, comment=message or None,
                            empty_layer=True if empty else None)
        config = replace(parent.config, created=created, author=author or None, config=settings,
                         rootfs=oci.RootFS(diff_ids=diff_ids),
                         history=_history_of(parent) + (entry,))
        return images.write_image(config, layers, name)


def _target_name(repo_tag: str | None) -> str | None:
    if not repo_tag:
        return None
    from berth.oci import reference

    ref = reference.parse(repo_tag)
    if ref.digest:
        raise InvalidArgument(f"refusing to create a tag with a digest reference: {repo_tag}")
    return f"{ref.name}:{ref.tag}"


def _container_config(record: dict, base: oci.ContainerConfig) -> oci.ContainerConfig:
    """The image settings a container ran with, from its (Docker-shaped) record."""
    c = record["Config"]
    engine_env = {_DEFAULT_PATH, f"HOSTNAME={c.get('Hostname', '')}"}
    if c.get("Tty"):
        engine_env.add("TERM=xterm")
    inherited = set(base.env)
    home_inherited = any(e.startswith("HOME=") for e in base.env)

    def own(e: str) -> bool:
        if e in inherited:
            return True
        # HOME comes from the user's passwd entry: the image keeps none it did not have
        return e not in engine_env and (home_inherited or not e.startswith("HOME="))

    env = tuple(e for e in c.get("Env") or () if own(e))
    health = c.get("Healthcheck")
    if isinstance(health, dict):
        from berth.oci.codec import from_dict

        health = from_dict(oci.HealthConfig, health)
    return replace(
        base,
        user=c.get("User") or None,
        env=env,
        cmd=tuple(c["Cmd"]) if c.get("Cmd") else None,
        entrypoint=tuple(c["Entrypoint"]) if c.get("Entrypoint") else None,
        working_dir=c.get("WorkingDir") or None,
        labels=c.get("Labels") or None,
        volumes=c.get("Volumes") or base.volumes,
        exposed_ports=c.get("ExposedPorts") or base.exposed_ports,
        stop_signal=c.get("StopSignal") or base.stop_signal,
        on_build=tuple(c.get("OnBuild") or ()),
        healthcheck=health or base.healthcheck,
    )


def _apply_changes(config: oci.ContainerConfig, changes) -> oci.ContainerConfig:
    """`--change` instructions in order. As in a Dockerfile, ENTRYPOINT resets the command
    unless a CMD came before it."""
    from berth.image import changes as _changes

    cmd_set = False
    for change in changes:
        config = _changes.apply(config, [change])
        instruction = change.strip().partition(" ")[0].upper()
        if instruction == "CMD":
            cmd_set = True
        elif instruction == "ENTRYPOINT" and not cmd_set:
            config = replace(config, cmd=None)
    return config


def _history_of(image: Image) -> tuple[oci.History, ...]:
    """The image's history with an entry for every layer, as a child's history needs."""
    history = image.config.history
    described = sum(1 for h in history if not h.empty_layer)
    missing = len(image.diff_ids) - described
    if missing <= 0:
        return history
    return (oci.History(created=image.config.created),) * missing + history


# -- diff, image diff, history


def container_changes(containers, ref: str) -> list[tuple[str, str]]:
    """``docker diff``: [("A"|"C"|"D", "/path")] of container `ref`, sorted by path."""
    from berth.layer.diff import changes

    data = containers.get(ref)["GraphDriver"]["Data"]
    return changes(data["UpperDir"], [d for d in data["LowerDir"].split(":") if d],
                   exclude=ENGINE_MOUNTPOINTS)


def image_changes(images: ImageStore, old: str, new: str) -> list[tuple[str, str]]:
    """What changed from image `old` to image `new`, file by file, in ``docker diff`` form."""
    from berth.layer.diff import compare_trees

    a, b = images.resolve(old), images.resolve(new)
    return compare_trees(images.ensure_unpacked(a), images.ensure_unpacked(b))


class HistoryRow(Record):
    image_id: str | None  # None where no local image ends at this entry (docker: <missing>)
    created: str | None
    created_by: str
    size: int
    comment: str


def history(images: ImageStore, ref: str) -> list[HistoryRow]:
    """``docker history``: one row per history entry, newest first.

    A row names the local image whose history ends with it, as Docker names the parent
    images it keeps; for an image's own top entry that is the image itself.
    """
    image = images.resolve(ref)
    entries = _history_of(image)
    sizes = [size for _chain, size in images.layer_sizes(image)]
    ends = {(_history_of(other), other.diff_ids): other.id for other in images.list()}
    rows = []
    layer = 0
    for i, h in enumerate(entries):
        size = 0
        if not h.empty_layer:
            size = sizes[layer] if layer < len(sizes) else 0
            layer += 1
        image_id = ends.get((entries[: i + 1], image.diff_ids[:layer]))
        rows.append(HistoryRow(image.id if i == len(entries) - 1 else image_id, h.created,
                               h.created_by or "", size, h.comment or ""))
    rows.reverse()
    return rows
