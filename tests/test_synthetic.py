"""The synthetic traffic generator and the M/M/c queueing model behind its latency."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.synthetic import (
    ANOMALY_KINDS,
    FlashCrowd,
    LevelShift,
    MMcNode,
    Outage,
    TrafficEvent,
    erlang_c,
    generate_traffic,
    random_events,
)

# 2026-01-05 is a Monday; two weeks of one-minute intervals.
START = "2026-01-05"
TWO_WEEKS = 14 * 1440


# ------------------------------------------------------------------ queueing model


def test_mm1_latency_quantile_matches_closed_form() -> None:
    node = MMcNode(servers=1, service_time_ms=10.0)  # mu = 100/s
    for load in (0.0, 20.0, 50.0, 90.0):
        # M/M/1 response time is exponential with rate mu - lambda.
        expected = 1000.0 * math.log(100.0) / (100.0 - load)
        assert node.latency_quantile_ms(load)[()] == pytest.approx(expected, rel=1e-9)
    assert math.isinf(node.latency_quantile_ms(100.0)[()])


def test_erlang_c_matches_the_textbook_formula() -> None:
    servers, load = 3, 2.2
    top = load**servers / math.factorial(servers) * servers / (servers - load)
    bottom = sum(load**k / math.factorial(k) for k in range(servers)) + top
    assert erlang_c(servers, load)[()] == pytest.approx(top / bottom, rel=1e-12)
    assert erlang_c(servers, 3.5)[()] == 1.0
    assert erlang_c(servers, 0.0)[()] == 0.0


def test_mmc_quantile_agrees_with_a_monte_carlo_queue() -> None:
    node = MMcNode(servers=4, service_time_ms=5.0)  # saturation 800 qps
    load = 700.0
    rng = np.random.default_rng(11)
    n = 200_000
    waits = node.wait_probability(load)[()]
    waiting = rng.random(n) < waits
    response_s = rng.exponential(1.0 / node.service_rate_per_second, n)
    response_s += np.where(waiting, rng.exponential(1.0 / (node.saturation_qps - load), n), 0.0)
    simulated = np.quantile(response_s * 1000.0, 0.99)
    assert node.latency_quantile_ms(load)[()] == pytest.approx(simulated, rel=0.03)


def test_capacity_is_where_the_quantile_meets_the_objective() -> None:
    node = MMcNode(servers=8, service_time_ms=10.0)
    capacity = node.capacity_qps(100.0)
    assert 0.0 < capacity < node.saturation_qps
    assert node.latency_quantile_ms(capacity)[()] == pytest.approx(100.0, rel=1e-6)
    assert node.latency_quantile_ms(capacity * 1.001)[()] > 100.0
    assert node.capacity_qps(20.0) == 0.0  # an idle node's p99 is 46 ms
    assert node.capacity_qps(100.0, quantile=0.999) < capacity


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"servers": 0}, "servers must be a positive integer"),
        ({"servers": 2.5}, "servers must be a positive integer"),
        ({"service_time_ms": -1.0}, "service_time_ms must be a positive finite"),
    ],
)
def test_bad_node_parameters(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MMcNode(**kwargs)  # type: ignore[arg-type]


def test_bad_queueing_arguments() -> None:
    node = MMcNode()
    with pytest.raises(ValueError, match="load_qps must be non-negative"):
        node.latency_quantile_ms([-1.0])
    with pytest.raises(ValueError, match=r"quantile must be in \(0, 1\)"):
        node.latency_quantile_ms([1.0], quantile=1.0)
    with pytest.raises(ValueError, match="latency_objective_ms must be a positive finite"):
        node.capacity_qps(0.0)


# ---------------------------------------------------------------------- generator


def test_same_seed_same_traffic_other_seed_other_noise() -> None:
    events: list[TrafficEvent] = [FlashCrowd("2026-01-06 10:00"), Outage("2026-01-07 03:00")]
    first = generate_traffic(START, 3 * 1440, events=events, holidays=["2026-01-07"], seed=5)
    again = generate_traffic(START, 3 * 1440, events=events, holidays=["2026-01-07"], seed=5)
    other = generate_traffic(START, 3 * 1440, events=events, holidays=["2026-01-07"], seed=6)
    pd.testing.assert_frame_equal(first.frame, again.frame)
    pd.testing.assert_frame_equal(first.events, again.events)
    assert not np.allclose(first.frame["qps"], other.frame["qps"])
    pd.testing.assert_series_equal(first.frame["anomaly_kind"], other.frame["anomaly_kind"])


def test_frame_shape_columns_and_index() -> None:
    traffic = generate_traffic(START, 360, "10s", nodes=8)
    frame = traffic.frame
    assert len(frame) == 360
    assert frame.index.name == "timestamp"
    assert frame.index[0] == pd.Timestamp(START)
    assert (frame.index[1] - frame.index[0]) == pd.Timedelta(seconds=10)
    assert list(frame.columns) == [
        "demand_qps",
        "qps",
        "qps_per_node",
        "utilisation",
        "latency_p99_ms",
        "latency_p999_ms",
        "error_rate",
        "success_rate",
        "is_holiday",
        "is_anomaly",
        "anomaly_kind",
    ]
    np.testing.assert_allclose(frame["qps_per_node"] * 8, frame["qps"])
    assert (frame["utilisation"] < 1.0).all()
    np.testing.assert_allclose(frame["error_rate"] + frame["success_rate"], 1.0)
    assert (frame["latency_p999_ms"] > frame["latency_p99_ms"]).all()
    assert not frame["is_anomaly"].any()
    assert (frame["anomaly_kind"] == "none").all()
    assert traffic.events.empty
    assert traffic.nodes == 8


def nearest_hour(index: pd.DatetimeIndex) -> np.ndarray:
    """Hour of day rounded to the nearest hour (so hour h is centred on h:00)."""
    return np.asarray(np.round(index.hour + index.minute / 60.0) % 24, dtype=int)


@pytest.mark.parametrize("peak_hour", [3.0, 14.0, 20.0])
def test_daily_peak_at_the_configured_hour_and_weekends_lower(peak_hour: float) -> None:
    frame = generate_traffic(
        START, TWO_WEEKS, peak_hour=peak_hour, weekend_factor=0.7, seed=int(peak_hour)
    ).frame
    weekday = frame[frame.index.day_of_week < 5]
    by_hour = weekday["qps"].groupby(nearest_hour(weekday.index)).mean()
    assert int(by_hour.idxmax()) == int(peak_hour)
    assert int(by_hour.idxmin()) == int((peak_hour + 12) % 24)
    weekend = frame[frame.index.day_of_week >= 5]
    assert weekend["qps"].mean() / weekday["qps"].mean() == pytest.approx(0.7, rel=0.02)


def test_trend_grows_demand_linearly() -> None:
    frame = generate_traffic(START, TWO_WEEKS, trend_per_day=0.05, weekend_factor=1.0).frame
    daily = frame["qps"].resample("1D").mean()
    # day d averages base * (1 + 0.05 * (d + 0.5)) over a whole daily cycle
    expected = 3000.0 * (1.0 + 0.05 * (np.arange(14) + 0.5))
    np.testing.assert_allclose(daily.to_numpy(), expected, rtol=0.01)


def test_each_event_kind_is_labelled_at_its_own_times() -> None:
    flash = FlashCrowd("2026-01-06 12:00", "40min", peak_factor=3.0)
    outage = Outage("2026-01-07 09:00", "20min", drop_share=0.9)
    shift = LevelShift("2026-01-09 06:00", factor=1.5, label_duration="2h")
    traffic = generate_traffic(
        START,
        7 * 1440,
        events=[shift, outage, flash],
        holidays=["2026-01-08"],
        holiday_factor=0.6,
        weekend_factor=1.0,
        seed=3,
    )
    frame, events = traffic.frame, traffic.events

    assert list(events["kind"]) == ["flash_crowd", "outage", "holiday", "level_shift"]
    assert list(events["is_anomaly"]) == [True, True, False, True]
    assert list(events["magnitude"]) == [3.0, 0.9, 0.6, 1.5]
    for row in events.itertuples():
        window = (frame.index >= row.start) & (frame.index < row.end)
        if row.kind == "holiday":
            assert frame.loc[window, "is_holiday"].all()
            assert window.sum() == 1440
            continue
        assert (frame.loc[window, "anomaly_kind"] == row.kind).all()
        assert frame.loc[window, "is_anomaly"].all()
    assert frame["is_anomaly"].sum() == 40 + 20 + 120
    assert frame["is_holiday"].sum() == 1440
    assert set(frame["anomaly_kind"].unique()) == {*ANOMALY_KINDS, "none"}

    def same_time_day_before(start: str, minutes: int) -> tuple[pd.Series, pd.Series]:
        at = pd.date_range(start, periods=minutes, freq="1min")
        return frame.loc[at, "qps"], frame.loc[at - pd.Timedelta(days=1), "qps"]

    during, before = same_time_day_before("2026-01-06 12:08", 1)  # the flash crowd's peak
    assert during.iloc[0] / before.iloc[0] == pytest.approx(3.0, rel=0.15)
    during, before = same_time_day_before("2026-01-07 09:00", 20)
    assert during.mean() / before.mean() == pytest.approx(0.1, rel=0.15)
    outage_rows = frame.loc["2026-01-07 09:00":"2026-01-07 09:19"]
    assert (outage_rows["error_rate"] >= 0.9).all()
    assert (frame.loc[frame["anomaly_kind"] == "none", "error_rate"] < 0.01).all()
    holiday = frame.loc["2026-01-08", "qps"].mean() / frame.loc["2026-01-07", "qps"].mean()
    assert holiday == pytest.approx(0.6, rel=0.05)
    # the level shift persists after its labelled window
    after = frame.loc["2026-01-10", "qps"].mean() / frame.loc["2026-01-06", "qps"].mean()
    assert after == pytest.approx(1.5, rel=0.05)


def test_latency_rises_near_saturation_and_overload_times_out() -> None:
    node = MMcNode(servers=8, service_time_ms=10.0)  # saturates at 800 qps per node
    # weekday peaks at 1.05 x saturation per node, troughs at 0.35 x
    traffic = generate_traffic(
        "2026-03-03", 1440, base_qps=0.7 * 800.0 * 5, nodes=5, node=node, seed=2
    )
    frame = traffic.frame
    light = frame[frame["utilisation"] < 0.5]
    busy = frame[(frame["utilisation"] > 0.93) & (frame["utilisation"] < 0.99)]
    assert len(light) > 100 and len(busy) > 10
    assert busy["latency_p99_ms"].median() > 1.5 * light["latency_p99_ms"].median()
    # the reported latency follows the queueing model within its 5% noise
    model = node.latency_quantile_ms(busy["qps_per_node"].to_numpy())
    ratio = busy["latency_p99_ms"].to_numpy() / model
    assert np.median(ratio) == pytest.approx(1.0, abs=0.05)
    overloaded = frame[frame["demand_qps"] / 5 > node.saturation_qps]
    assert len(overloaded) > 0
    assert (overloaded["latency_p99_ms"] == 1000.0).all()
    assert (overloaded["qps_per_node"] == node.saturation_qps).all()
    excess = 1.0 - node.saturation_qps / (overloaded["demand_qps"] / 5)
    assert (overloaded["error_rate"] >= excess).all()


def test_timezone_aware_start_uses_local_hours() -> None:
    traffic = generate_traffic(
        pd.Timestamp("2026-01-05", tz="Asia/Shanghai"),
        3 * 1440,
        peak_hour=21.0,
        holidays=["2026-01-06"],
        events=[FlashCrowd("2026-01-07 10:00", "30min")],
        seed=1,
    )
    frame = traffic.frame
    assert str(frame.index.tz) == "Asia/Shanghai"
    assert int(frame["qps"].groupby(nearest_hour(frame.index)).mean().idxmax()) == 21
    local_midnight = pd.Timestamp("2026-01-06", tz="Asia/Shanghai")
    holiday = frame.index[frame["is_holiday"]]
    assert holiday[0] == local_midnight and len(holiday) == 1440
    flash = frame.index[frame["anomaly_kind"] == "flash_crowd"]
    assert flash[0] == pd.Timestamp("2026-01-07 10:00", tz="Asia/Shanghai") and len(flash) == 30
    assert list(traffic.events["start"]) == [local_midnight, flash[0]]
    with pytest.raises(ValueError, match="tz-aware but start is naive"):
        generate_traffic(START, 100, events=[FlashCrowd(pd.Timestamp(START, tz="UTC"))])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"periods": 0}, ValueError, "periods must be a positive integer"),
        ({"nodes": 0}, ValueError, "nodes must be a positive integer"),
        ({"base_qps": -3.0}, ValueError, r"base_qps must be in \(0, inf\)"),
        ({"daily_amplitude": 1.0}, ValueError, r"daily_amplitude must be in \[0, 1\)"),
        ({"peak_hour": 24.0}, ValueError, r"peak_hour must be in \[0, 24\)"),
        ({"qps_noise": "high"}, TypeError, "qps_noise must be a number"),
        ({"freq": "fortnightly-ish"}, ValueError, "bad start '2026-01-05' or freq"),
        ({"node": "fast"}, TypeError, "node must be an MMcNode"),
        ({"holidays": "2026-01-06"}, TypeError, "holidays must be a sequence of dates"),
        ({"events": FlashCrowd("2026-01-05")}, TypeError, "events must be a sequence"),
        ({"events": [("flash", "2026-01-05")]}, TypeError, "events must be FlashCrowd"),
        ({"events": [Outage("2026-01-05", drop_share=1.5)]}, ValueError, "drop_share"),
        ({"events": [FlashCrowd("2026-01-05", "-5min")]}, ValueError, "duration must be positive"),
        ({"events": [LevelShift("2026-01-05", label_duration="soon")]}, ValueError, "bad Level"),
        ({"events": [FlashCrowd("someday")]}, ValueError, "bad event start 'someday'"),
        ({"trend_per_day": -0.5}, ValueError, "drives demand to zero"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        generate_traffic(**{"start": START, "periods": 3 * 1440, **kwargs})  # type: ignore[arg-type]


def test_random_events_are_deterministic_apart_and_labelled() -> None:
    events = random_events("2026-01-05", "2026-01-19", per_day=2.0, seed=4)
    assert events == random_events("2026-01-05", "2026-01-19", per_day=2.0, seed=4)
    assert events != random_events("2026-01-05", "2026-01-19", per_day=2.0, seed=5)
    assert 10 <= len(events) <= 40
    assert {type(e) for e in events} == {FlashCrowd, Outage, LevelShift}
    traffic = generate_traffic(START, TWO_WEEKS, events=events, seed=4)
    labelled = traffic.events
    assert len(labelled) == len(events)
    ends = labelled["end"].iloc[:-1].to_numpy()
    assert (labelled["start"].iloc[1:].to_numpy() >= ends).all()  # no two events overlap
    for row in labelled.itertuples():
        window = traffic.frame.loc[row.start : row.end - pd.Timedelta(minutes=1)]
        assert (window["anomaly_kind"] == row.kind).all()
    only = random_events("2026-01-05", "2026-01-19", kinds=["outage"], seed=1)
    assert only and all(isinstance(e, Outage) for e in only)
    assert random_events("2026-01-05", "2026-01-19", per_day=0.0) == []
    with pytest.raises(ValueError, match="kinds must be a non-empty sequence"):
        random_events("2026-01-05", "2026-01-19", kinds=["meteor"])
    with pytest.raises(ValueError, match="must be after start"):
        random_events("2026-01-05", "2026-01-05")


def test_public_names_are_exported() -> None:
    import models
    import models.capacity_curve
    import models.synthetic
    import models.synthetic.queueing
    import models.synthetic.traffic

    for module in (
        models.capacity_curve,
        models.synthetic,
        models.synthetic.queueing,
        models.synthetic.traffic,
    ):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.__all__ lists missing {name}"
    for name in models.synthetic.__all__:
        if name not in ("ANOMALY_KINDS", "TrafficEvent", "erlang_c"):
            assert name in models.__all__ and getattr(models, name) is getattr(
                models.synthetic, name
            )
    assert models.CapacityCurve is models.capacity_curve.CapacityCurve
