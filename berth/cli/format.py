"""Output helpers shared by the commands: tables, sizes and times the way Docker shows them."""

from __future__ import annotations

import time


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [headers] + rows:
        cells = [cell.ljust(widths[i] + 3) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def human_size(size: float) -> str:
    """Docker's HumanSize: decimal units, three significant digits."""
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.4g}{units[i]}"


def parse_time(rfc3339: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 UTC timestamp, None for the zero time."""
    if not rfc3339 or rfc3339.startswith("0001-"):
        return None
    import calendar

    main, _, frac = rfc3339.rstrip("Z").partition(".")
    try:
        t = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    return t + (float("0." + frac) if frac.isdigit() else 0.0)


def human_duration(seconds: float) -> str:
    """Docker's HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def ago(rfc3339: str) -> str:
    t = parse_time(rfc3339)
    if t is None:
        return ""
    return human_duration(time.time() - t) + " ago"


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
