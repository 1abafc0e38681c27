"""JSON <-> frozen dataclass codec shared by every OCI structure.

A field says its JSON name and, for nested structures, the dataclass it holds:

    env: tuple[str, ...] = jf("env", default=())
    mounts: tuple[Mount, ...] = jf("mounts", of=Mount, default=())

``None`` and empty containers are omitted on output (the specs' ``omitempty``), unless
the field is marked ``keep=True``. JSON lists become tuples so values stay immutable.
Unknown keys are ignored on input, as the specs require of readers.
"""

from __future__ import annotations

import dataclasses
import json

_EMPTY = (None, (), {}, [])


def jf(name: str, *, of: type | None = None, default=dataclasses.MISSING, keep: bool = False):
    """A dataclass field with its JSON name, optional nested type, and omit rule."""
    md = {"json": name, "of": of, "keep": keep}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=md)
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or None as default")
    return dataclasses.field(default=default, metadata=md)


def _encode(value):
    if dataclasses.is_dataclass(value):
        return to_dict(value)
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def to_dict(obj) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        md = f.metadata
        if not md.get("keep") and (value is None or (isinstance(value, (tuple, list, dict)) and not value)):
            continue
        out[md.get("json", f.name)] = _encode(value)
    return out


def _decode(of, value):
    if isinstance(value, list):
        return tuple(_decode(of, v) for v in value)
    if of is not None and isinstance(value, dict):
        return from_dict(of, value)
    return value


def from_dict(cls, data: dict):
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f.metadata.get("json", f.name)
        if key in data and data[key] is not None:
            kwargs[f.name] = _decode(f.metadata.get("of"), data[key])
    return cls(**kwargs)


def dumps(obj, *, indent: int | None = None) -> bytes:
    """Canonical bytes: compact, keys in field order. These are the bytes that get digested."""
    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    if indent:
        return json.dumps(data, indent=indent).encode()
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def loads(cls, raw: bytes | str):
    return from_dict(cls, json.loads(raw))
