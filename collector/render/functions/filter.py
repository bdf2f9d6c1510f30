"""Functions choosing, ordering or blanking series: highest*, lowest*, limit, remove*."""

from __future__ import annotations

from typing import Any

from collector.render.context import RequestContext
from collector.render.functions.common import key_func
from collector.render.functions.registry import Param, T, register
from collector.render.functions.safe import get_agg_func, safe_max, safe_min
from collector.render.series import TimeSeries

__all__: list[str] = []

SeriesList = list[TimeSeries]
_SERIES = Param("seriesList", T.series_list, required=True)
_N = Param("n", T.integer, required=True)


@register("highest", "Filter Series", [
    _SERIES, Param("n", T.integer, required=True), Param("func", T.agg_func, default="average")])
def highest(ctx: RequestContext, seriesList: SeriesList, n: int = 1,
            func: str = "average") -> SeriesList:
    """The ``n`` series with the highest ``func`` over the period."""
    seriesList.sort(key=key_func(get_agg_func(func)), reverse=True)
    return seriesList[:int(n)]


@register("lowest", "Filter Series", [
    _SERIES, Param("n", T.integer, required=True), Param("func", T.agg_func, default="average")])
def lowest(ctx: RequestContext, seriesList: SeriesList, n: int = 1,
           func: str = "average") -> SeriesList:
    """The ``n`` series with the lowest ``func`` over the period."""
    seriesList.sort(key=key_func(get_agg_func(func)))
    return seriesList[:int(n)]


def _ranked(name: str, pick: Any, func: str, doc: str) -> None:
    def ranked(ctx: RequestContext, seriesList: SeriesList, n: int) -> SeriesList:
        return pick(ctx, seriesList, n, func)
    ranked.__doc__ = doc
    register(name, "Filter Series", [_SERIES, _N])(ranked)


_ranked("highestCurrent", highest, "current", "The ``n`` series with the highest last value.")
_ranked("highestAverage", highest, "average", "The ``n`` series with the highest average.")
_ranked("highestMax", highest, "max", "The ``n`` series with the highest maximum.")
_ranked("lowestCurrent", lowest, "current", "The ``n`` series with the lowest last value.")
_ranked("lowestAverage", lowest, "average", "The ``n`` series with the lowest average.")


@register("limit", "Filter Series", [_SERIES, _N])
def limit(ctx: RequestContext, seriesList: SeriesList, n: int) -> SeriesList:
    """Only the first ``n`` series."""
    return seriesList[0:n]


@register("sortByMaxima", "Sorting", [_SERIES])
def sortByMaxima(ctx: RequestContext, seriesList: SeriesList) -> SeriesList:
    """Series in descending order of their maximum."""
    seriesList.sort(key=key_func(safe_max), reverse=True)
    return seriesList


@register("sortByMinima", "Sorting", [_SERIES])
def sortByMinima(ctx: RequestContext, seriesList: SeriesList) -> SeriesList:
    """Series in ascending order of their minimum (series never above 0 dropped)."""
    def new_func(values: Any) -> Any:
        return safe_min(values)
    seriesList = [s for s in seriesList if (safe_max(s) or 0) > 0]
    seriesList.sort(key=key_func(new_func))
    return seriesList


@register("removeAboveValue", "Filter Data", [_SERIES, Param("n", T.float, required=True)])
def removeAboveValue(ctx: RequestContext, seriesList: SeriesList, n: float) -> SeriesList:
    """Values above ``n`` become null."""
    for s in seriesList:
        s.name = f"removeAboveValue({s.name}, {n:g})"
        s.path_expression = s.name
        for index, val in enumerate(s):
            if val is not None and val > n:
                s[index] = None
    return seriesList


@register("removeBelowValue", "Filter Data", [_SERIES, Param("n", T.float, required=True)])
def removeBelowValue(ctx: RequestContext, seriesList: SeriesList, n: float) -> SeriesList:
    """Values below ``n`` become null."""
    for s in seriesList:
        s.name = f"removeBelowValue({s.name}, {n:g})"
        s.path_expression = s.name
        for index, val in enumerate(s):
            if val is None or val < n:
                s[index] = None
    return seriesList
