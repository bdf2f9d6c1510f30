"""Differential tests: our collector against real carbon-cache + graphite-web.

The same deterministic points (plaintext over TCP, 10 s steps, a little in the past, several
metric trees with gaps, negative values and counters that reset) go to both; every case
then asks both servers the same question and compares the answers: same series names in the
same order, same timestamps, values within 1e-9, nulls in the same places.

The points arrive through every ingest path both have: plaintext over TCP (including odd
lines that test the receiver), carbon's pickle protocol, and plaintext over UDP. The questions
cover every render function we implement, every time form, maxDataPoints, noNullPoints, the
json, csv and raw formats, GET and POST, /metrics/find in its formats and /metrics/index.json.

Both peers are started once for this module (plus a second, empty pair for receiver tests
whose metrics would change the other answers). Most cases use fixed epoch from/until so both
servers see identical windows; cases with relative times ("-1h", "now") ask graphite-web
before and after asking us and retry if the step boundary moved in between.

A real, justified difference is an ``xfail(strict=True)`` with its reason (KNOWN_DIFFERENCES
for render cases, a marked test otherwise), never a weaker comparison.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.peers.collector import TidemarkCollector, tidemark_collector
from tests.peers.fixtures import started
from tests.peers.graphite import GraphiteStack, graphite_stack
from tests.peers.plaintext import (
    format_line,
    pickle_frames,
    send_bytes,
    send_datagrams,
    send_lines,
)
from tests.peers.process import PeerFailed

pytestmark = [pytest.mark.peers, pytest.mark.slow]  # two peer pairs start: ~10-25 s in all

STEP = 10
SCHEMAS = (
    "[coarse]\npattern = ^coarse\\.\nretentions = 60s:1d,5m:7d\n\n"
    "[default]\npattern = .*\nretentions = 10s:1d,1m:7d\n"
)
AGGREGATION = (
    "[counters]\npattern = ^cnt\\.\nxFilesFactor = 0\naggregationMethod = max\n\n"
    "[default]\npattern = .*\nxFilesFactor = 0.5\naggregationMethod = average\n"
)
READBACK_TIMEOUT_SECONDS = 90.0
TOLERANCE = 1e-9


# --------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class Dataset:
    """The points both servers receive, and the window they cover."""

    start: int  # first timestamp (aligned to 60 s)
    end: int  # one step after the last timestamp (aligned to 60 s)
    points: dict[str, list[tuple[int, float]]]  # what each series holds in the end
    overwritten: tuple[tuple[str, int, float], ...] = ()  # sent first, then overwritten
    raw_lines: tuple[str, ...] = ()  # odd plaintext (see ingest_edge_lines), sent first
    pickled: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # pickle port

    @property
    def pickle_points(self) -> list[tuple[str, tuple[float, float]]]:
        """The pickled series as carbon's pickle protocol carries them, in time order."""
        merged = [(ts, path, value) for path, pts in self.pickled.items() for ts, value in pts]
        merged.sort()
        return [(path, (ts, value)) for ts, path, value in merged]

    @property
    def lines(self) -> list[str]:
        """Every point as a plaintext line, series interleaved by time like live traffic."""
        merged = [(ts, path, value) for path, pts in self.points.items() for ts, value in pts]
        merged.sort()
        first = [format_line(path, value, ts) for path, ts, value in self.overwritten]
        return [*self.raw_lines, *first] + [
            format_line(path, value, ts) for ts, path, value in merged
        ]


