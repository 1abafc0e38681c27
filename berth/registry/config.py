"""Where a registry name is reached: its endpoint, its mirrors, and whether TLS is checked.

The file is the first of these that exists (they are not merged):
``$BERTH_REGISTRIES_CONFIG``, ``<root>/registries.json``, ``/etc/berth/registries.json``.

    {
      "mirrors":   {"docker.io": ["http://127.0.0.1:5000", "https://mirror.example.com"]},
      "insecure":  ["registry.lan:5000", "10.0.0.0/8"],
      "endpoints": {"docker.io": "https://registry-1.docker.io"}
    }

``mirrors``   registry name -> endpoint URLs tried in order before the registry itself, for
              pulls only (pushes always go to the registry itself), as Docker's
              registry-mirrors and containerd's hosts.toml do. A mirror that fails (is
              unreachable, refuses, lacks the image) hands over to the next one.
``insecure``  registries (host[:port], or a CIDR range of addresses) reached without
              checking TLS certificates, and over plain HTTP if they do not speak TLS.
              localhost, 127.0.0.0/8 and ::1 are insecure by default, as in Docker.
``endpoints`` registry name -> the URL that serves it. By default docker.io is
              https://registry-1.docker.io and any other name is https://NAME. An offline
              site points docker.io at its own registry here (pushes included) or with a
              mirror (pulls only, falling back to the next).

An endpoint URL is ``scheme://host[:port][/path-prefix]``; ``http://`` means plain HTTP
whatever ``insecure`` says. Unqualified names (``busybox``) always mean docker.io, as in
Docker: which registry serves docker.io is what a site configures, not what a name means.
"""

from __future__ import annotations

import json
import os

from berth.errors import InvalidArgument
from berth.oci.record import Record

DEFAULT_ENDPOINTS = {"docker.io": "https://registry-1.docker.io"}
SYSTEM_FILE = "/etc/berth/registries.json"


class Endpoint(Record):
    """One place to send a registry's API requests to."""

    url: str  # scheme://host[:port][/prefix], no trailing slash
    registry: str  # the registry name it serves (whose credentials it takes)
    verify_tls: bool = True
    http_fallback: bool = False  # try plain HTTP when TLS fails (insecure registries)
    mirror: bool = False

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].split("/", 1)[0]


class RegistriesConfig(Record):
    mirrors: dict
    insecure: tuple
    endpoints: dict
    path: str | None = None  # where it was read from

    def is_insecure(self, host: str) -> bool:
        return is_loopback(host) or host in self.insecure or _in_ranges(host, self.insecure)

    def endpoint(self, registry: str) -> Endpoint:
        """Where `registry` itself is reached (pushes, logins, and the last pull attempt)."""
        url = self.endpoints.get(registry) or DEFAULT_ENDPOINTS.get(registry) or f"https://{registry}"
        return self._endpoint(url, registry, mirror=False)

    def pull_endpoints(self, registry: str) -> list[Endpoint]:
        """Mirrors first, then the registry itself."""
        out = [self._endpoint(url, registry, mirror=True) for url in self.mirrors.get(registry, ())]
        return out + [self.endpoint(registry)]

    def _endpoint(self, url: str, registry: str, mirror: bool) -> Endpoint:
        scheme, _, rest = url.partition("://")
        host = rest.split("/", 1)[0]
        insecure = self.is_insecure(host)
        return Endpoint(url.rstrip("/"), registry, verify_tls=not insecure,
                        http_fallback=insecure and scheme == "https", mirror=mirror)


def config_path(root: str) -> str | None:
    explicit = os.environ.get("BERTH_REGISTRIES_CONFIG")
    if explicit:
        return explicit
    for path in (os.path.join(root, "registries.json"), SYSTEM_FILE):
        if os.path.exists(path):
            return path
    return None


def load(root: str) -> RegistriesConfig:
    path = config_path(root)
    if path is None:
        return RegistriesConfig({}, (), {})
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except FileNotFoundError:
        raise InvalidArgument(f"registries config {path} does not exist "
                              "(BERTH_REGISTRIES_CONFIG names it)") from None
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"registries config {path} is unreadable: {exc}") from None
    return parse(doc, path)


def parse(doc, path: str | None = None) -> RegistriesConfig:
    where = path or "registries config"

    def bad(what: str) -> InvalidArgument:
        return InvalidArgument(f"{where}: {what}")

    if not isinstance(doc, dict):
        raise bad("expected a JSON object")
    unknown = set(doc) - {"mirrors", "insecure", "endpoints"}
    if unknown:
        raise bad(f"unknown keys {sorted(unknown)} (mirrors, insecure, endpoints)")
    mirrors = doc.get("mirrors") or {}
    if not isinstance(mirrors, dict) or not all(
            isinstance(v, list) and all(isinstance(u, str) for u in v) for v in mirrors.values()):
        raise bad('"mirrors" must map a registry name to a list of URLs')
    insecure = doc.get("insecure") or []
    if not isinstance(insecure, list) or not all(isinstance(h, str) for h in insecure):
        raise bad('"insecure" must be a list of host[:port] names or CIDR ranges')
    endpoints = doc.get("endpoints") or {}
    if not isinstance(endpoints, dict) or not all(isinstance(v, str) for v in endpoints.values()):
        raise bad('"endpoints" must map a registry name to a URL')
    for url in [u for v in mirrors.values() for u in v] + list(endpoints.values()):
        scheme, sep, rest = url.partition("://")
        if scheme not in ("http", "https") or not sep or not rest.split("/", 1)[0]:
            raise bad(f"{url!r} is not an http:// or https:// URL")
    return RegistriesConfig({k: tuple(v) for k, v in mirrors.items()}, tuple(insecure),
                            dict(endpoints), path)


def is_loopback(host: str) -> bool:
    name = _hostname(host)
    if name == "localhost":
        return True
    ip = _ip(name)
    return ip is not None and ip.is_loopback


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _ip(name: str):
    import ipaddress

    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def _in_ranges(host: str, entries) -> bool:
    ip = _ip(_hostname(host))
    if ip is None:
        return False
    import ipaddress

    for entry in entries:
        if "/" in entry:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False
