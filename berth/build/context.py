"""The build context and the sources of COPY and ADD, found with Docker's rules.

    BuildContext   the context directory (or a tar from stdin, unpacked), the Dockerfile's
                   text and the .dockerignore rules (berth.build.ignore)
    Tree           files as COPY sees them: the context (minus what .dockerignore
                   excludes) or an image's root filesystem (its unpacked layer dirs,
                   merged as overlayfs would, never mounted); symlinks are resolved inside
                   the tree, never on the host
    sources()      one COPY/ADD source argument -> the entries it names: a path, or a glob
                   matched component by component (``*`` never crosses a ``/``)
    walk()         everything below a source directory that .dockerignore leaves in
"""

from __future__ import annotations

import os
import re
import stat

from berth.build.ignore import Ignore, read_ignore
from berth.errors import FailedPrecondition, InvalidArgument, NotFound
from berth.fsutil import normalize_parts

_WILDCARDS = re.compile(r"(?<!\\)[*?\[]")
_REMOTE = ("http://", "https://", "git://", "git@", "github.com/", "ssh://")


# -- trees


class Node:
    """An entry of a Tree: where it lives on the host and its lstat."""

    __slots__ = ("path", "st")

    def __init__(self, path: str, st: os.stat_result) -> None:
        self.path = path
        self.st = st

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


def split_path(path: str) -> list[str]:
    return normalize_parts(path.split("/"))


class Tree:
    """Files COPY can take: layer dirs (topmost first) merged, minus what `ignore` hides."""

    def __init__(self, layers: list[str], ignore: Ignore | None = None, label: str = "") -> None:
        from berth.layer.diff import _merged

        self.layers = list(layers)
        self.ignore = ignore if ignore else None
        self.label = label  # for messages: "build context", "stage builder"
        self._root = _merged(self.layers)

    def _raw(self, parts: list[str]):
        node = self._root
        for part in parts:
            if node.sources is None:
                return None
            node = node.children.get(os.fsencode(part))
            if node is None:
                return None
        return node

    def lookup(self, parts: list[str]) -> Node | None:
        """The entry at `parts` (no symlink followed), None when absent."""
        if not parts:
            return Node(self.layers[0], os.stat(self.layers[0])) if self.layers else None
        raw = self._raw(parts)
        if raw is None:
            return None
        return Node(os.fsdecode(raw.path), raw.st)

    def resolve(self, path: str, follow_last: bool = True) -> list[str]:
        """`path` with its symlinks resolved inside the tree: a link that points above
        the root stops at the root, as Docker's FollowSymlinkInScope does."""
        parts = split_path(path)
        hops = 0
        i = 0
        while i < len(parts):
            if i == len(parts) - 1 and not follow_last:
                break
            raw = self._raw(parts[:i + 1])
            if raw is None or not stat.S_ISLNK(raw.st.st_mode):
                if raw is not None and raw.sources is None and i < len(parts) - 1:
                    break  # a file where a directory should be: the path does not exist
                i += 1
                continue
            hops += 1
            if hops > 255:
                raise InvalidArgument(f"too many levels of symbolic links in {path}")
            target = os.readlink(raw.path)
            base = [] if target.startswith("/") else parts[:i]
            parts = normalize_parts(base + target.split("/") + parts[i + 1:])
            i = 0
        return parts

    def children(self, parts: list[str]) -> list[tuple[str, Node]]:
        """The entries of directory `parts`, sorted by name, ignored ones too (see walk)."""
        raw = self._raw(parts)
        if raw is None or raw.sources is None:
            return []
        out = []
        for name in sorted(raw.children):
            child = raw.children[name]
            text = os.fsdecode(name)
            out.append((text, Node(os.fsdecode(child.path), child.st)))
        return out

    def is_excluded(self, parts: list[str]) -> bool:
        # the root itself is never excluded: `*` and then `!src` still copies src
        return bool(parts) and self.ignore is not None and self.ignore.excluded("/".join(parts))

    def may_hold_included(self, parts: list[str]) -> bool:
        """An excluded directory may still hold files an exception (!) brings back."""
        return self.ignore is not None and self.ignore.has_exceptions

    def visible(self, parts: list[str], node: Node) -> bool:
        """Whether COPY may name this entry: not excluded, or a directory an exception
        reaches into."""
        return not self.is_excluded(parts) or (node.is_dir and self.may_hold_included(parts))

    def glob(self, pattern: str) -> list[list[str]]:
        """Entries whose path matches `pattern` (Go's filepath.Match, per component)."""
        regexes = [re.compile(_component_regex(p), re.S) for p in split_path(pattern)]
        out: list[list[str]] = []

        def walk(parts: list[str], depth: int) -> None:
            rx = regexes[depth]
            for name, node in self.children(parts):
                if not rx.match(name):
                    continue
                sub = parts + [name]
                if depth == len(regexes) - 1:
                    out.append(sub)
                elif node.is_dir:
                    walk(sub, depth + 1)

        if regexes:
            walk([], 0)
        return out


