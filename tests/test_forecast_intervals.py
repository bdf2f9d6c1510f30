"""Intervals keep their promise on data whose noise is known."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from models import AutoForecaster
from models.forecast import (
    ForecastWarning,
    HoltWintersForecaster,
    SeasonalNaiveForecaster,
    calibrate_from_errors,
)
from tests.test_forecast_contract import traffic

HORIZON = 24


def holdout_coverage(model_factory, n_series: int, days: int = 21) -> float:
    """Share of held-out points inside the intervals, over ``n_series`` noisy series."""
    inside = []
    for seed in range(n_series):
        # each series ends at another point of the week: coverage is marginal over phases
        y = traffic(days=days + 1, noise=5.0, seed=seed, phase_hours=(seed * 37) % 168)
        history, future = y.iloc[:-HORIZON], y.iloc[-HORIZON:]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ForecastWarning)
            forecast = model_factory().fit(history).predict(HORIZON)
        assert forecast.index.equals(future.index)
        inside.append((future >= forecast["lower"]) & (future <= forecast["upper"]))
    return float(np.mean(np.concatenate(inside)))


@pytest.mark.parametrize("nominal", [0.95, 0.8])
def test_seasonal_naive_coverage_is_near_nominal(nominal: float) -> None:
    observed = holdout_coverage(lambda: SeasonalNaiveForecaster(coverage=nominal), 200)
    assert abs(observed - nominal) < 0.04


def test_holt_winters_coverage_is_near_nominal() -> None:
    factory = lambda: HoltWintersForecaster(  # noqa: E731
        initialization_method="heuristic", n_backtests=4, backtest_horizon=HORIZON
    )
    observed = holdout_coverage(factory, 20)
    assert 0.9 <= observed <= 0.99


def test_fleet_intervals_cover_near_nominal() -> None:
    fleet = {
        f"s{k}": traffic(days=23, noise=5.0, seed=100 + k, phase_hours=(k * 37) % 168)
        for k in range(60)
    }
    history = {name: y.iloc[:-HORIZON] for name, y in fleet.items()}
    model = AutoForecaster(gbm_params={"max_iter": 60, "max_horizon": HORIZON})
    forecasts = model.fit_many(history).predict_many(HORIZON)
    inside = [
        (fleet[name].iloc[-HORIZON:] >= f["lower"]) & (fleet[name].iloc[-HORIZON:] <= f["upper"])
        for name, f in forecasts.items()
    ]
    observed = float(np.mean(np.concatenate(inside)))
    assert 0.91 <= observed <= 0.99


def test_calibration_recovers_gaussian_quantiles() -> None:
    rng = np.random.default_rng(7)
    sigma = np.sqrt(np.arange(1, 25))  # errors grow like a random walk
    errors = rng.normal(0, 1, (400, 24)) * sigma
    calibration = calibrate_from_errors(errors, 0.95)
    mean = np.zeros(24)
    lower, upper = calibration.bounds(mean)
    assert upper == pytest.approx(1.96 * sigma, rel=0.12)
    assert lower == pytest.approx(-1.96 * sigma, rel=0.12)
    # beyond the backtest horizon the width keeps growing
    longer_lower, longer_upper = calibration.bounds(np.zeros(48))
    assert np.all(np.diff(longer_upper[24:]) > 0)


def test_calibration_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="coverage"):
        calibrate_from_errors(np.ones((3, 3)), 1.0)
    with pytest.raises(ValueError, match="no finite"):
        calibrate_from_errors(np.full((3, 3), np.nan), 0.9)


def test_local_error_scale_mixes_series_scale_and_recent_error() -> None:
    from models.forecast.calibration import local_error_scale

    base = np.array([2.0, 4.0, 3.0])
    recent = np.array([[1.0, -3.0], [np.nan, np.nan], [0.0, 0.0]])
    # mean |error| 2.0 -> (2 + 2) / 2; all missing -> the base; zero error -> half the base
    assert local_error_scale(base, recent) == pytest.approx([2.0, 4.0, 1.5])


def test_fleet_policy_is_chosen_on_the_backtest_window() -> None:
    fleet = {f"s{k}": traffic(days=21, seed=200 + k, phase_hours=k * 13) for k in range(12)}
    model = AutoForecaster(gbm_params={"max_iter": 30}).fit_many(fleet)
    assert model.policy_ in {"per_series", "global"}
    scores = model.policy_scores_
    assert model.policy_ == min(scores, key=scores.get)
    assert set(model.choices_) == set(fleet)
    if model.policy_ == "global":
        assert set(model.choices_.values()) == {"gbm"}
