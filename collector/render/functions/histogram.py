"""Pool-level percentiles from the agents' mergeable latency histograms.

Agents report each window's latencies as sparse bucket counts,
``{prefix}.{service}.{idc}.{node}.latency.hist.{bucket}`` (docs/metrics.md). Counts of
the same bucket add up across nodes and windows, so the percentile of a whole pool is
exact to the sketch's 1 % relative error, unlike an average of per-node percentiles.
The bucket mapping comes from :mod:`agent.buckets`, a pure-constants module shared with
the agent so both sides always agree.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from agent.buckets import quantile_from_counts
from collector.render.context import RequestContext
from collector.render.errors import InputParameterError, NormalizeEmptyResult
from collector.render.functions.common import format_path_expressions, normalize
from collector.render.functions.registry import Param, T, register
from collector.render.series import TimeSeries

__all__ = ["histogramPercentile"]


def _bucket_of(series: TimeSeries) -> int:
    name = str(series.name)
    path = series.tags.get("name", name)  # the fetched path, also under summarize() etc.
    last = path.rsplit(".", 1)[-1]
    try:
        return int(last)
    except ValueError:
        raise InputParameterError(
            f'histogramPercentile: series "{name}" is not a latency.hist.{{bucket}} series '
            "(its last name part must be an integer bucket index)") from None


@register("histogramPercentile", "Calculate", [
    Param("seriesList", T.series_list, required=True),
    Param("q", T.float, required=True),
])
def histogramPercentile(ctx: RequestContext, seriesList: Any, q: float) -> list[TimeSeries]:
    """The q-th percentile (0-100) of the latencies counted by histogram bucket series.

    ``seriesList`` holds ``...latency.hist.{bucket}`` series, typically of many nodes
    (``tidemark.user.*.*.latency.hist.*``). At each point the counts of each bucket are
    summed over all series and the nearest-rank percentile is read from the merged
    histogram, in milliseconds (None where no call was counted). Coarser steps sum counts.
    """
    if not 0.0 <= q <= 100.0:
        raise InputParameterError(f"histogramPercentile: q must be within 0..100, got {q!r}")
    if not seriesList:
        return []
    buckets = [_bucket_of(s) for s in seriesList]
    summed = []
    for s in seriesList:
        copy = s.copy()
        copy.consolidation_func = "sum"  # counts add up when steps are merged
        summed.append(copy)
    try:
        series_list, start, end, step = normalize([summed])
    except NormalizeEmptyResult:
        return []
    columns = [list(s) for s in series_list]
    length = max(len(c) for c in columns)
    values: list[float | None] = []
    for i in range(length):
        counts: dict[int, float] = defaultdict(float)
        for bucket, column in zip(buckets, columns, strict=True):
            if i < len(column):
                value = column[i]
                if value:
                    counts[bucket] += value
        values.append(quantile_from_counts(counts, q / 100.0))
    name = f"histogramPercentile({format_path_expressions(series_list)},{q:g})"
    return [TimeSeries(name, start, end, step, values, tags={"name": name},
                       x_files_factor=ctx.x_files_factor)]
