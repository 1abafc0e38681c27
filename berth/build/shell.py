"""Dockerfile words: variable substitution and quote removal, as Docker's shell lexer does.

Docker does not run a shell to expand ``$VAR`` in COPY, ENV, WORKDIR and the like; it has
a small lexer of its own (moby/buildkit ``frontend/dockerfile/shell/lex.go``), and this
is a port of it, rule for rule, so a Dockerfile expands here as it does there:

    $VAR ${VAR}                  the value, or "" when unset
    ${VAR:-word} ${VAR-word}     word when VAR is empty (:-) or unset (-)
    ${VAR:+word} ${VAR+word}     word when VAR is non-empty (:+) or set (+), else ""
    ${VAR:?msg} ${VAR?msg}       an error when VAR is empty / unset
    ${VAR#pat} ${VAR##pat} ${VAR%pat} ${VAR%%pat} ${VAR/pat/repl} ${VAR//pat/repl}
    'single'                     literal; "double": only $ and escapes of " $ and the
                                 escape character itself are special
    \\x (or `x with # escape=`)   x, literally

``expand`` gives one word (quotes removed, unquoted whitespace kept), ``expand_words``
splits on unquoted whitespace (EXPOSE), and ``expand_heredoc`` expands the body of an
unquoted here-document as sh does: only ``$`` and the escapes ``\\$ \\\\ \\```.
Pure: no I/O. Errors are InvalidArgument naming the word.
"""

from __future__ import annotations

from berth.errors import InvalidArgument

_SPECIAL_PARAMS = "@*#?-$!0"


