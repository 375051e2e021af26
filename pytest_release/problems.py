"""Problems found in a plan, each pointing at ``FILE:LINE:COL`` and a path in the plan."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["PlanError", "Problem", "did_you_mean", "format_path"]

PathT = tuple[object, ...]
_PLAIN_KEY = re.compile(r"[^\s\[\]'\"=]+")


def format_path(path: Sequence[object]) -> str:
    """``("validation", "gates", 0, "checks")`` -> ``validation.gates[0].checks``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not isinstance(part, str) or not _PLAIN_KEY.fullmatch(part):  # '', 'A=B', 'a b', True
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(plan)"


def did_you_mean(word: object, choices: Iterable[object]) -> str:
    """`` (did you mean 'x'?)`` when a choice is close to ``word``, else ``""``; choices that are
    not names (a missing name is ``None``) are passed over."""
    names = sorted({c for c in choices if isinstance(c, str)})
    close = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a plan."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        """One line, bounded: control characters (a newline in a key) are shown escaped."""
        return (f"{_one_line(self.file, 300)}:{max(self.line, 1)}:{max(self.col, 1)}: "
                f"{_one_line(self.path, 300) or '(plan)'}: {_one_line(self.message, MAX_MESSAGE)}")


#: The longest a problem's message is shown (a value quoted in it is cut, not the file's text).
MAX_MESSAGE = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _one_line(text: str, limit: int) -> str:
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class PlanError(Exception):
    """A plan that cannot run; carries every problem found, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.col, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))
