"""CapacityCurve against simulated M/M/c nodes whose true capacity is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from models.capacity_curve import CapacityCurve, CapacityEstimate
from models.synthetic import MMcNode, generate_traffic


def one_day(node: MMcNode, objective_ms: float, peak_share: float, seed: int) -> pd.DataFrame:
    """A weekday of one node's traffic whose daily peak is ``peak_share`` x true capacity."""
    capacity = node.capacity_qps(objective_ms)
    traffic = generate_traffic(
        "2026-03-03",  # a Tuesday
        1440,
        "1min",
        base_qps=peak_share * capacity / 1.5,
        daily_amplitude=0.5,
        nodes=1,
        node=node,
        seed=seed,
    )
    return traffic.frame


SETTINGS = [
    pytest.param(MMcNode(servers=1, service_time_ms=10.0), 100.0, id="c1-10ms-obj100"),
    pytest.param(MMcNode(servers=8, service_time_ms=10.0), 100.0, id="c8-10ms-obj100"),
    pytest.param(MMcNode(servers=4, service_time_ms=5.0), 40.0, id="c4-5ms-obj40"),
    pytest.param(MMcNode(servers=32, service_time_ms=20.0), 150.0, id="c32-20ms-obj150"),
]


@pytest.mark.parametrize(("node", "objective_ms"), SETTINGS)
def test_recovers_known_capacity_when_peaks_cross_the_objective(
    node: MMcNode, objective_ms: float
) -> None:
    truth = node.capacity_qps(objective_ms)
    covered = 0
    for seed in range(5):
        frame = one_day(node, objective_ms, peak_share=1.08, seed=seed)
        model = CapacityCurve(latency_objective_ms=objective_ms).fit(
            frame["qps_per_node"], frame["latency_p99_ms"]
        )
        assert model.status_ == "measured", model.reason_
        assert model.saturated_
        assert model.capacity_lower_ <= model.capacity_ <= model.capacity_upper_
        assert abs(model.capacity_ / truth - 1.0) < 0.05
        assert (model.capacity_upper_ - model.capacity_lower_) / truth < 0.10
        covered += model.capacity_lower_ <= truth <= model.capacity_upper_
    assert covered >= 4, f"90% range covered the true capacity {truth:.1f} in {covered}/5 days"


@pytest.mark.parametrize(
    ("node", "objective_ms"),
    [
        pytest.param(MMcNode(servers=1, service_time_ms=10.0), 100.0, id="c1"),
        pytest.param(MMcNode(servers=4, service_time_ms=5.0), 40.0, id="c4"),
    ],
)
def test_extrapolates_a_little_when_peaks_stop_just_short(
    node: MMcNode, objective_ms: float
) -> None:
    truth = node.capacity_qps(objective_ms)
    covered = 0
    for seed in range(5):
        frame = one_day(node, objective_ms, peak_share=0.95, seed=seed)
        model = CapacityCurve(latency_objective_ms=objective_ms).fit(
            frame["qps_per_node"], frame["latency_p99_ms"]
        )
        assert model.status_ == "measured", model.reason_
        assert abs(model.capacity_ / truth - 1.0) < 0.05
        covered += model.capacity_lower_ <= truth <= model.capacity_upper_
    assert covered >= 4


def test_reports_not_near_saturation_and_returns_configured_capacity() -> None:
    node = MMcNode(servers=8, service_time_ms=10.0)
    frame = one_day(node, 100.0, peak_share=0.4, seed=3)
    model = CapacityCurve(latency_objective_ms=100.0, configured_capacity=640.0)
    model.fit(frame["qps_per_node"], frame["latency_p99_ms"])
    assert model.status_ == "not_near_saturation"
    assert not model.saturated_
    assert model.capacity_ == 640.0
    assert "configured capacity" in model.reason_
    assert model.capacity_lower_ == pytest.approx(frame["qps_per_node"].max())
    assert math.isinf(model.capacity_upper_)


@pytest.mark.parametrize("servers", [1, 4, 16])
def test_light_load_is_never_reported_as_measured(servers: int) -> None:
    node = MMcNode(servers=servers, service_time_ms=10.0)
    frame = one_day(node, 100.0, peak_share=0.35, seed=servers)
    model = CapacityCurve(latency_objective_ms=100.0).fit(
        frame["qps_per_node"], frame["latency_p99_ms"]
    )
    assert model.status_ == "not_near_saturation", model.reason_
    # Without a configured capacity it falls back on the highest load that kept the objective.
    kept = frame.loc[frame["latency_p99_ms"] <= 100.0, "qps_per_node"].max()
    assert model.capacity_ == pytest.approx(kept)
    assert "highest load observed" in model.reason_


