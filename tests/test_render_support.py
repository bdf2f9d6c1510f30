"""An in-memory SeriesSource for the render tests (glob find, graphite-like fetch)."""

from __future__ import annotations

import re

from collector.series import FetchedSeries, MetricNode

__all__ = ["MemorySource"]


def _glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Graphite glob -> regex: ``*``/``?`` never cross a dot, ``[..]`` and ``{a,b}`` kept."""
    out = ""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out += "[^.]*"
        elif ch == "?":
            out += "[^.]"
        elif ch == "[":
            close = pattern.index("]", i)
            out += pattern[i:close + 1]
            i = close
        elif ch == "{":
            close = pattern.index("}", i)
            out += "(?:" + "|".join(re.escape(a) for a in pattern[i + 1:close].split(",")) + ")"
            i = close
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + r"\Z")


class MemorySource:
    """Series held as {path: (start, step, values)}; fetch returns [start, end) like whisper:
    the first point is the first step boundary after ``start``."""

    def __init__(self, series: dict[str, tuple[int, int, list[float | None]]]) -> None:
        self.series = series
        self.fetches: list[tuple[str, int, int]] = []

    def find(self, pattern: str) -> list[MetricNode]:
        if "/" in pattern:  # as the real storage does for unsafe patterns
            raise ValueError(f"unsafe pattern {pattern!r}")
        regex = _glob_to_regex(pattern)
        nodes: dict[str, bool] = {}
        for path in self.series:
            parts = path.split(".")
            for depth in range(1, len(parts) + 1):
                prefix = ".".join(parts[:depth])
                if regex.match(prefix):
                    nodes[prefix] = nodes.get(prefix, False) or depth == len(parts)
        return [MetricNode(p, leaf) for p, leaf in sorted(nodes.items())]

    def fetch(self, path: str, start: int, end: int,
              now: int | None = None) -> FetchedSeries | None:
        if path not in self.series:
            return None
        self.fetches.append((path, start, end))
        first, step, values = self.series[path]
        from_ts = start - (start % step) + step
        until_ts = end - (end % step) + step
        out = []
        for ts in range(from_ts, until_ts, step):
            i = (ts - first) // step
            out.append(values[i] if 0 <= i < len(values) and (ts - first) % step == 0 else None)
        return FetchedSeries(path, from_ts, until_ts, step, out)
