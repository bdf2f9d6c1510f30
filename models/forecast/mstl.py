"""MSTL: several seasonalities at once (daily and weekly), the shape of service traffic.

The series is decomposed with ``statsmodels.tsa.seasonal.MSTL`` into a trend, one
seasonal component per period and a remainder. Each seasonal component is carried forward
by repeating its last cycle; the seasonally adjusted series (trend + remainder) is
forecast with damped-trend exponential smoothing, as ``STLForecast`` composes a model.
"""

from __future__ import annotations

import warnings

import numpy as np
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from statsmodels.tsa.holtwinters import ExponentialSmoothing
from statsmodels.tsa.seasonal import MSTL

from models.forecast.base import BaseForecaster

__all__ = ["MSTLForecaster"]


class MSTLForecaster(BaseForecaster):
    """Multiple seasonal-trend decomposition with a damped trend on the adjusted series.

    Parameters
    ----------
    coverage : interval coverage, default 0.95.
    seasons : periods (default: per day and per week of the frequency); those with fewer
        than two cycles in the history are left out.
    damped_trend : damp the trend of the adjusted series (safer over long horizons).
    backtest_horizon, n_backtests : refitted rolling-origin backtests for the intervals.
    """

    def __init__(
        self,
        coverage: float = 0.95,
        seasons: tuple[int, ...] | None = None,
        damped_trend: bool = True,
        backtest_horizon: int | None = None,
        n_backtests: int = 3,
    ) -> None:
        self.coverage = coverage
        self.seasons = seasons
        self.damped_trend = damped_trend
        self.backtest_horizon = backtest_horizon
        self.n_backtests = n_backtests

    def _fit_values(self, values: np.ndarray, seasons: tuple[int, ...]) -> None:
        periods = tuple(m for m in seasons if values.size >= 2 * m)
        if periods:
            decomposition = MSTL(values, periods=list(periods)).fit()
            seasonal = np.asarray(decomposition.seasonal, dtype=float).reshape(values.size, -1)
            adjusted = values - seasonal.sum(axis=1)
            self.cycles_ = [seasonal[-m:, k].copy() for k, m in enumerate(periods)]
        else:
            adjusted = values.copy()
            self.cycles_ = []
        self.periods_ = periods
        trend = "add" if adjusted.size >= 10 else None
        model = ExponentialSmoothing(
            adjusted,
            trend=trend,
            damped_trend=bool(self.damped_trend) and trend is not None,
            initialization_method="estimated",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            self.adjusted_result_ = model.fit()

    def _predict_mean(self, horizon: int) -> np.ndarray:
        mean = np.asarray(self.adjusted_result_.forecast(horizon), dtype=float)
        for cycle in self.cycles_:
            mean = mean + np.resize(cycle, horizon)
        return mean
