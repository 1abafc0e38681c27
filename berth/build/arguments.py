"""The grammar of one instruction's arguments, the text after its keyword. Pure.

Docker's rules (moby/buildkit ``frontend/dockerfile/parser/line_parsers.go`` and
``instructions/parse.go``): ``--flag=value`` words checked against the flags each
instruction takes, JSON (exec) form, whitespace words, name=value pairs with their quotes
kept for substitution, FROM's stage name, HEALTHCHECK's options, and the ``<<EOF`` words
that open here-documents. berth.build.parser turns a whole Dockerfile into instructions
with these; run and builder use the here-document words again.

Errors are InvalidArgument without a place; the parser adds the file and line.
"""

from __future__ import annotations

import json
import re

from berth.errors import InvalidArgument

# flag name -> takes a value ("" kind) or is a boolean ("bool"); "list" may repeat
FLAGS = {
    "FROM": {"platform": ""},
    "RUN": {"mount": "list", "network": "", "security": ""},
    "COPY": {"from": "", "chown": "", "chmod": "", "link": "bool", "parents": "bool",
             "exclude": "list"},
    "ADD": {"chown": "", "chmod": "", "link": "bool", "checksum": "", "keep-git-dir": "bool",
            "exclude": "list"},
    "HEALTHCHECK": {"interval": "", "timeout": "", "start-period": "", "start-interval": "",
                    "retries": ""},
}
_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")


def extract_flags(line: str) -> tuple[str, list[str]]:
    """The ``--name=value`` words at the start of `line` (quotes removed), and the rest."""
    words: list[str] = []
    pos = 0
    n = len(line)
    while True:
        while pos < n and line[pos].isspace():
            pos += 1
        if pos >= n or not line.startswith("--", pos):
            return line[pos:], words
        word = ""
        quote = None
        blank_ok = False
        while pos < n:
            ch = line[pos]
            if quote is None:
                if ch.isspace():
                    break
                if ch in "'\"":
                    quote, blank_ok = ch, True
                    pos += 1
                    continue
            elif ch == quote:
                quote = None
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word += ch
            pos += 1
        if word == "--":
            return line[pos:], words
        if word or blank_ok:
            words.append(word)


def check_flags(cmd: str, words: list[str]) -> tuple[tuple[str, str], ...]:
    allowed = FLAGS.get(cmd, {})
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for word in words:
        name, eq, value = word[2:].partition("=")
        kind = allowed.get(name)
        if kind is None:
            raise InvalidArgument(f"unknown flag: {name}")
        if name in seen and kind != "list":
            raise InvalidArgument(f"duplicate flag specified: {name}")
        seen.add(name)
        if kind == "bool":
            low = value.lower() if eq else "true"
            if low not in ("true", "false"):
                raise InvalidArgument(f'expecting boolean value for flag {name}, not: {value}')
            value = low
        elif not eq:
            raise InvalidArgument(f"missing a value on flag: {name}")
        out.append((name, value))
    return tuple(out)


def json_array(rest: str) -> list[str] | None:
    """The JSON array of strings `rest` is, or None when it is not JSON (shell form).

    As Docker's decoder, trailing text after the array is ignored; an array holding
    anything but strings is an error rather than shell form.
    """
    if not rest.startswith("["):
        return None
    try:
        value, _end = json.JSONDecoder().raw_decode(rest)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise InvalidArgument("when using JSON array syntax, arrays must be comprised of "
                              "strings only")
    return value


def split_words(rest: str) -> tuple[str, ...]:
    return tuple(rest.split())


def name_words(rest: str, escape: str) -> list[str]:
    """Words split on whitespace outside quotes; quotes and escapes stay (Docker parseWords)."""
    words: list[str] = []
    word = ""
    quote = None
    blank_ok = False
    in_word = False
    i = 0
    n = len(rest)
    while i < n:
        ch = rest[i]
        if not in_word:
            if ch.isspace():
                i += 1
                continue
            in_word = True
        if quote is None and ch.isspace():
            if blank_ok or word:
                words.append(word)
            word, blank_ok, in_word = "", False, False
            i += 1
            continue
        if quote is None and ch in "'\"":
            quote, blank_ok = ch, True
        elif ch == quote:
            quote = None
        elif ch == escape and quote != "'":  # inside single quotes it is an ordinary character
            if i + 1 == n:
                i += 1
                continue
            word += ch
            i += 1
            ch = rest[i]
        word += ch
        i += 1
    if in_word and (blank_ok or word):
        words.append(word)
    return words


