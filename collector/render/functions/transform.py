"""Functions transforming each series on its own: scaling, derivatives, windows, shifts."""

from __future__ import annotations

from itertools import zip_longest
from typing import Any

from collector.render.attime import interval_seconds, parse_time_offset
from collector.render.context import RequestContext
from collector.render.errors import InputParameterError
from collector.render.functions.common import INF, xff
from collector.render.functions.registry import Param, T, register
from collector.render.functions.safe import get_agg_func, safe_abs
from collector.render.series import TimeSeries

__all__: list[str] = []

SeriesList = list[TimeSeries]
MAX_BUCKETS = 1_000_000
_SERIES = Param("seriesList", T.series_list, required=True)
_WINDOW_SUGGESTIONS = (5, 7, 10, "1min", "5min", "10min", "30min", "1hour")


@register("scale", "Transform", [_SERIES, Param("factor", T.float, required=True)])
def scale(ctx: RequestContext, seriesList: SeriesList, factor: float) -> SeriesList:
    """Multiplies every value by ``factor``."""
    for series in seriesList:
        series.tags["scale"] = factor
        series.name = f"scale({series.name},{float(factor):g})"
        series.path_expression = series.name
        # safe_mul(value, factor) for every value, without a call per point.
        multiplier = float(factor)
        series[:] = [None if value is None else float(value) * multiplier for value in series]
    return seriesList


@register("offset", "Transform", [_SERIES, Param("factor", T.float, required=True)])
def offset(ctx: RequestContext, seriesList: SeriesList, factor: float) -> SeriesList:
    """Adds ``factor`` to every value."""
    for series in seriesList:
        series.tags["offset"] = factor
        series.name = f"offset({series.name},{float(factor):g})"
        series.path_expression = series.name
        for i, value in enumerate(series):
            if value is not None:
                series[i] = value + factor
    return seriesList


@register("absolute", "Transform", [_SERIES])
def absolute(ctx: RequestContext, seriesList: SeriesList) -> SeriesList:
    """The absolute value of every value."""
    for series in seriesList:
        series.tags["absolute"] = 1
        series.name = f"absolute({series.name})"
        series.path_expression = series.name
        for i, value in enumerate(series):
            series[i] = safe_abs(value)
    return seriesList


@register("keepLastValue", "Transform", [_SERIES, Param("limit", T.int_or_inf, default=INF)])
def keepLastValue(ctx: RequestContext, seriesList: SeriesList, limit: float = INF) -> SeriesList:
    """Fills gaps of at most ``limit`` nulls with the last value seen."""
    for series in seriesList:
        series.name = f"keepLastValue({series.name})"
        series.path_expression = series.name
        nones = 0
        last = None
        for i, value in enumerate(series):
            if value is None:
                nones += 1
            else:
                if 0 < nones <= limit and last is not None:
                    for index in range(i - nones, i):
                        series[index] = last
                nones = 0
                last = value
        if 0 < nones <= limit and last is not None:
            for index in range(len(series) - nones, len(series)):
                series[index] = last
    return seriesList


@register("transformNull", "Transform", [
    _SERIES, Param("default", T.float, default=0), Param("referenceSeries", T.series_list)])
def transformNull(ctx: RequestContext, seriesList: SeriesList, default: float = 0,
                  referenceSeries: SeriesList | None = None) -> SeriesList:
    """Replaces nulls by ``default`` (only where some reference series has a value)."""
    defaults = None
    if referenceSeries:
        defaults = [default if any(v is not None for v in row) else None
                    for row in zip_longest(*referenceSeries)]
    for series in seriesList:
        series.tags["transformNull"] = default
        if referenceSeries:
            series.tags["referenceSeries"] = 1
            series.name = f"transformNull({series.name},{default:g},referenceSeries)"
        else:
            series.name = f"transformNull({series.name},{default:g})"
        series.path_expression = series.name
        if defaults:
            values = [d if v is None else v for v, d in zip_longest(series, defaults)]
        else:
            values = [default if v is None else v for v in series]
        series.extend(values)
        del series[:len(values)]
    return seriesList


def _non_negative_delta(val: Any, prev: Any, max_value: float | None,
                        min_value: float | None) -> tuple[Any, Any]:
    if max_value is not None and val is not None and val > max_value:
        return None, None
    if min_value is not None and val is not None and val < min_value:
        return None, None
    if prev is None or val is None:
        return None, val
    if val >= prev:
        return val - prev, val
    if max_value is not None:
        return max_value + 1 + val - prev - (min_value or 0), val
    if min_value is not None:
        return val - min_value, val
    return None, val


_MAX_MIN = [Param("maxValue", T.float), Param("minValue", T.float)]


