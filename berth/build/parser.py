"""Dockerfile text -> typed instruction records, each with its file and line. Pure.

The rules are Docker's (moby/buildkit ``frontend/dockerfile/parser`` and
``instructions``), so a Dockerfile that docker accepts parses the same here:

* parser directives (``# escape=``, ``# syntax=``, ``# check=``) only at the very top,
  before any comment, blank line or instruction; an unknown one ends the directives;
* a line ending in the escape character continues on the next one; comment lines and
  blank lines inside a continuation are skipped; the joined text is the instruction's
  ``original``, which ``docker build`` prints as ``Step N/M : <original>``;
* ``--flag=value`` words right after the keyword, checked against the flags each
  instruction takes;
* JSON (exec) form for RUN, CMD, ENTRYPOINT, SHELL, COPY, ADD, VOLUME, HEALTHCHECK CMD:
  an array of strings; anything else is shell form;
* here-documents (``<<EOF``, ``<<-EOF``, ``<<"EOF"``) for RUN, COPY and ADD: their bodies
  follow the instruction, up to the terminator line.

Variable substitution is not done here: it needs the build's environment at each step
(berth.build.shell does it, in the builder). Errors are ParseError, whose message names
the file and line: ``Dockerfile:7: unknown instruction: FOO``.
"""

from __future__ import annotations

import json
import re

from berth.errors import InvalidArgument
from berth.oci.record import Record

INSTRUCTIONS = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
})
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
HEREDOC_INSTRUCTIONS = ("RUN", "COPY", "ADD")
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_DIRECTIVES = ("escape", "syntax", "check")
_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")


