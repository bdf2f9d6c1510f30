"""histogramPercentile: pool percentiles from many nodes' bucket series, within 1 %."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from agent.buckets import RELATIVE_ACCURACY
from agent.naming import MetricNaming
from agent.recorder import Recorder
from agent.reporter import Reporter, ReporterConfig
from collector.render.errors import InputParameterError
from collector.render.evaluator import evaluate_targets
from collector.render.grammar import parse_target
from tests.peers.collector import tidemark_collector
from tests.peers.process import PeerUnavailable, wait_until
from tests.test_render_support import MemorySource

T0 = 1_800_000_000  # aligned to 10 s
NODES = ("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80")


def exact_percentile(values: list[float], n: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(n / 100 * len(ordered) - 1e-9)) - 1]


def node_latencies(node: int, window: int, size: int) -> list[float]:
    """Heavy-tailed latencies; each node and window differs (one node is much slower)."""
    rng = np.random.default_rng(1000 * node + window)
    scale = 60.0 if node == 3 else 15.0
    body = rng.lognormal(math.log(scale), 0.5, size)
    tail = (rng.pareto(1.3, size) + 1) * scale * 3
    return list(np.where(rng.random(size) < 0.03, tail, body))


def record_windows(recorder: Recorder, windows: int) -> dict[int, list[float]]:
    """Record every node's calls for ``windows`` windows; returns raw latencies per window."""
    raw: dict[int, list[float]] = {}
    for w in range(windows):
        raw[w] = []
        for i, node in enumerate(NODES):
            values = node_latencies(i, w, 1500 + 500 * i)
            raw[w].extend(values)
            for v in values:
                recorder.record("user", v, node=node)
    return raw


def memory_source(windows: int) -> tuple[MemorySource, dict[int, list[float]]]:
    naming = MetricNaming(idc="bj")
    series: dict[str, dict[int, float]] = {}
    recorder = Recorder(10, clock=lambda: T0)
    raw: dict[int, list[float]] = {}
    for w in range(windows):
        raw.update({w: record_windows(recorder, 1)[0]})
        for name, value, ts in naming.points(recorder.swap(T0 + 10 * (w + 1))):
            series.setdefault(name, {})[ts] = value
    source = MemorySource({
        name: (T0, 10, [points.get(T0 + 10 * w) for w in range(windows)])
        for name, points in series.items()})
    return source, raw


def run(source: MemorySource, target: str) -> list[tuple[float | None, int]]:
    (series,) = evaluate_targets(source, [parse_target(target)], start=T0 - 10,
                                 end=T0 + 40, now=T0 + 60, tz=UTC)
    return series.datapoints()


@pytest.mark.parametrize("n, form", [(50, "{n}"), (90, "{n}"), (99, "q={n}"), (99.9, "{n}"),
                                     (99.9, "q={n}")])
def test_pool_percentile_matches_the_exact_one_within_the_sketch_error(n: float,
                                                                      form: str) -> None:
    """``histogramPercentile(seriesList, q)``: q positionally or by keyword."""
    source, raw = memory_source(3)
    q = form.format(n=n)
    points = run(source, f"histogramPercentile(tidemark.user.bj.*.latency.hist.*,{q})")
    by_ts = {ts: value for value, ts in points}
    for w in range(3):
        got = by_ts[T0 + 10 * w]
        exact = exact_percentile(raw[w], n)
        assert got is not None
        assert abs(got - exact) / exact <= RELATIVE_ACCURACY + 1e-9, (w, got, exact)
    assert by_ts[T0 + 30] is None  # no calls in that window


def test_percentile_of_a_longer_range_merges_windows_too() -> None:
    source, raw = memory_source(3)
    target = "histogramPercentile(summarize(tidemark.user.bj.*.latency.hist.*,'30s','sum',true),99)"
    points = [(v, ts) for v, ts in run(source, target) if v is not None]
    assert len(points) == 1
    everything = [v for w in range(3) for v in raw[w]]
    exact = exact_percentile(everything, 99)
    assert abs(points[0][0] - exact) / exact <= RELATIVE_ACCURACY + 1e-9


def test_averaging_node_percentiles_would_be_wrong_but_merging_is_right() -> None:
    """The point of the function: the mean of per-node p99 is far from the pool's p99."""
    source, raw = memory_source(1)
    merged = run(source, "histogramPercentile(tidemark.user.bj.*.latency.hist.*,99)")[0][0]
    averaged = run(source, "averageSeries(tidemark.user.bj.*.latency.p99)")[0][0]
    exact = exact_percentile(raw[0], 99)
    assert merged is not None and averaged is not None
    assert abs(merged - exact) / exact <= RELATIVE_ACCURACY + 1e-9
    assert abs(averaged - exact) / exact > 0.05


@pytest.mark.parametrize("target, message", [
    ("histogramPercentile(tidemark.user.bj.*.latency.hist.*,150)", "0..100"),
    ("histogramPercentile(tidemark.user.bj.*.latency.p99,99)", "latency.hist"),
])
def test_bad_arguments_name_the_problem(target: str, message: str) -> None:
    source, _ = memory_source(1)
    with pytest.raises(InputParameterError, match=message):
        run(source, target)


@pytest.mark.slow
def test_end_to_end_agents_to_the_real_collector_and_back_through_render(tmp_path: Path) -> None:
    """Four nodes' reporters send to `tidemark collector`; its /render gives the pool p999."""
    now = time.time()
    first = int(now // 10) * 10 - 60
    clock_now = [float(first)]
    try:
        with tidemark_collector(tmp_path) as collector:
            raw: dict[int, list[float]] = {w: [] for w in range(3)}
            for i, node in enumerate(NODES):
                clock_now[0] = float(first)
                recorder = Recorder(10, default_node=node, clock=lambda: clock_now[0])
                reporter = Reporter(recorder, ReporterConfig(port=collector.line_port),
                                    naming=MetricNaming(idc="bj"), registry=CollectorRegistry(),
                                    clock=lambda: clock_now[0])
                for w in range(3):
                    values = node_latencies(i, w, 800)
                    raw[w].extend(values)
                    for v in values:
                        recorder.record("user", v)
                    clock_now[0] = first + 10 * (w + 1)
                    reporter.tick()
                assert reporter.buffered_points == 0
                reporter.stop()
            target = "histogramPercentile(tidemark.user.bj.*.latency.hist.*,99.9)"
            params = {"target": target, "from": str(first - 10), "until": str(first + 30),
                      "format": "json"}
            result: list[dict[str, object]] = []

            def rendered() -> bool:
                result[:] = json.loads(collector.get("/render", params))
                return bool(result) and sum(
                    1 for v, _ in result[0]["datapoints"] if v is not None) == 3  # type: ignore
            wait_until(rendered, timeout_seconds=30, what="3 rendered windows")
            by_ts = {ts: v for v, ts in result[0]["datapoints"]}  # type: ignore
            for w in range(3):
                exact = exact_percentile(raw[w], 99.9)
                got = by_ts[first + 10 * w]
                assert abs(got - exact) / exact <= RELATIVE_ACCURACY + 1e-9, (w, got, exact)
    except PeerUnavailable as exc:
        pytest.skip(str(exc))
