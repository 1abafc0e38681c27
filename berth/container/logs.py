"""Container logs in Docker's json-file format, with Docker's rotation rules.

    {"log":"hello\\n","stream":"stdout","time":"2026-11-28T10:00:00.123456789Z"}

One JSON object per line of output (a line longer than 16 KiB, or the last bytes before
the stream closes, is cut without its newline, as Docker cuts it). With max-size set
the file is rotated when the next entry would not fit: <id>-json.log becomes .1, .1
becomes .2, ... and the oldest beyond max-file is deleted.
"""

from __future__ import annotations

import json
import os
import time

MAX_LINE = 16 * 1024


def timestamp(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


class LogWriter:
    """Appends entries for one container; owned by its monitor."""

    def __init__(self, path: str, max_size: int = -1, max_file: int = 1) -> None:
        self.path = path
        self.max_size = max_size
        self.max_file = max(1, max_file)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size
        self._partial = {"stdout": b"", "stderr": b""}

    def write(self, stream: str, data: bytes) -> None:
        """Log `data` read from `stream`; complete lines now, a partial one when it grows."""
        buf = self._partial[stream] + data
        lines = buf.split(b"\n")
        rest = lines.pop()
        for line in lines:
            self._entry(stream, line + b"\n")
        while len(rest) >= MAX_LINE:
            self._entry(stream, rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        self._partial[stream] = rest

    def flush(self) -> None:
        """The stream ended: whatever is left is an entry without a newline."""
        for stream, rest in self._partial.items():
            if rest:
                self._entry(stream, rest)
                self._partial[stream] = b""

    def _entry(self, stream: str, line: bytes) -> None:
        record = json.dumps({"log": line.decode("utf-8", errors="replace"), "stream": stream,
                             "time": timestamp()}, separators=(",", ":"), ensure_ascii=False)
        raw = (record + "\n").encode()
        if self.max_size > 0 and self._size + len(raw) > self.max_size and self._size > 0:
            self._rotate()
        os.write(self._fd, raw)
        self._size += len(raw)

    def _rotate(self) -> None:
        os.close(self._fd)
        if self.max_file > 1:
            for i in range(self.max_file - 1, 0, -1):
                older = f"{self.path}.{i}"
                if os.path.exists(older):
                    if i == self.max_file - 1:
                        os.unlink(older)
                    else:
                        os.replace(older, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o640)
        self._size = 0

    def close(self) -> None:
        self.flush()
        os.close(self._fd)


def log_files(path: str) -> list[str]:
    """Every file of a container's log, oldest first."""
    rotated = []
    i = 1
    while os.path.exists(f"{path}.{i}"):
        rotated.append(f"{path}.{i}")
        i += 1
    return list(reversed(rotated)) + ([path] if os.path.exists(path) else [])


def read_entries(path: str):
    for name in log_files(path):
        try:
            with open(name, "rb") as f:
                for raw in f:
                    try:
                        yield json.loads(raw)
                    except ValueError:
                        continue  # a line being written right now
        except FileNotFoundError:
            continue  # rotated away while we read


def parse_time(text: str | None) -> float | None:
    """--since/--until: a duration (10m, 1h30m, 45s), a Unix timestamp, or RFC 3339."""
    import re

    if not text:
        return None
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", text)
    if m and any(m.groups()):
        h, mi, sec = (float(g) if g else 0.0 for g in m.groups())
        return time.time() - (h * 3600 + mi * 60 + sec)
    try:
        return float(text)
    except ValueError:
        pass
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})(?:T(\d{2}:\d{2}(?::\d{2})?)(\.\d+)?)?"
                     r"(Z|[+-]\d{2}:?\d{2})?", text)
    if not m:
        raise ValueError(f"cannot parse {text!r} as a time: use an RFC 3339 time, a Unix "
                         "timestamp or a duration such as 10m")
    import calendar

    clock = m.group(2) or "00:00:00"
    if clock.count(":") == 1:
        clock += ":00"
    t = calendar.timegm(time.strptime(f"{m.group(1)}T{clock}", "%Y-%m-%dT%H:%M:%S"))
    t += float(m.group(3) or 0)
    zone = m.group(4)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        t -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    elif not zone:
        t = time.mktime(time.strptime(f"{m.group(1)}T{clock}", "%Y-%m-%dT%H:%M:%S")) + \
            float(m.group(3) or 0)  # no zone: local time, as Docker reads it
    return t


def entry_time(entry: dict) -> float:
    import calendar

    stamp = entry.get("time", "")
    main, _, frac = stamp.rstrip("Z").partition(".")
    try:
        return calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S")) + \
            float("0." + (frac or "0"))
    except ValueError:
        return 0.0
