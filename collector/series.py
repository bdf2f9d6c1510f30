"""The seam between storage and the render API.

Storage (:mod:`collector.storage`) implements :class:`SeriesSource`; the render engine
(:mod:`collector.render`) reads only through it, so it can be tested on memory and
served from whisper files plus the write cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["MetricNode", "FetchedSeries", "SeriesSource", "Point"]

# One accepted data point: (metric path, epoch seconds, value).
Point = tuple[str, int, float]


@dataclass(frozen=True, slots=True)
class MetricNode:
    """A node of the metric tree: a leaf is a series, a branch has children."""

    path: str
    is_leaf: bool


@dataclass(slots=True)
class FetchedSeries:
    """Raw values of one metric, one per ``step`` from ``start`` (inclusive) to ``end``."""

    path: str
    start: int
    end: int
    step: int
    values: list[float | None]
    aggregation_method: str = "average"
    x_files_factor: float = 0.0


class SeriesSource(Protocol):
    """Where render reads from. Both methods are blocking; callers run them off the loop."""

    def find(self, pattern: str) -> list[MetricNode]:
        """Nodes matching a Graphite glob (``*``, ``?``, ``[a-z]``, ``{a,b}``), sorted by path."""
        ...

    def fetch(self, path: str, start: int, end: int,
              now: int | None = None) -> FetchedSeries | None:
        """Values of leaf ``path`` in [start, end), archive chosen as graphite-web does."""
        ...
