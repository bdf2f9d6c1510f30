"""Helpers shared by the render functions (graphite's normalize, xff, aggKey...)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import reduce
from math import gcd
from typing import Any

from collector.render.errors import NormalizeEmptyResult
from collector.render.grammar import first_path_expression
from collector.render.series import TimeSeries

__all__ = ["lcm", "normalize", "xff", "xff_values", "agg_key", "format_path_expressions",
           "key_func", "INF"]

INF = float("inf")


def lcm(a: int, b: int) -> int:
    if a == b:
        return a
    if a < b:
        a, b = b, a
    return a // gcd(a, b) * b


def normalize(
        series_lists: Sequence[Sequence[TimeSeries]]) -> tuple[list[TimeSeries], int, int, int]:
    """Bring series to a common step (their lcm); returns (series, start, end, step)."""
    if series_lists:
        series_list = [s for lst in series_lists for s in lst]
        if series_list:
            step = reduce(lcm, [s.step for s in series_list])
            for s in series_list:
                s.consolidate(step // s.step)
            start = min(s.start for s in series_list)
            end = max(s.end for s in series_list)
            end -= (end - start) % step
            return series_list, start, end, step
    raise NormalizeEmptyResult()


def xff(non_null: int, total: float, x_files_factor: float | None = None) -> bool:
    if not non_null or not total:
        return False
    return non_null / total >= (x_files_factor if x_files_factor is not None else 0.0)


def xff_values(values: Sequence[Any], x_files_factor: float | None) -> bool:
    if not values:
        return False
    return xff(len([v for v in values if v is not None]), len(values), x_files_factor)


def _node_or_tag(series: TimeSeries, n: Any, path_expression: str | None) -> str:
    try:
        if n == int(n):
            return str((path_expression or series.name).split(";", 2)[0].split(".")[n])
    except (ValueError, IndexError, TypeError, OverflowError):
        pass
    return series.tags.get(str(n), "")


def agg_key(series: TimeSeries, nodes: Iterable[Any], path_expression: str | None = None) -> str:
    """The name parts selected by ``nodes`` (indices or tag names), joined by dots."""
    name = str(series.name)
    if path_expression is None and name and name[-1] == ")":
        path_expression = first_path_expression(name)
    return ".".join(_node_or_tag(series, n, path_expression) for n in nodes)


def format_path_expressions(series_list: Iterable[TimeSeries]) -> str:
    seen: list[str] = []
    for s in series_list:
        if s.path_expression not in seen:
            seen.append(s.path_expression)
    return ",".join(str(p) for p in seen)


def key_func(func: Any) -> Any:
    """Sort key treating None as -inf (Python 2 ordering, as graphite keeps)."""
    def safe(values: Sequence[Any]) -> Any:
        val = func(values)
        return val if val is not None else -INF
    return safe
