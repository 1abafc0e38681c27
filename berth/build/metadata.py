"""Instructions that only change the image config, and the history text Docker gives them.

Pure: an instruction (its words already substituted) and a config in, the new config and
the comment out. The comments are what Docker's classic builder records, Go formatting
included, so ``berth history`` of a built image reads as ``docker history`` does:

    CMD ["/bin/sh" "-c" "echo hi"]      Go's %q of a []string
    VOLUME [/data /logs]                Go's %v of a []string
    HEALTHCHECK &{["CMD-SHELL" "x"] "5s" "0s" "0s" '\\x03'}   %q of the HealthConfig
    ENV A=1 B=two words

``created_by`` wraps a comment as the builder's history does:
``/bin/sh -c #(nop)  CMD ...`` (the stage's SHELL, then "#(nop) " and the comment as two
words, hence two spaces), or with one space for COPY, ADD and WORKDIR.
"""

from __future__ import annotations

import re

from berth.build.shell import go_quote
from berth.errors import InvalidArgument
from berth.oci import image as oci
from berth.oci.record import replace

DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# build args every Dockerfile may use without declaring them; RUN sees them, and history
# names them only when the Dockerfile declares them
BUILTIN_ARGS = frozenset({"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
                          "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"})


def platform_args() -> dict[str, str]:
    """BuildKit's automatic platform args (TARGETARCH, BUILDPLATFORM, ...): known to every
    Dockerfile, in FROM lines and, once declared with ARG, in a stage."""
    host = oci.host_platform()
    platform = f"{host.os}/{host.architecture}" + (f"/{host.variant}" if host.variant else "")
    out = {}
    for prefix in ("TARGET", "BUILD"):
        out[prefix + "PLATFORM"] = platform
        out[prefix + "OS"] = host.os
        out[prefix + "ARCH"] = host.architecture
        out[prefix + "VARIANT"] = host.variant or ""
    return out


def shell_of(config: oci.ContainerConfig) -> tuple[str, ...]:
    return tuple(config.shell) or DEFAULT_SHELL


def created_by(config: oci.ContainerConfig, comment: str, *, one_space: bool = False) -> str:
    """The history's created_by of a step that ran no command (Docker's #(nop) form)."""
    shell = " ".join(shell_of(config))
    return f"{shell} #(nop) {comment}" if one_space else f"{shell} #(nop)  {comment}"


def go_list_q(items) -> str:
    return "[" + " ".join(go_quote(i) for i in items) + "]"


def go_list_v(items) -> str:
    return "[" + " ".join(items) + "]"


