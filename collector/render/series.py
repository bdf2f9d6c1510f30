"""The series record the render functions work on, mirroring graphite-web's ``TimeSeries``.

It is deliberately a mutable ``list`` subclass like graphite's: functions rename series,
rewrite values in place and set ``values_per_point``, and iterating a consolidated series
yields consolidated values while ``len`` and indexing see the raw ones. Matching those
semantics is what keeps our output value-for-value equal to graphite-web's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["TimeSeries", "Tags", "parse_tags", "CONSOLIDATION_FUNCS"]

Value = float | int | None

_FUNCTION_NAME = re.compile(r"^[a-z]+[(].+[)]$", re.IGNORECASE)


def _cf_average(vals: list[float]) -> float:
    return sum(vals) / len(vals)


CONSOLIDATION_FUNCS: dict[str, Any] = {
    "sum": sum,
    "average": _cf_average,
    "avg": _cf_average,
    "avg_zero": _cf_average,
    "max": max,
    "min": min,
    "first": lambda vals: vals[0],
    "last": lambda vals: vals[-1],
}


class Tags(dict[str, str]):
    """Series tags; every value is stored as ``str`` as graphite's ``Tags`` does."""

    def __init__(self, items: dict[str, Any] | None = None) -> None:
        super().__init__()
        for key, value in (items or {}).items():
            self[key] = value

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, str(value))


def parse_tags(name: str) -> Tags:
    """Tags graphite's tag database derives from a series name (``path;k=v;...``)."""
    if _FUNCTION_NAME.match(name):
        return Tags({"name": name})
    segments = name.split(";")
    metric = segments[0]
    if not metric:
        return Tags({"name": name})
    tags: dict[str, str] = {}
    for segment in segments[1:]:
        pair = segment.split("=", 1)
        if len(pair) != 2 or not pair[0] or not pair[1]:
            return Tags({"name": name})
        tags[pair[0]] = pair[1]
    sanitized = metric.lstrip("~")
    tags["name"] = sanitized or name
    return Tags(tags)


class TimeSeries(list[Value]):
    """Values of one series from ``start`` (inclusive) every ``step`` seconds to ``end``."""

    def __init__(self, name: str, start: int, end: int, step: int, values: Iterable[Value],
                 consolidate: str = "average", tags: dict[str, Any] | None = None,
                 x_files_factor: float | None = None,
                 path_expression: str | None = None) -> None:
        super().__init__(values)
        self.name: Any = name
        self.start = start
        self.end = end
        self.step = step
        self.consolidation_func = consolidate
        self.values_per_point = 1
        self.path_expression: Any = path_expression or name
        self.x_files_factor = x_files_factor if x_files_factor is not None else 0.0
        if isinstance(tags, Tags):
            self.tags: Tags = tags  # shared, as graphite's copy() shares them
        else:
            self.tags = Tags(tags) if tags else parse_tags(str(name))

    def __iter__(self) -> Iterator[Value]:
        if self.values_per_point > 1:
            return self._consolidating(list.__iter__(self))
        return list.__iter__(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__  # type: ignore[assignment]

    def consolidate(self, values_per_point: int) -> None:
        """Make iteration yield one value per ``values_per_point`` raw values."""
        self.values_per_point = int(values_per_point)

    def _consolidating(self, raw: Iterator[Value]) -> Iterator[Value]:
        func = CONSOLIDATION_FUNCS.get(self.consolidation_func)
        if func is None:
            raise ValueError(f"Invalid consolidation function: '{self.consolidation_func}'")
        vpp = self.values_per_point
        buf: list[float] = []
        count = non_null = 0
        for value in raw:
            count += 1
            if value is not None:
                buf.append(value)
                non_null += 1
            elif self.consolidation_func == "avg_zero":
                buf.append(0)
            if count == vpp:
                yield func(buf) if non_null and non_null / vpp >= self.x_files_factor else None
                buf, count, non_null = [], 0, 0
        if count > 0:
            yield func(buf) if non_null and non_null / vpp >= self.x_files_factor else None

    def copy(self, name: str | None = None, start: int | None = None,  # type: ignore[override]
             end: int | None = None, step: int | None = None,
             values: Iterable[Value] | None = None) -> TimeSeries:
        """A new series sharing tags, consolidation and xFilesFactor (graphite's ``copy``)."""
        return TimeSeries(
            name if name is not None else self.name,
            start if start is not None else self.start,
            end if end is not None else self.end,
            step if step is not None else self.step,
            values if values is not None else list.__iter__(self),
            consolidate=self.consolidation_func,
            tags=self.tags,
            x_files_factor=self.x_files_factor,
        )

    def datapoints(self) -> list[tuple[Value, int]]:
        """``(value, timestamp)`` pairs as graphite's JSON output lists them."""
        timestamps = range(int(self.start), int(self.end) + 1,
                           int(self.step * self.values_per_point))
        return list(zip(self, timestamps, strict=False))

    def __repr__(self) -> str:
        return (f"TimeSeries(name={self.name!r}, start={self.start}, end={self.end}, "
                f"step={self.step}, values_per_point={self.values_per_point}, "
                f"consolidation_func={self.consolidation_func!r})")
