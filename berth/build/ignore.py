""".dockerignore: which files of the build context COPY, ADD and the cache never see.

The rules are moby/patternmatcher's, as docker's client applies them:

* a pattern is Go's filepath.Match glob (``*`` and ``?`` never cross a ``/``, ``[a-z]``
  classes, ``\\`` escapes), plus ``**`` for any number of directories;
* patterns are cleaned (``/a/../b/`` is ``b``) and lines starting with ``#`` are comments;
* ``!pattern`` brings back what an earlier line excluded; the last matching line wins;
* a pattern that matches a parent directory matches everything below it.
"""

from __future__ import annotations

import os
import re

from berth.errors import InvalidArgument


def read_ignore(text: str) -> list[str]:
    """The patterns of a .dockerignore file, cleaned as Docker cleans them."""
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = os.path.normpath(pattern)
            if pattern.startswith("//"):
                pattern = pattern[1:]
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append(("!" if invert else "") + pattern)
    return out


def _pattern_regex(pattern: str) -> str:
    """A .dockerignore pattern as a regular expression (patternmatcher's compile)."""
    out = ["^"]
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(.*/)?")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            if i + 1 < n:
                i += 1
                out.append(re.escape(pattern[i]))
            else:
                out.append(r"\\")
        elif ch in "[]":
            out.append(ch)
            if ch == "[" and i + 1 < n and pattern[i + 1] == "^":
                out.append("^")
                i += 1
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return "".join(out)


class Ignore:
    """.dockerignore rules: which context paths COPY, ADD and the cache do not see."""

    def __init__(self, patterns: list[str]) -> None:
        self.rules: list[tuple[bool, re.Pattern]] = []
        for pattern in patterns:
            exclusion = pattern.startswith("!")
            body = pattern[1:] if exclusion else pattern
            try:
                self.rules.append((exclusion, re.compile(_pattern_regex(body), re.S)))
            except re.error as exc:
                raise InvalidArgument(f".dockerignore: invalid pattern {pattern!r}: {exc}") from None
        self.has_exceptions = any(exclusion for exclusion, _rx in self.rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def excluded(self, rel: str) -> bool:
        """Whether context path `rel` ("a/b.txt") is excluded: the last matching rule wins,
        and a rule matching one of its parent directories matches it."""
        matched = False
        parents = rel.split("/")[:-1]
        for exclusion, rx in self.rules:
            if exclusion != matched:
                continue  # only a rule that could change the verdict is worth matching
            hit = rx.match(rel) is not None
            if not hit:
                for i in range(1, len(parents) + 1):
                    if rx.match("/".join(parents[:i])):
                        hit = True
                        break
            if hit:
                matched = not exclusion
        return matched
