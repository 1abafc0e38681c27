"""Registry credentials, and the handshakes that use them: anonymous, basic, bearer token.

Credentials live in Docker's own config.json (``$DOCKER_CONFIG/config.json``, else
``~/.docker/config.json``), read and written as the docker CLI does, so ``docker login``
and ``berth login`` share them (podman falls back to this file too):

    {"auths": {"https://index.docker.io/v1/": {"auth": "<base64 of user:password>"},
               "localhost:5000": {"auth": "..."},
               "ghcr.io": {"identitytoken": "<OAuth refresh token>"}},
     "credsStore": "pass",
     "credHelpers": {"123456789.dkr.ecr.us-east-1.amazonaws.com": "ecr-login"}}

Keys are matched by host, whatever scheme or path they carry; docker.io's key is
Docker's ``https://index.docker.io/v1/``. A credential helper (``credHelpers`` for one
registry, else ``credsStore``) is run as ``docker-credential-NAME get|store|erase``, as
Docker runs it; without one the password is stored base64-encoded in the file (mode 0600),
which ``berth login`` warns about, as Docker does. Other keys of the file are kept.

The handshake (distribution's token spec, as Docker Hub, ECR and GHCR use it): ``GET
/v2/`` answers 401 with ``WWW-Authenticate: Bearer realm=…,service=…`` or ``Basic
realm=…``. For Bearer a token for the scopes a request needs
(``repository:NAME:pull[,push]``) is fetched from the realm, with basic credentials when
there are any, anonymously otherwise, or by OAuth refresh when only an identity token is
stored; tokens are cached per scope set until they expire. A 401 that names a wider scope
(``error="insufficient_scope"``) fetches a new token once.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time

from berth.errors import FailedPrecondition, InvalidArgument, Unavailable
from berth.oci.record import Record

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
_PARAM = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')


class Credentials(Record):
    username: str = ""
    password: str = ""
    identity_token: str = ""  # an OAuth refresh token, used instead of the password


# --- the config file -------------------------------------------------------------------


def config_path() -> str:
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(base, "config.json")


def registry_host(server: str) -> str:
    """The registry name a server argument or config key means: scheme and path dropped,
    Docker Hub's spellings folded into docker.io."""
    host = server.strip()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].lower()
    return "docker.io" if host in _HUB_ALIASES else host


def server_key(registry: str) -> str:
    """The key Docker files a registry's credentials under."""
    return DOCKER_HUB_KEY if registry == "docker.io" else registry


def _read_config(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read() or b"{}")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"credentials file {path} is unreadable: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"credentials file {path} is not a JSON object")
    return doc


def _write_config(path: str, doc: dict) -> None:
    from berth.fsutil import write_atomic

    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    write_atomic(path, json.dumps(doc, indent="\t").encode() + b"\n", mode=0o600)


def _helper_for(doc: dict, registry: str) -> str | None:
    helpers = doc.get("credHelpers") or {}
    for key, name in helpers.items():
        if registry_host(key) == registry:
            return name
    return doc.get("credsStore") or None


def get_credentials(registry: str) -> Credentials | None:
    """Stored credentials for `registry` (a helper's first, then the file's), or None."""
    doc = _read_config(config_path())
    helper = _helper_for(doc, registry)
    if helper:
        found = _helper_get(helper, registry)
        if found is not None:
            return found
    for key, entry in (doc.get("auths") or {}).items():
        if registry_host(key) != registry or not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            return Credentials(entry.get("username", ""), "", entry["identitytoken"])
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise InvalidArgument(f"credentials for {registry} in {config_path()} are "
                                      "not valid base64 of user:password") from None
            return Credentials(user, password)
        if entry.get("username") and entry.get("password"):
            return Credentials(entry["username"], entry["password"])
    return None


