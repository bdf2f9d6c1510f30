"""Gaps, missing values, short series, level shifts, disorder: worked around and said."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from models import AutoForecaster
from models.forecast import (
    BaseForecaster,
    ETSForecaster,
    ForecastWarning,
    GlobalGBMForecaster,
    HoltWintersForecaster,
    MSTLForecaster,
    SeasonalNaiveForecaster,
    prepare_series,
)
from tests.test_forecast_contract import traffic

FORECASTERS: list[BaseForecaster] = [
    SeasonalNaiveForecaster(),
    HoltWintersForecaster(initialization_method="heuristic", n_backtests=2),
    ETSForecaster(initialization_method="heuristic", n_backtests=2),
    MSTLForecaster(n_backtests=2),
    GlobalGBMForecaster(max_iter=20, n_backtests=2),
    AutoForecaster(
        candidates=[
            ("snaive", SeasonalNaiveForecaster()),
            ("hw", HoltWintersForecaster(initialization_method="heuristic")),
            ("gbm", GlobalGBMForecaster(max_iter=20)),
        ],
        n_backtests=2,
    ),
]
IDS = [type(f).__name__ for f in FORECASTERS]


def check_forecast(model: BaseForecaster, y: pd.Series, horizon: int = 24) -> pd.DataFrame:
    forecast = model.predict(horizon)
    step = pd.Timedelta(hours=1)
    assert forecast.index[0] == y.index.max() + step
    assert forecast.notna().all().all()
    assert (forecast["lower"] <= forecast["mean"]).all()
    assert (forecast["mean"] <= forecast["upper"]).all()
    return forecast


@pytest.mark.parametrize("forecaster", FORECASTERS, ids=IDS)
def test_gaps_and_missing_values_are_filled_and_said(forecaster: BaseForecaster) -> None:
    y = traffic()
    y.iloc[100:110] = np.nan
    y.iloc[200] = np.inf
    y = y.drop(y.index[300:330])  # a 30-hour hole in the timestamps
    model = clone(forecaster)
    with pytest.warns(ForecastWarning) as record:
        model.fit(y)
    text = " ".join(model.warnings_)
    assert "gaps" in text and "missing points were filled" in text and "infinite" in text
    assert any("gaps" in str(w.message) for w in record)
    forecast = check_forecast(model, y)
    assert forecast["mean"].between(100, 300).all()


@pytest.mark.parametrize("forecaster", FORECASTERS, ids=IDS)
def test_series_too_short_for_a_season_still_forecasts(forecaster: BaseForecaster) -> None:
    y = traffic(days=21).iloc[:40]  # 40 hours: neither the day (48) nor the week fits
    model = clone(forecaster)
    with pytest.warns(ForecastWarning, match="too short for season 24"):
        model.fit(y)
    assert model.seasons_ == ()
    check_forecast(model, y, horizon=12)


def test_level_shift_is_detected_and_history_moved() -> None:
    y = traffic(days=21, noise=2.0)
    shift_at = 24 * 15 + 5
    y.iloc[shift_at:] += 150.0
    prepared = prepare_series(y)
    assert any("level shift of +1" in note for note in prepared.warnings)
    # after the repair the old history sits at the new level
    assert abs(prepared.values[: 24 * 7].mean() - prepared.values[-24 * 5 :].mean()) < 20
    with pytest.warns(ForecastWarning, match="level shift"):
        model = HoltWintersForecaster(initialization_method="heuristic").fit(y)
    forecast = check_forecast(model, y)
    new_level = y.iloc[-24 * 5 :].mean()
    assert abs(forecast["mean"].mean() - new_level) < 25


def test_clean_trending_series_has_no_false_level_shift() -> None:
    y = traffic(days=21)
    y = y + np.linspace(0, 120, y.size)  # steady growth is not a shift
    assert not any("level shift" in note for note in prepare_series(y).warnings)


def test_unsorted_and_duplicate_timestamps_are_repaired_and_said() -> None:
    y = traffic(days=7)
    shuffled = y.sample(frac=1.0, random_state=1)
    doubled = pd.concat([shuffled, y.iloc[:5] + 1.0])
    with pytest.warns(ForecastWarning) as record:
        model = SeasonalNaiveForecaster().fit(doubled)
    messages = " ".join(str(w.message) for w in record)
    assert "sorted" in messages and "5 duplicate timestamps were averaged" in messages
    check_forecast(model, y)


def test_fit_many_handles_a_fleet_with_problems() -> None:
    fleet = {f"s{k}": traffic(days=21, seed=k) for k in range(8)}
    fleet["s1"].iloc[50:70] = np.nan
    fleet["short"] = traffic(days=21, seed=99).iloc[-60:]
    model = AutoForecaster(gbm_params={"max_iter": 20})
    with pytest.warns(ForecastWarning):
        model.fit_many(fleet)
    assert "s1" in model.series_warnings_ and "short" in model.series_warnings_
    assert any(line.startswith("series s1: ") for line in model.warnings_)
    forecasts = model.predict_many(24)
    assert set(forecasts) == set(fleet)
    for name, frame in forecasts.items():
        assert frame.index[0] == fleet[name].index[-1] + pd.Timedelta(hours=1)
        assert frame.notna().all().all()
        assert (frame["lower"] <= frame["upper"]).all()
    with pytest.raises(ValueError, match="fit_many"):
        model.predict(24)


def test_fit_many_refuses_mixed_frequencies() -> None:
    fleet = {"hourly": traffic(days=14), "five": traffic(days=3, freq="5min")}
    with pytest.raises(ValueError, match="one frequency"):
        GlobalGBMForecaster(max_iter=5).fit_many(fleet)
    with pytest.raises(TypeError, match="mapping"):
        GlobalGBMForecaster().fit_many([traffic()])  # type: ignore[arg-type]


def test_single_and_fleet_fits_do_not_mix() -> None:
    fleet = {f"s{k}": traffic(days=14, seed=k) for k in range(4)}
    gbm = GlobalGBMForecaster(max_iter=10, n_backtests=1).fit_many(fleet)
    with pytest.raises(ValueError, match="predict_many"):
        gbm.predict(24)
    gbm.fit(fleet["s0"])
    assert gbm.predict(24).shape == (24, 3)
    with pytest.raises(ValueError, match="fit_many"):
        gbm.predict_many(24)
    auto = AutoForecaster(candidates=[("snaive", SeasonalNaiveForecaster())], n_backtests=1)
    auto.fit(fleet["s1"])
    auto.fit_many(fleet)
    with pytest.raises(ValueError, match="predict_many"):
        auto.predict(24)
    auto.fit(fleet["s1"])
    assert auto.predict(24).shape == (24, 3)
    with pytest.raises(ValueError, match="fit_many"):
        auto.predict_many(24)
