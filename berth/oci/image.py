"""OCI image-spec structures (and their Docker schema2 twins) as frozen records (berth.oci.record).

Docker schema2 and OCI documents have the same shape; only media types differ, so one
set of types reads both. ``to_json()`` returns the canonical bytes berth digests when it
writes a document; documents received from elsewhere are stored byte for byte.
"""

from __future__ import annotations


from berth.oci.codec import dumps, loads
from berth.oci.record import Record, jf

# media types
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
LAYER_COMPRESSION = {
    OCI_LAYER: None, DOCKER_LAYER: None,
    OCI_LAYER_GZIP: "gzip", DOCKER_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    # non-distributable layer types are deprecated but still readable
    "application/vnd.oci.image.layer.nondistributable.v1.tar": None,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"


class Platform(Record):
    architecture: str = jf("architecture")
    os: str = jf("os")
    variant: str | None = jf("variant", default=None)
    os_version: str | None = jf("os.version", default=None)


class Descriptor(Record):
    media_type: str = jf("mediaType")
    digest: str = jf("digest")
    size: int = jf("size", keep=True)
    annotations: dict | None = jf("annotations", default=None)
    platform: Platform | None = jf("platform", of=Platform, default=None)
    artifact_type: str | None = jf("artifactType", default=None)


class Manifest(Record):
    config: Descriptor = jf("config", of=Descriptor)
    layers: tuple[Descriptor, ...] = jf("layers", of=Descriptor, default=(), keep=True)
    schema_version: int = jf("schemaVersion", default=2)
    media_type: str | None = jf("mediaType", default=OCI_MANIFEST)
    annotations: dict | None = jf("annotations", default=None)
    subject: Descriptor | None = jf("subject", of=Descriptor, default=None)
    artifact_type: str | None = jf("artifactType", default=None)

    def to_json(self) -> bytes:
        return dumps(self)

    @classmethod
    def from_json(cls, raw: bytes) -> "Manifest":
        return loads(cls, raw)


class Index(Record):
    manifests: tuple[Descriptor, ...] = jf("manifests", of=Descriptor, default=(), keep=True)
    schema_version: int = jf("schemaVersion", default=2)
    media_type: str | None = jf("mediaType", default=OCI_INDEX)
    annotations: dict | None = jf("annotations", default=None)

    def to_json(self) -> bytes:
        return dumps(self)

    @classmethod
    def from_json(cls, raw: bytes) -> "Index":
        return loads(cls, raw)


class HealthConfig(Record):
    test: tuple[str, ...] = jf("Test", default=())
    interval: int | None = jf("Interval", default=None)
    timeout: int | None = jf("Timeout", default=None)
    start_period: int | None = jf("StartPeriod", default=None)
    retries: int | None = jf("Retries", default=None)


class ContainerConfig(Record):
    """The `config` member of an image config: the defaults a container starts with."""

    user: str | None = jf("User", default=None)
    exposed_ports: dict | None = jf("ExposedPorts", default=None)
    env: tuple[str, ...] = jf("Env", default=())
    entrypoint: tuple[str, ...] | None = jf("Entrypoint", default=None)
    cmd: tuple[str, ...] | None = jf("Cmd", default=None)
    volumes: dict | None = jf("Volumes", default=None)
    working_dir: str | None = jf("WorkingDir", default=None)
    labels: dict | None = jf("Labels", default=None)
    stop_signal: str | None = jf("StopSignal", default=None)
    healthcheck: HealthConfig | None = jf("Healthcheck", of=HealthConfig, default=None)
    on_build: tuple[str, ...] = jf("OnBuild", default=())
    shell: tuple[str, ...] = jf("Shell", default=())


class RootFS(Record):
    diff_ids: tuple[str, ...] = jf("diff_ids", default=(), keep=True)
    type: str = jf("type", default="layers")


class History(Record):
    created: str | None = jf("created", default=None)
    created_by: str | None = jf("created_by", default=None)
    author: str | None = jf("author", default=None)
    comment: str | None = jf("comment", default=None)
    empty_layer: bool | None = jf("empty_layer", default=None)


class ImageConfig(Record):
    architecture: str = jf("architecture")
    os: str = jf("os")
    rootfs: RootFS = jf("rootfs", of=RootFS)
    created: str | None = jf("created", default=None)
    author: str | None = jf("author", default=None)
    variant: str | None = jf("variant", default=None)
    config: ContainerConfig = jf("config", of=ContainerConfig, default=ContainerConfig(), keep=True)
    history: tuple[History, ...] = jf("history", of=History, default=())

    def to_json(self) -> bytes:
        return dumps(self)

    @classmethod
    def from_json(cls, raw: bytes) -> "ImageConfig":
        return loads(cls, raw)


def host_platform() -> Platform:
    """The platform of this host in OCI terms (GOARCH names)."""
    import platform as _platform

    machine = _platform.machine()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
    variant = {"aarch64": "v8", "armv7l": "v7"}.get(machine)
    return Platform(architecture=arch, os="linux", variant=variant)
