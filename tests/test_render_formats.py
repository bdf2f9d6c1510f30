"""Output formats and maxDataPoints consolidation, checked against graphite-web's rules."""

from __future__ import annotations

import json
import math
from datetime import UTC
from zoneinfo import ZoneInfo

from collector.render.consolidate import apply_max_data_points
from collector.render.formats import render_csv, render_json, render_raw
from collector.render.series import TimeSeries


def _series(values: list[float | None], start: int = 0, step: int = 60,
            name: str = "a.b") -> TimeSeries:
    return TimeSeries(name, start, start + step * len(values), step, values)


def test_json_layout() -> None:
    text = render_json([_series([1.0, None, 2.5], start=60)])
    assert json.loads(text) == [{"target": "a.b", "tags": {"name": "a.b"},
                                 "datapoints": [[1.0, 60], [None, 120], [2.5, 180]]}]


def test_json_nan_and_infinity() -> None:
    text = render_json([_series([math.nan, math.inf, 1.0])])
    assert '[null, 0]' in text and '[1e9999, 60]' in text
    assert json.loads(text)[0]["datapoints"][1][0] == math.inf


def test_no_null_points_drops_points_and_empty_series() -> None:
    data = [_series([None, 3.0, None]), _series([None, None], name="empty")]
    assert json.loads(render_json(data, no_null_points=True)) == [
        {"target": "a.b", "tags": {"name": "a.b"}, "datapoints": [[3.0, 60]]}]


def test_tags_parsed_from_tagged_name() -> None:
    series = TimeSeries("cpu.load;dc=east;host=h1", 0, 60, 60, [1.0])
    assert dict(series.tags) == {"name": "cpu.load", "dc": "east", "host": "h1"}


def test_max_data_points_average() -> None:
    # 20 points from 60 (step 60), range 60..1260 = 1200 s -> 20 points; max 5 ->
    # valuesPerPoint 4, secondsPerPoint 240, nudge = 240 + 0 - 60 = 180, so start moves to
    # 240 and 180/60 - 1 = 2 leading values are dropped before consolidating by 4.
    series = _series([float(i) for i in range(20)], start=60)
    apply_max_data_points([series], 5)
    assert series.datapoints() == [(3.5, 240), (7.5, 480), (11.5, 720), (15.5, 960),
                                   (18.5, 1200)]


def test_max_data_points_uses_consolidation_function() -> None:
    series = _series([float(i) for i in range(20)], start=60)
    series.consolidation_func = "max"
    apply_max_data_points([series], 5)
    assert [v for v, _ in series.datapoints()] == [5, 9, 13, 17, 19]


def test_max_data_points_one() -> None:
    series = _series([1.0, None, 5.0])
    apply_max_data_points([series], 1)
    assert series.datapoints() == [(3.0, 0)]


def test_max_data_points_not_needed() -> None:
    series = _series([1.0, 2.0])
    apply_max_data_points([series], 100)
    assert series.datapoints() == [(1.0, 0), (2.0, 60)]


def test_consolidation_respects_x_files_factor() -> None:
    series = _series([1.0, None, None, None])
    series.x_files_factor = 0.6  # one of two present is 0.5 < 0.6
    series.consolidate(2)
    assert list(series) == [None, None]
    series.x_files_factor = 0.5
    assert list(series) == [1.0, None]
    series.x_files_factor = 0.6
    series[1] = 3.0
    assert list(series) == [2.0, None]


def test_csv() -> None:
    text = render_csv([_series([1.5, None], start=3600)], UTC)
    assert text == "a.b,1970-01-01 01:00:00,1.5\r\na.b,1970-01-01 01:01:00,\r\n"
    local = render_csv([_series([1.5], start=0)], ZoneInfo("Asia/Tokyo"))
    assert local == "a.b,1970-01-01 09:00:00,1.5\r\n"


def test_raw() -> None:
    assert render_raw([_series([1.0, None, 2.5], start=60)]) == "a.b,60,240,60|1.0,None,2.5\n"
