"""Every forecaster keeps the contract: fit returns self, predict gives future timestamps
with mean/lower/upper, unfitted predict raises, parameters round-trip, bad data is said."""

from __future__ import annotations

import warnings

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
    NotFittedError,
    SeasonalNaiveForecaster,
)


def traffic(
    days: int = 21, freq: str = "h", noise: float = 4.0, seed: int = 0, phase_hours: float = 0.0
) -> pd.Series:
    """Daily and weekly cycles plus Gaussian noise, like a service's request rate.

    ``phase_hours`` shifts where in the week the series starts.
    """
    index = pd.date_range("2024-03-04", periods=days * 24, freq="h")
    if freq != "h":
        index = pd.date_range("2024-03-04", periods=days * 288, freq=freq)
    hours = (index - index[0]) / pd.Timedelta(hours=1) + phase_hours
    daily = 40 * np.sin(2 * np.pi * hours / 24)
    weekly = 15 * np.sin(2 * np.pi * hours / 168)
    rng = np.random.default_rng(seed)
    return pd.Series(200 + daily + weekly + rng.normal(0, noise, index.size), index=index)


def fast_forecasters() -> list[BaseForecaster]:
    """One of each, configured to run in about a second on three weeks of hourly data."""
    return [
        SeasonalNaiveForecaster(),
        HoltWintersForecaster(initialization_method="heuristic", n_backtests=2),
        ETSForecaster(initialization_method="heuristic", n_backtests=2),
        MSTLForecaster(n_backtests=2),
        GlobalGBMForecaster(max_iter=30, n_backtests=2),
        AutoForecaster(
            candidates=[
                ("snaive", SeasonalNaiveForecaster()),
                ("hw", HoltWintersForecaster(initialization_method="heuristic")),
            ],
            n_backtests=2,
        ),
    ]


FORECASTERS = fast_forecasters()
IDS = [type(f).__name__ for f in FORECASTERS]


@pytest.mark.parametrize("forecaster", FORECASTERS, ids=IDS)
def test_fit_returns_self_and_predict_gives_future_frame(forecaster: BaseForecaster) -> None:
    y = traffic()
    model = clone(forecaster)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ForecastWarning)  # clean data: nothing to say
        assert model.fit(y) is model
    assert model.warnings_ == []
    forecast = model.predict(30)
    expected = pd.date_range(y.index[-1] + pd.Timedelta(hours=1), periods=30, freq="h")
    assert list(forecast.columns) == ["mean", "lower", "upper"]
    assert forecast.index.equals(expected)
    assert forecast.notna().all().all()
    assert (forecast["lower"] <= forecast["mean"]).all()
    assert (forecast["mean"] <= forecast["upper"]).all()
    assert (forecast["upper"] - forecast["lower"]).min() > 0
    # a sensible forecast of a series that lives between 140 and 260
    assert forecast["mean"].between(100, 300).all()


@pytest.mark.parametrize("forecaster", FORECASTERS, ids=IDS)
def test_unfitted_predict_raises(forecaster: BaseForecaster) -> None:
    with pytest.raises(NotFittedError):
        clone(forecaster).predict(5)


@pytest.mark.parametrize("forecaster", FORECASTERS, ids=IDS)
def test_params_round_trip(forecaster: BaseForecaster) -> None:
    params = forecaster.get_params(deep=False)
    copy = clone(forecaster)
    assert copy.get_params(deep=False).keys() == params.keys()
    assert copy.set_params(coverage=0.8) is copy
    assert copy.coverage == 0.8
    assert forecaster.coverage == 0.95
    assert type(forecaster)(**params).get_params(deep=False).keys() == params.keys()


def test_coverage_changes_interval_width() -> None:
    y = traffic()
    wide = SeasonalNaiveForecaster(coverage=0.95).fit(y).predict(24)
    narrow = SeasonalNaiveForecaster(coverage=0.5).fit(y).predict(24)
    assert ((wide.upper - wide.lower) > (narrow.upper - narrow.lower)).all()
    assert np.allclose(wide["mean"], narrow["mean"])


def test_five_minute_index_is_kept() -> None:
    y = traffic(days=3, freq="5min")
    forecast = SeasonalNaiveForecaster().fit(y).predict(12)
    assert forecast.index.freqstr == "5min"
    assert forecast.index[0] == y.index[-1] + pd.Timedelta(minutes=5)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        ([1.0, 2.0, 3.0], TypeError, "pandas Series"),
        (pd.Series([1.0, 2.0, 3.0]), TypeError, "DatetimeIndex"),
        (
            pd.Series(["a", "b"], index=pd.date_range("2024", periods=2, freq="h")),
            TypeError,
            "numbers",
        ),
        (
            pd.Series([np.nan, 1.0, np.nan], index=pd.date_range("2024", periods=3, freq="h")),
            ValueError,
            "at least 2",
        ),
    ],
)
def test_bad_input_is_refused_clearly(bad: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        SeasonalNaiveForecaster().fit(bad)  # type: ignore[arg-type]


def test_bad_parameters_are_refused_at_fit_or_predict() -> None:
    y = traffic(days=7)
    with pytest.raises(ValueError, match="coverage"):
        SeasonalNaiveForecaster(coverage=1.5).fit(y)
    model = SeasonalNaiveForecaster().fit(y)
    with pytest.raises(ValueError, match="horizon"):
        model.predict(0)
    with pytest.raises(TypeError, match="horizon"):
        model.predict(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trend"):
        HoltWintersForecaster(trend="bogus").fit(y)
    with pytest.raises(ValueError, match="max_horizon"):
        GlobalGBMForecaster(max_iter=5, max_horizon=24, n_backtests=1).fit(y).predict(25)
