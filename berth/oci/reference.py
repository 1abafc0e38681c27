"""Image references, normalised the way Docker does it.

    busybox                     -> docker.io/library/busybox:latest
    localhost:5000/app@sha256:… -> registry localhost:5000, repository app, digest
A first path component is a registry host when it contains a dot or a colon, or is
``localhost``. Grammar from the distribution reference spec.
"""

from __future__ import annotations

import re
from berth.oci.record import Record

from berth.errors import InvalidArgument

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
_LEGACY_REGISTRIES = ("index.docker.io", "registry-1.docker.io")

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_RE = re.compile(
    r"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$")
TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_ID_RE = re.compile(r"^[a-f0-9]{64}$")
NAME_TOTAL_MAX = 255


class Reference(Record):
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Fully qualified repository name, e.g. docker.io/library/busybox."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def familiar_name(self) -> str:
        """The short name Docker shows: busybox, user/app, localhost:5000/app."""
        if self.registry == DEFAULT_REGISTRY:
            rest = self.repository.removeprefix("library/")
            # library/a/b must stay as is: a/b would name docker.io/a/b
            return rest if "/" not in rest else self.repository
        return self.name

    def familiar(self) -> str:
        out = self.familiar_name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def with_tag(self, tag: str) -> "Reference":
        return Reference(self.registry, self.repository, tag, None)


def looks_like_id(text: str) -> bool:
    return bool(_ID_RE.match(text.removeprefix("sha256:")))


def parse(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise an image reference; raise InvalidArgument with the reason."""
    if not text:
        raise InvalidArgument("invalid reference format: empty image name")
    remainder = text
    digest = None
    if "@" in remainder:
        remainder, _, digest = remainder.partition("@")
        if not _DIGEST_RE.match(digest):
            raise InvalidArgument(f"invalid reference format: bad digest in {text!r}")
    tag = None
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1:]
        if not TAG_RE.match(tag):
            raise InvalidArgument(f"invalid reference format: bad tag {tag!r} in {text!r}")
    first, sep, rest = remainder.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
        if not _DOMAIN_RE.match(registry):
            raise InvalidArgument(f"invalid reference format: bad registry {registry!r}")
    else:
        registry, path = DEFAULT_REGISTRY, remainder
    if registry in _LEGACY_REGISTRIES:
        registry = DEFAULT_REGISTRY
    if any(c.isupper() for c in path):
        raise InvalidArgument(f"invalid reference format: repository name must be lowercase: {text!r}")
    if not _PATH_RE.match(path):
        raise InvalidArgument(f"invalid reference format: {text!r}")
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    if len(registry) + 1 + len(path) > NAME_TOTAL_MAX:
        raise InvalidArgument(f"invalid reference format: repository name too long: {text!r}")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(registry, path, tag, digest)
