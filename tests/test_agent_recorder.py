"""The agent's measuring core: the log-bucket sketch, the recorder's windows, metric names."""

from __future__ import annotations

import math
import random
import threading

import numpy as np
import pytest

from agent.buckets import (
    GAMMA,
    MIN_INDEX,
    RELATIVE_ACCURACY,
    bucket_bounds,
    bucket_index,
    bucket_value,
    quantile_from_counts,
)
from agent.naming import MetricNaming, sanitize
from agent.recorder import ERROR_CLASSES, Recorder, SeriesKey
from agent.sketch import LogHistogram

QS = (0.5, 0.9, 0.99, 0.999)


def exact_quantile(values: list[float], q: float) -> float:
    """Nearest rank: the k-th smallest value, k = max(1, ceil(q * n))."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered) - 1e-9)) - 1]


def heavy_tailed(n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    body = rng.lognormal(mean=math.log(20.0), sigma=0.6, size=n)
    tail = rng.pareto(1.5, size=n) * 50.0 + 1.0
    pick = rng.random(n) < 0.05
    return list(np.where(pick, tail, body))


def test_gamma_follows_the_relative_accuracy() -> None:
    assert RELATIVE_ACCURACY == 0.01
    assert GAMMA == pytest.approx(1.01 / 0.99)


@pytest.mark.parametrize("value", [0.0015, 0.3, 1.0, 7.77, 100.0, 12345.6, 9.9e6])
def test_every_value_lies_in_its_bucket_and_its_representative_is_within_one_percent(
        value: float) -> None:
    index = bucket_index(value)
    low, high = bucket_bounds(index)
    assert low < value <= high * (1 + 1e-12)
    assert abs(bucket_value(index) - value) / value <= RELATIVE_ACCURACY + 1e-12


def test_tiny_and_zero_latencies_share_the_lowest_bucket() -> None:
    assert bucket_index(0.0) == MIN_INDEX == bucket_index(1e-3)
    assert bucket_index(1e-9) == MIN_INDEX


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_latencies_are_rejected_with_a_clear_error(bad: float) -> None:
    with pytest.raises(ValueError, match="latency"):
        bucket_index(bad)
    with pytest.raises(ValueError, match="latency"):
        Recorder(default_node="n").record("svc", bad)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quantiles_are_within_one_percent_of_the_exact_ones(seed: int) -> None:
    values = heavy_tailed(20_000, seed)
    hist = LogHistogram()
    for v in values:
        hist.add(v)
    for q in QS:
        exact = exact_quantile(values, q)
        got = hist.quantile(q)
        assert got is not None
        assert abs(got - exact) / exact <= RELATIVE_ACCURACY + 1e-9, (q, got, exact)
    assert hist.count == len(values)
    assert hist.max_ms == max(values)
    assert hist.mean_ms == pytest.approx(sum(values) / len(values))


def test_merged_histograms_equal_one_histogram_of_all_values() -> None:
    values = heavy_tailed(9_000, 7)
    parts = [LogHistogram() for _ in range(3)]
    whole = LogHistogram()
    for i, v in enumerate(values):
        parts[i % 3].add(v)
        whole.add(v)
    merged = LogHistogram()
    for part in parts:
        merged.merge(part)
    assert merged.buckets == whole.buckets
    for q in QS:
        assert merged.quantile(q) == whole.quantile(q)
    rebuilt = LogHistogram.from_counts(whole.buckets)
    assert quantile_from_counts(rebuilt.buckets, 0.99) == quantile_from_counts(whole.buckets, 0.99)


def test_quantile_of_empty_histogram_is_none_and_bad_q_is_rejected() -> None:
    assert LogHistogram().quantile(0.5) is None
    with pytest.raises(ValueError, match="quantile"):
        quantile_from_counts({1: 3}, 1.5)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_windows_are_aligned_to_the_interval_and_counts_are_per_window() -> None:
    clock = Clock(1_000_003.7)
    rec = Recorder(10, default_node="10.1.2.3:8080", clock=clock)
    assert rec.window_start == 1_000_000
    for ms in (5.0, 10.0, 20.0):
        rec.record("user", ms)
    rec.record("user", 900.0, error="timeout")
    snap = rec.swap(1_000_011.2)
    assert snap.start == 1_000_000 and snap.interval_seconds == 10
    stats = snap.stats[SeriesKey("user", "10.1.2.3:8080", None)]
    assert stats.requests == 4
    assert stats.errors == {"timeout": 1, "connection": 0, "5xx": 0, "business": 0}
    assert stats.histogram.max_ms == 900.0
    assert rec.window_start == 1_000_010
    rec.record("user", 1.0)
    snap2 = rec.swap(1_000_020.0)
    assert snap2.start == 1_000_010
    assert snap2.stats[SeriesKey("user", "10.1.2.3:8080", None)].requests == 1


def test_idle_keys_are_reported_for_a_while_then_forgotten() -> None:
    rec = Recorder(10, default_node="n", clock=Clock(100.0), idle_windows=2)
    rec.record("svc", 3.0)
    rec.swap(110.0)
    assert rec.swap(120.0).idle == (SeriesKey("svc", "n", None),)
    assert rec.swap(130.0).idle == (SeriesKey("svc", "n", None),)
    assert rec.swap(140.0).idle == ()


def test_unknown_error_class_and_missing_names_are_rejected() -> None:
    rec = Recorder(default_node="n")
    with pytest.raises(ValueError, match="error class"):
        rec.record("svc", 1.0, error="oops")
    with pytest.raises(ValueError, match="service"):
        rec.record("", 1.0)
    with pytest.raises(ValueError, match="node or a caller"):
        Recorder().record("svc", 1.0)
    with pytest.raises(ValueError, match="interval"):
        Recorder(0)


def test_recording_from_many_threads_loses_no_call() -> None:
    rec = Recorder(10, default_node="n")

    def work() -> None:
        for i in range(5_000):
            rec.record("svc", 1.0 + i % 50, error="5xx" if i % 10 == 0 else None)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = rec.swap().stats[SeriesKey("svc", "n", None)]
    assert stats.requests == 20_000
    assert stats.errors["5xx"] == 2_000
    assert sum(stats.histogram.buckets.values()) == 20_000


def test_measure_and_decorator_time_calls_and_classify_exceptions() -> None:
    rec = Recorder(default_node="n")
    with rec.measure("svc") as m:
        pass
    assert m.latency_ms is not None and m.latency_ms >= 0
    with pytest.raises(TimeoutError):
        with rec.measure("svc"):
            raise TimeoutError
    with pytest.raises(ConnectionRefusedError):
        with rec.measure("svc"):
            raise ConnectionRefusedError
    with pytest.raises(KeyError):
        with rec.measure("svc"):
            raise KeyError("x")
    with rec.measure("svc") as m:
        m.fail("5xx")

    @rec.timed("svc")
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    stats = rec.swap().stats[SeriesKey("svc", "n", None)]
    assert stats.requests == 6
    assert stats.errors == {"timeout": 1, "connection": 1, "5xx": 1, "business": 1}


async def test_decorator_wraps_coroutines() -> None:
    rec = Recorder(default_node="n")

    @rec.timed("svc", caller="web")
    async def handler() -> str:
        return "ok"

    assert await handler() == "ok"
    assert rec.swap().stats[SeriesKey("svc", None, "web")].requests == 1


def test_sanitize_replaces_everything_outside_the_safe_set() -> None:
    assert sanitize("10.1.2.3:8080") == "10_1_2_3_8080"
    assert sanitize("user-service_v2") == "user-service_v2"
    assert sanitize("a b/c*ü") == "a_b_c__"
    with pytest.raises(ValueError):
        sanitize("")


def test_points_follow_the_naming_contract() -> None:
    rec = Recorder(10, clock=Clock(2_000_005.0))
    rec.record("user.svc", 10.0, node="10.1.2.3:8080")
    rec.record("user.svc", 30.0, node="10.1.2.3:8080", error="business")
    rec.record("user.svc", 12.0, caller="php-web")
    points = MetricNaming(prefix="mesh.tm", idc="bj-1").points(rec.swap(2_000_010.0))
    by_name = {name: (value, ts) for name, value, ts in points}
    assert {ts for _, ts in by_name.values()} == {2_000_000}
    base = "mesh.tm.user_svc.bj-1.10_1_2_3_8080"
    assert by_name[f"{base}.requests"][0] == 2
    assert by_name[f"{base}.errors"][0] == 1
    assert by_name[f"{base}.errors.business"][0] == 1
    for c in ERROR_CLASSES:
        assert f"{base}.errors.{c}" in by_name
    assert by_name[f"{base}.qps"][0] == pytest.approx(0.2)
    assert by_name[f"{base}.success_rate"][0] == pytest.approx(0.5)
    assert by_name[f"{base}.latency.avg"][0] == pytest.approx(20.0)
    assert by_name[f"{base}.latency.max"][0] == 30.0
    assert by_name[f"{base}.latency.p999"][0] == pytest.approx(30.0, rel=0.01)
    hist = {int(n.rsplit(".", 1)[1]): v for n, (v, _) in by_name.items()
            if n.startswith(f"{base}.latency.hist.")}
    assert hist == {bucket_index(10.0): 1, bucket_index(30.0): 1}
    stats = {name[len(base) + 1:] for name in by_name if name.startswith(f"{base}.")}
    assert {s for s in stats if not s.startswith("latency.hist.")} == {  # the contract's list
        "requests", "errors", "errors.timeout", "errors.connection", "errors.5xx",
        "errors.business", "qps", "success_rate", "latency.avg", "latency.p50",
        "latency.p90", "latency.p99", "latency.p999", "latency.max"}
    client = "mesh.tm.client.php-web.user_svc.bj-1"
    assert by_name[f"{client}.requests"][0] == 1
    assert by_name[f"{client}.latency.p50"][0] == pytest.approx(12.0, rel=0.01)


def test_random_merge_order_does_not_change_pool_quantiles() -> None:
    rnd = random.Random(5)
    values = [rnd.expovariate(1 / 40.0) for _ in range(3000)]
    a, b = LogHistogram(), LogHistogram()
    for v in values:
        (a if rnd.random() < 0.5 else b).add(v)
    ab, ba = LogHistogram(), LogHistogram()
    ab.merge(a)
    ab.merge(b)
    ba.merge(b)
    ba.merge(a)
    assert ab.buckets == ba.buckets and ab.quantile(0.999) == ba.quantile(0.999)
