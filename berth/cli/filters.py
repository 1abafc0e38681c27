"""Docker's `--filter key=value` and `--label`/`--opt key=value` flags, as the listing and
create commands of containers, networks and volumes all take them."""

from __future__ import annotations

from berth.errors import InvalidArgument


def parse_filters(items: list[str], allowed, check=None) -> dict[str, list[str]]:
    """--filter key=value, repeatable: values of one key OR, different keys AND (Docker's
    rule). `check(key, value)` refuses a value its key does not take."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise InvalidArgument(f"bad format of filter (expected name=value): {item}")
        if key not in allowed:
            raise InvalidArgument(f"invalid filter '{key}'")
        if check is not None:
            check(key, value)
        out.setdefault(key, []).append(value)
    return out


def label_match(labels: dict | None, wanted: str) -> bool:
    """A `label=KEY` or `label=KEY=VALUE` filter against a record's labels."""
    key, eq, value = wanted.partition("=")
    labels = labels or {}
    return key in labels and (not eq or labels[key] == value)


def parse_pairs(items: list[str], what: str) -> dict:
    """--label/--opt KEY=VALUE (a bare KEY means an empty value, as in Docker)."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid {what}: {item!r}")
        out[key] = value
    return out
