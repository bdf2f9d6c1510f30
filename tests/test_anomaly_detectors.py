"""Anomaly detectors: the outlier-detector contract, streaming == batch, detection quality."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from models.anomaly import (
    DETECTORS,
    CusumDetector,
    EnsembleDetector,
    IsolationForestDetector,
    SeasonalHybridESD,
    SeasonalResidualDetector,
    WindowedGaussianDetector,
    make_detector,
)

STEP = pd.Timedelta(minutes=5)


def seasonal(
    days: float, seed: int = 0, noise: float = 1.0, start: str = "2024-01-01"
) -> pd.Series:
    """Daily sinusoid (period 288 points) around 100 with Gaussian noise, 5-minute steps."""
    rng = np.random.default_rng(seed)
    n = int(days * 288)
    index = pd.date_range(start, periods=n, freq=STEP)
    phase = 2 * np.pi * np.arange(n) / 288
    return pd.Series(100 + 20 * np.sin(phase) + rng.normal(0, noise, n), index=index, name="value")


def small(name: str):
    """Detectors with small windows so the contract tests stay quick."""
    if name == "iforest":
        return IsolationForestDetector(
            window_points=300, refit_points=150, min_points=100, n_estimators=20
        )
    if name == "esd":
        return SeasonalHybridESD(window_points=600, refit_points=50)
    if name == "windowed-gaussian":
        return WindowedGaussianDetector(window_points=400, step_points=50)
    return make_detector(name)


ALL = sorted(DETECTORS)


@pytest.mark.parametrize("name", ALL)
def test_contract(name: str) -> None:
    series = seasonal(3)
    train, test = series.iloc[:600], series.iloc[600:]
    det = small(name)
    with pytest.raises(NotFittedError):
        det.score_samples(test)
    with pytest.raises(NotFittedError):
        det.update(test.index[0], 1.0)
    assert det.fit(train) is det
    assert hasattr(det, "offset_") and hasattr(det, "state_")
    raw = det.score_samples(test)
    assert raw.shape == (len(test),)
    np.testing.assert_allclose(det.decision_function(test), raw - det.offset_)
    pred = det.predict(test)
    assert set(np.unique(pred)) <= {-1, 1}
    np.testing.assert_array_equal(pred == -1, det.decision_function(test) < 0)
    scores = det.anomaly_score(test)
    assert np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_allclose(scores, -raw)
    labels = small(name).fit_predict(series)
    np.testing.assert_array_equal(
        labels == -1, small(name).fit_anomaly_score(series) >= det.threshold
    )
    # parameters round-trip: __init__ only stores them
    twin = clone(det)
    assert twin.get_params() == det.get_params()
    assert not hasattr(twin, "state_")


@pytest.mark.parametrize("name", ALL)
def test_streaming_equals_batch(name: str) -> None:
    series = seasonal(3, seed=1)
    series.iloc[700] += 40
    train, test = series.iloc[:500], series.iloc[500:]
    det = small(name).fit(train)
    batch = det.anomaly_score(test)
    streamed = np.array([det.update(t, v) for t, v in test.items()])
    np.testing.assert_allclose(streamed, batch, rtol=0, atol=1e-12)
    # and the from-scratch causal scores of the whole series agree with fit + stream too
    whole = small(name).fit_anomaly_score(series)
    np.testing.assert_allclose(whole[500:], batch, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_causal_future_does_not_change_past_scores(name: str) -> None:
    series = seasonal(3, seed=2)
    full = small(name).fit_anomaly_score(series)
    changed = series.copy()
    changed.iloc[650:] += 500.0
    again = small(name).fit_anomaly_score(changed)
    np.testing.assert_allclose(again[:650], full[:650], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "det",
    [SeasonalResidualDetector(), SeasonalHybridESD(), EnsembleDetector(hold_seconds=0)],
    ids=["residual", "esd", "ensemble"],
)
def test_detects_spike_with_few_false_positives(det) -> None:
    series = seasonal(8, seed=3)
    spike_at = 7 * 288 + 100
    series.iloc[spike_at] += 15.0  # 15 sigma
    scores = det.fit_anomaly_score(series)
    assert scores[spike_at] >= det.threshold
    clean = np.delete(scores[400:], spike_at - 400)
    assert np.mean(clean >= det.threshold) < 0.01


def test_default_ensemble_rarely_alarms_on_clean_data() -> None:
    """At its NAB-tuned operating point and with its suppression on, the default ensemble
    raises at most about one alarm a day on clean seasonal data (6.6 days here)."""
    det = EnsembleDetector()
    scores = det.fit_anomaly_score(seasonal(8, seed=8))
    assert np.sum(scores[400:] >= det.threshold) <= 8
    assert scores.max() < 1.0  # no infinite-margin records from an all-zero history


@pytest.mark.parametrize(
    "det", [CusumDetector(), EnsembleDetector(hold_seconds=0)], ids=["cusum", "ensemble"]
)
def test_detects_level_shift(det) -> None:
    series = seasonal(8, seed=4)
    shift_at = 7 * 288
    series.iloc[shift_at:] += 6.0  # 6 sigma, sustained
    scores = det.fit_anomaly_score(series)
    first = shift_at + int(np.argmax(scores[shift_at:] >= det.threshold))
    assert scores[first] >= det.threshold
    assert first - shift_at <= 12  # within an hour
    assert np.mean(scores[400:shift_at] >= det.threshold) < 0.01


def test_seasonal_residual_knows_the_daily_pattern() -> None:
    """A value normal for noon but not for midnight is flagged once the days are learned."""
    series = seasonal(8, seed=5)
    at = 7 * 288 + 216  # trough of the sine (value ~80)
    series.iloc[at] = 120.0  # the level of the peak, within the series' overall range
    scores = SeasonalResidualDetector().fit_anomaly_score(series)
    assert scores[at] >= 0.999


def test_isolation_forest_is_multivariate() -> None:
    """qps, error rate and latency each normal on their own, jointly unusual."""
    rng = np.random.default_rng(6)
    n = 1500
    index = pd.date_range("2024-01-01", periods=n, freq="1min")
    load = rng.uniform(0, 1, n)
    frame = pd.DataFrame(
        {
            "qps": 1000 + 500 * load + rng.normal(0, 10, n),
            "error_rate": 0.01 + rng.normal(0, 0.001, n),
            "latency_ms": 20 + 30 * load + rng.normal(0, 1, n),
        },
        index=index,
    )
    at = 1400
    frame.iloc[at, frame.columns.get_loc("qps")] = 1000  # low load ...
    frame.iloc[at, frame.columns.get_loc("latency_ms")] = 50  # ... with high latency
    det = IsolationForestDetector(window_points=1000, refit_points=200, min_points=200)
    scores = det.fit_anomaly_score(frame)
    assert scores[at] > np.quantile(scores[300:at], 0.99)
    explained = IsolationForestDetector(
        window_points=1000, refit_points=200, min_points=200
    ).fit_explained(frame)
    assert list(explained.columns) == ["anomaly_score", "signal", "expected"]
    np.testing.assert_allclose(explained["anomaly_score"].to_numpy(), scores)


def test_bad_input_is_rejected_clearly() -> None:
    det = SeasonalResidualDetector()
    with pytest.raises(TypeError, match="DatetimeIndex"):
        det.fit(pd.Series([1.0, 2.0]))
    with pytest.raises(ValueError, match="backwards"):
        det.fit(pd.Series([1.0, 2.0], index=pd.to_datetime(["2024-01-02", "2024-01-01"])))
    with pytest.raises(ValueError, match="empty"):
        det.fit(pd.Series([], index=pd.DatetimeIndex([]), dtype=float))
    with pytest.raises(ValueError, match="threshold"):
        SeasonalResidualDetector(threshold=2.0).fit(seasonal(1))
    with pytest.raises(ValueError, match="combine"):
        EnsembleDetector(combine="median").fit(seasonal(1))
    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("nope")
    det.fit(seasonal(1))
    with pytest.raises(ValueError, match="signal"):
        det.anomaly_score(
            pd.DataFrame({"a": [1.0], "b": [2.0]}, index=[pd.Timestamp("2030-01-01")])
        )
    with pytest.raises(ValueError, match="backwards"):
        det.update(pd.Timestamp("2000-01-01"), 1.0)


def test_numpy_arrays_continue_the_fitted_rows() -> None:
    values = seasonal(2, seed=12).to_numpy()
    det = SeasonalResidualDetector().fit(values[:400])
    np.testing.assert_allclose(
        det.anomaly_score(values[400:]), SeasonalResidualDetector().fit_anomaly_score(values)[400:]
    )
    assert set(np.unique(det.predict(values[400:]))) <= {-1, 1}


def test_nan_values_score_zero_and_do_not_break_state() -> None:
    series = seasonal(2, seed=7)
    series.iloc[300:310] = np.nan
    scores = EnsembleDetector().fit_anomaly_score(series)
    assert np.all(scores[300:310] == 0.0)
    assert np.all(np.isfinite(scores))


@pytest.mark.parametrize("n", [50, 500, 4032])
@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_esd_critical_value_matches_its_p_value(n: int, alpha: float) -> None:
    from models.anomaly.esd import esd_critical_value, esd_p_value

    lam = esd_critical_value(n, alpha)
    assert esd_p_value(lam, n) == pytest.approx(alpha, rel=1e-6)
    assert esd_p_value(lam * 1.05, n) < alpha < esd_p_value(lam * 0.95, n)


@pytest.mark.parametrize("combine", ["max", "mean", "weighted", "geometric"])
def test_ensemble_combiners(combine: str) -> None:
    series = seasonal(3, seed=11)
    series.iloc[700] += 30
    members = [("residual", SeasonalResidualDetector()), ("cusum", CusumDetector())]
    weights = [2.0, 1.0] if combine == "weighted" else None
    ens = EnsembleDetector(detectors=members, combine=combine, weights=weights, hold_seconds=0)
    scores = ens.fit_anomaly_score(series)
    singles = np.vstack([d.fit_anomaly_score(series) for _, d in members])
    assert np.all((scores >= 0) & (scores <= 1))
    if combine == "max":
        np.testing.assert_allclose(scores, singles.max(axis=0))
    elif combine == "mean":
        np.testing.assert_allclose(scores, singles.mean(axis=0))
    elif combine == "weighted":
        np.testing.assert_allclose(scores, (2 * singles[0] + singles[1]) / 3)
    else:  # geometric mean of the tail probabilities
        expected = 1 - np.exp(np.log(np.maximum(1 - singles, 1e-300)).mean(axis=0))
        np.testing.assert_allclose(scores, expected)
    with pytest.raises(ValueError, match="weight"):
        EnsembleDetector(detectors=members, combine="weighted", weights=[1.0]).fit(series)


def test_suppression_keeps_one_alarm_per_incident_but_lets_bigger_ones_through() -> None:
    from models.anomaly.online import Refractory

    hold = Refractory(alarm_level=0.99, hold_seconds=100.0)
    out = [
        hold.apply(t, s)
        for t, s in [(0, 0.995), (10, 0.996), (50, 0.5), (60, 0.99999), (200, 0.995)]
    ]
    # 0.996 is muted; 0.99999 (tail >= 100x rarer than the alarm) escalates; later fires again
    assert out == [0.995, 0.0, 0.0, 0.99999, 0.995]
    peak = Refractory(alarm_level=0.99, hold_seconds=100.0, mode="peak")
    out = [peak.apply(t, s) for t, s in [(0, 0.5), (10, 0.9), (20, 0.8), (30, 0.95), (200, 0.6)]]
    assert out == [0.5, 0.9, 0.0, 0.95, 0.6]
