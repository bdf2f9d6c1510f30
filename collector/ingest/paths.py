"""Metric path validation: what a Graphite path may contain before it becomes a file name."""

from __future__ import annotations

import re

__all__ = ["check_path", "MAX_PATH_BYTES", "MAX_SEGMENT_BYTES"]

MAX_PATH_BYTES = 1024
MAX_SEGMENT_BYTES = 200  # leaves room for ".wsp" under every file system's NAME_MAX of 255
# Whitespace, ASCII and C1 control characters, path separators of any OS, glob and tag syntax.
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f/\\*?\[\]{};]")


def check_path(path: str) -> str | None:
    """Return why ``path`` is not a storable metric path, or None when it is.

    A path is dot-separated, non-empty segments: no leading or trailing dot, no ``..``,
    no ``/`` or ``\\`` (so it can never name a file outside the data directory), no
    control characters, no glob or tag characters, bounded length.
    """
    if not path:
        return "empty path"
    if len(path) > MAX_PATH_BYTES:
        return f"path longer than {MAX_PATH_BYTES} characters"
    bad = _FORBIDDEN.search(path)
    if bad is not None:
        return f"forbidden character {bad.group()!r} at offset {bad.start()}"
    if path[0] == "." or path[-1] == "." or ".." in path:
        return "empty path segment"
    if len(path) > MAX_SEGMENT_BYTES and any(
        len(segment.encode()) > MAX_SEGMENT_BYTES for segment in path.split(".")
    ):
        return f"path segment longer than {MAX_SEGMENT_BYTES} bytes"
    return None