def store_credentials(registry: str, creds: Credentials) -> str:
    """Save credentials; returns where they went ("helper NAME" or the file's path)."""
    path = config_path()
    doc = _read_config(path)
    helper = _helper_for(doc, registry)
    auths = doc.setdefault("auths", {})
    for key in [k for k in auths if registry_host(k) == registry]:
        del auths[key]
    if helper:
        _helper_run(helper, "store", json.dumps({"ServerURL": server_key(registry),
                                                 "Username": creds.username,
                                                 "Secret": creds.password}).encode())
        auths[server_key(registry)] = {}
        _write_config(path, doc)
        return f"credential helper docker-credential-{helper}"
    auths[server_key(registry)] = {
        "auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
    _write_config(path, doc)
    return path


def erase_credentials(registry: str) -> bool:
    """Forget `registry`'s credentials; False when there were none."""
    path = config_path()
    doc = _read_config(path)
    auths = doc.get("auths") or {}
    keys = [k for k in auths if registry_host(k) == registry]
    helper = _helper_for(doc, registry)
    found = bool(keys)
    if helper:
        try:
            _helper_run(helper, "erase", server_key(registry).encode())
            found = True
        except InvalidArgument:
            pass  # the helper had nothing for it
    if keys:
        for key in keys:
            del auths[key]
        _write_config(path, doc)
    return found


def _helper_get(helper: str, registry: str) -> Credentials | None:
    try:
        out = _helper_run(helper, "get", server_key(registry).encode())
    except InvalidArgument:
        return None  # "credentials not found": the helper has none for this registry
    try:
        doc = json.loads(out)
        user, secret = doc.get("Username", ""), doc.get("Secret", "")
    except (ValueError, AttributeError):
        raise InvalidArgument(f"docker-credential-{helper} get: unreadable answer") from None
    if user == "<token>":
        return Credentials("", "", secret)
    return Credentials(user, secret)


def _helper_run(helper: str, verb: str, data: bytes) -> bytes:
    import subprocess

    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run([program, verb], input=data, capture_output=True, timeout=60)
    except FileNotFoundError:
        raise FailedPrecondition(f"credential helper {program} (named in {config_path()}) is "
                                 "not installed") from None
    except subprocess.TimeoutExpired:
        raise Unavailable(f"credential helper {program} {verb} did not answer") from None
    if proc.returncode != 0:
        message = (proc.stdout or proc.stderr).decode(errors="replace").strip()
        raise InvalidArgument(f"{program} {verb}: {message or f'exit status {proc.returncode}'}")
    return proc.stdout


# --- challenges and tokens -------------------------------------------------------------


def parse_challenges(values: list[str]) -> list[tuple[str, dict]]:
    """[(scheme in lower case, params)] of WWW-Authenticate header values."""
    out = []
    for value in values:
        value = value.strip()
        scheme, _, rest = value.partition(" ")
        params = {}
        for key, raw in _PARAM.findall(rest):
            if raw.startswith('"'):
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            params[key.lower()] = raw
        out.append((scheme.lower(), params))
    return out


class Authenticator:
    """The auth state of one registry endpoint: its challenge, credentials and tokens."""

    def __init__(self, registry: str, transport, verify_for, credentials=None,
                 lookup: bool = True) -> None:
        self.registry = registry
        self._transport = transport
        self._verify_for = verify_for  # host -> whether to check TLS when fetching tokens
        self._creds = credentials
        self._lookup = lookup and credentials is None
        self.scheme: str | None = None
        self._params: dict = {}
        self._tokens: dict[frozenset, tuple[str, float]] = {}
        self._lock = threading.Lock()

    @property
    def credentials(self) -> Credentials | None:
        if self._lookup:
            self._lookup = False
            self._creds = get_credentials(self.registry)
        return self._creds

    def learn(self, resp, scopes: tuple[str, ...] = ()) -> bool:
        """Take in a 401's challenge; True when a retry with new credentials may succeed."""
        challenges = parse_challenges(resp.headers.get_all("WWW-Authenticate") or [])
        by_scheme = dict(challenges)
        with self._lock:
            if "bearer" in by_scheme:
                params = by_scheme["bearer"]
                if not params.get("realm"):
                    raise Unavailable(f"{resp.host}: a Bearer challenge without a realm")
                self.scheme, self._params = "bearer", params
                if not scopes:
                    return True
                wanted = set(scopes) | set(params.get("scope", "").split())
                key = frozenset(wanted - {""})
                self._tokens[key] = self._tokens[frozenset(scopes)] = self._fetch_token(key)
                return True
            if "basic" in by_scheme:
                had = self.scheme == "basic"
                self.scheme, self._params = "basic", by_scheme["basic"]
                return self.credentials is not None and not (had and scopes)
        return False

    def header(self, scopes: tuple[str, ...]) -> str | None:
        with self._lock:
            if self.scheme == "basic":
                creds = self.credentials
                if creds is None:
                    return None
                pair = f"{creds.username}:{creds.password}".encode()
                return "Basic " + base64.b64encode(pair).decode()
            if self.scheme != "bearer":
                return None
            key = frozenset(scopes)
            cached = self._tokens.get(key)
            if cached is None or cached[1] <= time.monotonic():
                self._tokens[key] = self._fetch_token(key)
            return "Bearer " + self._tokens[key][0]

    def _fetch_token(self, scopes: frozenset) -> tuple[str, float]:
        """(token, monotonic expiry) from the realm for `scopes`; the caller holds the lock."""
        from urllib.parse import urlencode, urlsplit

        realm, service = self._params["realm"], self._params.get("service")
        creds = self.credentials
        verify = self._verify_for(urlsplit(realm).netloc)
        if creds is not None and creds.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "client_id": "berth", "access_type": "offline"}
            if service:
                form["service"] = service
            if scopes:
                form["scope"] = " ".join(sorted(scopes))
            resp = self._transport.request(
                "POST", realm, verify=verify, body=urlencode(form).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"})
        else:
            query = [("service", service)] if service else []
            query += [("scope", s) for s in sorted(scopes)]
            if creds is not None and creds.username:
                query.append(("account", creds.username))
            headers = {}
            if creds is not None and creds.username:
                pair = f"{creds.username}:{creds.password}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
            sep = "&" if "?" in realm else "?"
            url = realm + (sep + urlencode(query) if query else "")
            resp = self._transport.request("GET", url, headers=headers, verify=verify)
        host = urlsplit(realm).netloc
        if resp.status in (401, 403):
            if creds is not None:
                raise FailedPrecondition(f"unauthorized: {host} refused the credentials for "
                                         f"{self.registry}: incorrect username or password; run "
                                         f"'berth login {self.registry}'")
            raise FailedPrecondition(f"unauthorized: {self.registry} needs credentials; run "
                                     f"'berth login {self.registry}'")
        if resp.status != 200:
            raise Unavailable(f"{host}: the token service answered HTTP {resp.status}")
        try:
            doc = json.loads(resp.body)
            token = doc.get("token") or doc.get("access_token")
            lifetime = float(doc.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            token, lifetime = None, 0.0
        if not token or not isinstance(token, str):
            raise Unavailable(f"{host}: the token service sent no token")
        # the spec's minimum lifetime is 60 s; renew a little early
        return token, time.monotonic() + max(lifetime, 60.0) - 10.0

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


def verify_login(registry) -> None:
    """Check the credentials of `registry` (a client.Registry) the way ``docker login``
    does: a basic-auth GET /v2/, or a token with no scope from the bearer realm."""
    registry.ping()
    auth = registry.auth
    if auth.scheme == "bearer":
        with auth._lock:
            auth._fetch_token(frozenset())
        return
    if auth.scheme == "basic":
        resp = registry._raw("GET", "/v2/", headers={"Authorization": auth.header(())})
        if resp.status != 200:
            raise FailedPrecondition(f"unauthorized: {registry.host} refused the credentials: "
                                     "incorrect username or password")
