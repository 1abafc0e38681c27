"""Tar layers: apply one safely to a directory, and (de)compress layer streams.

``apply_layer(stream, dest)`` extracts an uncompressed layer tar into ``dest`` so that no
member can write outside it, turns whiteouts into overlayfs form (or applies them) and
returns the layer's size and diff ID, hashed while it streamed. ``open_decompressed``
sniffs gzip/bzip2/xz/zstd and hands back the plain tar stream.

    with open(blob, "rb") as f:
        result = apply_layer(open_decompressed(f), layer_dir)
"""

from __future__ import annotations

__all__ = ["ApplyResult", "apply_layer", "open_decompressed", "detect"]


def __getattr__(name: str):
    # loaded on first use: importing berth.layer.diff (commit) must not pay for apply's
    # tarfile and threading, nor the other way round
    if name in ("ApplyResult", "apply_layer"):
        from berth.layer import apply

        return getattr(apply, name)
    if name in ("open_decompressed", "detect"):
        from berth.layer import compression

        return getattr(compression, name)
    raise AttributeError(f"module 'berth.layer' has no attribute {name!r}")
