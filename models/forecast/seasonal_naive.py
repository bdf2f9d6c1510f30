"""Seasonal naive: tomorrow at 10:00 looks like today at 10:00."""

from __future__ import annotations

import numpy as np

from models.forecast.base import BaseForecaster

__all__ = ["SeasonalNaiveForecaster", "seasonal_naive_matrix"]

_MAX_ORIGINS = 400


def seasonal_naive_matrix(
    values: np.ndarray, origins: np.ndarray, horizon: int, period: int
) -> np.ndarray:
    """Seasonal naive forecasts (origins × steps) from histories ``values[:origin]``."""
    steps = np.arange(1, horizon + 1)
    lag = period * np.ceil(steps / period).astype(int)
    positions = origins[:, None] + steps[None, :] - 1 - lag[None, :]
    return values[positions]


class SeasonalNaiveForecaster(BaseForecaster):
    """Repeats the last observed cycle; the plain naive (last value) without a season.

    Parameters
    ----------
    coverage : interval coverage, default 0.95.
    seasons : candidate periods; None infers them from the frequency.
    period : the period to repeat; None uses the shortest usable season.
    backtest_horizon : steps per backtest (default two seasons); intervals are calibrated
        on the errors of every origin in the last ``n_backtests`` windows of the history,
        which for this method cost nothing to compute (at most 400 origins, evenly spread).
    n_backtests : number of backtest windows.
    """

    def __init__(
        self,
        coverage: float = 0.95,
        seasons: tuple[int, ...] | None = None,
        period: int | None = None,
        backtest_horizon: int | None = None,
        n_backtests: int = 8,
    ) -> None:
        self.coverage = coverage
        self.seasons = seasons
        self.period = period
        self.backtest_horizon = backtest_horizon
        self.n_backtests = n_backtests

    def _choose_period(self, seasons: tuple[int, ...], length: int) -> int:
        if self.period is not None:
            if isinstance(self.period, bool) or not isinstance(self.period, (int, np.integer)):
                raise TypeError(f"period must be a positive integer, got {self.period!r}")
            if self.period < 1:
                raise ValueError(f"period must be >= 1, got {self.period}")
            return int(self.period) if length >= self.period else 1
        return seasons[0] if seasons else 1

    def _fit_values(self, values: np.ndarray, seasons: tuple[int, ...]) -> None:
        self.period_ = self._choose_period(seasons, values.size)
        self.last_cycle_ = values[-self.period_ :].copy()

    def _predict_mean(self, horizon: int) -> np.ndarray:
        return np.resize(self.last_cycle_, horizon)

    def _backtest_errors(
        self, values: np.ndarray, observed: np.ndarray, seasons: tuple[int, ...], horizon: int
    ) -> np.ndarray:
        period = self._choose_period(seasons, values.size)
        first = period * int(np.ceil(horizon / period))
        last = values.size - horizon
        if last < first:
            return np.empty((0, horizon))
        origins = np.arange(max(first, last - self.n_backtests * horizon), last + 1)
        if origins.size > _MAX_ORIGINS:  # plenty for the quantiles, and bounded work
            origins = origins[np.linspace(0, origins.size - 1, _MAX_ORIGINS).astype(int)]
        forecasts = seasonal_naive_matrix(values, origins, horizon, period)
        positions = origins[:, None] + np.arange(horizon)[None, :]
        errors = values[positions] - forecasts
        return np.where(observed[positions], errors, np.nan)
