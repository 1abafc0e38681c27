"""JSON <-> frozen record codec shared by every OCI structure.

A field says its JSON name and, for nested structures, the record type it holds:

    env: tuple[str, ...] = jf("env", default=())
    mounts: tuple[Mount, ...] = jf("mounts", of=Mount, default=())

``None`` and empty containers are omitted on output (the specs' ``omitempty``), unless
the field is marked ``keep=True``. JSON lists become tuples so values stay immutable.
Unknown keys are ignored on input, as the specs require of readers.
"""

from __future__ import annotations

from berth.oci.record import Record


def _encode(value):
    if isinstance(value, Record):
        return to_dict(value)
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def to_dict(obj: Record) -> dict:
    out = {}
    for f in obj.__fields__:
        value = getattr(obj, f.name)
        if not f.keep and (value is None or (isinstance(value, (tuple, list, dict)) and not value)):
            continue
        out[f.json] = _encode(value)
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
    for f in cls.__fields__:
        if f.json in data and data[f.json] is not None:
            kwargs[f.name] = _decode(f.of, data[f.json])
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{cls.__name__}: {exc}") from None


def dumps(obj, *, indent: int | None = None) -> bytes:
    """Canonical bytes: compact, keys in field order. These are the bytes that get digested."""
    import json  # here, not at the top: building records must not cost `re`

    data = to_dict(obj) if isinstance(obj, Record) else obj
    if indent:
        return json.dumps(data, indent=indent).encode()
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def loads(cls, raw: bytes | str):
    import json

    return from_dict(cls, json.loads(raw))
