"""An in-memory SeriesSource for the render tests (glob find, graphite-like fetch)."""

from __future__ import annotations

import fnmatch
import re

from collector.series import FetchedSeries, MetricNode

__all__ = ["MemorySource"]


def _glob_to_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for part in pattern.split("."):
        alternatives = re.sub(r"\{([^}]*)\}", lambda m: "@@" + m.group(1).replace(",", "|") + "@@",
                              part)
        out = ""
        for chunk in re.split(r"(@@[^@]*@@)", alternatives):
            if chunk.startswith("@@"):
                out += "(?:" + "|".join(fnmatch.translate(a)[4:-3]
                                        for a in chunk[2:-2].split("|")) + ")"
            else:
                out += fnmatch.translate(chunk)[4:-3] if chunk else ""
        parts.append(out)
    return re.compile(r"\.".join(parts) + r"\Z")


class MemorySource:
    """Series held as {path: (start, step, values)}; fetch returns [start, end) like whisper:
    the first point is the first step boundary after ``start``."""

    def __init__(self, series: dict[str, tuple[int, int, list[float | None]]]) -> None:
        self.series = series
        self.fetches: list[tuple[str, int, int]] = []

    def find(self, pattern: str) -> list[MetricNode]:
        regex = _glob_to_regex(pattern)
        nodes: dict[str, bool] = {}
        for path in self.series:
            parts = path.split(".")
            for depth in range(1, len(parts) + 1):
                prefix = ".".join(parts[:depth])
                if regex.match(prefix):
                    nodes[prefix] = nodes.get(prefix, False) or depth == len(parts)
        return [MetricNode(p, leaf) for p, leaf in sorted(nodes.items())]

    def fetch(self, path: str, start: int, end: int, now: int | None = None) -> FetchedSeries | None:
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