def test_objective_violated_at_light_load() -> None:
    node = MMcNode(servers=8, service_time_ms=10.0)  # an idle node's p99 is 46 ms
    frame = one_day(node, 100.0, peak_share=0.8, seed=1)
    model = CapacityCurve(latency_objective_ms=30.0, configured_capacity=500.0)
    model.fit(frame["qps_per_node"], frame["latency_p99_ms"])
    assert model.status_ == "objective_violated"
    assert model.capacity_ == 0.0
    assert model.capacity_upper_ == pytest.approx(frame["qps_per_node"].min())
    assert "30 ms objective" in model.reason_


def test_too_few_points_and_constant_load_are_reported_not_raised() -> None:
    few = CapacityCurve(configured_capacity=100.0).fit([1.0, 2.0, 3.0], [10.0, 11.0, 12.0])
    assert few.status_ == "insufficient_data"
    assert few.capacity_ == 100.0
    assert "only 3 valid observations" in few.reason_
    with pytest.raises(ValueError, match="no latency curve"):
        few.predict_latency([1.0])

    flat = CapacityCurve(latency_objective_ms=100.0).fit(np.full(200, 50.0), np.full(200, 20.0))
    assert flat.status_ == "insufficient_data"
    assert "barely varies" in flat.reason_
    assert flat.capacity_ == 50.0  # kept the objective there, nothing configured

    nothing = CapacityCurve().fit([math.nan, 1.0], [1.0, math.nan])
    assert nothing.status_ == "insufficient_data"
    assert math.isnan(nothing.capacity_)
    assert nothing.estimate_.n_dropped == 2


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_flat_latency_at_or_under_the_objective_is_not_near_saturation() -> None:
    load = np.linspace(1.0, 90.0, 300)
    for level in (50.0, 20.0):  # exactly at the objective, and well under it
        model = CapacityCurve(latency_objective_ms=50.0).fit(load, np.full(300, level))
        assert model.status_ == "not_near_saturation", model.reason_
        assert model.capacity_ == 90.0
        assert model.predict_latency([10.0])[0] == level


def test_nan_pairs_are_dropped_and_inf_latency_counts_as_over_the_objective() -> None:
    node = MMcNode(servers=8, service_time_ms=10.0)
    frame = one_day(node, 100.0, peak_share=1.08, seed=0)
    truth = node.capacity_qps(100.0)
    load = frame["qps_per_node"].to_numpy().copy()
    latency = frame["latency_p99_ms"].to_numpy().copy()
    rng = np.random.default_rng(7)
    load[rng.choice(load.size, 50, replace=False)] = np.nan
    latency[rng.choice(latency.size, 50, replace=False)] = np.nan
    latency[latency >= 1000.0] = np.inf  # timeouts reported as inf
    model = CapacityCurve(latency_objective_ms=100.0).fit(load, latency)
    assert model.status_ == "measured"
    assert 90 <= model.estimate_.n_dropped <= 100
    assert model.estimate_.n_observations == 1440 - model.estimate_.n_dropped
    assert abs(model.capacity_ / truth - 1.0) < 0.05


def test_series_are_aligned_and_time_ordered() -> None:
    node = MMcNode(servers=4, service_time_ms=5.0)
    frame = one_day(node, 40.0, peak_share=1.08, seed=2)
    ordered = CapacityCurve(latency_objective_ms=40.0, n_bootstrap=50).fit(
        frame["qps_per_node"], frame["latency_p99_ms"]
    )
    shuffled = frame.sample(frac=1.0, random_state=1)
    # latency in another order: fit must align on the timestamps and sort them
    model = CapacityCurve(latency_objective_ms=40.0, n_bootstrap=50).fit(
        shuffled["qps_per_node"], frame["latency_p99_ms"].iloc[::-1]
    )
    assert model.estimate_ == ordered.estimate_