def _component_regex(pattern: str) -> str:
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise InvalidArgument(f"syntax error in pattern {pattern!r}")
            body = pattern[i + 1:end]
            if body.startswith("^") or body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out) + r"\Z"


# -- sources


class Source:
    """One entry a COPY/ADD source names: in which tree, its path there (symlinks
    resolved), the name it was asked by (its base name names a copied file), its node."""

    __slots__ = ("tree", "parts", "name", "node", "data")

    def __init__(self, tree: Tree | None, parts: list[str], name: str, node: Node | None,
                 data: bytes | None = None) -> None:
        self.tree = tree
        self.parts = parts
        self.name = name
        self.node = node
        self.data = data  # a here-document's content (then tree and node are None)

    @property
    def is_dir(self) -> bool:
        return self.node is not None and self.node.is_dir


def has_wildcards(path: str) -> bool:
    return _WILDCARDS.search(path) is not None


def sources(tree: Tree, arg: str, what: str = "COPY") -> list[Source]:
    """The entries source argument `arg` names in `tree`, in Docker's order.

    Raises NotFound for a missing (or .dockerignore'd) path; a glob that matches
    nothing gives an empty list.
    """
    path = arg.lstrip("/")
    cleaned = os.path.normpath(path) if path else "."
    if cleaned == ".." or cleaned.startswith("../"):
        raise InvalidArgument(f"{what} failed: forbidden path outside the build context: {arg}")
    if has_wildcards(path):
        out = []
        for parts in tree.glob(path):
            resolved = tree.resolve("/".join(parts))
            node = tree.lookup(resolved)
            if node is not None and tree.visible(resolved, node):
                out.append(Source(tree, resolved, parts[-1], node))
        return out
    resolved = tree.resolve(path)
    node = tree.lookup(resolved)
    if node is None or not tree.visible(resolved, node):
        where = tree.label or "build context"
        if where == "build context":
            raise NotFound(f"{what} failed: file not found in build context or excluded by "
                           f".dockerignore: stat {cleaned}: file does not exist")
        raise NotFound(f"{what} failed: file not found in {where}: stat {arg}: file does "
                       "not exist")
    named = split_path(path)
    return [Source(tree, resolved, named[-1] if named else "", node)]


def walk(tree: Tree, parts: list[str]):
    """(relative path parts, node) of everything below directory `parts`, parents first,
    each directory's entries sorted; what .dockerignore excludes is left out."""
    for name, node in tree.children(parts):
        sub = parts + [name]
        excluded = tree.is_excluded(sub)
        if excluded and not (node.is_dir and tree.may_hold_included(sub)):
            continue
        if not excluded:
            yield sub, node
        if node.is_dir:
            yield from walk(tree, sub)


# -- the context itself


class BuildContext:
    """Where the build's files come from; `close()` removes what was unpacked for it."""

    def __init__(self, root: str, dockerfile: str, dockerfile_name: str, ignore: Ignore,
                 temporary: str | None = None) -> None:
        self.root = root
        self.dockerfile = dockerfile
        self.dockerfile_name = dockerfile_name
        self.ignore = ignore
        self.temporary = temporary  # a directory of ours (an unpacked tar), or None
        self._tree: Tree | None = None

    @property
    def tree(self) -> Tree:
        if self._tree is None:
            self._tree = Tree([self.root], self.ignore, "build context")
        return self._tree

    def close(self) -> None:
        if self.temporary:
            from berth.fsutil import remove_tree

            remove_tree(self.temporary)
            self.temporary = None


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise NotFound(f"unable to prepare context: {what} {path} not found") from None
    except IsADirectoryError:
        raise InvalidArgument(f"unable to prepare context: {what} {path} is a directory") from None
    except OSError as exc:
        raise FailedPrecondition(f"cannot read {what} {path}: {exc.strerror}") from None
    return raw.decode("utf-8", "surrogateescape")


def _ignore_for(context_dir: str, dockerfile_path: str | None) -> Ignore:
    candidates = []
    if dockerfile_path:
        candidates.append(dockerfile_path + ".dockerignore")  # BuildKit's per-Dockerfile file
    candidates.append(os.path.join(context_dir, ".dockerignore"))
    for path in candidates:
        try:
            with open(path, "rb") as f:
                return Ignore(read_ignore(f.read().decode("utf-8", "surrogateescape")))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            continue
    return Ignore([])


