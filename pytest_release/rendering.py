"""HTML from the package's Jinja2 templates (``pytest_release/templates/*.j2``, package data).

Every value a template prints is escaped (autoescaping), so a plan's names, a check's messages and
a service's answers show as text, never as markup; a template marks the markup it builds itself
(badges, charts) with macros. A name a template does not define is an error (``StrictUndefined``),
not an empty string. Jinja2 is imported on first use: a run without a plan renders nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

__all__ = ["render"]


def _bytecode_cache() -> Any:
    """Jinja2's per-user bytecode cache (a private folder in the temporary directory, keyed by the
    template's source): every run renders its pages, and compiling a template each time would cost
    more than rendering it. ``None`` where the folder cannot be made."""
    import jinja2

    try:
        return jinja2.FileSystemBytecodeCache()
    except (OSError, RuntimeError):
        return None


@functools.lru_cache(maxsize=16)
def _environment(filters: tuple[tuple[str, Callable[..., Any]], ...]) -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("pytest_release", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined, bytecode_cache=_bytecode_cache())
    env.filters.update(dict(filters))
    return env


def render(name: str, filters: Mapping[str, Callable[..., Any]] | None = None, /, **context: Any) -> str:
    """The template ``name`` rendered with ``context``; ``filters`` are the template's own filters
    (each set of filters has its environment, so two pages' filters of one name never meet)."""
    env = _environment(tuple(sorted((filters or {}).items())))
    return env.get_template(name).render(**context)
