"""Render output formats: json (graphite-web's layout), csv and raw."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from datetime import datetime, tzinfo

from collector.render.series import TimeSeries

__all__ = ["render_json", "render_csv", "render_raw", "FORMATS"]

FORMATS = ("json", "csv", "raw")


def render_json(data: Sequence[TimeSeries], *, no_null_points: bool = False,
                pretty: bool = False) -> str:
    """``[{"target", "tags", "datapoints": [[value, ts], ...]}]``; NaN is null, inf 1e9999."""
    out = []
    if any(data):
        for series in data:
            datapoints = series.datapoints()
            if no_null_points:
                datapoints = [p for p in datapoints
                              if p[0] is not None and not (isinstance(p[0], float)
                                                           and math.isnan(p[0]))]
                if not datapoints:
                    continue
            out.append({"target": series.name, "tags": dict(series.tags),
                        "datapoints": datapoints})
    text = json.dumps(out, indent=2 if pretty else None)
    return text.replace("NaN,", "null,").replace("Infinity,", "1e9999,")


def render_csv(data: Sequence[TimeSeries], tz: tzinfo) -> str:
    """One ``name,YYYY-mm-dd HH:MM:SS,value`` row per point, times in ``tz``."""
    buf = io.StringIO()
    writer = csv.writer(buf, dialect="excel")
    for series in data:
        for i, value in enumerate(series):
            stamp = datetime.fromtimestamp(series.start + i * series.step, tz)
            writer.writerow((series.name, stamp.strftime("%Y-%m-%d %H:%M:%S"), value))
    return buf.getvalue()


def render_raw(data: Sequence[TimeSeries]) -> str:
    """``name,start,end,step|v1,v2,...`` per series, ``None`` for nulls."""
    lines = []
    for series in data:
        header = f"{series.name},{int(series.start)},{int(series.end)},{int(series.step)}|"
        lines.append(header + ",".join(map(repr, series)) + "\n")
    return "".join(lines)
