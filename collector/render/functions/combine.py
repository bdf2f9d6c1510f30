"""Functions combining several series into fewer: sums, ratios, percentages, groups."""

from __future__ import annotations

from itertools import zip_longest
from typing import Any

from collector.render.context import RequestContext
from collector.render.errors import InputParameterError, NormalizeEmptyResult
from collector.render.functions.common import (
    agg_key,
    format_path_expressions,
    normalize,
    xff_values,
)
from collector.render.functions.registry import REGISTRY, Param, T, register
from collector.render.functions.safe import get_agg_func, safe_div, safe_mul, safe_sum
from collector.render.series import TimeSeries

__all__ = ["aggregate", "constant_line"]

SeriesList = list[TimeSeries]
_LISTS = [Param("seriesLists", T.series_list, required=True, multiple=True)]


@register("aggregate", "Combine", [
    Param("seriesList", T.series_list, required=True),
    Param("func", T.agg_func, required=True),
    Param("xFilesFactor", T.float),
])
def aggregate(ctx: RequestContext, seriesList: Any, func: str,
              xFilesFactor: float | None = None) -> SeriesList:
    """Aggregate series point by point with ``func`` (sum, average, min, max, diff...)."""
    raw_func = func
    if func[-6:] == "Series":
        func = func[:-6]
    agg = get_agg_func(func, raw_func)
    if not seriesList:
        return []
    lists = [seriesList] if isinstance(seriesList[0], TimeSeries) else list(seriesList)
    try:
        series_list, start, end, step = normalize(lists)
    except NormalizeEmptyResult:
        return []
    xff = xFilesFactor if xFilesFactor is not None else ctx.x_files_factor
    name = f"{func}Series({format_path_expressions(series_list)})"
    values = [agg(row) if xff_values(row, xff) else None for row in zip_longest(*series_list)]
    tags = dict(series_list[0].tags)
    for series in series_list:
        tags = {k: v for k, v in tags.items() if k in series.tags and series.tags[k] == v}
    if "name" not in tags:
        tags["name"] = name
    tags["aggregatedBy"] = func
    return [TimeSeries(name, start, end, step, values, x_files_factor=xff, tags=tags)]


def _aggregator(names: str | tuple[str, ...], func: str, doc: str) -> None:
    def combine(ctx: RequestContext, *seriesLists: Any) -> SeriesList:
        return aggregate(ctx, list(seriesLists), func)
    combine.__doc__ = doc
    register(names, "Combine", _LISTS, aggregator=True)(combine)


_aggregator(("sumSeries", "sum"), "sum", "Sum of the series at each point (short form: sum).")
_aggregator(("averageSeries", "avg"), "average",
            "Average of the series at each point (short form: avg).")
_aggregator("minSeries", "min", "Minimum of the series at each point.")
_aggregator("maxSeries", "max", "Maximum of the series at each point.")
_aggregator("diffSeries", "diff", "The first series minus the others, at each point.")
_aggregator("stddevSeries", "stddev", "Standard deviation of the series at each point.")
_aggregator("rangeOfSeries", "rangeOf", "Maximum minus minimum of the series at each point.")
_aggregator("multiplySeries", "multiply", "Product of the series at each point.")


@register("divideSeries", "Combine", [
    Param("dividendSeriesList", T.series_list, required=True),
    Param("divisorSeries", T.series_list, required=True),
])
def divideSeries(ctx: RequestContext, dividendSeriesList: SeriesList,
                 divisorSeries: SeriesList) -> SeriesList:
    """Each dividend series divided by the single divisor series (None where it is 0)."""
    if len(divisorSeries) == 0:
        for series in dividendSeriesList:
            series.name = f"divideSeries({series.name},MISSING)"
            series.path_expression = series.name
            for i in range(len(series)):
                series[i] = None
        return dividendSeriesList
    if len(divisorSeries) > 1:
        raise InputParameterError(
            "divideSeries second argument must reference exactly 1 series "
            f"(got {len(divisorSeries)})")
    divisor = divisorSeries[0]
    results = []
    for dividend in dividendSeriesList:
        name = f"divideSeries({dividend.name},{divisor.name})"
        _, start, end, step = normalize([[dividend, divisor]])
        values = [safe_div(a, b) for a, b in zip_longest(dividend, divisor)]
        results.append(TimeSeries(name, start, end, step, values,
                                  x_files_factor=ctx.x_files_factor))
    return results


def _sum_series(group: SeriesList, xff: float) -> TimeSeries:
    name = f"sumSeries({format_path_expressions(group)})"
    _, start, end, step = normalize([group])
    values = [safe_sum(row) for row in zip_longest(*group)]
    return TimeSeries(name, start, end, step, values, x_files_factor=xff)


def _percent(a: Any, b: Any) -> Any:
    return safe_mul(safe_div(a, b), 100.0)


def _as_percent_by_nodes(ctx: RequestContext, seriesList: SeriesList, total: Any,
                         nodes: tuple[Any, ...]) -> SeriesList:
    xff = ctx.x_files_factor
    keys: list[str] = []
    meta: dict[str, SeriesList] = {}
    for series in seriesList:
        key = agg_key(series, nodes)
        if key not in meta:
            meta[key] = [series]
            keys.append(key)
        else:
            meta[key].append(series)
    totals: dict[str, TimeSeries] = {}
    if total is None:
        for key in keys:
            group = meta[key]
            totals[key] = group[0] if len(group) == 1 else _sum_series(group, xff)
    elif isinstance(total, list):
        grouped: dict[str, SeriesList] = {}
        for series in total:
            key = agg_key(series, nodes)
            grouped.setdefault(key, []).append(series)
            if key not in keys:
                keys.append(key)
        for key, group in grouped.items():
            totals[key] = group[0] if len(group) == 1 else _sum_series(group, xff)
    else:
        raise InputParameterError(
            "asPercent: total must be None or a seriesList when nodes are given")
    results = []
    for key in keys:
        if key not in meta:
            total_series = totals[key]
            results.append(TimeSeries(
                f"asPercent(MISSING,{total_series.name})", total_series.start, total_series.end,
                total_series.step, [None for _ in total_series], x_files_factor=xff))
            continue
        for series in meta[key]:
            if key not in totals:
                name = f"asPercent({series.name},MISSING)"
                start, end, step = series.start, series.end, series.step
                values = [None for _ in series]
            else:
                total_series = totals[key]
                name = f"asPercent({series.name},{total_series.name})"
                _, start, end, step = normalize([[series, total_series]])
                values = [_percent(a, b) for a, b in zip_longest(series, total_series)]
            results.append(TimeSeries(name, start, end, step, values, x_files_factor=xff))
    return results