def _is_tar_head(head: bytes) -> bool:
    if len(head) < 512:
        return False
    block = head[:512]
    if block[257:262] == b"ustar":
        return True
    try:
        recorded = int(block[148:156].split(b"\0")[0].strip() or b"-1", 8)
    except ValueError:
        return False
    return recorded == sum(block[:148]) + 256 + sum(block[156:512])


def is_archive(path: str) -> bool:
    """Whether ADD unpacks `path`: a tar, plain or gzip/bzip2/xz/zstd compressed."""
    from berth.layer import open_decompressed

    try:
        with open(path, "rb") as f:
            stream = open_decompressed(f)
            head = b""
            while len(head) < 512:
                chunk = stream.read(512 - len(head))
                if not chunk:
                    break
                head += chunk
    except Exception:  # noqa: BLE001 - a file that does not decompress is just a file
        return False
    return _is_tar_head(head)


def is_remote(source: str) -> bool:
    return source.startswith(_REMOTE)


def open_context(source: str, dockerfile: str | None, stdin, workspace: str) -> BuildContext:
    """The context of ``berth build [-f FILE|-] SOURCE|-``, as the docker CLI finds it.

    SOURCE "-" is a tar of the context on stdin (plain or compressed), or a lone
    Dockerfile (then the context is empty). A relative -f is relative to the current
    directory, not to the context; without -f the Dockerfile is the context's own.
    """
    if is_remote(source):
        raise InvalidArgument(f"unable to prepare context: {source} is a remote context; "
                              "berth builds have no network: clone or download it and build "
                              "the directory")
    if source == "-":
        if dockerfile == "-":
            raise InvalidArgument("invalid argument: can't use stdin for both build context "
                                  "and dockerfile")
        return _stdin_context(stdin, dockerfile, workspace)
    if not os.path.exists(source):
        raise NotFound(f'unable to prepare context: path "{source}" not found')
    if not os.path.isdir(source):
        raise InvalidArgument(f"unable to prepare context: context must be a directory: {source}")
    root = os.path.abspath(source)
    if dockerfile == "-":
        text = stdin.read().decode("utf-8", "surrogateescape")
        return BuildContext(root, text, "Dockerfile", _ignore_for(root, None))
    if dockerfile:
        path = os.path.abspath(dockerfile)
    else:
        path = os.path.join(root, "Dockerfile")
        if not os.path.exists(path) and os.path.exists(os.path.join(root, "dockerfile")):
            path = os.path.join(root, "dockerfile")
    text = _read_text(path, "Dockerfile")
    return BuildContext(root, text, os.path.basename(path), _ignore_for(root, path))


def _stdin_context(stdin, dockerfile: str | None, workspace: str) -> BuildContext:
    from berth.layer import apply_layer, open_decompressed
    from berth.layer.compression import detect

    head = b""
    while len(head) < 512 and (chunk := stdin.read(512 - len(head))):
        head += chunk
    stream = _Prefixed(head, stdin)
    compressed = detect(head) is not None if head else False
    if not compressed and not _is_tar_head(head):
        # not an archive: the Dockerfile itself, with an empty context
        text = (head + stdin.read()).decode("utf-8", "surrogateescape")
        root = os.path.join(workspace, "context")
        os.makedirs(root, exist_ok=True)
        return BuildContext(root, text, "Dockerfile", Ignore([]))
    root = os.path.join(workspace, "context")
    os.makedirs(root, exist_ok=True)
    apply_layer(open_decompressed(stream), root, whiteouts="apply", allow_devices=False)
    name = dockerfile or "Dockerfile"
    tree = Tree([root])
    parts = tree.resolve(name)
    node = tree.lookup(parts)
    if node is None and not dockerfile and tree.lookup(["dockerfile"]) is not None:
        parts, node = ["dockerfile"], tree.lookup(["dockerfile"])
    if node is None or not stat.S_ISREG(node.st.st_mode):
        raise NotFound(f"unable to prepare context: the context on stdin has no {name}")
    text = _read_text(node.path, "Dockerfile")
    return BuildContext(root, text, os.path.basename(name), _ignore_for(root, node.path))


class _Prefixed:
    """A reader that gives `head` again before the rest of `stream`."""

    def __init__(self, head: bytes, stream) -> None:
        self._head = head
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0 or size >= len(self._head):
                data, self._head = self._head, b""
                if size < 0:
                    return data + self._stream.read()
                return data + (self._stream.read(size - len(data)) if size > len(data) else b"")
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._stream.read(size)

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)
