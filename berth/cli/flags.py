"""Docker-style flag parsing: small, fast, and faithful to the docker CLI's rules.

    -it, -dit          short booleans combine
    -e X, -eX, --env X, --env=X
    --rm, --rm=false   booleans take an optional =value
    run IMAGE CMD -x   flags stop at the first positional when `interspersed` is False,
                       so everything after the image belongs to the container's command
argparse is not used: it costs start-up time and cannot express the last rule.
"""

from __future__ import annotations

from berth.oci.record import Record

from berth.errors import InvalidArgument

BOOL, VALUE, LIST = "bool", "value", "list"


class Flag(Record):
    names: tuple[str, ...]
    kind: str = BOOL
    help: str = ""
    metavar: str = ""
    default: object = None

    @property
    def dest(self) -> str:
        long = next((n for n in self.names if n.startswith("--")), self.names[0])
        return long.lstrip("-").replace("-", "_")


class UsageError(InvalidArgument):
    """A flag or argument error; the CLI adds "See 'berth CMD --help'."."""


_TRUE = ("true", "1", "t", "yes")
_FALSE = ("false", "0", "f", "no")


def parse(argv: list[str], flags: tuple[Flag, ...], *, interspersed: bool = True):
    """Return (values by dest, positional arguments)."""
    by_name = {}
    for f in flags:
        for n in f.names:
            by_name[n] = f
    values: dict = {}
    for f in flags:
        values[f.dest] = [] if f.kind == LIST else (f.default if f.default is not None
                                                     else (False if f.kind == BOOL else None))
    positionals: list[str] = []
    i = 0

    def take(f: Flag, value: str) -> None:
        if f.kind == LIST:
            values[f.dest].append(value)
        elif f.kind == BOOL:
            low = value.lower()
            if low in _TRUE:
                values[f.dest] = True
            elif low in _FALSE:
                values[f.dest] = False
            else:
                raise UsageError(f'invalid argument "{value}" for "{f.names[-1]}" flag: '
                                 "parse error")
        else:
            values[f.dest] = value

    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positionals.extend(argv[i:])
            break
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg.partition("=")
            f = by_name.get(name)
            if f is None:
                raise UsageError(f"unknown flag: {name}")
            if f.kind == BOOL:
                take(f, value if eq else "true")
            elif eq:
                take(f, value)
            else:
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: {name}")
                take(f, argv[i])
                i += 1
        elif arg.startswith("-") and len(arg) > 1:
            j = 1
            while j < len(arg):
                name = "-" + arg[j]
                f = by_name.get(name)
                if f is None:
                    raise UsageError(f"unknown shorthand flag: '{arg[j]}' in {arg}")
                if f.kind == BOOL:
                    if arg[j + 1:j + 2] == "=":
                        take(f, arg[j + 2:])
                        break
                    take(f, "true")
                    j += 1
                    continue
                rest = arg[j + 1:]
                if rest.startswith("="):
                    rest = rest[1:]
                if rest:
                    take(f, rest)
                else:
                    if i >= len(argv):
                        raise UsageError(f"flag needs an argument: '{arg[j]}' in {arg}")
                    take(f, argv[i])
                    i += 1
                break
        else:
            positionals.append(arg)
            if not interspersed:
                positionals.extend(argv[i:])
                break
    return values, positionals


def usage(command: str, synopsis: str, description: str, flags: tuple[Flag, ...]) -> str:
    lines = [f"Usage:  berth {command} {synopsis}", "", description, ""]
    if flags:
        lines.append("Options:")
        for f in flags:
            names = ", ".join(sorted(f.names, key=len))
            if f.kind != BOOL:
                names += " " + (f.metavar or ("list" if f.kind == LIST else "string"))
            lines.append(f"  {names:<28} {f.help}")
    return "\n".join(lines)


# here, not in runopts: run's --memory and --shm-size, --mount's tmpfs-size and registry
# serve's --max-upload all take sizes
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = None  # compiled on first use: re is loaded anyway, the pattern need not be


def parse_size(text: str, flag: str) -> int:
    """Docker's RAMInBytes: 32m, 1g, 512k, 1024 (bytes); units are powers of 1024."""
    global _SIZE
    import re

    raw = text.strip().lower()
    if raw == "-1":
        return -1
    if _SIZE is None:
        _SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp]?)i?b?$")  # go-units' RAMInBytes
    match = _SIZE.match(raw)
    if not match:
        raise UsageError(f'invalid argument "{text}" for "{flag}" flag: invalid size: '
                         f"'{text}'")
    return int(float(match.group(1)) * _UNITS[match.group(2)])