def pairs(cmd: str, rest: str, escape: str) -> tuple[tuple[str, str | None], ...]:
    words = name_words(rest, escape)
    if not words:
        raise InvalidArgument(f"{cmd} requires at least one argument")
    if cmd == "ARG":
        out = []
        for word in words:
            key, eq, value = word.partition("=")
            if not key:
                raise InvalidArgument("ARG names can not be blank")
            out.append((key, value if eq else None))
        return tuple(out)
    if "=" not in words[0]:
        # the legacy form, `ENV key value`: the rest of the line is the value
        parts = rest.split(None, 1)
        if len(parts) < 2:
            raise InvalidArgument(f"{cmd} must have two arguments")
        return ((parts[0], parts[1]),)
    out = []
    for word in words:
        if "=" not in word:
            raise InvalidArgument(f"Syntax error - can't find = in {_quote(word)}. Must be of "
                                  "the form: name=value")
        key, _, value = word.partition("=")
        if not key:
            raise InvalidArgument(f"{cmd} names can not be blank")
        out.append((key, value))
    return tuple(out)


def _quote(text: str) -> str:
    from berth.build.shell import go_quote

    return go_quote(text)


def from_args(rest: str) -> tuple[str, ...]:
    """FROM's words: the image, or the image, AS and the stage's name."""
    words = split_words(rest)
    if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
        raise InvalidArgument("FROM requires either one or three arguments")
    if len(words) == 3 and not _STAGE_NAME.match(words[2].lower()):
        raise InvalidArgument(f"invalid name for build stage: {_quote(words[2])}, name "
                              "can't start with a number or contain symbols")
    return words


def healthcheck(rest: str, flags: tuple[tuple[str, str], ...]) -> tuple[tuple[str, ...], bool]:
    """HEALTHCHECK's (args, exec_form), its options (`flags`, already checked) checked too."""
    if not rest:
        raise InvalidArgument("HEALTHCHECK requires at least one argument")
    kind = rest.split(None, 1)[0]
    command = rest[len(kind):].strip()
    typ = kind.upper()
    if typ == "NONE":
        if command:
            raise InvalidArgument("HEALTHCHECK NONE takes no arguments")
        args, exec_form = ("NONE",), False
    elif typ == "CMD":
        if not command:
            raise InvalidArgument("Missing command after HEALTHCHECK CMD")
        array = json_array(command)
        args = ("CMD", *array) if array is not None else ("CMD", command)
        exec_form = array is not None
    else:
        raise InvalidArgument(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    if typ == "NONE" and flags:
        raise InvalidArgument("HEALTHCHECK NONE takes no options")
    from berth.build.metadata import parse_duration

    values = dict(flags)  # check_flags let none of these repeat
    for name in ("interval", "timeout", "start-period", "start-interval"):
        value = values.get(name)
        if value is not None:
            nanos = parse_duration(value)
            if nanos != 0 and nanos < 1_000_000:
                raise InvalidArgument(f"{name.capitalize().replace('-', ' ')} "
                                      f"{_quote(value)} cannot be less than 1ms")
    retries = values.get("retries")
    if retries is not None:
        try:
            count = int(retries)
        except ValueError:
            raise InvalidArgument(f"invalid --retries value {_quote(retries)}") from None
        if count < 0:
            raise InvalidArgument("--retries cannot be negative")
    return args, exec_form


def parse_heredoc(word: str, escape: str = "\\") -> tuple[str, bool, bool, int | None] | None:
    """(name, expand, chomp, fd) when `word` opens a here-document (``<<EOF``), else None."""
    m = _HEREDOC.match(word)
    if not m or not m.group(3):
        return None
    from berth.build.shell import expand

    rest = m.group(3)
    try:
        name = expand(rest, {}, escape)
    except InvalidArgument:
        return None
    if not name:
        return None
    fd = int(m.group(1)) if m.group(1) else None
    return name, rest == name, m.group(2) == "-", fd
