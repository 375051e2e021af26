"""Safe YAML loading that remembers where every value came from.

The plan is composed with PyYAML's ``SafeLoader`` into a node graph, then built into plain
Python data by hand so that

* every value's and every mapping key's position is kept (for ``file:line:col`` messages),
* duplicate keys are problems, not silent overwrites,
* only plain-data tags are accepted (no tag builds an object),
* size is bounded: at most ``MAX_BYTES`` of text, ``MAX_NODES`` values and keys as written and
  as expanded through aliases (an "alias bomb" stops with a problem, not an exhausted machine),
  and ``MAX_DEPTH`` levels of nesting (checked while composing, so no ``RecursionError``),
* characters YAML does not allow (a control character) are a problem at their position,
* ``${env:NAME}`` in a string takes its value from the environment and marks it secret (a value
  shorter than ``secrets.MIN_LENGTH`` is refused: it could not be masked safely);
  ``${var:NAME}`` takes a plain, not secret, value from the variables given (``--release-var``),
  else ``release.version`` for ``release_version``, else the environment.

Whatever the text, :func:`load_yaml_text` returns a :class:`Document`; it never raises.

The same loader reads YAML config files for the ``syntax`` check.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import yaml

from .model import Mark
from .problems import Problem, format_path
from .secrets import MIN_LENGTH

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "Document", "Mark", "excerpt", "load_yaml_text", "read_text"]

#: The limits of a YAML file (a plan, a config file the ``syntax`` check reads).
MAX_NODES = 100_000
MAX_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64

_PLAIN_TAGS = {
    "tag:yaml.org,2002:" + name
    for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
}
_ENV_RE = re.compile(r"\$\{(env|var):([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class Document:
    """Plain data loaded from YAML, with the position of every value and key."""

    file: str
    data: object = None
    marks: dict[tuple[object, ...], Mark] = field(default_factory=dict)
    key_marks: dict[tuple[object, ...], Mark] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)

    def mark(self, path: tuple[object, ...], *, key: bool = False) -> Mark:
        """Where ``path`` is written (its key when ``key``); the nearest enclosing value else."""
        table = self.key_marks if key else self.marks
        probe = tuple(path)
        while probe:
            if probe in table:
                return table[probe]
            if probe in self.marks:
                return self.marks[probe]
            probe = probe[:-1]
        return self.marks.get((), Mark(1, 1))

    def problem(self, path: tuple[object, ...], message: str, *, key: bool = False) -> Problem:
        mark = self.mark(path, key=key)
        return Problem(self.file, mark.line, mark.col, format_path(path), message)

    def add(self, path: tuple[object, ...], message: str, *, key: bool = False) -> None:
        self.problems.append(self.problem(path, message, key=key))


class _TooLarge(Exception):
    pass


def read_text(path: str | os.PathLike[str], display: str) -> tuple[str | None, list[Problem]]:
    """The file's text as UTF-8, or the problems that stop it being read."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except IsADirectoryError:
        return None, [Problem(display, 1, 1, "(file)", "cannot read: it is a directory, not a file")]
    except OSError as exc:
        return None, [Problem(display, 1, 1, "(file)", f"cannot read: {exc.strerror or exc}")]
    except ValueError as exc:  # a path with a NUL byte
        return None, [Problem(display, 1, 1, "(file)", f"cannot read: {exc}")]
    if len(raw) > MAX_BYTES:
        return None, [Problem(display, 1, 1, "(file)",
                              f"larger than the limit of {MAX_BYTES} bytes ({MAX_BYTES // 1024 // 1024} MiB)")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        return None, [
            Problem(display, line, col, "(file)", f"not UTF-8: byte 0x{raw[exc.start]:02x} cannot be decoded")
        ]
    return text.removeprefix("\ufeff"), []


def load_yaml_text(
    text: str,
    display: str,
    *,
    env: Mapping[str, str] | None = None,
    substitute_env: bool = True,
    max_nodes: int = MAX_NODES,
    variables: Mapping[str, str] | None = None,
    max_depth: int = MAX_DEPTH,
) -> Document:
    """Build a :class:`Document` from YAML text; problems are collected, never raised."""
    doc = Document(display)
    try:
        loader = _Loader(text, max_nodes, max_depth)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, found before parsing
        doc.problems.append(_reader_problem(display, text, exc))
        return doc
    try:
        node = loader.get_single_node()
    except _Limit as exc:
        doc.problems.append(Problem(display, exc.line + 1, exc.column + 1, "(yaml)", exc.message))
        return doc
    except yaml.reader.ReaderError as exc:
        doc.problems.append(_reader_problem(display, text, exc))
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        doc.problems.append(Problem(display, line, col, "(yaml)", message or "invalid YAML"))
        return doc
    except yaml.YAMLError as exc:
        doc.problems.append(Problem(display, 1, 1, "(yaml)", " ".join(str(exc).split())))
        return doc
    finally:
        loader.dispose()
    if node is None:
        doc.problems.append(Problem(display, 1, 1, "(plan)", "the file is empty"))
        return doc
    builder = _Builder(doc, loader, os.environ if env is None else env, substitute_env, max_nodes)
    builder.variables, builder.root = variables or {}, node
    try:
        doc.data = builder.build(node, ())
    except _TooLarge:
        doc.problems.append(
            Problem(display, node.start_mark.line + 1, node.start_mark.column + 1, "(yaml)",
                    f"more than {max_nodes} values after alias expansion (limit: {max_nodes} values; "
                    f"{loader.nodes} are written, the rest come from aliases); refusing to load")
        )
        doc.data = None
    return doc


def _reader_problem(display: str, text: str, exc: yaml.reader.ReaderError) -> Problem:
    """A character the YAML reader refuses, at its line and column."""
    position = max(0, min(int(exc.position), len(text)))
    before = text[:position]
    line = before.count("\n") + 1
    col = position - (before.rfind("\n") + 1) + 1
    char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
    return Problem(display, line, col, "(yaml)",
                   f"character U+{char:04X} is not allowed in YAML ({exc.reason}); remove it or write it "
                   "escaped in a double-quoted string")


def excerpt(text: str, line: int, col: int, *, width: int = 60) -> str:
    """At most ``width`` characters of ``text`` around ``line:col`` (1-based), on one line, with
    anything that looks like a secret (``password: x``, ``token=x``, ``Authorization: x``, a URL's
    user:password) replaced by ``***``; control characters are shown escaped. For messages about
    files that may hold secrets: never the whole file, never a secret."""
    lines = text.splitlines() or [""]
    source = lines[max(0, min(line, len(lines)) - 1)]
    source = _SECRETISH.sub(lambda m: m.group(1) + "***", source)
    source = _USERINFO.sub(r"\1***@", source)
    start = max(0, min(col - 1, len(source)) - width // 2)
    piece = source[start:start + width]
    shown = piece.encode("unicode_escape").decode("ascii") if not piece.isprintable() else piece
    return ("..." if start else "") + shown + ("..." if start + width < len(source) else "")


_SECRETISH = re.compile(r"((?:pass(?:word|wd)?|secret|token|api[_-]?key|key|credential|auth\w*|dsn|private)"
                        r"[\w.-]*[\"']?\s*[:=]\s*).+", re.IGNORECASE)
_USERINFO = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


class _Position(Protocol):
    """Where a YAML event starts: PyYAML's mark, from its Python or its C parser."""

    line: int
    column: int


class _Limit(Exception):
    """A limit hit while composing: too deep, too many values (where: 0-based line and column)."""

    def __init__(self, message: str, mark: _Position | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = mark.line if mark is not None else 0
        self.column = mark.column if mark is not None else 0


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with limits, each checked as early as it can be: the nesting depth
    while scanning (a flow bracket, a block indentation) and while composing (composing recurses
    once per level), the number of values and keys as written and as aliases expand them while
    composing (each node's size is known once it is composed, so an alias adds its anchor's)."""

    def __init__(self, text: str, max_nodes: int, max_depth: int) -> None:
        super().__init__(text)
        self.depth = 0
        self.nodes = 0  # as written
        self.expanded = 0  # as written, plus what aliases repeat
        self.sizes: dict[int, int] = {}
        self.max_nodes = max_nodes
        self.max_depth = max_depth

    def _too_deep(self, mark: _Position | None) -> _Limit:
        return _Limit(f"nested deeper than {self.max_depth} levels (limit: {self.max_depth})", mark)

    def fetch_flow_collection_start(self, TokenClass: type) -> None:
        if self.flow_level >= self.max_depth:
            raise self._too_deep(self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def add_indent(self, column: int) -> bool:
        if len(self.indents) >= self.max_depth:
            raise self._too_deep(self.get_mark())
        return bool(super().add_indent(column))

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        if self.depth >= self.max_depth:
            raise self._too_deep(event.start_mark)
        if isinstance(event, yaml.AliasEvent):
            node = self._compose(parent, index)
            self._count(self.sizes.get(id(node), 1), event.start_mark, alias=True)
            return node
        self.nodes += 1
        self._count(1, event.start_mark, alias=False)
        self.depth += 1
        try:
            node = self._compose(parent, index)
        finally:
            self.depth -= 1
        if isinstance(node, yaml.MappingNode):
            size = 1 + sum(self.sizes.get(id(k), 1) + self.sizes.get(id(v), 1) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self.sizes.get(id(item), 1) for item in node.value)
        else:
            size = 1
        if size > 1:
            self.sizes[id(node)] = size
        return node

    def _compose(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        # The stubs say index is an int and the result may be None: PyYAML passes the key node as
        # the index of a mapping's value, and returns a node for every event it composes.
        node = super().compose_node(parent, index)  # type: ignore[arg-type]
        if node is None:
            raise yaml.composer.ComposerError(None, None, "no node where one was expected", None)
        return node

    def _count(self, size: int, mark: _Position | None, *, alias: bool) -> None:
        self.expanded += size
        if self.expanded <= self.max_nodes:
            return
        if alias or self.nodes < self.expanded:
            raise _Limit(f"more than {self.max_nodes} values and keys after alias expansion (limit: "
                         f"{self.max_nodes}; {self.nodes} are written, the rest repeat anchors: an alias bomb?)", mark)
        raise _Limit(f"more than {self.max_nodes} values and keys (limit: {self.max_nodes}); the file is too large "
                     "to load", mark)


class _Builder:
    def __init__(self, doc: Document, loader: yaml.SafeLoader, env: Mapping[str, str],
                 substitute_env: bool, max_nodes: int) -> None:
        self.doc = doc
        self.loader = loader
        self.env = env
        self.substitute_env = substitute_env
        self.budget = max_nodes
        self.variables: Mapping[str, str] = {}
        self.root: yaml.Node | None = None

    def _mark(self, node: yaml.Node) -> Mark:
        return Mark(node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: yaml.Node, path: tuple[object, ...]) -> object:
        self.budget -= 1
        if self.budget < 0:
            raise _TooLarge
        self.doc.marks.setdefault(path, self._mark(node))
        if node.tag not in _PLAIN_TAGS:
            self.doc.add(path, f"tag {node.tag!r} is not allowed: a plan holds plain data only")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        if node.tag.endswith(":timestamp"):
            return str(node.value)
        value = self.loader.construct_object(node)
        if isinstance(value, str) and self.substitute_env:
            value = self._env(value, path)
        return value

    def _mapping(self, node: yaml.MappingNode, path: tuple[object, ...]) -> dict[object, object]:
        try:
            self.loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            self.doc.add(path, str(exc.problem))
            return {}
        result: dict[object, object] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _PLAIN_TAGS:
                self.doc.problems.append(Problem(self.doc.file, *self._pos(key_node), format_path(path),
                                                 "a key must be a plain scalar"))
                continue
            key = self.loader.construct_object(key_node)
            if key in result:
                first = self.doc.key_marks[path + (key,)]
                self.doc.problems.append(Problem(self.doc.file, *self._pos(key_node), format_path(path + (key,)),
                                                 f"duplicate key {key!r} (first at line {first.line})"))
                continue
            self.doc.key_marks[path + (key,)] = self._mark(key_node)
            result[key] = self.build(value_node, path + (key,))
        return result

    def _pos(self, node: yaml.Node) -> tuple[int, int]:
        mark = self._mark(node)
        return mark.line, mark.col

    def _env(self, value: str, path: tuple[object, ...]) -> str:
        def substitute(match: re.Match[str]) -> str:
            source, name = match.groups()
            if source == "var":
                found = self.variables.get(name)
                if found is None and name == "release_version":
                    found = self._release_version()
                if found is None:
                    found = self.env.get(name)
                if found is None:
                    self.doc.add(path, f"variable {name} is not set (${{var:{name}}}): give --release-var "
                                       f"{name}=VALUE or set the environment variable {name}")
                    return ""
                return found
            if name not in self.env:
                self.doc.add(path, f"environment variable {name} is not set (${{env:{name}}})")
                return ""
            secret = self.env[name]
            if 0 < len(secret) < MIN_LENGTH:
                self.doc.add(path, f"environment variable {name} is too short for a secret ({len(secret)} "
                                   f"characters; a secret needs at least {MIN_LENGTH} to be masked in every "
                                   f"output): if it is not secret, write ${{var:{name}}}")
            if secret:
                self.doc.secrets.add(secret)
            return secret

        return _ENV_RE.sub(substitute, value)

    def _release_version(self) -> str | None:
        """``release.version`` as written (for ``${var:release_version}`` without --release-version)."""
        for key, value in self.root.value if isinstance(self.root, yaml.MappingNode) else ():
            if getattr(key, "value", None) == "release" and isinstance(value, yaml.MappingNode):
                for inner, version in value.value:
                    if (getattr(inner, "value", None) == "version" and isinstance(version, yaml.ScalarNode)
                            and "${" not in str(version.value)):
                        return str(version.value)
        return None
