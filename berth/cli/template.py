"""The part of Go's text/template that `--format` users reach for.

    {{.State.Status}}   field paths       {{json .Config}}   JSON of a value
    {{.Label "k"}}      a method with string arguments: a callable in the data is called
    {{.Id | printf "%.12s"}} is NOT supported; unknown actions are a clear error.
Values print as Go prints them: true/false, <no value> for missing, map[k:v] for maps.
"""

from __future__ import annotations

import json
import re

from berth.errors import InvalidArgument

_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}")
_WORD = re.compile(r'"(?:[^"\\]|\\.)*"|\S+')


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


def _jsonable(value):
    """Data for {{json}}: methods (callables) are not data, as in Go."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if not callable(v)}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def render(template: str, data) -> str:
    def action(match: re.Match) -> str:
        expr = match.group(1)
        words = _WORD.findall(expr)
        if len(words) == 1 and words[0].startswith("."):
            value = _lookup(data, words[0])
            return _go_str(None if callable(value) else value)
        if (len(words) > 1 and words[0].startswith(".")
                and all(len(w) > 1 and w[0] == w[-1] == '"' for w in words[1:])):
            method = _lookup(data, words[0])
            if callable(method):
                return _go_str(method(*(json.loads(w) for w in words[1:])))
        if len(words) == 2 and words[0] == "json" and words[1].startswith("."):
            return json.dumps(_jsonable(_lookup(data, words[1])), separators=(",", ":"),
                              ensure_ascii=False)
        if len(words) == 2 and words[0] in ("upper", "lower") and words[1].startswith("."):
            text = _go_str(_lookup(data, words[1]))
            return text.upper() if words[0] == "upper" else text.lower()
        raise InvalidArgument(f"template: unsupported action {{{{{expr}}}}} (supported: "
                              "{{.Path}}, {{.Method \"arg\"}}, {{json .Path}}, {{upper .Path}}, "
                              "{{lower .Path}})")

    return _ACTION.sub(action, template.replace("\\n", "\n").replace("\\t", "\t"))
