"""The part of Go's text/template that `--format` users reach for.

    {{.State.Status}}   field paths       {{json .Config}}   JSON of a value
    {{.Id | printf "%.12s"}} is NOT supported; unknown actions are a clear error.
Values print as Go prints them: true/false, <no value> for missing, map[k:v] for maps.
"""

from __future__ import annotations

import json
import re

from berth.errors import InvalidArgument

_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}")


def _lookup(data, path: str):
    if path == ".":
        return data
    value = data
    for part in path.strip(".").split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return None
    return value


def _go_str(value) -> str:
    if value is None:
        return "<no value>"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_str(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_str(v) for v in value) + "]"
    return str(value)


def render(template: str, data) -> str:
    def action(match: re.Match) -> str:
        expr = match.group(1)
        words = expr.split()
        if len(words) == 1 and words[0].startswith("."):
            return _go_str(_lookup(data, words[0]))
        if len(words) == 2 and words[0] == "json" and words[1].startswith("."):
            return json.dumps(_lookup(data, words[1]), separators=(",", ":"), ensure_ascii=False)
        if len(words) == 2 and words[0] in ("upper", "lower") and words[1].startswith("."):
            text = _go_str(_lookup(data, words[1]))
            return text.upper() if words[0] == "upper" else text.lower()
        raise InvalidArgument(f"template: unsupported action {{{{{expr}}}}} (supported: "
                              "{{.Path}}, {{json .Path}}, {{upper .Path}}, {{lower .Path}})")

    return _ACTION.sub(action, template.replace("\\n", "\n").replace("\\t", "\t"))