_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
          "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> int:
    """Go's time.ParseDuration ("1m30s", "1.5s", "300ms") -> nanoseconds."""
    s = text.strip()
    sign = 1
    if s[:1] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise InvalidArgument(f"time: invalid duration {go_quote(text)}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s:
        raise InvalidArgument(f"time: invalid duration {go_quote(text)}")
    return sign * int(round(total))


def go_duration(nanos: int) -> str:
    """Go's time.Duration.String()."""
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    n = abs(nanos)
    if n < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if n >= size:
                return sign + _fraction(n, size) + unit
    hours, rest = divmod(n, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    out = ""
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return sign + out + _fraction(rest, 1_000_000_000) + "s"


def _fraction(n: int, size: int) -> str:
    whole, frac = divmod(n, size)
    if not frac:
        return str(whole)
    digits = len(str(size)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")


def go_rune_q(value: int) -> str:
    """Go's %q of an int: a quoted character literal ('\\x03' for 3)."""
    escapes = {7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r",
               39: "\\'", 92: "\\\\"}
    if value in escapes:
        return f"'{escapes[value]}'"
    if value < 0x20 or value == 0x7f:
        return f"'\\x{value:02x}'"
    if value < 0x110000 and chr(value).isprintable():
        return f"'{chr(value)}'"
    return f"'\\u{value:04x}'" if value < 0x10000 else f"'\\U{value:08x}'"


def set_env(env: tuple[str, ...], key: str, value: str) -> tuple[str, ...]:
    """Replace `key` where it is, or append it: Docker keeps the order of first definition."""
    out = list(env)
    for i, item in enumerate(out):
        if item.partition("=")[0] == key:
            out[i] = f"{key}={value}"
            return tuple(out)
    out.append(f"{key}={value}")
    return tuple(out)


def env_dict(env: tuple[str, ...]) -> dict[str, str]:
    return {k: v for k, _, v in (e.partition("=") for e in env)}


def with_default_path(config: oci.ContainerConfig) -> oci.ContainerConfig:
    """A stage starts with PATH set, as Docker's builders give every stage."""
    if any(e.startswith("PATH=") for e in config.env):
        return config
    return replace(config, env=tuple(config.env) + (DEFAULT_PATH,))


def _command(config: oci.ContainerConfig, args: tuple[str, ...], exec_form: bool) -> tuple[str, ...]:
    return tuple(args) if exec_form else shell_of(config) + (args[0],)


def parse_ports(words: list[str]) -> list[str]:
    """EXPOSE words -> exposed-port keys ("80/tcp"), ranges expanded."""
    out = []
    for word in words:
        port, _, proto = word.partition("/")
        proto = proto.lower() or "tcp"
        if proto not in ("tcp", "udp", "sctp"):
            raise InvalidArgument(f"invalid proto: {proto}")
        low, dash, high = port.partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise InvalidArgument(f"Invalid containerPort: {port}") from None
        if not (0 < first <= 65535 and 0 < last <= 65535) or last < first:
            raise InvalidArgument(f"Invalid containerPort: {port}")
        out.extend(f"{p}/{proto}" for p in range(first, last + 1))
    return out


def healthcheck(args: tuple[str, ...], exec_form: bool, flags) -> oci.HealthConfig:
    if args[0] == "NONE":
        return oci.HealthConfig(test=("NONE",))
    test = ("CMD",) + tuple(args[1:]) if exec_form else ("CMD-SHELL", args[1])

    def duration(name: str) -> int | None:
        for key, value in flags:
            if key == name:
                return parse_duration(value) or None
        return None

    retries = next((int(v) for k, v in flags if k == "retries"), None)
    return oci.HealthConfig(test=test, interval=duration("interval"), timeout=duration("timeout"),
                            start_period=duration("start-period"), retries=retries or None)


def health_comment(h: oci.HealthConfig) -> str:
    """Docker 20.10's fmt.Sprintf("HEALTHCHECK %q", config.Healthcheck)."""
    return (f"HEALTHCHECK &{{{go_list_q(h.test)} \"{go_duration(h.interval or 0)}\" "
            f"\"{go_duration(h.timeout or 0)}\" \"{go_duration(h.start_period or 0)}\" "
            f"{go_rune_q(h.retries or 0)}}}")


class Applied:
    """What a metadata instruction did: the new config and its history comment."""

    __slots__ = ("config", "comment", "cmd_set")

    def __init__(self, config: oci.ContainerConfig, comment: str, cmd_set: bool | None = None):
        self.config = config
        self.comment = comment
        self.cmd_set = cmd_set  # CMD sets it; ENTRYPOINT reads it (see apply)


def apply(config: oci.ContainerConfig, cmd: str, *, args=(), pairs=(), exec_form=False,
          flags=(), cmd_set: bool = False, original_rest: str = "") -> Applied:
    """Apply one metadata instruction whose words are already substituted.

    ENTRYPOINT clears the command unless this stage set one with CMD (`cmd_set`), as
    Docker does, so an image's old CMD is not passed to a new entrypoint.
    """
    if cmd == "ENV":
        env = tuple(config.env)
        for key, value in pairs:
            env = set_env(env, key, value)
        return Applied(replace(config, env=env),
                       "ENV " + " ".join(f"{k}={v}" for k, v in pairs))
    if cmd == "LABEL":
        labels = dict(config.labels or {})
        for key, value in pairs:
            labels[key] = value
        return Applied(replace(config, labels=labels),
                       "LABEL " + " ".join(f"{k}={v}" for k, v in pairs))
    if cmd == "CMD":
        command = _command(config, args, exec_form)
        return Applied(replace(config, cmd=command), f"CMD {go_list_q(command)}", cmd_set=True)
    if cmd == "ENTRYPOINT":
        entrypoint = _command(config, args, exec_form)
        changed = replace(config, entrypoint=entrypoint or None)
        if not cmd_set:
            changed = replace(changed, cmd=None)
        return Applied(changed, f"ENTRYPOINT {go_list_q(entrypoint)}")
    if cmd == "EXPOSE":
        ports = dict(config.exposed_ports or {})
        for key in parse_ports(list(args)):
            ports[key] = {}
        return Applied(replace(config, exposed_ports=ports), "EXPOSE " + " ".join(args))
    if cmd == "VOLUME":
        volumes = dict(config.volumes or {})
        for path in args:
            if not path.strip():
                raise InvalidArgument("VOLUME specified can not be an empty string")
            volumes[path] = {}
        return Applied(replace(config, volumes=volumes), f"VOLUME {go_list_v(args)}")
    if cmd == "USER":
        return Applied(replace(config, user=args[0] or None), f"USER {args[0]}")
    if cmd == "STOPSIGNAL":
        from berth.container.service import parse_signal

        try:
            parse_signal(args[0])
        except InvalidArgument:
            raise InvalidArgument(f"Invalid signal: {args[0]}") from None
        return Applied(replace(config, stop_signal=args[0]), f"STOPSIGNAL {args[0]}")
    if cmd == "SHELL":
        return Applied(replace(config, shell=tuple(args)), f"SHELL {go_list_v(args)}")
    if cmd == "HEALTHCHECK":
        health = healthcheck(tuple(args), exec_form, flags)
        return Applied(replace(config, healthcheck=health), health_comment(health))
    if cmd == "ONBUILD":
        return Applied(replace(config, on_build=tuple(config.on_build) + (args[0],)),
                       f"ONBUILD {args[0]}")
    if cmd == "MAINTAINER":
        return Applied(config, f"MAINTAINER {args[0]}")
    raise InvalidArgument(f"{cmd} is not a metadata instruction")
