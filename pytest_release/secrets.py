"""Secrets from ``${env:NAME}`` never reach any output: every text we emit passes through here.

A secret leaves a program in many forms, not only as its own text: quoted for a shell
(``'ab'"'"'cd'``), escaped in a ``repr`` or in JSON (``ab\\\\cd``, ``\\"``, ``\\u00e9``),
URL-encoded (``%27``, ``+``), escaped for HTML and XML (``&#x27;``, ``&amp;``, ``&quot;``), or cut
short by a length limit. :class:`Redactor` matches all of them at once: for every character of a
secret a regular expression of its forms (the character itself, ``%XX`` and ``%25XX``, numeric and
named character references, ``\\xXX``/``\\uXXXX``/``\\UXXXXXXXX`` escapes, a backslash before it,
``+`` for a space, the two shell spellings of ``'``), and for every run of :data:`MIN_LENGTH`
consecutive characters of a secret (a *window*) one alternative of a single compiled expression.
A match is extended, character by character, as far as the secret goes on, and replaced by
``***``. So any fragment of at least :data:`MIN_LENGTH` characters of a secret, in any of those
forms and their combinations (a ``repr`` inside JSON inside HTML), is masked; a secret shorter
than that is refused by the plan loader (:data:`MIN_LENGTH` is also the shortest secret).

Where values leave the plugin, they pass one of two functions: :func:`scrub_text` /
:func:`scrub_bytes` with the secrets of the run (registered once with :func:`activate`), or
:func:`redact` / :func:`redact_value` with an explicit set (the plan loader's own errors).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

__all__ = ["MASK", "MIN_LENGTH", "Redactor", "activate", "active", "deactivate", "parse_variables", "redact",
           "redact_value", "scrub_bytes", "scrub_text", "scrub_value"]

MASK = "***"
#: The shortest secret accepted, and the shortest fragment of a secret that is masked: a shorter
#: run of characters is too common in ordinary text to be masked without destroying it.
MIN_LENGTH = 8

_NAMED = {"&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "apos"}
#: Characters that no encoder here changes (URL quoting, repr, JSON, HTML and XML escaping, shlex).
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]+")
_ESCAPES = {"\n": "n", "\t": "t", "\r": "r", "\b": "b", "\f": "f", "\v": "v", "\a": "a", "\0": "0"}


def _hex(value: int, width: int) -> str:
    """``value`` in hexadecimal, at least ``width`` digits, either case (``[cC]3``)."""
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{value:0{width}x}")


@lru_cache(maxsize=4096)
def _char(c: str) -> str:
    """A regular expression for every form the character ``c`` takes in an output."""
    if _PLAIN.fullmatch(c):
        return c  # no encoder changes a letter, a digit or _.~-
    code = ord(c)
    named = f"{_NAMED[c]}|" if c in _NAMED else ""
    forms = [f"&(?:amp;)*(?:{named}#0*{code}|#[xX]0*{_hex(code, 1)});"]
    forms.append("".join(f"%(?:25)*{_hex(b, 2)}" for b in c.encode("utf-8", "surrogatepass")))
    # \uXXXX (JSON, and JSON made safe for HTML: \u003c), \xXX and \UXXXXXXXX (a repr of what is
    # not printable, or beyond the BMP), \n and the like.
    escapes = [f"u{_hex(code, 4)}"] if code < 0x10000 else [
        f"u{_hex(0xD800 + ((code - 0x10000) >> 10), 4)}\\\\+u{_hex(0xDC00 + ((code - 0x10000) & 0x3FF), 4)}",
        f"U{_hex(code, 8)}"]
    if code < 256 and not c.isprintable():
        escapes.append(f"x{_hex(code, 2)}")
    if c in _ESCAPES:
        escapes.append(_ESCAPES[c])
    forms.append("\\\\+(?:" + "|".join(escapes) + ")")
    if c == "'":  # shlex.quote closes the quote, adds a quoted quote and reopens: '"'"' or '\''
        forms += [r"'\"'\"'", r"'\\''"]
    if c == " ":
        forms.append(r"\+")
    forms.append(re.escape(c))  # last: an encoded form is tried first, so a match goes on past it
    # Any representation may be preceded by backslashes (a repr's \' and \\, JSON's \", both nested).
    return "\\\\*(?:" + "|".join(forms) + ")"


#: Any one encoded character (an entity, %XX, a backslash escape, a shell-quoted quote, + for a space).
_ENCODED = (r"&(?:amp;)*(?:[A-Za-z]+|#[0-9]+|#[xX][0-9A-Fa-f]+);|%(?:25)*[0-9A-Fa-f]{2}"
            r"|\\(?:u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|x[0-9A-Fa-f]{2}|[ntrbfva0])|'\"'\"'|'\\''|\+")
#: How far around a run of plain characters of a window the rest of the window can be.
_REACH = 96


class Redactor:
    """Masks every form of every fragment of at least :data:`MIN_LENGTH` characters of the
    secrets it is made with (shorter secrets only whole). Built once per set of secrets.

    Finding them is done in two steps, because one expression with hundreds of alternatives is
    slow to run over a large report: first the places where a secret can be (its plain runs of
    letters and digits, found with ``str.find``; or, for a secret with no such runs, stretches of
    at least :data:`MIN_LENGTH` characters that can be part of it), then the expression there only.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(sorted({s for s in secrets if s}, key=lambda s: (-len(s), s)))
        #: (secret, offset of the window, offset after it) of every window, in the expressions' order.
        self._windows: list[tuple[str, int, int]] = []
        anchors: set[str] = set()
        self._order: dict[re.Pattern[str], list[int]] = {}  # the windows of each expression, in order
        loose: list[int] = []  # the windows without a plain run of three characters
        for secret in self.secrets:
            size = min(MIN_LENGTH, len(secret))
            chosen = -1  # where the last anchor chosen in this secret starts
            for offset in range(len(secret) - size + 1):
                self._windows.append((secret, offset, offset + size))
                if chosen >= offset:  # it lies in this window too (it ends before the earlier window did)
                    continue
                runs = [m for m in _PLAIN.finditer(secret, offset, offset + size) if m.end() - m.start() >= 3]
                if not runs:
                    loose.append(len(self._windows) - 1)
                    continue
                # The rightmost piece of four (or three) plain characters: it lies in the most windows.
                run = runs[-1]
                chosen = max(run.start(), run.end() - 4)
                anchors.add(secret[chosen:run.end()])
        #: Text that holds none of these holds no window of a secret that has a plain run (letters,
        #: digits, _.~- that no encoder changes) of three or more characters.
        self._anchors = tuple(sorted(anchors))
        everything = range(len(self._windows))
        self._pattern = self._alternatives(everything) if self._windows else None
        self._loose = self._alternatives(loose) if loose else None
        self._runs: re.Pattern[str] | None = None
        if loose:  # where windows without a plain run can be: see _loose_places
            self._runs = _loose_places(self.secrets, [self._windows[i] for i in loose])
        self._compiled: dict[object, re.Pattern[str]] = {}

    def _alternatives(self, windows: Iterable[int]) -> re.Pattern[str]:
        windows = list(windows)
        pattern = re.compile("|".join(f"(?:{self._window(i)})" for i in windows))
        self._order[pattern] = windows
        return pattern

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def _window(self, index: int) -> str:
        secret, start, end = self._windows[index]
        return "".join(_char(c) for c in secret[start:end])

    def _compile(self, key: object, source: str) -> re.Pattern[str]:
        pattern = self._compiled.get(key)
        if pattern is None:
            pattern = self._compiled[key] = re.compile(source)
        return pattern

    def text(self, text: str) -> str:
        """``text`` with every fragment of a secret, in any of its forms, replaced by ``***``."""
        if self._pattern is None or not text:
            return text
        spans: list[tuple[int, int]] = []
        for anchor in self._anchors:
            at = text.find(anchor)
            while at >= 0:
                spans.append((at - _REACH, at + len(anchor) + _REACH))
                at = text.find(anchor, at + 1)
        if spans:
            text = self._mask(text, spans, self._pattern)
        if self._runs is not None and self._loose is not None:  # then the windows without a plain run
            spans = [(m.start() - _REACH, m.end() + _REACH) for m in self._runs.finditer(text)]
            if spans:
                text = self._mask(text, spans, self._loose)
        return text

    def _mask(self, text: str, spans: list[tuple[int, int]], pattern: re.Pattern[str]) -> str:
        """``text`` with every window ``pattern`` finds within ``spans``, and the rest of the
        secret that follows it, replaced by ``***``."""
        out: list[str] = []
        pos = 0
        for start, end in _merge(spans, len(text)):
            at = max(start, pos)
            while at < end:
                match = pattern.search(text, at, end)
                if match is None:
                    break
                stop = self._extend(text, match)
                out += [text[pos:match.start()], MASK]
                pos = at = stop
        if not out:
            return text
        out.append(text[pos:])
        return "".join(out)

    def _extend(self, text: str, match: re.Match[str]) -> int:
        """Where the secret that ``match`` found a window of ends in ``text``: the window is
        followed, character by character, as far as the secret goes on."""
        start, end = match.span()
        # Which window matched: the same alternatives with a group each, at the same place (groups
        # make a search many times slower, so the search itself has none).
        windows = self._order[match.re]
        groups = self._compile(match.re, "|".join(f"({self._window(i)})" for i in windows))
        found = groups.match(text, start, end)
        index = windows[(found.lastindex if found is not None and found.lastindex else 1) - 1]
        secret, _, following = self._windows[index]
        while following < len(secret):
            more = self._compile(secret[following], _char(secret[following])).match(text, end)
            if more is None:
                break
            end, following = more.end(), following + 1
        return end

    def bytes(self, data: bytes) -> bytes:
        """The same for bytes (UTF-8; bytes that are not UTF-8 pass through unchanged)."""
        if self._pattern is None or not data:
            return data
        text = data.decode("utf-8", "surrogateescape")
        scrubbed = self.text(text)
        return data if scrubbed is text else scrubbed.encode("utf-8", "surrogateescape")

    def value(self, value: Any) -> Any:
        """A JSON-like value (dicts, lists, tuples, strings) with every string redacted; other
        values as they are."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(k) if isinstance(k, str) else k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.value(v) for v in value)
        return value


def _loose_places(secrets: Iterable[str], windows: list[tuple[str, int, int]]) -> re.Pattern[str]:
    """An expression for the places where a window without a plain run of three can be. Such a
    window has at least two characters that are not plain; when every such window has two that are
    not a space either, two of those (in any form) within a window's length: rare in ordinary text,
    which has spaces everywhere. Otherwise: stretches of a window's length of characters of the
    secrets."""
    alphabet = "".join(sorted({re.escape(c) for s in secrets for c in s}))
    token = f"\\\\*(?:[{alphabet}]|{_ENCODED})"
    specials = {c for secret, start, end in windows for c in secret[start:end] if not _PLAIN.fullmatch(c) and c != " "}
    if all(sum(1 for c in secret[start:end] if c in specials) >= 2 for secret, start, end in windows):
        special = f"\\\\*(?:[{''.join(sorted(re.escape(c) for c in specials))}]|{_ENCODED.replace('|' + chr(92) + '+', '')})"
        return re.compile(f"{special}(?:{token}){{0,{MIN_LENGTH - 2}}}?{special}")
    return re.compile(f"(?:{token}){{{MIN_LENGTH},}}")


def _merge(spans: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        start, end = max(start, 0), min(end, size)
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


@lru_cache(maxsize=16)
def _redactor(secrets: frozenset[str]) -> Redactor:
    return Redactor(secrets)


def _for(secrets: Iterable[str]) -> Redactor:
    return _redactor(secrets if isinstance(secrets, frozenset) else frozenset(secrets))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every form of every secret (and of every fragment of one) replaced by ``***``."""
    return _for(secrets).text(text)


