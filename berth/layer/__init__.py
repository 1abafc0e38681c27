"""Tar layers: apply one safely to a directory, and (de)compress layer streams.

``apply_layer(stream, dest)`` extracts an uncompressed layer tar into ``dest`` so that no
member can write outside it, turns whiteouts into overlayfs form (or applies them) and
returns the layer's size and diff ID, hashed while it streamed. ``open_decompressed``
sniffs gzip/bzip2/xz/zstd and hands back the plain tar stream.

    with open(blob, "rb") as f:
        result = apply_layer(open_decompressed(f), layer_dir)
"""

from berth.layer.apply import ApplyResult, apply_layer
from berth.layer.compression import open_decompressed

__all__ = ["ApplyResult", "apply_layer", "open_decompressed"]
