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

The grammar of the words after each keyword (flags, JSON form, pairs, ``<<EOF``) is
berth.build.arguments'; this module splits the file and builds the records. Variable
substitution is not done here: it needs the build's environment at each step
(berth.build.shell does it, in the builder). Errors are ParseError, whose message names
the file and line: ``Dockerfile:7: unknown instruction: FOO``.
"""

from __future__ import annotations

import re

from berth.build.arguments import (check_flags, extract_flags, from_args, healthcheck,
                                   json_array, name_words, pairs, parse_heredoc,
                                   split_words)
from berth.errors import InvalidArgument
from berth.oci.record import Record

INSTRUCTIONS = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
})
HEREDOC_INSTRUCTIONS = ("RUN", "COPY", "ADD")
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_DIRECTIVES = ("escape", "syntax", "check")


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
        rest, words = extract_flags(rest)
        flags = check_flags(cmd, words)
        return _build(cmd, text, rest.strip(), flags, file, lineno, escape)
    except ParseError:
        raise
    except InvalidArgument as exc:
        raise ParseError(file, lineno, str(exc)) from None


def _build(cmd: str, original: str, rest: str, flags, file: str, lineno: int,
           escape: str) -> Instruction:
    def make(**kw) -> Instruction:
        return Instruction(cmd, original, lineno, file, flags=flags, **kw)

    if cmd in ("RUN", "CMD", "ENTRYPOINT"):
        array = json_array(rest)
        if array is not None:
            return make(args=tuple(array), exec_form=True)
        if not rest:
            raise InvalidArgument(f"{cmd} requires at least one argument")
        return make(args=(rest,))
    if cmd == "SHELL":
        array = json_array(rest)
        if array is None:
            raise InvalidArgument("SHELL requires the arguments to be in JSON form")
        if not array:
            raise InvalidArgument("SHELL requires at least one argument")
        return make(args=tuple(array), exec_form=True)
    if cmd in ("COPY", "ADD", "VOLUME"):
        array = json_array(rest)
        args = tuple(array) if array is not None else split_words(rest)
        if cmd != "VOLUME" and len(args) < 2:
            raise InvalidArgument(f"{cmd} requires at least two arguments, but only "
                                  f"{len(args)} {'was' if len(args) == 1 else 'were'} provided. "
                                  "Destination could not be determined.")
        if cmd == "VOLUME" and not args:
            raise InvalidArgument("VOLUME requires at least one argument")
        return make(args=args, exec_form=array is not None)
    if cmd in ("ENV", "LABEL", "ARG"):
        return make(pairs=pairs(cmd, rest, escape))
    if cmd == "FROM":
        return make(args=from_args(rest))
    if cmd == "EXPOSE":
        words = split_words(rest)
        if not words:
            raise InvalidArgument("EXPOSE requires at least one argument")
        return make(args=words)
    if cmd == "HEALTHCHECK":
        args, exec_form = healthcheck(rest, flags)
        return make(args=args, exec_form=exec_form)
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
        return name_words(inst.args[0], "\\")
    if inst.cmd in ("COPY", "ADD") and not inst.exec_form:
        return list(inst.args[:-1])
    return []