def build_dataset(now: float) -> Dataset:
    """Two hours of deterministic points ending a couple of minutes before ``now``."""
    end = int(now) // 60 * 60 - 120
    start = end - 2 * 3600
    stamps = list(range(start, end, STEP))
    points: dict[str, list[tuple[int, float]]] = {}
    services = ["web", "api", "db"]
    for s, service in enumerate(services):
        for h, host in enumerate(["host1", "host2"]):
            points[f"svc.{service}.{host}.qps"] = [
                (ts, ((i * 7 + h * 13 + s * 29) % 50) * 0.5 + s * 10) for i, ts in enumerate(stamps)
            ]
            latency: list[tuple[int, float]] = []
            for i, ts in enumerate(stamps):
                if (i + s + h) % 7 == 0:
                    continue  # scattered single gaps
                if service == "api" and host == "host2" and 300 <= i < 340:
                    continue  # a long gap
                latency.append((ts, 5 + ((i * 3 + h) % 17) * 0.25))
            points[f"svc.{service}.{host}.latency"] = latency
    for k, name in enumerate(["a", "b", "c"]):
        points[f"neg.temp.{name}"] = [
            (ts, float((i * 11 + k * 5) % 41 - 20)) for i, ts in enumerate(stamps)
        ]
    for k, name in enumerate(["x", "y"]):
        counter = 0.0
        series: list[tuple[int, float]] = []
        for i, ts in enumerate(stamps):
            if i == (200 if name == "x" else 450):
                counter = 0.0  # a restart resets the counter
            counter += (i % 5) + 1 + k
            if name == "y" and 600 <= i < 610:
                continue
            series.append((ts, counter))
        points[f"cnt.requests.{name}"] = series
    for k in range(1, 4):
        points[f"sparse.m{k}"] = [
            (ts, float(k * 100 + i)) for i, ts in enumerate(stamps) if (i + k) % 30 == 0
        ]
    # Series at a coarser step (another schema), for the step normalisation of combiners.
    points["coarse.a"] = [(ts, (i // 6) * 1.5) for i, ts in enumerate(stamps) if i % 6 == 0]
    points["coarse.b"] = [
        (ts, 100.0 - i // 6) for i, ts in enumerate(stamps) if i % 6 == 0 and i % 42 != 0
    ]
    # Values that test number parsing and formatting.
    odd_values = [1.5e20, -2.5e-7, 0.0, 3.0, -0.0, 123456789.125, 1e-300]
    points["odd.values.wide"] = [
        (ts, odd_values[i % len(odd_values)]) for i, ts in enumerate(stamps) if i % 3 == 0
    ]
    # Names with the characters Graphite allows beyond letters and digits.
    points["odd.name-with_dash.req:count"] = [(ts, float(i % 9)) for i, ts in enumerate(stamps)]
    points["odd.Upper.Case"] = [(ts, float(i % 4)) for i, ts in enumerate(stamps) if i % 2]
    # The same timestamp sent twice: the later value wins in carbon and must in ours.
    points["odd.dup"] = [(ts, float(i)) for i, ts in enumerate(stamps) if i % 10 == 0]
    overwritten = tuple(("odd.dup", ts, -1.0) for ts, _ in points["odd.dup"])
    # Sent through the pickle port: int and float timestamps and values.
    pickled: dict[str, list[tuple[float, float]]] = {
        "pkl.ints": [(ts, i % 13) for i, ts in enumerate(stamps) if i % 2 == 0],
        "pkl.floats": [(ts + 0.5, i * 0.125 - 3) for i, ts in enumerate(stamps) if i % 5],
    }
    return Dataset(start, end, points, overwritten, ingest_edge_lines(start, end), pickled)


def ingest_edge_lines(start: int, end: int) -> tuple[str, ...]:
    """Plaintext that tests the receiver: whitespace, number forms, bad lines, odd times.

    Sent before the dataset on the same connection, so once the dataset reads back these
    have been handled too. Both servers must end up storing the same things.
    """
    ts = start + 600
    return (
        f"ing.tab\t5\t{ts}\n",
        f"ing.spaces   6    {ts}\n",
        f"ing.crlf 7 {ts}\r\n",
        f"   ing.leading 4 {ts}   \n",
        "\n",
        f"ing.float_ts 8 {ts + 10}.75\n",
        f"ing.sci_ts 8 {float(ts + 20):e}\n",
        f"ing.sci 1e3 {ts}\n",
        f"ing.sci 2.5E-3 {ts + 10}\n",
        f"ing.plus +3 {ts}\n",
        f"ing.neg -0.5 {ts}\n",
        f"ing.int_value 42 {ts}\n",
        f"ing.nan nan {ts}\n",
        f"ing.mixed 1 {ts}\n",
        f"ing.mixed NaN {ts + 10}\n",
        f"ing.mixed 3 {ts + 20}\n",
        f"ing.bad abc {ts}\n",
        "ing.bad_ts 1 abc\n",
        "ing.two_fields 1\n",
        f"ing.four_fields 1 {ts} extra\n",
        f"ing.unaligned 1 {ts + 3}\n",
        f"ing.unaligned 2 {ts + 7}\n",
        f"ing.unaligned 5 {ts + 19}\n",
        f"ing.old 11 {end - 3 * 86400}\n",
        f"ing.old 12 {end - 3 * 86400 + 60}\n",
    )


# Carbon creates a whisper file for a point whisper then drops (timestamp 0, far outside the
# retention), so graphite-web lists an all-null series; ours stores nothing for such a line.
ZERO_TIMESTAMP_LINE = "ingzero.ts 1 0\n"


# --------------------------------------------------------------------------- the peers


@dataclass(frozen=True)
class Pair:
    """Both servers, loaded with the same dataset."""

    graphite: GraphiteStack
    tidemark: TidemarkCollector
    data: Dataset

    @property
    def window(self) -> dict[str, int]:
        """The fixed window most cases use: the last 90 minutes of data."""
        return {"from": self.data.start + 1800, "until": self.data.end}


def _non_null_counts(server: GraphiteStack | TidemarkCollector, data: Dataset) -> dict[str, int]:
    body = server.get(
        "/render",
        [("target", t) for t in ("svc.*.*.*", "neg.temp.*", "cnt.requests.*", "sparse.*")]
        + [("target", t) for t in ("coarse.*", "odd.*", "odd.*.*", "pkl.*")]
        + [("from", str(data.start - 1)), ("until", str(data.end)), ("format", "json")],
    )
    return {
        series["target"]: sum(1 for value, _ in series["datapoints"] if value is not None)
        for series in json.loads(body)
    }


def _wait_readback(server: GraphiteStack | TidemarkCollector, data: Dataset, name: str) -> None:
    expected = {path: len(pts) for path, pts in (data.points | data.pickled).items()}
    deadline = time.monotonic() + READBACK_TIMEOUT_SECONDS
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = _non_null_counts(server, data)
        if counts == expected:
            return
        time.sleep(0.5)
    missing = {p: (n, counts.get(p)) for p, n in expected.items() if counts.get(p) != n}
    raise PeerFailed(f"{name} did not read back every point: (sent, read) {missing}")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """carbon-cache + graphite-web and our collector, both holding the dataset."""
    data = build_dataset(time.time())
    lines = data.lines
    graphite_root = tmp_path_factory.mktemp("graphite")
    tidemark_root = tmp_path_factory.mktemp("tidemark")
    with (
        started(
            graphite_stack(graphite_root, schemas=SCHEMAS, aggregation=AGGREGATION)
        ) as graphite,
        started(
            tidemark_collector(tidemark_root, schemas=SCHEMAS, aggregation=AGGREGATION)
        ) as ours,
    ):
        frames = pickle_frames(data.pickle_points)
        send_lines(graphite.line_port, lines)
        send_bytes(graphite.pickle_port, frames)
        send_lines(ours.line_port, lines)
        send_bytes(ours.pickle_port, frames)
        _wait_readback(graphite, data, "carbon + graphite-web")
        _wait_readback(ours, data, "tidemark collector")
        yield Pair(graphite, ours, data)


# --------------------------------------------------------------------------- comparing


def _same_value(ours: Any, theirs: Any) -> bool:
    """Values are equal within TOLERANCE; null and NaN both mean "no value".

    graphite-web writes NaN as ``null`` except for a series' last point (its JSON output
    replaces only ``NaN,``), so NaN and null are treated alike.
    """
    if ours is None or (isinstance(ours, float) and math.isnan(ours)):
        return theirs is None or (isinstance(theirs, float) and math.isnan(theirs))
    if theirs is None or (isinstance(theirs, float) and math.isnan(theirs)):
        return False
    if math.isinf(ours) or math.isinf(theirs):
        return bool(ours == theirs)
    return math.isclose(ours, theirs, rel_tol=TOLERANCE, abs_tol=TOLERANCE)


def assert_same_json(ours: bytes, theirs: bytes) -> None:
    """Same series names in the same order, same timestamps, values within 1e-9."""
    our_series, their_series = json.loads(ours), json.loads(theirs)
    assert [s["target"] for s in our_series] == [s["target"] for s in their_series]
    for mine, ref in zip(our_series, their_series, strict=True):
        name = ref["target"]
        assert [ts for _, ts in mine["datapoints"]] == [ts for _, ts in ref["datapoints"]], name
        bad = [
            (ts, value, ref_value)
            for (value, ts), (ref_value, _) in zip(
                mine["datapoints"], ref["datapoints"], strict=True
            )
            if not _same_value(value, ref_value)
        ]
        assert not bad, f"{name}: (timestamp, ours, graphite) {bad[:5]} ({len(bad)} differ)"


def _number(text: str) -> float | None:
    return None if text in ("", "None") else float(text)


def assert_same_csv(ours: bytes, theirs: bytes) -> None:
    """Rows of (name, time, value) in the same order, values within 1e-9."""
    mine = list(csv.reader(io.StringIO(ours.decode())))
    ref = list(csv.reader(io.StringIO(theirs.decode())))
    assert [row[:2] for row in mine] == [row[:2] for row in ref]
    bad = [
        (a[:2], a[2], b[2])
        for a, b in zip(mine, ref, strict=True)
        if not _same_value(_number(a[2]), _number(b[2]))
    ]
    assert not bad, f"(row, ours, graphite) {bad[:5]} ({len(bad)} differ)"


def assert_same_raw(ours: bytes, theirs: bytes) -> None:
    """``name,start,end,step|values`` lines: same headers, values within 1e-9."""
    mine = [line for line in ours.decode().splitlines() if line]
    ref = [line for line in theirs.decode().splitlines() if line]
    assert [line.rsplit("|", 1)[0] for line in mine] == [line.rsplit("|", 1)[0] for line in ref]
    for a, b in zip(mine, ref, strict=True):
        values_a = [_number(v) for v in a.rsplit("|", 1)[1].split(",")]
        values_b = [_number(v) for v in b.rsplit("|", 1)[1].split(",")]
        assert len(values_a) == len(values_b), a.rsplit("|", 1)[0]
        bad = [
            (i, x, y)
            for i, (x, y) in enumerate(zip(values_a, values_b, strict=True))
            if not _same_value(x, y)
        ]
        assert not bad, f"{a.rsplit('|', 1)[0]}: (index, ours, graphite) {bad[:5]}"


COMPARE = {"json": assert_same_json, "csv": assert_same_csv, "raw": assert_same_raw}


def _ask_both(
    pair: Pair, path: str, params: list[tuple[str, str]], relative: bool
) -> tuple[bytes, bytes]:
    """(ours, graphite's) answers; for relative times, bracket ours between two of graphite's."""
    for _attempt in range(4):
        theirs = pair.graphite.get(path, params)
        ours = pair.tidemark.get(path, params)
        if not relative or pair.graphite.get(path, params) == theirs:
            return ours, theirs
    raise AssertionError("graphite-web's answer kept changing between requests; retry the test")


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """One /render question: targets plus extra parameters; times "window" or explicit."""

    id: str
    targets: tuple[str, ...]
    params: tuple[tuple[str, str], ...] = ()
    fmt: str = "json"
    times: str = "window"  # "window", or "explicit" when params carry from/until

    def query(self, pair: Pair) -> list[tuple[str, str]]:
        """The query string for this case against this pair's data."""
        query = [("target", t) for t in self.targets]
        if self.times == "window":
            query += [(k, str(v)) for k, v in pair.window.items()]
        query += [(k, _expand(v, pair.data)) for k, v in self.params]
        query.append(("format", self.fmt))
        return query

    @property
    def relative(self) -> bool:
        """True when the answer depends on the moment of asking."""
        return any(
            v.startswith("-") or v == "now" for k, v in self.params if k in ("from", "until")
        )


def _expand(value: str, data: Dataset) -> str:
    """Placeholders for times that depend on the dataset: {start}, {end}, {start_hm}, ..."""

    def hm(ts: int) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%H:%M_%Y%m%d")

    def ymd(ts: int) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%d")

    return value.format(
        start=data.start,
        end=data.end,
        last=data.end - STEP,
        window_from=data.start + 1800,
        mid=data.start + 3600,
        start_hm=hm(data.start + 1200),
        end_hm=hm(data.end - 600),
        start_ymd=ymd(data.start),
        start_clock=datetime.fromtimestamp(data.start + 1800, UTC).strftime("%H:%M"),
        end_clock=datetime.fromtimestamp(data.end - 300, UTC).strftime("%H:%M"),
        start_mdy=datetime.fromtimestamp(data.start, UTC).strftime("%m/%d/%y"),
    )


QPS = "svc.*.*.qps"
C = Case
FUNCTION_CASES = [
    C("plain-path", ("svc.web.host1.qps",)),
    C("glob-star", (QPS,)),
    C("glob-question", ("svc.web.host?.latency",)),
    C("glob-range", ("svc.[a-d]*.host1.qps",)),
    C("glob-braces", ("svc.{web,db}.host2.qps",)),
    C("glob-mixed", ("svc.{web,api}.host[12].*",)),
    C("several-targets", ("neg.temp.a", "sparse.*", "cnt.requests.x")),
    C("missing-metric", ("does.not.exist",)),
    C("missing-glob", ("nope.*.qps",)),
    C("gaps", ("svc.api.*.latency",)),
    C("sparse", ("sparse.*",)),
    C("sumSeries", ("sumSeries(svc.*.host1.qps)",)),
    C("sumSeries-gaps", ("sumSeries(svc.*.*.latency)",)),
    C("sumSeries-several-args", ("sumSeries(svc.web.host1.qps,neg.temp.*)",)),
    C("sum-alias", ("sum(svc.web.*.qps)",)),
    C("averageSeries", ("averageSeries(svc.web.*.qps)",)),
    C("averageSeries-gaps", ("averageSeries(svc.api.*.latency)",)),
    C("avg-alias", ("avg(neg.temp.*)",)),
    C("minSeries", ("minSeries(svc.*.*.latency)",)),
    C("maxSeries", ("maxSeries(svc.*.*.latency)",)),
    C("diffSeries", ("diffSeries(svc.web.host1.qps,svc.web.host2.qps)",)),
    C("diffSeries-glob", ("diffSeries(svc.api.*.latency)",)),
    C("divideSeries", ("divideSeries(svc.web.host1.qps,svc.web.host2.qps)",)),
    C("divideSeries-by-zero-and-gaps", ("divideSeries(svc.api.*.latency,neg.temp.a)",)),
    C("asPercent-total-of-list", ("asPercent(svc.web.*.qps)",)),
    C("asPercent-series", ("asPercent(svc.web.host1.qps,svc.web.host2.qps)",)),
    C("asPercent-number", ("asPercent(neg.temp.*,40)",)),
    C("asPercent-sum-total", ("asPercent(svc.*.host1.qps,sumSeries(svc.*.host1.qps))",)),
    C("scale", ("scale(neg.temp.*,2.5)",)),
    C("scale-negative", ("scale(svc.web.host1.qps,-0.25)",)),
    C("scale-scientific", ("scale(svc.web.host1.qps,1e-3)",)),
    C("offset", ("offset(neg.temp.a,-3)",)),
    C("absolute", ("absolute(neg.temp.*)",)),
    C("alias-double-quotes", ('alias(sumSeries(svc.*.*.qps),"total qps")',)),
    C("alias-single-quotes", ("alias(svc.web.host1.qps,'web one')",)),
    C("aliasByNode", ("aliasByNode(svc.*.*.qps,1,2)",)),
    C("aliasByNode-negative", ("aliasByNode(svc.*.*.qps,-2)",)),
    C("aliasByNode-of-function", ("aliasByNode(scale(svc.web.*.qps,2),2)",)),
    C("aliasByMetric", ("aliasByMetric(svc.web.*.qps)",)),
    C("aliasByMetric-of-function", ("aliasByMetric(scale(svc.web.*.latency,2))",)),
    C("aliasSub", (r'aliasSub(svc.web.*.qps,"host(\d)","h\1")',)),
    C("summarize-sum", ('summarize(svc.web.host1.qps,"1min")',)),
    C("summarize-avg", ('summarize(svc.api.host2.latency,"5min","avg")',)),
    C("summarize-max-align", ('summarize(svc.web.*.qps,"1h","max",true)',)),
    C("summarize-last-noalign", ('summarize(cnt.requests.x,"7min","last",false)',)),
    C("movingAverage-points", ("movingAverage(svc.web.host1.qps,5)",)),
    C("movingAverage-interval", ('movingAverage(svc.api.*.latency,"1min")',)),
    C("nonNegativeDerivative", ("nonNegativeDerivative(cnt.requests.*)",)),
    # Until the last point with data: graphite-web 1.1.8 raises TypeError (HTTP 500) when
    # maxValue meets a null, so the window must not end on an empty slot.
    C(
        "nonNegativeDerivative-max",
        ("nonNegativeDerivative(cnt.requests.x,2000)",),
        (("from", "{window_from}"), ("until", "{last}")),
        times="explicit",
    ),
    C("perSecond", ("perSecond(cnt.requests.*)",)),
    C("integral", ("integral(svc.web.host1.latency)",)),
    C("integral-gaps", ("integral(svc.api.host2.latency)",)),
    C("timeShift", ('timeShift(svc.web.host1.qps,"10min")',)),
    C("timeShift-1h", ('timeShift(svc.web.*.qps,"1h")',)),
    C("timeShift-explicit-minus", ('timeShift(neg.temp.a,"-5min")',)),
    C("keepLastValue", ("keepLastValue(svc.api.host2.latency)",)),
    C("keepLastValue-limit", ("keepLastValue(svc.api.*.latency,3)",)),
    C("transformNull", ("transformNull(svc.api.*.latency)",)),
    C("transformNull-value", ("transformNull(sparse.m1,-1)",)),
    C("groupByNode-sum", ('groupByNode(svc.*.*.qps,1,"sumSeries")',)),
    C("groupByNode-default", ("groupByNode(svc.*.*.latency,2)",)),
    C("groupByNode-max", ('groupByNode(svc.*.*.qps,2,"maxSeries")',)),
    C("highestCurrent", ("highestCurrent(svc.*.*.qps,2)",)),
    C("highestAverage", ("highestAverage(svc.*.*.qps,3)",)),
    C("lowestCurrent", ("lowestCurrent(svc.*.*.qps,1)",)),
    C("sortByMaxima", ("sortByMaxima(neg.temp.*)",)),
    C("sortByMaxima-qps", (f"sortByMaxima({QPS})",)),
    C("limit", (f"limit({QPS},3)",)),
    C("consolidateBy-max", ('consolidateBy(svc.web.*.qps,"max")',), (("maxDataPoints", "40"),)),
    C("consolidateBy-min", ('consolidateBy(neg.temp.a,"min")',), (("maxDataPoints", "33"),)),
    C("consolidateBy-sum", ('consolidateBy(cnt.requests.y,"sum")',), (("maxDataPoints", "50"),)),
    C("removeBelowValue", ("removeBelowValue(neg.temp.*,0)",)),
    C("removeAboveValue", ("removeAboveValue(svc.web.host1.qps,20)",)),
    C("countSeries", (f"countSeries({QPS})",)),
    C("countSeries-nothing", ("countSeries(nope.*)",)),
    C("nested-alias-scale-offset", ('alias(scale(offset(neg.temp.a,1),2),"adjusted")',)),
    C("nested-highest-of-groups", ('highestAverage(groupByNode(svc.*.*.qps,1,"sumSeries"),1)',)),
    C("nested-moving-persecond", ("movingAverage(perSecond(cnt.requests.*),3)",)),
    C("nested-aliasByNode-sum", ("aliasByNode(sumSeries(svc.web.*.qps),1)",)),
    C(
        "nested-divide-sums",
        ("divideSeries(sumSeries(svc.*.host1.qps),sumSeries(svc.*.host2.qps))",),
    ),
    C("nested-summarize-derivative", ('summarize(nonNegativeDerivative(cnt.requests.x),"10min")',)),
    C("coarse-step", ("coarse.*",)),
    C("mixed-steps-sumSeries", ("sumSeries(svc.web.host1.qps,coarse.a)",)),
    C("mixed-steps-averageSeries", ("averageSeries(coarse.b,svc.api.host2.latency)",)),
    C("mixed-steps-divideSeries", ("divideSeries(coarse.a,svc.web.host1.qps)",)),
    C("mixed-steps-diffSeries", ("diffSeries(coarse.b,neg.temp.a,coarse.a)",)),
    C("mixed-steps-asPercent", ("asPercent(svc.db.host1.qps,coarse.b)",)),
    C("mixed-steps-groupByNode", ('groupByNode({coarse,neg}.*,0,"sumSeries")',)),
    C("mixed-steps-maxDataPoints", ("coarse.*", "neg.temp.a"), (("maxDataPoints", "45"),)),
    C("odd-values", ("odd.values.wide",)),
    C("odd-values-functions", ("scale(odd.values.wide,3)", "integral(odd.values.wide)")),
    C("odd-names", ("odd.name-with_dash.*", "odd.Upper.*")),
    C("odd-names-glob-case", ("odd.upper.*", "odd.U*.Case")),
    C("duplicate-timestamps-last-wins", ("odd.dup",)),
    C("pickle-ingest", ("pkl.*",)),
    C("pickle-and-plaintext", ("sumSeries(pkl.ints,svc.web.host1.qps)",)),
    C("sumSeries-of-nothing", ("sumSeries(nope.*)",)),
    # Functions beyond the required list that our collector also implements.
    C("aggregate-avg", ('aggregate(svc.*.*.latency,"average")',)),
    C("aggregate-median-xff", ('aggregate(svc.api.*.latency,"median",0.6)',)),
    C("aggregate-count", ('aggregate(svc.*.*.latency,"count")',)),
    C("aggregate-avg_zero", ('aggregate(svc.api.*.latency,"avg_zero")',)),
    C("aggregate-last", ('aggregate(sparse.*,"last")',)),
    C("stddevSeries", ("stddevSeries(svc.*.*.latency)",)),
    C("rangeOfSeries", ("rangeOfSeries(neg.temp.*)",)),
    C("multiplySeries", ("multiplySeries(neg.temp.a,svc.web.host1.qps)",)),
    C("movingMedian", ("movingMedian(svc.api.host2.latency,7)",)),
    C("movingSum-interval", ('movingSum(neg.temp.b,"2min")',)),
    C("movingMin", ("movingMin(svc.api.*.latency,4)",)),
    C("movingMax-xff", ("movingMax(svc.api.host2.latency,10,0.9)",)),
    C("movingWindow", ('movingWindow(neg.temp.c,"1min","sum")',)),
    C("derivative", ("derivative(cnt.requests.*)",)),
    C("delay", ("delay(svc.web.host1.qps,3)",)),
    C("delay-negative", ("delay(svc.api.host2.latency,-2)",)),
    C("substr", ("substr(svc.web.*.qps,1,3)",)),
    C("substr-of-function", ("substr(scale(svc.web.host1.qps,2),2)",)),
    C("sortByMinima", ("sortByMinima(neg.temp.*)",)),
    C("highest-max", ('highest(svc.*.*.qps,2,"max")',)),
    C("lowest-default", ("lowest(neg.temp.*,1)",)),
    C("highestMax", ("highestMax(svc.*.*.latency,2)",)),
    C("lowestAverage", ("lowestAverage(svc.*.*.qps,2)",)),
    C("groupByNodes", ('groupByNodes(svc.*.*.qps,"sum",1,2)',)),
    C("groupByNodes-average", ('groupByNodes(svc.*.*.latency,"average",3)',)),
    C(
        "perSecond-maxValue",
        ("perSecond(cnt.requests.x,5000)",),
        (("from", "{window_from}"), ("until", "{last}")),
        times="explicit",
    ),
    C(
        "transformNull-referenceSeries",
        ("transformNull(svc.api.host2.latency,0,svc.web.host1.qps)",),
    ),
    C("asPercent-None-total", ("asPercent(svc.web.*.qps,None)",)),
    C("asPercent-nodes", ("asPercent(svc.*.*.qps,svc.*.*.qps,1)",)),
    C("pct-alias", ("pct(svc.web.host1.qps,100)",)),
    C("timeShift-resetEnd-false", ('timeShift(svc.web.host1.qps,"5min",false)',)),
    C("summarize-avg_zero", ('summarize(svc.api.host2.latency,"10min","avg_zero")',)),
    C("summarize-median", ('summarize(svc.api.*.latency,"3min","median")',)),
    C("pipe-syntax", ('svc.web.*.qps|scale(2)|alias("piped")',)),
    C(
        "xFilesFactor-param",
        ("svc.api.*.latency",),
        (("maxDataPoints", "20"), ("xFilesFactor", "0.9")),
    ),
    C("keyword-args", ('summarize(svc.web.host1.qps,intervalString="5min",func="max")',)),
]

TIME_CASES = [
    C("time-epoch", (QPS,), (("from", "{start}"), ("until", "{end}")), times="explicit"),
    C("time-minus-1h", (QPS,), (("from", "-1h"),), times="explicit"),
    C(
        "time-minus-90min-until-now",
        ("neg.temp.*",),
        (("from", "-90min"), ("until", "now")),
        times="explicit",
    ),
    C(
        "time-minus-2h-until-minus-10min",
        ("svc.api.*.latency",),
        (("from", "-2h"), ("until", "-10min")),
        times="explicit",
    ),
    C("time-minus-7d", (QPS,), (("from", "-7d"),), times="explicit"),
    C(
        "time-minus-7d-counters",
        ("cnt.requests.*", "svc.api.*.latency"),
        (("from", "-7d"),),
        times="explicit",
    ),
    C(
        "time-hhmm-yyyymmdd",
        (QPS,),
        (("from", "{start_hm}"), ("until", "{end_hm}")),
        times="explicit",
    ),
    C(
        "time-yyyymmdd",
        ("neg.temp.a",),
        (("from", "{start_ymd}"), ("until", "{end}")),
        times="explicit",
    ),
    C(
        "time-minus-7d-coarse",
        ("coarse.*", "sumSeries(coarse.*)"),
        (("from", "-7d"),),
        times="explicit",
    ),
    C(
        "time-tz",
        ("neg.temp.b",),
        (("from", "{start_hm}"), ("until", "{end_hm}"), ("tz", "Asia/Tokyo")),
        times="explicit",
    ),
    C(
        "time-now-param",
        (QPS,),
        (("from", "-1h"), ("until", "now"), ("now", "{end}")),
        times="explicit",
    ),
    C(
        "time-now-param-minutes",
        ("neg.temp.*",),
        (("from", "-45min"), ("until", "-5min"), ("now", "{mid}")),
        times="explicit",
    ),
    C(
        "time-now-param-midnight",
        ("neg.temp.a",),
        (("from", "midnight"), ("now", "{end}")),
        times="explicit",
    ),
    C(
        "time-hh-mm",
        ("neg.temp.a",),
        (("from", "{start_clock}"), ("until", "{end_clock}"), ("now", "{end}")),
        times="explicit",
    ),
    C(
        "time-mm-dd-yy",
        ("neg.temp.c",),
        (("from", "{start_mdy}"), ("until", "{end}")),
        times="explicit",
    ),
    C("time-sum-minus-1h", (f"sumSeries({QPS})",), (("from", "-1h"),), times="explicit"),
]

OPTION_CASES = [
    C("maxDataPoints", (QPS,), (("maxDataPoints", "100"),)),
    C("maxDataPoints-gaps", ("svc.api.*.latency",), (("maxDataPoints", "37"),)),
    C("maxDataPoints-one", ("neg.temp.*",), (("maxDataPoints", "1"),)),
    C("maxDataPoints-above-points", ("neg.temp.a",), (("maxDataPoints", "5000"),)),
    C("noNullPoints", ("svc.api.*.latency", "sparse.*"), (("noNullPoints", "true"),)),
    C("noNullPoints-all-null", ("sparse.m1", "does.not.exist"), (("noNullPoints", "true"),)),
    C("csv", ("svc.api.*.latency",), fmt="csv"),
    C("csv-function", ("sumSeries(neg.temp.*)", "sparse.m2"), fmt="csv"),
    C("raw", ("svc.api.*.latency",), fmt="raw"),
    C("raw-function", ("perSecond(cnt.requests.*)",), fmt="raw"),
]

# case id -> reason; each becomes xfail(strict=True) so it fails loudly once fixed.
KNOWN_DIFFERENCES: dict[str, str] = {}


def _params(cases: list[Case]) -> list[Any]:
    return [
        pytest.param(
            case,
            id=case.id,
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_DIFFERENCES[case.id])]
            if case.id in KNOWN_DIFFERENCES
            else [],
        )
        for case in cases
    ]


@pytest.mark.parametrize("case", _params(FUNCTION_CASES + TIME_CASES + OPTION_CASES))
def test_render_matches_graphite_web(pair: Pair, case: Case) -> None:
    ours, theirs = _ask_both(pair, "/render", case.query(pair), case.relative)
    COMPARE[case.fmt](ours, theirs)


def test_dataset_is_not_trivial(pair: Pair) -> None:
    """The comparisons above would pass vacuously on empty answers; make sure they are not."""
    window = [(k, str(v)) for k, v in pair.window.items()]
    query = [("target", QPS), ("target", "sparse.*"), *window, ("format", "json")]
    body = pair.graphite.get("/render", query)
    series = json.loads(body)
    assert len(series) == 9
    assert all(any(v is not None for v, _ in s["datapoints"]) for s in series)


FIND_QUERIES = [
    "*",
    "odd.*",
    "odd.U*",
    "coarse.*",
    "svc.*",
    "svc.*.*",
    "svc.web.host?",
    "svc.[a-d]*",
    "svc.{web,db}.*",
    "svc.web.host1.*",
    "cnt.requests.x",
    "nope.*",
]


def _find_params(query: str, fmt: str) -> list[tuple[str, str]]:
    params = [("query", query)]
    if fmt != "default":
        params.append(("format", fmt))
    return params


@pytest.mark.parametrize("fmt", ["default", "treejson", "completer"])
@pytest.mark.parametrize("query", FIND_QUERIES)
def test_find_matches_graphite_web(pair: Pair, query: str, fmt: str) -> None:
    ours, theirs = _ask_both(pair, "/metrics/find", _find_params(query, fmt), relative=False)
    mine, ref = json.loads(ours), json.loads(theirs)
    if fmt == "completer":
        # graphite-web sorts completer results by name only; among equal names the order is
        # its directory listing's, so compare the name order and then the sorted entries.
        assert [m["name"] for m in mine["metrics"]] == [m["name"] for m in ref["metrics"]]
        key = lambda m: (m["name"], m["path"])  # noqa: E731
        mine["metrics"].sort(key=key)
        ref["metrics"].sort(key=key)
    assert mine == ref


FIND_OPTION_CASES = {
    "treejson-wildcards": [("query", "svc.*.*"), ("wildcards", "1")],
    "completer-leavesOnly": [
        ("query", "svc.web.host1.*"),
        ("format", "completer"),
        ("leavesOnly", "1"),
    ],
    "completer-leavesOnly-branches": [
        ("query", "svc.*"),
        ("format", "completer"),
        ("leavesOnly", "1"),
    ],
    "completer-wildcards": [("query", "neg.temp.*"), ("format", "completer"), ("wildcards", "1")],
    "nodelist": [("query", "svc.*.*.qps"), ("format", "nodelist")],
    "nodelist-position": [("query", "svc.*.*.qps"), ("format", "nodelist"), ("position", "2")],
    "completer-automatic-variants": [
        ("query", "svc.web,db.host"),
        ("format", "completer"),
        ("automatic_variants", "1"),
    ],
    "completer-double-dot": [("query", "svc..host1"), ("format", "completer")],
}


@pytest.mark.parametrize("case", sorted(FIND_OPTION_CASES))
def test_find_options_match_graphite_web(pair: Pair, case: str) -> None:
    ours, theirs = _ask_both(pair, "/metrics/find", FIND_OPTION_CASES[case], relative=False)
    mine, ref = json.loads(ours), json.loads(theirs)
    assert ref, "the case must find something"
    if isinstance(ref, dict) and "metrics" in ref:  # completer: see test_find_matches_graphite_web
        key = lambda m: (m["name"], m.get("path", ""))  # noqa: E731 - the "*" entry has none
        mine["metrics"].sort(key=key)
        ref["metrics"].sort(key=key)
    if isinstance(ref, dict) and "nodes" in ref:  # nodelist: a set in graphite-web
        mine["nodes"].sort()
        ref["nodes"].sort()
    assert mine == ref


def test_index_json_matches_graphite_web(pair: Pair) -> None:
    ours, theirs = _ask_both(pair, "/metrics/index.json", [], relative=False)
    assert sorted(json.loads(ours)) == sorted(json.loads(theirs))
    assert set(pair.data.points) <= set(json.loads(theirs))


def _post_both(
    pair: Pair, path: str, query: list[tuple[str, str]], form: list[tuple[str, str]]
) -> tuple[bytes, bytes]:
    return pair.tidemark.post(path, query, form), pair.graphite.post(path, query, form)


POST_CASES = {
    "all-in-body": ([], [("target", "sumSeries(svc.*.host1.qps)"), ("target", "neg.temp.a")]),
    "query-and-body-targets": ([("target", "neg.temp.b")], [("target", "aliasByNode(coarse.*,1)")]),
    "body-overrides-format": ([("format", "csv")], [("target", "sparse.m1"), ("format", "json")]),
    "body-maxDataPoints": ([("target", "svc.web.*.qps")], [("maxDataPoints", "25")]),
}


@pytest.mark.parametrize("case", sorted(POST_CASES))
def test_render_post_matches_graphite_web(pair: Pair, case: str) -> None:
    """POST /render with form bodies: graphite-web adds the body's parameters to the query's."""
    query, form = POST_CASES[case]
    window = [(k, str(v)) for k, v in pair.window.items()]
    if not any(k == "format" for k, _ in query + form):
        form = [*form, ("format", "json")]
    ours, theirs = _post_both(pair, "/render", query, form + window)
    assert_same_json(ours, theirs)
    assert json.loads(theirs), "the case must return some series"


def test_find_post_matches_graphite_web(pair: Pair) -> None:
    ours, theirs = _post_both(pair, "/metrics/find", [], [("query", "svc.{web,db}.*")])
    assert json.loads(ours) == json.loads(theirs)


INGEST_QUERIES = [
    ("ing.{sci,mixed,unaligned,float_ts}", "{start}", "{window_from}"),
    ("ing.*", "{start}", "{end}"),
    ("ing.old", "-7d", "now"),
]


@pytest.mark.parametrize(("target", "from_", "until"), INGEST_QUERIES)
def test_ingest_edge_cases_store_the_same(pair: Pair, target: str, from_: str, until: str) -> None:
    """Odd plaintext lines (whitespace, number forms, NaN, bad lines, unaligned and old
    timestamps) leave the same data in both servers."""
    params = [
        ("target", target),
        ("from", _expand(from_, pair.data)),
        ("until", _expand(until, pair.data)),
        ("format", "json"),
    ]
    ours, theirs = _ask_both(pair, "/render", params, relative=from_.startswith("-"))
    assert_same_json(ours, theirs)
    with_data = [s for s in json.loads(theirs) if any(v is not None for v, _ in s["datapoints"])]
    assert len(with_data) >= {"ing.*": 10, "ing.old": 1}.get(target, 4)


@pytest.mark.parametrize("fmt", ["treejson", "completer"])
def test_ingest_edge_cases_create_the_same_metrics(pair: Pair, fmt: str) -> None:
    ours, theirs = _ask_both(pair, "/metrics/find", _find_params("ing.*", fmt), relative=False)
    mine, ref = json.loads(ours), json.loads(theirs)
    if fmt == "completer":
        mine, ref = mine["metrics"], ref["metrics"]
    key = lambda m: json.dumps(m, sort_keys=True)  # noqa: E731
    assert sorted(mine, key=key) == sorted(ref, key=key)


@pytest.fixture(scope="module")
def fresh_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """A second, empty pair of servers for receiver tests whose metrics would change the
    answers of the cases above (new root nodes, points at the current time)."""
    data = Dataset(0, 0, {})
    with (
        started(graphite_stack(tmp_path_factory.mktemp("g2"), schemas=SCHEMAS)) as graphite,
        started(tidemark_collector(tmp_path_factory.mktemp("t2"), schemas=SCHEMAS)) as ours,
    ):
        yield Pair(graphite, ours, data)


@pytest.mark.xfail(
    strict=True,
    reason="carbon creates a metric for a point whisper drops (timestamp 0); ours does not",
)
def test_point_outside_retention_creates_no_metric(fresh_pair: Pair) -> None:
    lines = [ZERO_TIMESTAMP_LINE, format_line("ingzero.marker", 1.0, int(time.time()) - 60)]
    for server in (fresh_pair.graphite, fresh_pair.tidemark):
        send_lines(server.line_port, lines)
        _wait_for_find(server, "ingzero.marker")
    ours, theirs = _ask_both(fresh_pair, "/metrics/find", [("query", "ingzero.*")], False)
    assert json.loads(ours) == json.loads(theirs)


def test_timestamp_minus_one_means_now(fresh_pair: Pair) -> None:
    """carbon stores a point sent with timestamp -1 at the time it arrives (carbon#54)."""
    sent_at = time.time()
    params = [
        ("target", "ingnow.x"),
        ("from", str(int(sent_at) - 60)),
        ("until", str(int(sent_at) + 60)),
        ("format", "json"),
    ]
    for server in (fresh_pair.graphite, fresh_pair.tidemark):  # graphite first: it must pass
        send_lines(server.line_port, ["ingnow.x 9 -1\n"])
        _wait_for_find(server, "ingnow.x", timeout_seconds=10)
        series = json.loads(server.get("/render", params))
        points = [(v, ts) for v, ts in series[0]["datapoints"] if v is not None]
        assert len(points) == 1, points
        assert points[0][0] == 9.0
        assert abs(points[0][1] - sent_at) <= 30


def test_plaintext_over_udp_stores_the_same(fresh_pair: Pair) -> None:
    """The same plaintext lines in UDP datagrams (carbon's UDP listener vs ours)."""
    end = int(time.time()) // 60 * 60 - 60
    lines = [
        format_line(f"udp.{name}", float(i * k) / 4, end - 600 + STEP * i)
        for i in range(60)
        for k, name in enumerate(["a", "b"], start=1)
        if not (name == "b" and i % 7 == 0)
    ]
    params = [
        ("target", "udp.*"),
        ("from", str(end - 601)),
        ("until", str(end)),
        ("format", "json"),
    ]
    for server in (fresh_pair.graphite, fresh_pair.tidemark):
        send_datagrams(server.udp_port, lines)
        deadline = time.monotonic() + 30
        while sum(
            v is not None
            for s in json.loads(server.get("/render", params))
            for v, _ in s["datapoints"]
        ) < len(lines):
            assert time.monotonic() < deadline, f"{server.base_url}: UDP points never all arrived"
            time.sleep(0.2)
    ours, theirs = _ask_both(fresh_pair, "/render", params, relative=False)
    assert_same_json(ours, theirs)


def test_restart_keeps_what_carbon_keeps(fresh_pair: Pair, tmp_path: Path) -> None:
    """Points sent just before SIGTERM survive a restart of ours, as carbon's whisper has them."""
    end = int(time.time()) // 60 * 60 - 60
    lines = [
        format_line(f"dur.{name}", float(i + k), end - 900 + STEP * i)
        for i in range(90)
        for k, name in enumerate(["a", "b", "c"])
    ]
    params = [
        ("target", "dur.*"),
        ("from", str(end - 901)),
        ("until", str(end)),
        ("format", "json"),
    ]

    def count(server: GraphiteStack | TidemarkCollector) -> int:
        series = json.loads(server.get("/render", params))
        return sum(v is not None for s in series for v, _ in s["datapoints"])

    send_lines(fresh_pair.graphite.line_port, lines)
    with started(tidemark_collector(tmp_path, schemas=SCHEMAS)) as first:
        send_lines(first.line_port, lines)
        deadline = time.monotonic() + 30
        while count(first) < len(lines):
            assert time.monotonic() < deadline, "ours never read back the points"
            time.sleep(0.2)
    # Leaving the block sent SIGTERM and checked the exit status was 0.
    with started(tidemark_collector(tmp_path, schemas=SCHEMAS)) as second:
        deadline = time.monotonic() + 30
        while count(fresh_pair.graphite) < len(lines):
            assert time.monotonic() < deadline, "carbon never read back the points"
            time.sleep(0.2)
        assert_same_json(second.get("/render", params), fresh_pair.graphite.get("/render", params))
        assert count(second) == len(lines)


def _wait_for_find(
    server: GraphiteStack | TidemarkCollector, query: str, timeout_seconds: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout_seconds
    while json.loads(server.get("/metrics/find", [("query", query)])) == []:
        if time.monotonic() > deadline:
            raise PeerFailed(f"{query} never appeared")
        time.sleep(0.2)


def test_every_case_id_is_unique() -> None:
    ids = [case.id for case in FUNCTION_CASES + TIME_CASES + OPTION_CASES]
    assert len(ids) == len(set(ids))
    assert set(KNOWN_DIFFERENCES) <= set(ids)