@register("nonNegativeDerivative", "Transform", [_SERIES, *_MAX_MIN])
def nonNegativeDerivative(ctx: RequestContext, seriesList: SeriesList,
                          maxValue: float | None = None,
                          minValue: float | None = None) -> SeriesList:
    """Point-to-point increase; a decrease is null, or a wrap at ``maxValue``/``minValue``."""
    results = []
    for series in seriesList:
        values = []
        prev = None
        for val in series:
            delta, prev = _non_negative_delta(val, prev, maxValue, minValue)
            values.append(delta)
        series.tags["nonNegativeDerivative"] = 1
        results.append(series.copy(name=f"nonNegativeDerivative({series.name})", values=values))
    return results


@register("perSecond", "Transform", [_SERIES, *_MAX_MIN])
def perSecond(ctx: RequestContext, seriesList: SeriesList, maxValue: float | None = None,
              minValue: float | None = None) -> SeriesList:
    """nonNegativeDerivative divided by the step, rounded to 6 decimals."""
    results = []
    for series in seriesList:
        values: list[Any] = []
        prev = None
        step = series.step
        for val in series:
            delta, prev = _non_negative_delta(val, prev, maxValue, minValue)
            if delta is None:
                values.append(None)
                continue
            try:
                values.append(round(delta / step, 6))
            except OverflowError:
                values.append(delta // step)
        series.tags["perSecond"] = 1
        results.append(series.copy(name=f"perSecond({series.name})", values=values))
    return results


@register("derivative", "Transform", [_SERIES])
def derivative(ctx: RequestContext, seriesList: SeriesList) -> SeriesList:
    """Point-to-point difference (null after a null)."""
    results = []
    for series in seriesList:
        values: list[Any] = []
        prev: Any = None
        for val in series:
            values.append(None if prev is None or val is None else val - prev)
            prev = val
        series.tags["derivative"] = 1
        results.append(series.copy(name=f"derivative({series.name})", values=values))
    return results


@register("integral", "Transform", [_SERIES])
def integral(ctx: RequestContext, seriesList: SeriesList) -> SeriesList:
    """Running sum of the values; nulls stay null."""
    results = []
    for series in seriesList:
        values: list[Any] = []
        current = 0.0
        for val in series:
            if val is None:
                values.append(None)
            else:
                current += val
                values.append(current)
        series.tags["integral"] = 1
        results.append(series.copy(name=f"integral({series.name})", values=values))
    return results


@register("delay", "Transform", [_SERIES, Param("steps", T.integer, required=True)])
def delay(ctx: RequestContext, seriesList: SeriesList, steps: int) -> SeriesList:
    """Shifts values later by ``steps`` points, padding with nulls."""
    results = []
    for series in seriesList:
        raw: list[Any] = series[:]
        values: list[Any]
        if steps < 0:
            values = raw[-steps:] + [None] * min(-steps, len(raw))
        else:
            values = [None] * min(steps, len(raw)) + raw[:-steps]
        series.tags["delay"] = steps
        results.append(series.copy(name=f"delay({series.name},{steps})", values=values))
    return results


def _summarize_values(series: TimeSeries, func: str, interval: int, new_start: int,
                      new_end: int) -> tuple[list[Any], int]:
    agg = get_agg_func(func)
    timestamps = list(range(int(series.start), int(series.end), int(series.step)))
    datapoints = list(series)
    interval_points = interval / series.step
    i = 0
    num_points = min(len(timestamps), len(datapoints))
    values: list[Any] = []
    ts = new_start
    while ts < new_end:
        s = i
        non_null = 0
        while i < num_points and timestamps[i] < ts + interval:
            if timestamps[i] <= ts:
                s = i
            if timestamps[i] >= ts and datapoints[i] is not None:
                non_null += 1
            i += 1
        values.append(agg(datapoints[s:i]) if xff(non_null, interval_points,
                                                    series.x_files_factor) else None)
        ts += interval
    return values, ts


@register("summarize", "Transform", [
    _SERIES,
    Param("intervalString", T.interval, required=True, suggestions=("10min", "1h", "1d")),
    Param("func", T.agg_func, default="sum"),
    Param("alignToFrom", T.boolean, default=False),
])
def summarize(ctx: RequestContext, seriesList: SeriesList, intervalString: str,
              func: str = "sum", alignToFrom: bool = False) -> SeriesList:
    """Buckets of ``intervalString`` combined with ``func`` (aligned to the interval, or to
    ``from`` with alignToFrom)."""
    interval = interval_seconds(intervalString)
    if interval <= 0:
        raise InputParameterError(f"summarize interval must be positive: {intervalString!r}")
    results = []
    for series in seriesList:
        if (series.end - series.start) / interval > MAX_BUCKETS:
            raise InputParameterError(
                f"summarize interval {intervalString!r} gives more than {MAX_BUCKETS} buckets")
        if alignToFrom:
            new_start, new_end = series.start, series.end
        else:
            new_start = series.start - (series.start % interval)
            new_end = series.end - (series.end % interval) + interval
        values, aligned_end = _summarize_values(series, func, interval, new_start, new_end)
        if alignToFrom:
            new_end = aligned_end
        series.tags["summarize"] = intervalString
        series.tags["summarizeFunction"] = func
        suffix = ", true" if alignToFrom else ""
        name = f'summarize({series.name}, "{intervalString}", "{func}"{suffix})'
        results.append(series.copy(name=name, start=new_start, end=new_end, step=interval,
                                   values=values))
    return results


def _moving_window(ctx: RequestContext, seriesList: SeriesList, windowSize: Any, func: str,
                   xFilesFactor: float | None) -> SeriesList:
    if not seriesList:
        return []
    if isinstance(windowSize, str):
        delta = parse_time_offset(windowSize)
        preview = abs(delta.seconds + delta.days * 86400)
    else:
        preview = max(s.step for s in seriesList) * int(windowSize)
    agg = get_agg_func(func)
    preview_list = ctx.evaluate(ctx.shifted(start=ctx.start - preview), ctx.args[0])
    tag_name = "moving" + func.capitalize()
    result = []
    for series in preview_list:
        if isinstance(windowSize, str):
            name = f'{tag_name}({series.name},"{windowSize}")'
            points = preview // series.step
        else:
            name = f"{tag_name}({series.name},{windowSize})"
            points = int(windowSize)
        series.tags[tag_name] = windowSize
        new = series.copy(name=name, start=series.start + preview, values=[])
        eff_xff = xFilesFactor if xFilesFactor is not None else series.x_files_factor
        for i in range(points, len(series)):
            present = [v for v in series[i - points:i] if v is not None]
            new.append(agg(present) if present and xff(len(present), points, eff_xff) else None)
        result.append(new)
    return result


_WINDOW = Param("windowSize", T.int_or_interval, required=True, suggestions=_WINDOW_SUGGESTIONS)


@register("movingWindow", "Calculate", [
    _SERIES, _WINDOW, Param("func", T.agg_func, default="average"), Param("xFilesFactor", T.float)])
def movingWindow(ctx: RequestContext, seriesList: SeriesList, windowSize: Any,
                 func: str = "average", xFilesFactor: float | None = None) -> SeriesList:
    """``func`` over the preceding ``windowSize`` points (or time span) at each point."""
    return _moving_window(ctx, seriesList, windowSize, func, xFilesFactor)


def _moving(name: str, func: str) -> None:
    def moving(ctx: RequestContext, seriesList: SeriesList, windowSize: Any,
               xFilesFactor: float | None = None) -> SeriesList:
        return _moving_window(ctx, seriesList, windowSize, func, xFilesFactor)
    moving.__doc__ = (f"Moving {func} over the preceding ``windowSize`` points or time span "
                      "(earlier data is fetched so the first points are complete).")
    register(name, "Calculate", [_SERIES, _WINDOW, Param("xFilesFactor", T.float)])(moving)


_moving("movingAverage", "average")
_moving("movingSum", "sum")
_moving("movingMin", "min")
_moving("movingMax", "max")
_moving("movingMedian", "median")


@register("timeShift", "Transform", [
    _SERIES,
    Param("timeShift", T.interval, required=True,
          suggestions=("1h", "6h", "12h", "1d", "2d", "7d", "14d", "30d")),
    Param("resetEnd", T.boolean, default=True),
    Param("alignDst", T.boolean, default=False),
])
def timeShift(ctx: RequestContext, seriesList: SeriesList, timeShift: str,
              resetEnd: bool = True, alignDst: bool = False) -> SeriesList:
    """The series as they were ``timeShift`` earlier (``+`` shifts forward), re-fetched."""
    if timeShift[0].isdigit():
        timeShift = "-" + timeShift
    delta = interval_seconds(timeShift)
    if not seriesList:
        return []
    first = seriesList[0]
    shifted_ctx = ctx.shifted(start=ctx.start + delta, end=ctx.end + delta)
    results = []
    for shifted in ctx.evaluate(shifted_ctx, ctx.args[0]):
        shifted.tags["timeShift"] = timeShift
        shifted.name = f'timeShift({shifted.name}, "{timeShift}")'
        if resetEnd:
            shifted.end = first.end
        else:
            shifted.end = shifted.end - shifted.start + first.start
        shifted.start = first.start
        results.append(shifted)
    return results


@register("consolidateBy", "Special", [
    _SERIES,
    Param("consolidationFunc", T.string, required=True,
          options=("sum", "average", "avg", "avg_zero", "min", "max", "first", "last")),
])
def consolidateBy(ctx: RequestContext, seriesList: SeriesList,
                  consolidationFunc: str) -> SeriesList:
    """The function used when maxDataPoints merges points (default average)."""
    for series in seriesList:
        series.consolidation_func = consolidationFunc
        series.tags["consolidateBy"] = consolidationFunc
        series.name = f'consolidateBy({series.name},"{consolidationFunc}")'
        series.path_expression = series.name
    return seriesList
