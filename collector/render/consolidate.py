"""maxDataPoints consolidation, exactly as graphite-web's JSON renderer applies it."""

from __future__ import annotations

import math
from collections.abc import Sequence

from collector.render.series import TimeSeries

__all__ = ["apply_max_data_points"]


def apply_max_data_points(data: Sequence[TimeSeries], max_data_points: int) -> None:
    """Set each series' values-per-point (and nudge its start) so it has about
    ``max_data_points`` points, using the series' consolidation function."""
    if not any(data) or max_data_points < 1:
        return
    start = min(s.start for s in data)
    end = max(s.end for s in data)
    time_range = end - start
    for series in data:
        if max_data_points == 1:
            series.consolidate(max(len(series), 1))
            continue
        points = time_range / series.step
        if max_data_points < points:
            values_per_point = math.ceil(float(points) / float(max_data_points))
            seconds_per_point = int(values_per_point * series.step)
            nudge = seconds_per_point + (series.start % series.step) - (
                series.start % seconds_per_point)
            series.start = series.start + nudge
            for _ in range(1, int(nudge / series.step)):
                if series:
                    del series[0]
            series.consolidate(values_per_point)