def test_predict_latency_is_monotone_and_meets_the_objective_at_capacity() -> None:
    node = MMcNode(servers=8, service_time_ms=10.0)
    frame = one_day(node, 100.0, peak_share=1.08, seed=4)
    model = CapacityCurve(latency_objective_ms=100.0).fit(
        frame["qps_per_node"], frame["latency_p99_ms"]
    )
    grid = np.linspace(0.0, 2.0 * node.saturation_qps, 400)
    predicted = model.predict_latency(grid)
    assert isinstance(predicted, np.ndarray)
    assert np.array_equal(np.maximum.accumulate(predicted), predicted)  # non-decreasing
    assert math.isinf(predicted[-1])  # past the fitted saturation load
    assert model.predict_latency([model.capacity_])[0] == pytest.approx(100.0, rel=0.05)
    assert model.predict_latency([0.5 * model.capacity_])[0] < 60.0
    loads = pd.Series([100.0, 700.0], index=pd.Index(["a", "b"]))
    series = model.predict_latency(loads)
    assert isinstance(series, pd.Series)
    assert list(series.index) == ["a", "b"]
    with pytest.raises(ValueError, match="non-negative"):
        model.predict_latency([-1.0])


def test_higher_quantile_plans_more_conservatively() -> None:
    node = MMcNode(servers=1, service_time_ms=10.0)
    frame = one_day(node, 100.0, peak_share=1.08, seed=5)
    load, latency = frame["qps_per_node"], frame["latency_p99_ms"]
    median = CapacityCurve(latency_objective_ms=100.0, n_bootstrap=0).fit(load, latency)
    strict = CapacityCurve(latency_objective_ms=100.0, quantile=0.9, n_bootstrap=0).fit(
        load, latency
    )
    assert strict.capacity_ < median.capacity_


def test_estimator_contract() -> None:
    model = CapacityCurve(latency_objective_ms=80.0, configured_capacity=10.0, n_bootstrap=20)
    params = model.get_params()
    assert params["latency_objective_ms"] == 80.0
    assert params["configured_capacity"] == 10.0
    copy = clone(model)
    assert copy.get_params() == params
    with pytest.raises(NotFittedError):
        model.predict_latency([1.0])
    # __init__ and set_params store only; validation happens in fit
    model.set_params(quantile=2.0)
    with pytest.raises(ValueError, match="quantile must be a number strictly between 0 and 1"):
        model.fit(np.arange(100.0), np.arange(100.0))
    model.set_params(quantile=0.5)
    x = np.linspace(1.0, 90.0, 300)
    assert model.fit(x, 10.0 / (1.0 - x / 100.0)) is model
    assert isinstance(model.estimate_, CapacityEstimate)
    assert model.estimate_.capacity == model.capacity_


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"latency_objective_ms": -5.0}, "latency_objective_ms must be a positive finite"),
        ({"latency_objective_ms": math.nan}, "latency_objective_ms must be a positive finite"),
        ({"coverage": 1.0}, "coverage must be a number strictly between 0 and 1"),
        ({"configured_capacity": 0.0}, "configured_capacity must be a positive finite"),
        ({"max_extrapolation": 0.5}, "max_extrapolation must be >= 1"),
        ({"min_rise": 1.5}, r"min_rise must be a number in \[0, 1\)"),
        ({"n_bins": 2}, "n_bins must be an integer >= 3"),
        ({"n_bootstrap": 1.5}, "n_bootstrap must be an integer >= 0"),
        ({"block_size": 0}, "block_size must be an integer >= 1"),
    ],
)
def test_bad_parameters_are_named(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CapacityCurve(**params).fit(np.arange(50.0), np.arange(50.0))  # type: ignore[arg-type]


def test_bad_inputs_have_clear_messages() -> None:
    model = CapacityCurve()
    with pytest.raises(ValueError, match="same length, got 3 and 2"):
        model.fit([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="latency must be non-negative"):
        model.fit([1.0, 2.0, 3.0], [1.0, -2.0, 3.0])
    with pytest.raises(ValueError, match="load must be non-negative"):
        model.fit([1.0, -2.0, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="load must be finite"):
        model.fit([1.0, np.inf, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="load must contain only numbers"):
        model.fit(["a", "b"], [1.0, 2.0])
    with pytest.raises(TypeError, match="load must be a 1-D array-like"):
        model.fit(5.0, [1.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latency must be 1-D"):
        model.fit([1.0, 2.0], [[1.0], [2.0]])
