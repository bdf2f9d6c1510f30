"""Forecasting: one sklearn-style contract, several forecasters, an automatic chooser.

``fit(y)`` takes a Series with a DatetimeIndex and returns self; ``predict(horizon)``
returns a DataFrame indexed by the future timestamps with ``mean``, ``lower``, ``upper``.
"""

from __future__ import annotations

from models.forecast.base import BaseForecaster, ForecastWarning, NotFittedError
from models.forecast.seasonal_naive import SeasonalNaiveForecaster
from models.forecast.seasonality import infer_seasons

__all__ = [
    "BaseForecaster",
    "ForecastWarning",
    "NotFittedError",
    "SeasonalNaiveForecaster",
    "infer_seasons",
]
