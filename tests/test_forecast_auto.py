"""AutoForecaster: infers seasons, beats seasonal naive, runs a small M4 subset."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models import AutoForecaster
from models.forecast import (
    ForecastWarning,
    HoltWintersForecaster,
    MSTLForecaster,
    SeasonalNaiveForecaster,
    infer_seasons,
)
from models.forecast.m4 import (
    coverage,
    m4_frame_to_series,
    mase,
    naive2_forecast,
    owa,
    smape,
)
from tests.test_forecast_contract import traffic


@pytest.mark.parametrize(
    "freq, seasons",
    [("h", (24, 168)), ("5min", (288, 2016)), ("15min", (96, 672)), ("D", (7,)), ("W", ())],
)
def test_seasons_are_inferred_from_the_frequency(freq: str, seasons: tuple[int, ...]) -> None:
    assert infer_seasons(freq) == seasons


def test_auto_infers_hourly_and_five_minute_seasons_when_fitting() -> None:
    small = [("snaive", SeasonalNaiveForecaster())]
    hourly = AutoForecaster(candidates=small, n_backtests=1).fit(traffic(days=21))
    assert hourly.seasons_ == (24, 168)
    five = AutoForecaster(candidates=small, n_backtests=1, backtest_horizon=288)
    five.fit(traffic(days=15, freq="5min"))
    assert five.seasons_ == (288, 2016)
    assert five.predict(12).index.freqstr == "5min"
    given = AutoForecaster(candidates=small, seasons=(12,), n_backtests=1).fit(traffic(days=7))
    assert given.seasons_ == (12,)


def test_auto_beats_seasonal_naive_on_daily_and_weekly_traffic() -> None:
    errors_auto, errors_naive = [], []
    for seed in range(3):
        y = traffic(days=29, noise=6.0, seed=seed, phase_hours=seed * 50)
        history, future = y.iloc[:-48], y.iloc[-48:].to_numpy()
        auto = AutoForecaster(
            candidates=[
                ("snaive", SeasonalNaiveForecaster()),
                ("hw", HoltWintersForecaster(initialization_method="heuristic")),
                ("mstl", MSTLForecaster()),
            ],
            n_backtests=3,
        ).fit(history)
        naive = SeasonalNaiveForecaster().fit(history)
        errors_auto.append(np.abs(auto.predict(48)["mean"].to_numpy() - future).mean())
        errors_naive.append(np.abs(naive.predict(48)["mean"].to_numpy() - future).mean())
        assert set(auto.scores_) >= {"snaive", "hw", "mstl"}
        assert auto.chosen_ != ("snaive",)
    assert np.mean(errors_auto) < 0.85 * np.mean(errors_naive)


def test_auto_blends_when_blending_backtests_better() -> None:
    # Daily cycle only: repeating yesterday or the day before are equally good, with
    # independent noise, so their average has less error than either.
    index = pd.date_range("2024-03-04", periods=24 * 21, freq="h")
    hours = np.arange(index.size)
    noise = np.random.default_rng(11).normal(0, 5, index.size)
    y = pd.Series(300 + 50 * np.sin(2 * np.pi * hours / 24) + noise, index=index)
    auto = AutoForecaster(
        seasons=(24,),
        candidates=[
            ("yesterday", SeasonalNaiveForecaster(period=24)),
            ("two_days_ago", SeasonalNaiveForecaster(period=48)),
        ],
        n_backtests=4,
    ).fit(y)
    assert sorted(auto.chosen_) == ["two_days_ago", "yesterday"]
    blend = "+".join(auto.chosen_)
    assert auto.scores_[blend] == min(auto.scores_.values())
    forecast = auto.predict(24)["mean"].to_numpy()
    expected = (y.iloc[-24:].to_numpy() + y.iloc[-48:-24].to_numpy()) / 2
    assert forecast == pytest.approx(expected)


def test_auto_refuses_bad_candidates() -> None:
    with pytest.raises(TypeError, match="pairs"):
        AutoForecaster(candidates=[SeasonalNaiveForecaster()]).fit(traffic(days=7))  # type: ignore[list-item]
    with pytest.raises(ValueError, match="empty"):
        AutoForecaster(candidates=[]).fit(traffic(days=7))


@pytest.mark.slow
def test_m4_hourly_subset_beats_naive2(shared_data: Path) -> None:
    path = shared_data / "m4" / "Hourly-train.csv"
    if not path.exists():
        pytest.skip(f"{path} is not present")
    frame = pd.read_csv(path)
    series = m4_frame_to_series(frame.iloc[::21])  # 20 series spread over the file
    horizon, season = 48, 24
    history = {name: y.iloc[:-horizon] for name, y in series.items()}
    model = AutoForecaster(gbm_params={"max_iter": 100, "calendar": False})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ForecastWarning)
        forecasts = model.fit_many(history).predict_many(horizon)
    s, m, s2, m2, inside = [], [], [], [], []
    for name, y in series.items():
        actual = y.iloc[-horizon:].to_numpy()
        insample = history[name].to_numpy()
        f = forecasts[name]
        assert f.index.equals(y.index[-horizon:])
        naive2 = naive2_forecast(insample, horizon, season)
        s.append(smape(actual, f["mean"]))
        m.append(mase(actual, f["mean"], insample, season))
        s2.append(smape(actual, naive2))
        m2.append(mase(actual, naive2, insample, season))
        inside.append(coverage(actual, f["lower"], f["upper"]))
    score = owa(np.mean(s), np.mean(m), np.mean(s2), np.mean(m2))
    assert len(series) == 20
    assert score < 0.7  # Naive2 is 1.0; seasonal naive 0.63 and this model 0.45 on all 414
    assert 0.85 <= np.mean(inside) <= 1.0
