"""Content digests: ``algorithm:hex`` as the OCI image spec defines them."""

from __future__ import annotations

import re

from berth.errors import InvalidArgument

_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_HEX_LENGTHS = {"sha256": 64, "sha512": 128}


def validate(digest: str) -> str:
    """Return `digest` if it is a well-formed sha256/sha512 digest, else raise InvalidArgument."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise InvalidArgument(f"invalid digest {digest!r}")
    algo, _, hexpart = digest.partition(":")
    want = _HEX_LENGTHS.get(algo)
    if want is None:
        raise InvalidArgument(f"unsupported digest algorithm {algo!r} in {digest!r}")
    if len(hexpart) != want or not all(c in "0123456789abcdef" for c in hexpart):
        raise InvalidArgument(f"invalid {algo} digest {digest!r}")
    return digest


def hex_of(digest: str) -> str:
    return validate(digest).partition(":")[2]


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: list[str] | tuple[str, ...]) -> list[str]:
    """ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for diff in diff_ids:
        out.append(diff if not out else sha256_bytes(f"{out[-1]} {diff}".encode()))
    return out
