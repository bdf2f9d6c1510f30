"""Per-request state handed to every render function (graphite's ``requestContext``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import tzinfo
from typing import TYPE_CHECKING

from collector.render.errors import LimitExceeded

if TYPE_CHECKING:
    from collector.render.grammar import Node
    from collector.render.series import TimeSeries
    from collector.series import SeriesSource

__all__ = ["RequestContext", "SeriesBudget"]


class SeriesBudget:
    """Counts series fetched by one request; raises once ``limit`` would be passed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, count: int) -> None:
        self.used += count
        if self.used > self.limit:
            raise LimitExceeded(
                f"request matches more than max_series={self.limit} series; narrow the targets")


@dataclass
class RequestContext:
    """Time bounds in epoch seconds plus what functions need to fetch more data."""

    start: int
    end: int
    now: int
    tz: tzinfo
    source: SeriesSource
    budget: SeriesBudget
    evaluate: Callable[[RequestContext, Node], list[TimeSeries]]
    x_files_factor: float = 0.0
    args: tuple[Node, ...] = field(default=())

    def shifted(self, start: int | None = None, end: int | None = None) -> RequestContext:
        """A copy with other time bounds, for functions that re-fetch (timeShift...)."""
        return replace(self, start=self.start if start is None else start,
                       end=self.end if end is None else end)
