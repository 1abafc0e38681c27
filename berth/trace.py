"""Timestamps for finding where the time of a start goes: set BERTH_TRACE=1.

Each call writes "<ms since the epoch> <pid> <what>" to stderr (the hub's and monitors'
stderr is <root>/run/hub.log). Costs one dictionary lookup when off.
"""

from __future__ import annotations

import os
import time

ON = bool(os.environ.get("BERTH_TRACE"))


def trace(what: str) -> None:
    if ON:
        os.write(2, f"{time.time() * 1000:.1f} {os.getpid()} {what}\n".encode())
