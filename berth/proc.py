"""What /proc says about a process, for telling a live pid from its reuse."""

from __future__ import annotations


def process_start(pid: int) -> int | None:
    """The start time of a live `pid` in clock ticks since boot: a recorded (pid, start)
    pair names one process even after the pid is reused. None for a process that is
    gone, or dead but not yet reaped (a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])
