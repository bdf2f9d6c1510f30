"""M4 competition metrics, computed the way the competition did (pure numpy).

sMAPE, MASE (seasonal scale), the Naive2 benchmark (naive forecast of the seasonally
adjusted series, using a classical multiplicative decomposition only when the
autocorrelation at the seasonal lag passes a 90% test), OWA against Naive2, MSIS and
interval coverage. References: Makridakis, Spiliotis, Assimakopoulos (2018, 2020) and the
competition's published R benchmark code (``SeasonalityTest``, ``naive2``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

__all__ = [
    "smape",
    "mase",
    "msis",
    "coverage",
    "seasonality_test",
    "classical_multiplicative_indices",
    "naive2_forecast",
    "owa",
    "m4_frame_to_series",
    "M4_HOURLY_HORIZON",
    "M4_HOURLY_SEASON",
]

M4_HOURLY_HORIZON = 48
M4_HOURLY_SEASON = 24


def _as_float(values: Iterable[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers")
    return array


def _same_length(actual: np.ndarray, other: np.ndarray, name: str) -> None:
    if actual.shape != other.shape:
        raise ValueError(f"{name} has {other.size} values but actual has {actual.size}")


def smape(actual: Iterable[float], forecast: Iterable[float]) -> float:
    """Symmetric MAPE in percent: mean of 200·|y - f| / (|y| + |f|)."""
    y = _as_float(actual, "actual")
    f = _as_float(forecast, "forecast")
    _same_length(y, f, "forecast")
    denominator = np.abs(y) + np.abs(f)
    terms = np.where(
        denominator == 0, 0.0, 200.0 * np.abs(y - f) / np.where(denominator == 0, 1, denominator)
    )
    return float(np.mean(terms))


def _seasonal_scale(insample: np.ndarray, season: int) -> float:
    """Mean absolute seasonal difference of the history (the MASE/MSIS denominator)."""
    if season < 1:
        raise ValueError(f"season must be >= 1, got {season}")
    if insample.size <= season:
        raise ValueError(f"insample has {insample.size} points; needs more than season={season}")
    scale = float(np.mean(np.abs(insample[season:] - insample[:-season])))
    if scale == 0:
        raise ValueError("insample is constant at the seasonal lag: MASE is undefined")
    return scale


def mase(
    actual: Iterable[float], forecast: Iterable[float], insample: Iterable[float], season: int
) -> float:
    """Mean absolute scaled error with the in-sample seasonal naive error as scale."""
    y = _as_float(actual, "actual")
    f = _as_float(forecast, "forecast")
    _same_length(y, f, "forecast")
    return float(np.mean(np.abs(y - f)) / _seasonal_scale(_as_float(insample, "insample"), season))


def msis(
    actual: Iterable[float],
    lower: Iterable[float],
    upper: Iterable[float],
    insample: Iterable[float],
    season: int,
    alpha: float = 0.05,
) -> float:
    """Mean scaled interval score of a (1 - alpha) interval (M4 used alpha = 0.05)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    y = _as_float(actual, "actual")
    lo = _as_float(lower, "lower")
    hi = _as_float(upper, "upper")
    _same_length(y, lo, "lower")
    _same_length(y, hi, "upper")
    penalty = (2.0 / alpha) * ((lo - y) * (y < lo) + (y - hi) * (y > hi))
    score = np.mean(hi - lo + penalty)
    return float(score / _seasonal_scale(_as_float(insample, "insample"), season))


def coverage(actual: Iterable[float], lower: Iterable[float], upper: Iterable[float]) -> float:
    """Share of actual values inside [lower, upper]."""
    y = _as_float(actual, "actual")
    lo = _as_float(lower, "lower")
    hi = _as_float(upper, "upper")
    _same_length(y, lo, "lower")
    _same_length(y, hi, "upper")
    return float(np.mean((y >= lo) & (y <= hi)))


def _acf(values: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelations at lags 1..max_lag (R's ``acf`` estimator)."""
    centred = values - values.mean()
    denominator = float(np.dot(centred, centred))
    if denominator == 0:
        return np.zeros(max_lag)
    return np.array(
        [
            float(np.dot(centred[lag:], centred[:-lag])) / denominator
            for lag in range(1, max_lag + 1)
        ]
    )


def seasonality_test(insample: Iterable[float], season: int) -> bool:
    """M4's 90% test: is |acf(season)| above 1.645·sqrt((1 + 2·Σ_{k<season} acf(k)²) / n)?"""
    y = _as_float(insample, "insample")
    if season <= 1 or y.size < 3 * season:
        return False
    acf = _acf(y, season)
    limit = 1.645 * np.sqrt((1.0 + 2.0 * np.sum(acf[: season - 1] ** 2)) / y.size)
    return bool(abs(acf[season - 1]) > limit)


def classical_multiplicative_indices(insample: Iterable[float], season: int) -> np.ndarray:
    """Seasonal indices (mean 1) of R's ``decompose(type="multiplicative")``.

    Index ``k`` belongs to positions ``t`` with ``t % season == k`` (counting from the first
    point of ``insample``).
    """
    y = _as_float(insample, "insample")
    if season < 2 or y.size < 2 * season:
        raise ValueError(f"need at least two seasons ({2 * season} points) to decompose")
    if season % 2 == 0:
        weights = np.r_[0.5, np.ones(season - 1), 0.5] / season
    else:
        weights = np.ones(season) / season
    half = len(weights) // 2
    trend = np.full(y.size, np.nan)
    trend[half : y.size - half] = np.convolve(y, weights, mode="valid")
    ratio = y / trend
    phases = np.arange(y.size) % season
    figure = np.array([np.nanmean(ratio[phases == k]) for k in range(season)])
    return figure / figure.mean()


def naive2_forecast(insample: Iterable[float], horizon: int, season: int) -> np.ndarray:
    """The M4 Naive2 benchmark: seasonally adjusted naive, reseasonalised."""
    y = _as_float(insample, "insample")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if seasonality_test(y, season):
        indices = classical_multiplicative_indices(y, season)
        phases_in = np.arange(y.size) % season
        deseasonalised = y / indices[phases_in]
        phases_out = np.arange(y.size, y.size + horizon) % season
        return np.asarray(deseasonalised[-1] * indices[phases_out], dtype=float)
    return np.full(horizon, y[-1], dtype=float)


def owa(smape_model: float, mase_model: float, smape_naive2: float, mase_naive2: float) -> float:
    """Overall weighted average: mean of the sMAPE and MASE ratios to Naive2's."""
    if smape_naive2 <= 0 or mase_naive2 <= 0:
        raise ValueError("Naive2 sMAPE and MASE must be positive")
    return 0.5 * (smape_model / smape_naive2 + mase_model / mase_naive2)


def m4_frame_to_series(
    frame: pd.DataFrame, start: str = "2000-01-01", freq: str = "h"
) -> dict[str, pd.Series]:
    """Turn the wide M4 layout (column ``V1`` = id, then values padded with NaN) into series.

    M4 has no real timestamps, so each series gets a synthetic regular index starting at
    ``start`` with frequency ``freq``.
    """
    if "V1" not in frame.columns:
        raise ValueError("the M4 frame has no V1 (series id) column")
    values = frame.drop(columns="V1").to_numpy(dtype=float)
    series: dict[str, pd.Series] = {}
    for name, row in zip(frame["V1"].astype(str), values, strict=True):
        row = row[~np.isnan(row)]
        index = pd.date_range(start, periods=row.size, freq=freq)
        series[name] = pd.Series(row, index=index, name=name)
    return series