def redact_value(value: object, secrets: Iterable[str]) -> object:
    """A plain JSON-like value with every string redacted (``value`` itself when there are no
    secrets: most plans have none, and this runs for every record)."""
    redactor = _for(secrets)
    if not redactor:
        return value
    value = redactor.value(value)
    return list(value) if isinstance(value, tuple) else value


# -- the run's secrets: one set per process, for every writer ------------------------------------

_ACTIVE = Redactor(())


def activate(secrets: Iterable[str]) -> Redactor:
    """Make ``secrets`` (added to any active already) what :func:`scrub_text` and
    :func:`scrub_bytes` mask in this process; the redactor."""
    global _ACTIVE
    _ACTIVE = _for(frozenset(_ACTIVE.secrets) | frozenset(secrets))
    return _ACTIVE


def deactivate() -> None:
    global _ACTIVE
    _ACTIVE = Redactor(())


def active() -> Redactor:
    return _ACTIVE


def scrub_text(text: str) -> str:
    """``text`` without the run's secrets: what every writer of an output calls last."""
    return _ACTIVE.text(text)


def scrub_bytes(data: bytes) -> bytes:
    """``data`` (UTF-8) without the run's secrets: what every writer of a file calls last."""
    return _ACTIVE.bytes(data)


def scrub_value(value: Any) -> Any:
    """A JSON-like value (or a row of SQL arguments) without the run's secrets."""
    return _ACTIVE.value(value)


# -- plain variables ------------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_variables(items: Iterable[str], source: str) -> dict[str, str]:
    """``NAME=VALUE`` items (``--release-var``, ``release_vars``) as a mapping; a later item wins.
    Raises ``ValueError`` naming the item that is not ``NAME=VALUE``."""
    found: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or not _NAME.fullmatch(name):
            raise ValueError(f"{source} {item!r}: write NAME=VALUE (NAME of letters, digits and _)")
        found[name] = value
    return found