class _Lexer:
    __slots__ = ("text", "pos", "env", "escape", "words", "word", "in_word")

    def __init__(self, text: str, env, escape: str) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape
        self.words: list[str] = []
        self.word = ""
        self.in_word = False

    # -- the scanner

    def peek(self) -> str | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def next(self) -> str | None:
        if self.pos >= len(self.text):
            return None
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    # -- word splitting (only a top-level call's words are kept)

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def finish_words(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words

    # -- the grammar

    def process(self, stop: str | None, split: bool) -> str:
        """Up to `stop` (consumed) or the end; `split` collects words (top level only)."""
        out = []
        while (ch := self.peek()) is not None:
            if stop is not None and ch == stop:
                self.pos += 1
                return "".join(out)
            if ch == "'":
                piece = self.single_quote()
                if split:
                    self.add_raw(piece)
            elif ch == '"':
                piece = self.double_quote()
                if split:
                    self.add_raw(piece)
            elif ch == "$":
                piece = self.dollar()
                if split:
                    for c in piece:
                        self.add_char(c)
            else:
                self.pos += 1
                if ch == self.escape:
                    ch = self.next()
                    if ch is None:
                        break  # an escape at the very end is dropped
                    if split:
                        self.add_raw(ch)
                elif split:
                    self.add_char(ch)
                piece = ch
            out.append(piece)
        if stop is not None:
            raise InvalidArgument(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out)

    def single_quote(self) -> str:
        self.pos += 1
        end = self.text.find("'", self.pos)
        if end < 0:
            raise InvalidArgument("unexpected end of statement while looking for matching "
                                  "single-quote")
        piece = self.text[self.pos:end]
        self.pos = end + 1
        return piece

    def double_quote(self) -> str:
        self.pos += 1
        out = []
        while True:
            ch = self.peek()
            if ch is None:
                raise InvalidArgument("unexpected end of statement while looking for matching "
                                      "double-quote")
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.pos += 1
            if ch == self.escape:
                following = self.peek()
                if following is None:
                    continue
                if following in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        start = self.pos
        ch = self.peek()
        if ch is not None and ch.isdigit():
            while (c := self.peek()) is not None and c.isdigit():
                self.pos += 1
            return self.text[start:self.pos]
        if ch is not None and ch in _SPECIAL_PARAMS:
            self.pos += 1
            return ch
        while (c := self.peek()) is not None and (c.isalnum() or c == "_"):
            self.pos += 1
        return self.text[start:self.pos]

    def lookup(self, name: str) -> str | None:
        return self.env.get(name)

    def word_until_brace(self) -> str:
        try:
            return self.process("}", split=False)
        except InvalidArgument:
            if self.peek() is None:
                raise InvalidArgument("syntax error: missing '}'") from None
            raise

    def dollar(self) -> str:
        self.pos += 1
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            return self.lookup(name) or ""
        self.pos += 1
        ch = self.peek()
        if ch is None:
            raise InvalidArgument("syntax error: missing '}'")
        if ch in "{}:":
            raise InvalidArgument("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        value = self.lookup(name)
        if ch == "}":
            return value or ""
        if ch is None:
            raise InvalidArgument("syntax error: missing '}'")
        if ch == ":":
            modifier = self.next()
            word = self.word_until_brace()
            if modifier == "-":
                return value or word
            if modifier == "+":
                return word if value else ""
            if modifier == "?":
                if not value:
                    raise InvalidArgument(f"{name}: {word or 'is not allowed to be unset'}")
                return value
            raise InvalidArgument(f"unsupported modifier ({modifier}) in substitution")
        if ch in "-+?":
            word = self.word_until_brace()
            if ch == "-":
                return word if value is None else value
            if ch == "+":
                return "" if value is None else word
            if value is None:
                raise InvalidArgument(f"{name}: {word or 'is not allowed to be unset'}")
            return value
        if ch in "#%":
            longest = self.peek() == ch
            if longest:
                self.pos += 1
            pattern = self.word_until_brace()
            return _trim(value or "", pattern, prefix=ch == "#", longest=longest)
        if ch == "/":
            every = self.peek() == "/"
            if every:
                self.pos += 1
            pattern = self._until("/}")
            replacement = ""
            if self.text[self.pos - 1] == "/":
                replacement = self.word_until_brace()
            return _substitute(value or "", pattern, replacement, every)
        raise InvalidArgument(f"unsupported modifier ({ch}) in substitution")

    def _until(self, stops: str) -> str:
        out = []
        while (ch := self.next()) is not None:
            if ch in stops:
                return "".join(out)
            if ch == self.escape:
                ch = self.next() or ""
            out.append(ch)
        raise InvalidArgument("syntax error: missing '}'")


def _glob_regex(pattern: str):
    import re

    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "^") else i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _trim(value: str, pattern: str, *, prefix: bool, longest: bool) -> str:
    import re

    body = _glob_regex(pattern)
    lengths = range(len(value), -1, -1) if longest else range(len(value) + 1)
    rx = re.compile(body + r"\Z", re.S)
    for n in lengths:
        part = value[:n] if prefix else value[len(value) - n:]
        if rx.match(part):
            return value[n:] if prefix else value[:len(value) - n]
    return value


def _substitute(value: str, pattern: str, replacement: str, every: bool) -> str:
    import re

    if not pattern:
        return value
    rx = re.compile(_glob_regex(pattern), re.S)
    return rx.sub(lambda m: replacement, value, count=0 if every else 1)


def _run(text: str, env, escape: str, split: bool):
    lexer = _Lexer(text, env, escape)
    try:
        word = lexer.process(None, split)
    except InvalidArgument as exc:
        raise InvalidArgument(f"failed to process {_go_quote(text)}: {exc}") from None
    return word, lexer.finish_words()


def expand(text: str, env, escape: str = "\\") -> str:
    """One word: variables substituted, quotes and escapes removed (Docker's ProcessWord)."""
    if not any(c in text for c in ("$", "'", '"', escape)):
        return text
    return _run(text, env, escape, split=False)[0]


def expand_words(text: str, env, escape: str = "\\") -> list[str]:
    """Words split on unquoted whitespace, after substitution (Docker's ProcessWords)."""
    return _run(text, env, escape, split=True)[1]


def expand_heredoc(text: str, env) -> str:
    """The body of an unquoted here-document, as sh expands it: $ substitutions, and a
    backslash escapes only $, ` and itself; quotes are plain characters."""
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in "$`\\":
            out.append(text[i + 1])
            i += 2
            continue
        if c == "$":
            lexer = _Lexer(text, env, "\\")
            lexer.pos = i
            try:
                out.append(lexer.dollar())
            except InvalidArgument as exc:
                raise InvalidArgument(f"failed to expand the here-document: {exc}") from None
            i = lexer.pos
            continue
        out.append(c)
        i += 1
    return "".join(out)


_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a",
               "\b": "\\b", "\f": "\\f", "\v": "\\v"}


def _go_quote(text: str) -> str:
    """Go's %q of a string (strconv.Quote), which Docker's messages and history use."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        escaped = _GO_ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif code < 0x20 or code == 0x7f:
            out.append(f"\\x{code:02x}")
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


go_quote = _go_quote