class ParseError(InvalidArgument):
    """A Dockerfile that cannot be right; str() is ``FILE:LINE: what``."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.reason = message


class Heredoc(Record):
    name: str  # the terminator, quotes removed: also the file name COPY gives the content
    content: str  # the body, each line with its newline; leading tabs gone for <<-
    expand: bool = True  # unquoted terminator: $VAR in the body is substituted
    fd: int | None = None  # 3<<EOF: the file descriptor the body is given on (RUN)


class Instruction(Record):
    """One instruction. What `args` holds depends on the keyword:

    RUN CMD ENTRYPOINT   the JSON array (exec_form) or (shell text,)
    SHELL                the JSON array
    COPY ADD VOLUME      the JSON array or the whitespace-separated words
    FROM EXPOSE          the whitespace-separated words
    ENV LABEL ARG        nothing: see `pairs` (raw words, quotes still in place)
    HEALTHCHECK          ("NONE",) or ("CMD", *exec args or the shell text)
    ONBUILD              (the trigger's text,); the trigger itself is `trigger`
    others               (the rest of the line,)
    """

    cmd: str  # the keyword, upper case
    original: str  # the instruction as written, continuation lines joined
    line: int  # its first line
    file: str = "Dockerfile"
    args: tuple[str, ...] = ()
    exec_form: bool = False
    flags: tuple[tuple[str, str], ...] = ()  # (name, value) in order; "true" for a bare bool
    pairs: tuple[tuple[str, str | None], ...] = ()  # ENV/LABEL (key, value); ARG value may be None
    heredocs: tuple[Heredoc, ...] = ()
    trigger: "Instruction | None" = None

    def flag(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.flags:
            if key == name:
                return value
        return default

    def flag_list(self, name: str) -> list[str]:
        return [value for key, value in self.flags if key == name]

    def error(self, message: str) -> ParseError:
        return ParseError(self.file, self.line, message)


class Stage(Record):
    index: int
    name: str | None  # the AS name, lower case
    base: str  # the image FROM names, before substitution
    platform: str | None
    source: Instruction  # the FROM instruction
    instructions: tuple[Instruction, ...]


class Dockerfile(Record):
    file: str
    meta_args: tuple[Instruction, ...]  # the ARGs before the first FROM
    stages: tuple[Stage, ...]
    escape: str = "\\"
    syntax: str | None = None
    warnings: tuple[str, ...] = ()

    def stage(self, ref: str, before: int | None = None) -> Stage | None:
        """A stage by AS name (any case) or index, among those before index `before`
        (default: all); None when there is no such stage."""
        stages = self.stages if before is None else self.stages[:max(before, 0)]
        low = ref.lower()
        for stage in stages:
            if stage.name == low:
                return stage
        if ref.isdigit() and int(ref) < len(stages):
            return stages[int(ref)]
        return None

    def needed(self, target: Stage, expand) -> set[int]:
        """Indexes of the stages `target` needs (FROM <stage>, COPY --from=<stage>, and
        theirs), itself included. `expand(text, instruction)` substitutes the global ARGs;
        a --from that names a stage only through the stage's own ARGs may be any stage
        before it, so all of those are needed."""
        needed = {target.index}
        todo = [target]
        while todo:
            stage = todo.pop()
            deps = []
            base = expand(stage.base, stage.source)
            if not base.isdigit():
                deps.append(self.stage(base, stage.index))
            for inst in stage.instructions:
                ref = inst.flag("from") if inst.cmd == "COPY" else None
                if not ref:
                    continue
                dep = self.stage(expand(ref, inst), stage.index)
                if dep is None and "$" in ref:
                    deps += self.stages[:stage.index]  # perhaps a stage, through a stage ARG
                else:
                    deps.append(dep)
            for dep in deps:
                if dep is not None and dep.index not in needed:
                    needed.add(dep.index)
                    todo.append(dep)
        return needed


# -- lines


def _trim_newline(text: str) -> str:
    return text.rstrip("\r\n")


def _is_comment(text: str) -> bool:
    return text.lstrip().startswith("#")


class _Lines:
    def __init__(self, text: str) -> None:
        if text.startswith("\ufeff"):
            text = text[1:]
        self.lines = text.split("\n")
        if self.lines and self.lines[-1] == "":
            self.lines.pop()
        self.pos = 0  # index of the next line; pos is also the number of the last read

    def next(self) -> str | None:
        if self.pos >= len(self.lines):
            return None
        line = self.lines[self.pos]
        self.pos += 1
        return _trim_newline(line)


def parse(text: str, file: str = "Dockerfile") -> Dockerfile:
    """Parse a whole Dockerfile into its global ARGs and stages."""
    instructions, escape, syntax, warnings = _parse_instructions(text, file)
    meta: list[Instruction] = []
    stages: list[Stage] = []
    current: list[Instruction] | None = None
    source = None
    names: set[str] = set()
    for inst in instructions:
        if inst.cmd == "FROM":
            if current is not None:
                stages.append(_stage(len(stages), source, current))
            source, current = inst, []
            name = _stage_name(inst)
            if name is not None:
                if name in names:
                    raise inst.error(f"duplicate name {name}")
                names.add(name)
        elif current is None:
            if inst.cmd != "ARG":
                raise inst.error(f"{inst.cmd} before the first FROM: only ARG may come "
                                 "before FROM")
            meta.append(inst)
        else:
            current.append(inst)
    if current is None:
        raise ParseError(file, max(1, len(text.splitlines())),
                         "the Dockerfile has no FROM instruction" if instructions
                         else "the Dockerfile (empty) has no instructions")
    stages.append(_stage(len(stages), source, current))
    return Dockerfile(file, tuple(meta), tuple(stages), escape, syntax, tuple(warnings))


def _stage_name(inst: Instruction) -> str | None:
    return inst.args[2].lower() if len(inst.args) == 3 else None


def _stage(index: int, source: Instruction, body: list[Instruction]) -> Stage:
    return Stage(index, _stage_name(source), source.args[0], source.flag("platform"), source,
                 tuple(body))


def parse_instruction(line: str, file: str = "Dockerfile", lineno: int = 1,
                      escape: str = "\\") -> Instruction:
    """One instruction from one (joined) line: ONBUILD triggers, `commit --change`."""
    return _instruction(line, file, lineno, escape)


def _parse_instructions(text: str, file: str):
    lines = _Lines(text)
    escape = "\\"
    syntax = None
    directives_done = False
    seen: set[str] = set()
    warnings: list[str] = []
    out: list[Instruction] = []
    continuation = None
    while (raw := lines.next()) is not None:
        lineno = lines.pos
        stripped = raw.lstrip()
        if not directives_done:
            m = _DIRECTIVE.match(stripped)
            if m and m.group(1).lower() in _DIRECTIVES:
                key, value = m.group(1).lower(), m.group(2)
                if key in seen:
                    raise ParseError(file, lineno, f"only one {key} parser directive can be used")
                seen.add(key)
                if key == "escape":
                    if value not in ("\\", "`"):
                        raise ParseError(file, lineno, f"invalid escape token '{value}' does "
                                                       "not match ` or \\")
                    escape = value
                    continuation = re.compile(r"([^" + re.escape(escape) + r"])"
                                              + re.escape(escape) + r"[ \t]*$|^"
                                              + re.escape(escape) + r"[ \t]*$")
                elif key == "syntax":
                    syntax = value
                continue
            directives_done = True
        if continuation is None:
            continuation = re.compile(r"([^\\])\\[ \t]*$|^\\[ \t]*$")
        if _is_comment(stripped) or not stripped:
            continue
        joined, ended = _trim_continuation(stripped, continuation)
        empty_continuation = False
        while not ended:
            nxt = lines.next()
            if nxt is None:
                break
            if _is_comment(nxt):
                continue
            if not nxt.strip():
                empty_continuation = True
                continue
            piece, ended = _trim_continuation(nxt, continuation)
            joined += piece
        if empty_continuation:
            warnings.append(f"{file}:{lineno}: empty continuation line")
        if not joined.strip():
            continue
        inst = _instruction(joined, file, lineno, escape)
        if inst.cmd in HEREDOC_INSTRUCTIONS and "<<" in joined:
            inst = _read_heredocs(inst, lines, escape)
        out.append(inst)
    return out, escape, syntax, warnings


def _trim_continuation(line: str, rx) -> tuple[str, bool]:
    if rx.search(line):
        return rx.sub(r"\1", line), False
    return line, True


# -- one instruction


def _instruction(line: str, file: str, lineno: int, escape: str) -> Instruction:
    text = line.strip()
    parts = text.split(None, 1)
    keyword = parts[0]
    cmd = keyword.upper()
    rest = parts[1] if len(parts) > 1 else ""
    if cmd not in INSTRUCTIONS:
        raise ParseError(file, lineno, f"unknown instruction: {keyword}")
    try:
        rest, words = _extract_flags(rest)
        flags = _check_flags(cmd, words)
        return _build(cmd, text, rest.strip(), flags, file, lineno, escape)
    except ParseError:
        raise
    except InvalidArgument as exc:
        raise ParseError(file, lineno, str(exc)) from None


def _extract_flags(line: str) -> tuple[str, list[str]]:
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


def _check_flags(cmd: str, words: list[str]) -> tuple[tuple[str, str], ...]:
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


def _json_array(rest: str) -> list[str] | None:
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


def _words(rest: str) -> tuple[str, ...]:
    return tuple(rest.split())


def _name_words(rest: str, escape: str) -> list[str]:
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
        if quote is None:
            if ch.isspace():
                if blank_ok or word:
                    words.append(word)
                word, blank_ok, in_word = "", False, False
                i += 1
                continue
            if ch in "'\"":
                quote, blank_ok = ch, True
            elif ch == escape:
                if i + 1 == n:
                    i += 1
                    continue
                word += ch
                i += 1
                ch = rest[i]
            word += ch
            i += 1
            continue
        if ch == quote:
            quote = None
        elif ch == escape and quote != "'":
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


def _pairs(cmd: str, rest: str, escape: str) -> tuple[tuple[str, str | None], ...]:
    words = _name_words(rest, escape)
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


def _build(cmd: str, original: str, rest: str, flags, file: str, lineno: int,
           escape: str) -> Instruction:
    def make(**kw) -> Instruction:
        return Instruction(cmd, original, lineno, file, flags=flags, **kw)

    if cmd in ("RUN", "CMD", "ENTRYPOINT"):
        array = _json_array(rest)
        if array is not None:
            return make(args=tuple(array), exec_form=True)
        if not rest:
            raise InvalidArgument(f"{cmd} requires at least one argument")
        return make(args=(rest,))
    if cmd == "SHELL":
        array = _json_array(rest)
        if array is None:
            raise InvalidArgument("SHELL requires the arguments to be in JSON form")
        if not array:
            raise InvalidArgument("SHELL requires at least one argument")
        return make(args=tuple(array), exec_form=True)
    if cmd in ("COPY", "ADD", "VOLUME"):
        array = _json_array(rest)
        args = tuple(array) if array is not None else _words(rest)
        if cmd != "VOLUME" and len(args) < 2:
            raise InvalidArgument(f"{cmd} requires at least two arguments, but only "
                                  f"{len(args)} {'was' if len(args) == 1 else 'were'} provided. "
                                  "Destination could not be determined.")
        if cmd == "VOLUME" and not args:
            raise InvalidArgument("VOLUME requires at least one argument")
        return make(args=args, exec_form=array is not None)
    if cmd in ("ENV", "LABEL", "ARG"):
        return make(pairs=_pairs(cmd, rest, escape))
    if cmd == "FROM":
        words = _words(rest)
        if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
            raise InvalidArgument("FROM requires either one or three arguments")
        if len(words) == 3 and not _STAGE_NAME.match(words[2].lower()):
            raise InvalidArgument(f"invalid name for build stage: {_quote(words[2])}, name "
                                  "can't start with a number or contain symbols")
        return make(args=words)
    if cmd == "EXPOSE":
        words = _words(rest)
        if not words:
            raise InvalidArgument("EXPOSE requires at least one argument")
        return make(args=words)
    if cmd == "HEALTHCHECK":
        return _healthcheck(make, rest)
    if cmd == "ONBUILD":
        if not rest:
            raise InvalidArgument("ONBUILD requires at least one argument")
        keyword = rest.split(None, 1)[0].upper()
        if keyword in ("ONBUILD", "FROM", "MAINTAINER"):
            raise InvalidArgument("ONBUILD ONBUILD isn't allowed" if keyword == "ONBUILD"
                                  else f"{keyword} isn't allowed as an ONBUILD trigger")
        trigger = _instruction(rest, file, lineno, escape)
        return make(args=(rest.strip(),), trigger=trigger)
    # USER WORKDIR STOPSIGNAL MAINTAINER: the rest of the line, one argument
    if not rest:
        raise InvalidArgument(f"{cmd} requires exactly one argument")
    return make(args=(rest,))


def _healthcheck(make, rest: str) -> Instruction:
    if not rest:
        raise InvalidArgument("HEALTHCHECK requires at least one argument")
    kind = rest.split(None, 1)[0]
    command = rest[len(kind):].strip()
    typ = kind.upper()
    if typ == "NONE":
        if command:
            raise InvalidArgument("HEALTHCHECK NONE takes no arguments")
        inst = make(args=("NONE",))
    elif typ == "CMD":
        if not command:
            raise InvalidArgument("Missing command after HEALTHCHECK CMD")
        array = _json_array(command)
        inst = make(args=("CMD", *array) if array is not None else ("CMD", command),
                    exec_form=array is not None)
    else:
        raise InvalidArgument(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    if typ == "NONE" and inst.flags:
        raise InvalidArgument("HEALTHCHECK NONE takes no options")
    from berth.build.metadata import parse_duration

    for name in ("interval", "timeout", "start-period", "start-interval"):
        value = inst.flag(name)
        if value is not None:
            nanos = parse_duration(value)
            if nanos != 0 and nanos < 1_000_000:
                raise InvalidArgument(f"{name.capitalize().replace('-', ' ')} "
                                      f"{_quote(value)} cannot be less than 1ms")
    retries = inst.flag("retries")
    if retries is not None:
        try:
            count = int(retries)
        except ValueError:
            raise InvalidArgument(f"invalid --retries value {_quote(retries)}") from None
        if count < 0:
            raise InvalidArgument("--retries cannot be negative")
    return inst


# -- here-documents


def _read_heredocs(inst: Instruction, lines: _Lines, escape: str) -> Instruction:
    found = []
    candidates = _heredoc_words(inst)
    for word in candidates:
        doc = parse_heredoc(word, escape)
        if doc is not None:
            found.append(doc)
    if not found:
        return inst
    docs = []
    for name, expand, chomp, fd in found:
        body = []
        while True:
            raw = lines.next()
            if raw is None:
                raise inst.error(f"unterminated heredoc {name}")
            candidate = raw.lstrip("\t") if chomp else raw
            if candidate == name:
                break
            body.append(candidate + "\n")
        docs.append(Heredoc(name, "".join(body), expand, fd))
    from berth.oci.record import replace

    return replace(inst, heredocs=tuple(docs))


def _heredoc_words(inst: Instruction) -> list[str]:
    if inst.cmd == "RUN" and not inst.exec_form:
        # words as sh splits the line, quotes kept: they tell <<"EOF" from <<EOF
        return _name_words(inst.args[0], "\\")
    if inst.cmd in ("COPY", "ADD") and not inst.exec_form:
        return list(inst.args[:-1])
    return []


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
