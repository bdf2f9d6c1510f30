"""Forecasting: one sklearn-style contract, several forecasters, an automatic chooser.

``fit(y)`` takes a Series with a DatetimeIndex and returns self; ``predict(horizon)``
returns a DataFrame indexed by the future timestamps with ``mean``, ``lower``, ``upper``
(an interval of the coverage given at construction, calibrated on backtest errors).
``AutoForecaster`` and ``GlobalGBMForecaster`` also fit fleets at once with ``fit_many``
and ``predict_many``.
"""

from __future__ import annotations

from models.forecast.auto import AutoForecaster, default_candidates
from models.forecast.base import (
    BaseForecaster,
    ForecastWarning,
    NotFittedError,
    PreparedSeries,
    prepare_series,
)
from models.forecast.calibration import HorizonCalibration, calibrate_from_errors
from models.forecast.ets import ETSForecaster, HoltWintersForecaster
from models.forecast.global_gbm import GlobalGBMForecaster
from models.forecast.mstl import MSTLForecaster
from models.forecast.seasonal_naive import SeasonalNaiveForecaster
from models.forecast.seasonality import infer_seasons

__all__ = [
    "AutoForecaster",
    "BaseForecaster",
    "ETSForecaster",
    "ForecastWarning",
    "GlobalGBMForecaster",
    "HoltWintersForecaster",
    "HorizonCalibration",
    "MSTLForecaster",
    "NotFittedError",
    "PreparedSeries",
    "SeasonalNaiveForecaster",
    "calibrate_from_errors",
    "default_candidates",
    "infer_seasons",
    "prepare_series",
]
