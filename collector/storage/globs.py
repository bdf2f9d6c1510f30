"""Graphite glob matching, one path segment at a time (pure; no file system).

Semantics follow graphite-web's finders: braces are expanded first (``{a,b}``, innermost
first), then each variant is an :mod:`fnmatch` pattern (``*``, ``?``, ``[a-z]``, ``[!a]``).
A ``*`` never crosses a ``.``, because patterns are matched segment by segment.
"""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache

__all__ = ["split_pattern", "has_wildcard", "expand_braces", "compile_segment", "match_path"]

_BRACES = re.compile(r"\{([^{}]*)\}")
_FORBIDDEN = ("/", "\\", "\x00")


def split_pattern(pattern: str) -> list[str]:
    """Segments of a find pattern; ValueError when it could name something outside the tree."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
    if not pattern:
        raise ValueError("pattern is empty")
    # A '.' inside braces ({a.b,c}) would be split; graphite-web does the same.
    parts = pattern.split(".")
    for part in parts:
        if not part:
            raise ValueError(f"pattern {pattern!r} has an empty segment")
        if any(ch in part for ch in _FORBIDDEN) or not part.isprintable():
            raise ValueError(f"pattern {pattern!r} has a forbidden character in {part!r}")
    return parts


def has_wildcard(segment: str) -> bool:
    """Whether ``segment`` needs a directory listing (graphite-web's test, plus braces)."""
    return any(ch in segment for ch in "*?[{")


def expand_braces(segment: str) -> list[str]:
    """All brace variants of ``segment``, sorted and without duplicates."""
    match = _BRACES.search(segment)
    if match is None:
        return [segment]
    out: set[str] = set()
    for alt in match.group(1).split(","):
        out.update(expand_braces(segment[: match.start()] + alt + segment[match.end():]))
    return sorted(out)


@lru_cache(maxsize=4096)
def compile_segment(segment: str) -> re.Pattern[str]:
    """One regex matching a whole name against every brace variant of ``segment``."""
    variants = [fnmatch.translate(v) for v in expand_braces(segment)]
    return re.compile("|".join(f"(?:{v})" for v in variants))


def match_path(parts: list[str], path: str) -> bool | None:
    """Match a dotted ``path`` against pattern ``parts``.

    Returns True when the whole path matches (a leaf), False when the first
    ``len(parts)`` segments match and the path is longer (a branch), None otherwise.
    """
    segments = path.split(".")
    if len(segments) < len(parts):
        return None
    for part, seg in zip(parts, segments, strict=False):
        if compile_segment(part).fullmatch(seg) is None:
            return None
    return len(segments) == len(parts)
