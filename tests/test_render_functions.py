"""Render functions on an in-memory source; expected values are worked out by hand from
graphite-web's definitions (comments show the arithmetic)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pytest

from collector.render.errors import InputParameterError, LimitExceeded
from collector.render.evaluator import evaluate_targets
from collector.render.grammar import parse_target
from tests.test_render_support import MemorySource

# Every series is aligned on 0. A request for [600, 900) returns the points at
# 660, 720, 780, 840, 900 (the whisper convention: first boundary after `from`).
H1 = [float(ts // 60) for ts in range(0, 1200, 60)]  # 11..15 in range
H2 = [2.0 * ts // 60 for ts in range(0, 1200, 60)]  # 22..30 in range
H2[13] = None  # the point at 780
COUNTER = [0.0] * 20
COUNTER[11:16] = [10.0, 20.0, 5.0, 15.0, 25.0]
SLOW = [float(ts // 120) for ts in range(0, 1200, 120)]  # step 120: 720 -> 6, 840 -> 7


def _source() -> MemorySource:
    return MemorySource({
        "web.h1.qps": (0, 60, H1),
        "web.h2.qps": (0, 60, H2),
        "slow.x": (0, 120, SLOW),
        "cnt": (0, 60, COUNTER),
        "dc.east.a.qps": (0, 60, [1.0] * 20),
        "dc.east.b.qps": (0, 60, [2.0] * 20),
        "dc.west.a.qps": (0, 60, [5.0] * 20),
        "zero": (0, 60, [0.0] * 20),
    })


def run(target: str, *, start: int = 600, end: int = 900, xff: float = 0.0,
        source: MemorySource | None = None, max_series: int = 100) -> list[tuple[Any, list[Any]]]:
    data = evaluate_targets(source or _source(), [parse_target(target)], start=start, end=end,
                            now=end, tz=UTC, x_files_factor=xff, max_series=max_series)
    return [(s.name, [v for v, _ in s.datapoints()]) for s in data]


def one(target: str, **kw: Any) -> tuple[Any, list[Any]]:
    result = run(target, **kw)
    assert len(result) == 1, result
    return result[0]


def test_plain_fetch() -> None:
    assert run("web.*.qps") == [("web.h1.qps", [11, 12, 13, 14, 15]),
                                ("web.h2.qps", [22, 24, None, 28, 30])]


def test_aggregators_skip_nulls() -> None:
    assert one("sumSeries(web.*.qps)") == ("sumSeries(web.*.qps)", [33, 36, 13, 42, 45])
    assert one("sum(web.h1.qps, web.h2.qps)")[0] == "sumSeries(web.h1.qps,web.h2.qps)"
    assert one("averageSeries(web.*.qps)")[1] == [16.5, 18, 13, 21, 22.5]
    assert one("avg(web.*.qps)")[0] == "averageSeries(web.*.qps)"
    assert one("minSeries(web.*.qps)")[1] == [11, 12, 13, 14, 15]
    assert one("maxSeries(web.*.qps)")[1] == [22, 24, 13, 28, 30]
    # diff: first non-null minus the rest; at 780 only web.h1 (13) is present
    assert one("diffSeries(web.h2.qps, web.h1.qps)")[1] == [11, 12, 13, 14, 15]


def test_x_files_factor_blanks_sparse_rows() -> None:
    assert one("sumSeries(web.*.qps)", xff=1.0)[1] == [33, 36, None, 42, 45]
    assert one("aggregate(web.*.qps, 'sum', 0.6)")[1] == [33, 36, None, 42, 45]


def test_different_steps_normalise_to_lcm() -> None:
    # web.h1 at step 60 averaged in pairs: (11+12)/2, (13+14)/2, 15; slow.x: 6, 7
    name, values = one("sumSeries(web.h1.qps, slow.x)")
    assert values == [17.5, 20.5, 15]
    data = evaluate_targets(_source(), [parse_target("sumSeries(web.h1.qps, slow.x)")],
                            start=600, end=900, now=900, tz=UTC)
    assert (data[0].start, data[0].end, data[0].step) == (660, 900, 120)


def test_divide_series() -> None:
    assert one("divideSeries(web.h2.qps, web.h1.qps)") == (
        "divideSeries(web.h2.qps,web.h1.qps)", [2, 2, None, 2, 2])
    assert one("divideSeries(web.h1.qps, zero)")[1] == [None] * 5
    assert one("divideSeries(web.h1.qps, missing.path)") == (
        "divideSeries(web.h1.qps,MISSING)", [None] * 5)
    with pytest.raises(InputParameterError, match="exactly 1 series"):
        run("divideSeries(web.h1.qps, web.*.qps)")


def test_as_percent() -> None:
    name, values = one("asPercent(web.h1.qps, 100)")
    assert name == "asPercent(web.h1.qps,100)"
    assert values == pytest.approx([11, 12, 13, 14, 15])
    assert one("asPercent(web.h1.qps, web.h2.qps)") == (
        "asPercent(web.h1.qps,web.h2.qps)", [50, 50, None, 50, 50])
    (n1, v1), (n2, v2) = run("asPercent(web.*.qps)")
    assert n1 == "asPercent(web.h1.qps,sumSeries(web.*.qps))"
    assert v1 == pytest.approx([100 * 11 / 33, 100 * 12 / 36, 100.0, 100 * 14 / 42, 100 * 15 / 45])
    assert v2[2] is None and v2[0] == pytest.approx(100 * 22 / 33)
    # by node: each dc group as a percentage of its own sum (named by the path expression)
    groups = dict(run("asPercent(dc.*.*.qps, None, 1)"))
    assert groups["asPercent(dc.east.a.qps,sumSeries(dc.*.*.qps))"] == pytest.approx(
        [100 / 3] * 5)
    assert groups["asPercent(dc.west.a.qps,dc.west.a.qps)"] == [100.0] * 5


def test_scale_offset_absolute_names() -> None:
    assert one("scale(web.h1.qps, 2)") == ("scale(web.h1.qps,2)", [22, 24, 26, 28, 30])
    assert one("offset(web.h2.qps, -1.5)") == ("offset(web.h2.qps,-1.5)",
                                                [20.5, 22.5, None, 26.5, 28.5])
    assert one("absolute(scale(web.h1.qps, -1))") == ("absolute(scale(web.h1.qps,-1))",
                                                      [11, 12, 13, 14, 15])


def test_null_filling() -> None:
    assert one("keepLastValue(web.h2.qps)") == ("keepLastValue(web.h2.qps)",
                                                 [22, 24, 24, 28, 30])
    assert one("keepLastValue(web.h2.qps, 0)")[1] == [22, 24, None, 28, 30]
    assert one("transformNull(web.h2.qps, -1)") == ("transformNull(web.h2.qps,-1)",
                                                     [22, 24, -1, 28, 30])
    assert one("transformNull(web.h2.qps)")[1] == [22, 24, 0, 28, 30]


def test_derivatives_and_integral() -> None:
    # counter 10, 20, 5, 15, 25: the drop to 5 is a reset
    assert one("nonNegativeDerivative(cnt)") == ("nonNegativeDerivative(cnt)",
                                                  [None, 10, None, 10, 10])
    # with maxValue=30 the drop is a wrap: 30 + 1 + 5 - 20 = 16
    assert one("nonNegativeDerivative(cnt, 30)")[1] == [None, 10, 16, 10, 10]
    # with minValue=2 the drop counts from the minimum: 5 - 2 = 3
    assert one("nonNegativeDerivative(cnt, minValue=2)")[1] == [None, 10, 3, 10, 10]
    assert one("perSecond(cnt)") == ("perSecond(cnt)", [None, 0.166667, None, 0.166667, 0.166667])
    assert one("integral(web.h2.qps)") == ("integral(web.h2.qps)", [22, 46, None, 74, 104])


def test_summarize() -> None:
    # buckets of 120 s aligned on the interval: [600,720) [720,840) [840,960) [960,1080)
    assert one("summarize(web.h1.qps, '2min')") == (
        'summarize(web.h1.qps, "2min", "sum")', [11, 25, 29, None])
    assert one("summarize(web.h1.qps, '2min', 'avg')")[1] == [11, 12.5, 14.5, None]
    assert one("summarize(web.h1.qps, '2min', 'max')")[1] == [11, 13, 15, None]
    # aligned to from (660): [660,780) [780,900) [900,1020)
    assert one("summarize(web.h1.qps, '2min', 'sum', true)") == (
        'summarize(web.h1.qps, "2min", "sum", true)', [23, 27, 15])


def test_moving_average_fetches_earlier_data() -> None:
    source = _source()
    # windows of the two preceding points: (9+10)/2, (10+11)/2, ...
    assert one("movingAverage(web.h1.qps, 2)", source=source) == (
        "movingAverage(web.h1.qps,2)", [9.5, 10.5, 11.5, 12.5, 13.5])
    assert ("web.h1.qps", 480, 900) in source.fetches
    assert one("movingAverage(web.h1.qps, '2min')") == (
        'movingAverage(web.h1.qps,"2min")', [9.5, 10.5, 11.5, 12.5, 13.5])
    assert one("movingSum(web.h1.qps, 3)")[1] == [27, 30, 33, 36, 39]
    assert one("movingMax(web.h1.qps, 2)")[1] == [10, 11, 12, 13, 14]


def test_time_shift_refetches() -> None:
    source = _source()
    assert one("timeShift(web.h1.qps, '1min')", source=source) == (
        'timeShift(web.h1.qps, "-1min")', [10, 11, 12, 13, 14])
    assert ("web.h1.qps", 540, 840) in source.fetches
    assert one("timeShift(web.h1.qps, '+2min')")[1] == [13, 14, 15, 16, 17]


def test_filters_and_sorting() -> None:
    assert [n for n, _ in run("highestCurrent(web.*.qps, 1)")] == ["web.h2.qps"]
    assert [n for n, _ in run("lowestCurrent(web.*.qps, 1)")] == ["web.h1.qps"]
    assert [n for n, _ in run("highestAverage(dc.*.*.qps, 2)")] == ["dc.west.a.qps",
                                                                    "dc.east.b.qps"]
    assert [n for n, _ in run("sortByMaxima(web.*.qps)")] == ["web.h2.qps", "web.h1.qps"]
    assert [n for n, _ in run("limit(web.*.qps, 1)")] == ["web.h1.qps"]
    assert one("removeBelowValue(web.h1.qps, 13)") == ("removeBelowValue(web.h1.qps, 13)",
                                                       [None, None, 13, 14, 15])
    assert one("removeAboveValue(web.h1.qps, 13)")[1] == [11, 12, 13, None, None]


def test_count_series() -> None:
    assert one("countSeries(web.*.qps)") == ("countSeries(web.*.qps)", [2, 2, 2, 2, 2])
    name, values = one("countSeries()")
    assert (name, values) == ("0", [0, 0, 0])


def test_aliases() -> None:
    assert one("alias(web.h1.qps, 'front')")[0] == "front"
    assert [n for n, _ in run("aliasByNode(web.*.qps, 1)")] == ["h1", "h2"]
    assert [n for n, _ in run("aliasByNode(web.*.qps, 1, -1)")] == ["h1.qps", "h2.qps"]
    assert one("aliasByNode(sumSeries(web.*.qps), 0)")[0] == "web"
    assert one("aliasByMetric(scale(web.h1.qps, 2))")[0] == "qps"
    assert [n for n, _ in run(r"aliasSub(web.*.qps, '^web\.(\w+)\..*', '\1-x')")] == [
        "h1-x", "h2-x"]


def test_group_by_node() -> None:
    assert run("groupByNode(dc.*.*.qps, 1, 'sum')") == [("east", [3.0] * 5), ("west", [5.0] * 5)]
    assert run("groupByNode(dc.*.*.qps, 1, 'sumSeries')") == [("east", [3.0] * 5),
                                                              ("west", [5.0] * 5)]
    assert run("groupByNode(dc.*.*.qps, 1)") == [("east", [1.5] * 5), ("west", [5.0] * 5)]
    assert run("groupByNode(dc.*.*.qps, 2, 'max')") == [("a", [5.0] * 5), ("b", [2.0] * 5)]
    with pytest.raises(InputParameterError, match="callback"):
        run("groupByNode(dc.*.*.qps, 1, 'bogus')")


def test_consolidate_by_sets_function_and_name() -> None:
    data = evaluate_targets(_source(), [parse_target("consolidateBy(web.h1.qps, 'max')")],
                            start=600, end=900, now=900, tz=UTC)
    assert data[0].name == 'consolidateBy(web.h1.qps,"max")'
    assert data[0].consolidation_func == "max"
    with pytest.raises(InputParameterError, match="Invalid option"):
        run("consolidateBy(web.h1.qps, 'mean')")


@pytest.mark.parametrize("target,message", [
    ("nosuch(web.h1.qps)", "unknown function: nosuch"),
    ("scale(web.h1.qps)", 'Missing required parameter "factor"'),
    ("scale(web.h1.qps, 'x')", 'Invalid "float" value specified for function "scale"'),
    ("scale(web.h1.qps, 1, 2)", 'Too many parameters specified for function "scale"'),
    ("summarize(web.h1.qps, 'fortnight')", 'Invalid "interval" value'),
    ("limit(web.*.qps, 1.5)", 'Invalid "integer" value'),
    ("movingAverage(web.h1.qps, 'bogus')", 'Invalid "intOrInterval" value'),
    ("scale(web.h1.qps, factr=2)", 'Missing required parameter "factor"'),
    ("sumSeries(1)", 'Invalid "seriesList" value'),
])
def test_bad_arguments_name_the_problem(target: str, message: str) -> None:
    with pytest.raises(InputParameterError, match=message.replace("(", r"\(")):
        run(target)


def test_series_budget() -> None:
    with pytest.raises(LimitExceeded, match="max_series=2"):
        run("sumSeries(dc.*.*.qps)", max_series=2)


def test_none_argument_takes_the_default() -> None:
    # graphite passes None on and fails with a 500; the declared default is used instead
    assert one("transformNull(web.h2.qps, none)")[1] == [22, 24, 0, 28, 30]
    assert [n for n, _ in run("groupByNode(dc.*.*.qps, 1, none)")] == ["east", "west"]


@pytest.mark.parametrize("target", [
    "countSeries(web.h1.qps, none)",
    "movingAverage(web.h1.qps, inf)",
    "movingAverage(web.h1.qps, -2)",
])
def test_degenerate_arguments_are_bad_requests(target: str) -> None:
    with pytest.raises(InputParameterError):
        run(target)


def test_node_that_is_not_an_index_is_a_tag_lookup() -> None:
    # as in graphite: inf is no node index, so it names a tag, which is absent: empty name
    assert run("aliasByNode(web.h1.qps, inf)") == [("", [11, 12, 13, 14, 15])]


def test_summarize_bucket_count_is_bounded() -> None:
    with pytest.raises(InputParameterError, match="buckets"):
        run("summarize(web.h1.qps, '1s')", start=0, end=2_000_000)