@register(("asPercent", "pct"), "Combine", [
    Param("seriesList", T.series_list, required=True),
    Param("total", T.any),
    Param("nodes", T.node_or_tag, multiple=True),
], aggregator=True)
def asPercent(ctx: RequestContext, seriesList: SeriesList, total: Any = None,
              *nodes: Any) -> SeriesList:
    """Each series as a percentage of a total: a number, one series, matching series, or
    (when omitted) the sum of all; with ``nodes``, series and totals are matched by key."""
    normalize([seriesList])
    xff = ctx.x_files_factor
    if nodes:
        return _as_percent_by_nodes(ctx, seriesList, total, nodes)
    total_values: Any
    if total is None:
        total_values = [safe_sum(row) for row in zip_longest(*seriesList)]
        total_text = f"sumSeries({format_path_expressions(seriesList)})"
    elif isinstance(total, list):
        if len(total) != 1 and len(total) != len(seriesList):
            raise InputParameterError(
                "asPercent second argument must be missing, a single digit, reference exactly "
                "1 series or reference the same number of series as the first argument")
        if len(total) == 1:
            normalize([seriesList, total])
            total_values = total[0]
            total_text = total_values.name
    elif isinstance(total, (int, float)) and not isinstance(total, bool):
        total_values = [total] * len(seriesList[0])
        total_text = str(total)
    else:
        raise InputParameterError(f"asPercent total must be a number or a series list: {total!r}")
    results = []
    if isinstance(total, list) and len(total) == len(seriesList):
        pairs = zip(sorted(seriesList, key=lambda s: s.name),
                    sorted(total, key=lambda s: s.name), strict=True)
        for s1, s2 in pairs:
            _, start, end, step = normalize([[s1, s2]])
            values = [_percent(a, b) for a, b in zip_longest(s1, s2)]
            results.append(TimeSeries(f"asPercent({s1.name},{s2.name})", start, end, step,
                                      values, x_files_factor=xff))
        return results
    for series in seriesList:
        values = [_percent(a, b) for a, b in zip_longest(series, total_values)]
        name = f"asPercent({series.name},{total_text or series.path_expression})"
        results.append(TimeSeries(name, series.start, series.end, series.step, values,
                                  x_files_factor=xff))
    return results


def constant_line(ctx: RequestContext, value: float) -> TimeSeries:
    """graphite's constantLine: three points spanning the request."""
    step = int((ctx.end - ctx.start) / 2.0)
    series = TimeSeries(str(value), ctx.start, ctx.end, step, [value, value, value],
                        x_files_factor=ctx.x_files_factor)
    series.path_expression = f"constantLine({value})"
    return series


@register("countSeries", "Combine", [Param("seriesLists", T.series_list, multiple=True)],
          aggregator=True)
def countSeries(ctx: RequestContext, *seriesLists: Any) -> SeriesList:
    """A line at the number of series given, at every point."""
    if seriesLists:
        series_list, start, end, step = normalize(seriesLists)
        name = f"countSeries({format_path_expressions(series_list)})"
        values = [len(row) for row in zip_longest(*series_list)]
        series = TimeSeries(name, start, end, step, values, x_files_factor=ctx.x_files_factor)
        series.path_expression = name
    else:
        series = constant_line(ctx, 0)
        series.path_expression = "countSeries()"
    return [series]


@register("groupByNodes", "Combine", [
    Param("seriesList", T.series_list, required=True),
    Param("callback", T.agg_or_series_func, required=True),
    Param("nodes", T.node_or_tag, multiple=True),
])
def groupByNodes(ctx: RequestContext, seriesList: SeriesList, callback: str,
                 *nodes: Any) -> SeriesList:
    """Groups series by the given nodes and combines each group with ``callback``."""
    meta: dict[str, Any] = {}
    keys: list[str] = []
    for series in seriesList:
        key = agg_key(series, nodes)
        if key not in meta:
            meta[key] = [series]
            keys.append(key)
        else:
            meta[key].append(series)
    for key in list(meta):
        spec = REGISTRY.get(callback)
        if spec is not None:
            combined = spec.func(ctx, meta[key])
        else:
            combined = aggregate(ctx, meta[key], callback)
        if not combined:
            raise InputParameterError(f"groupByNodes callback {callback!r} returned no series")
        meta[key] = combined[0]
        meta[key].name = key
    return [meta[key] for key in keys]


@register("groupByNode", "Combine", [
    Param("seriesList", T.series_list, required=True),
    Param("nodeNum", T.node_or_tag, required=True),
    Param("callback", T.agg_or_series_func, default="average"),
])
def groupByNode(ctx: RequestContext, seriesList: SeriesList, nodeNum: Any,
                callback: str = "average") -> SeriesList:
    """Groups series by one node and combines each group with ``callback``."""
    return groupByNodes(ctx, seriesList, callback, nodeNum)
