"""A global gradient-boosting forecaster: one model learned across many series.

Each training example is (series, origin, step): features are the history before the
origin divided by the series' recent level (the last ``n_lags`` values, the values at the
same phase of the ``n_season_lags`` previous days, the same phase one and two weeks back,
the level ratio of the last week to the last day), the step, and calendar features of the
target time; the target is the value ``step`` ahead divided by the same level. One
``HistGradientBoostingRegressor`` learns all steps at once (direct multi-step), so a
forecast needs no recursion. On large fleets such a global model is often the strongest.

``fit(y)`` learns from one series (intervals from refitted rolling-origin backtests);
``fit_many(series)`` learns from a fleet at once, holding out each series' last
``max_horizon`` points to calibrate intervals over the whole fleet (split conformal).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TypeAlias

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from models.forecast.base import (
    BaseForecaster,
    ForecastWarning,
    PreparedSeries,
    check_coverage,
    check_horizon,
    forecast_frame,
    future_index,
    prepare_series,
)
from models.forecast.calibration import (
    HorizonCalibration,
    calibrate_from_errors,
    local_error_scale,
)
from models.forecast.seasonality import infer_seasons, validate_seasons

__all__ = ["GlobalGBMForecaster", "SeriesCollection", "as_series_dict"]

SeriesCollection: TypeAlias = Mapping[str, pd.Series] | pd.DataFrame


def as_series_dict(series: SeriesCollection) -> dict[str, pd.Series]:
    """Accept a mapping name -> Series, or a DataFrame with one column per series."""
    if isinstance(series, pd.DataFrame):
        return {str(name): series[name] for name in series.columns}
    if isinstance(series, Mapping):
        if not series:
            raise ValueError("no series given")
        return {str(name): value for name, value in series.items()}
    raise TypeError(
        f"series must be a mapping name -> pd.Series or a DataFrame, got {type(series).__name__}"
    )


class _Layout:
    """Feature geometry shared by every series of one fit (periods, lags, horizon)."""

    def __init__(
        self, period: int, week: int | None, n_lags: int, n_season_lags: int, horizon: int
    ):
        self.period = period
        self.week = week
        self.n_lags = n_lags
        self.n_season_lags = n_season_lags
        self.horizon = horizon
        self.pad = (
            n_lags
            + period * (int(np.ceil(horizon / period)) + n_season_lags)
            + 2 * ((week or 0) * (int(np.ceil(horizon / week)) + 1) if week else 0)
        )


def _level(values: np.ndarray, origins: np.ndarray, window: int) -> np.ndarray:
    """Mean absolute value of the ``window`` points before each origin (never zero)."""
    cumulative = np.concatenate([[0.0], np.cumsum(np.abs(values))])
    start = np.maximum(origins - window, 0)
    level = (cumulative[origins] - cumulative[start]) / np.maximum(origins - start, 1)
    fallback = max(float(np.mean(np.abs(values))), 1e-9)
    return np.where(level > 0, level, fallback)


def _features(
    values: np.ndarray,
    origins: np.ndarray,
    steps: np.ndarray,
    layout: _Layout,
    hours: np.ndarray | None,
    weekdays: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrix and per-row level for (origin, step) pairs of one series.

    ``origins`` are history lengths (the forecast origin is ``values[origin - 1]``).
    """
    padded = np.concatenate([np.full(layout.pad, np.nan), values, np.full(layout.horizon, np.nan)])
    base = origins + layout.pad - 1  # padded position of the last observed point
    level = _level(values, origins, layout.period)
    columns: list[np.ndarray] = []
    lags = np.arange(layout.n_lags)
    columns.append(padded[base[:, None] - lags[None, :]] / level[:, None])
    cycles = np.ceil(steps / layout.period).astype(int)
    season_lags = np.arange(layout.n_season_lags)
    aligned = (
        base[:, None] + steps[:, None] - layout.period * (cycles[:, None] + season_lags[None, :])
    )
    seasonal = padded[aligned] / level[:, None]
    columns.append(seasonal)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        columns.append(np.nanmedian(seasonal, axis=1)[:, None])
    if layout.week:
        weeks = np.ceil(steps / layout.week).astype(int)
        for extra in (0, 1):
            position = base + steps - layout.week * (weeks + extra)
            columns.append((padded[position] / level)[:, None])
        week_level = _level(values, origins, layout.week)
        columns.append((week_level / level)[:, None])
    columns.append(steps[:, None].astype(float))
    columns.append(np.log(level)[:, None])
    if hours is not None and weekdays is not None:
        target = origins - 1 + steps
        columns.append(hours[target][:, None].astype(float))
        columns.append(weekdays[target][:, None].astype(float))
    return np.hstack(columns).astype(np.float32), level


class GlobalGBMForecaster(BaseForecaster):
    """Direct multi-step gradient boosting on level-normalised lags and calendar features.

    Parameters
    ----------
    coverage : interval coverage, default 0.95.
    seasons : periods (day, week); None infers them from the frequency.
    max_horizon : longest forecast the model learns (default two days of the first season).
    n_lags : recent values used as features.
    n_season_lags : same-phase values of previous days used as features.
    calendar : add hour-of-day and day-of-week of the target time.
    max_train_rows : examples sampled for training (spread evenly over the series).
    max_iter, learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization, loss :
        passed to ``HistGradientBoostingRegressor``.
    n_backtests : refitted backtest windows for the intervals of a single-series fit.
    holdout_windows : for ``fit_many``, windows of ``max_horizon`` points held out at the end
        of each series: not trained on, forecast out of sample to calibrate the intervals.
        With two or more, each series' interval unit mixes its seasonal-difference scale
        with its error on the previous window (``local_error_scale``).
    n_threads : OpenMP threads for the booster (None: all cores). The default, 1, is much
        faster on a busy machine, where spinning OpenMP threads wait for each other.
    random_state : seed for the row sampling and the booster.
    """

    _adjust_level_shifts = False

    def __init__(
        self,
        coverage: float = 0.95,
        seasons: tuple[int, ...] | None = None,
        max_horizon: int | None = None,
        n_lags: int = 24,
        n_season_lags: int = 7,
        calendar: bool = True,
        max_train_rows: int = 300_000,
        max_iter: int = 200,
        learning_rate: float = 0.08,
        max_leaf_nodes: int = 63,
        min_samples_leaf: int = 40,
        l2_regularization: float = 0.0,
        loss: str = "absolute_error",
        n_backtests: int = 3,
        holdout_windows: int = 2,
        n_threads: int | None = 1,
        random_state: int = 0,
    ) -> None:
        self.coverage = coverage
        self.seasons = seasons
        self.max_horizon = max_horizon
        self.n_lags = n_lags
        self.n_season_lags = n_season_lags
        self.calendar = calendar
        self.max_train_rows = max_train_rows
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.loss = loss
        self.n_backtests = n_backtests
        self.holdout_windows = holdout_windows
        self.n_threads = n_threads
        self.random_state = random_state

    # -- geometry -------------------------------------------------------------------
    def _layout(self, seasons: tuple[int, ...]) -> _Layout:
        period = seasons[0] if seasons else 24
        week = seasons[1] if len(seasons) > 1 else None
        horizon = self.max_horizon if self.max_horizon is not None else 2 * period
        return _Layout(
            period, week, int(self.n_lags), int(self.n_season_lags), check_horizon(horizon)
        )

    def _calendar(
        self, index: pd.DatetimeIndex, extra: int
    ) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
        if not self.calendar:
            return None, None
        full = pd.date_range(index[0], periods=index.size + extra, freq=index.freq)
        return np.asarray(full.hour), np.asarray(full.day_of_week)

    def _threads(self) -> threadpool_limits:
        return threadpool_limits(limits=self.n_threads, user_api="openmp")

    def _booster(self) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(
            loss=self.loss,
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            early_stopping=False,
            random_state=self.random_state,
        )

    def _training_rows(
        self,
        prepared: list[PreparedSeries],
        ends: list[int],
        layout: _Layout,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sampled (origin, step) examples whose targets lie before each series' ``end``."""
        budget = max(int(self.max_train_rows) // max(len(prepared), 1), layout.horizon)
        first = max(layout.period, 2)
        blocks_x: list[np.ndarray] = []
        blocks_y: list[np.ndarray] = []
        for series, end in zip(prepared, ends, strict=True):
            values = series.values
            last_origin = end - 1
            if last_origin < first:
                continue
            n_origins = last_origin - first + 1
            total = n_origins * layout.horizon
            take = min(budget, total)
            flat = rng.choice(total, size=take, replace=False) if take < total else np.arange(total)
            origins = first + flat // layout.horizon
            steps = 1 + flat % layout.horizon
            keep = origins - 1 + steps < end
            origins, steps = origins[keep], steps[keep]
            observed = series.observed[origins - 1 + steps]
            origins, steps = origins[observed], steps[observed]
            if origins.size == 0:
                continue
            hours, weekdays = self._calendar(series.index, layout.horizon)
            features, level = _features(values[:end], origins, steps, layout, hours, weekdays)
            blocks_x.append(features)
            blocks_y.append(values[origins - 1 + steps] / level)
        if not blocks_x:
            raise ValueError(
                f"no series is long enough to train on (each needs more than {first} points "
                f"plus the {layout.horizon}-step horizon)"
            )
        features = np.vstack(blocks_x)
        # A feature with no value at all (lags older than every history) breaks the
        # booster's binning; one zero makes it a constant, which the booster ignores.
        features[0, np.isnan(features).all(axis=0)] = 0.0
        return features, np.concatenate(blocks_y).astype(np.float32)

    def _forecast_from(self, series: PreparedSeries, origin: int, layout: _Layout) -> np.ndarray:
        steps = np.arange(1, layout.horizon + 1)
        origins = np.full(layout.horizon, origin)
        hours, weekdays = self._calendar(series.index, layout.horizon)
        features, level = _features(series.values[:origin], origins, steps, layout, hours, weekdays)
        with self._threads():
            return self.booster_.predict(features) * level

    # -- single series (BaseForecaster hooks) ----------------------------------------
    def _fit_values(self, values: np.ndarray, seasons: tuple[int, ...]) -> None:
        layout = self._layout(seasons)
        series = PreparedSeries(
            values=values,
            observed=np.ones(values.size, dtype=bool),
            index=self.index_[: values.size],
            freq=self.freq_,
            seasons=seasons,
            warnings=(),
        )
        rng = np.random.default_rng(self.random_state)
        x, y = self._training_rows([series], [values.size], layout, rng)
        with self._threads():
            self.booster_ = self._booster().fit(x, y)
        self.layout_ = layout
        self.last_series_ = series

    def _predict_mean(self, horizon: int) -> np.ndarray:
        if horizon > self.layout_.horizon:
            raise ValueError(
                f"horizon {horizon} is longer than max_horizon={self.layout_.horizon} "
                "this model was trained for"
            )
        mean = self._forecast_from(self.last_series_, self.last_series_.values.size, self.layout_)
        return mean[:horizon]

    def _backtest_horizon(self, seasons: tuple[int, ...]) -> int:
        return self._layout(seasons).horizon

    def fit(self, y: pd.Series) -> GlobalGBMForecaster:
        """Learn from one series; intervals come from refitted rolling-origin backtests."""
        for stale in ("prepared_", "holdout_means_", "holdout_actuals_", "scales_"):
            self.__dict__.pop(stale, None)
        super().fit(y)
        self.names_: list[str] | None = None
        return self

    def predict(self, horizon: int) -> pd.DataFrame:
        """Forecast the series given to ``fit``: DataFrame of mean, lower, upper."""
        check_is_fitted(self, "calibration_")
        if getattr(self, "names_", None) is not None:
            raise ValueError("this model was fitted with fit_many; use predict_many")
        return super().predict(horizon)

    # -- many series -----------------------------------------------------------------
    def _feature_seasons(self, prepared: PreparedSeries) -> tuple[int, ...]:
        given = validate_seasons(self.seasons)
        return given if given is not None else infer_seasons(prepared.freq)

    def fit_many(self, series: SeriesCollection) -> GlobalGBMForecaster:
        """Learn one model from many series (same frequency); returns self.

        The last ``max_horizon`` points of each series are held out of training and used to
        calibrate the intervals over the whole fleet; the forecasts start after the last
        point of each series.
        """
        coverage = check_coverage(self.coverage)
        named = as_series_dict(series)
        for stale in ("last_series_", "index_", "freq_"):
            self.__dict__.pop(stale, None)
        prepared: dict[str, PreparedSeries] = {}
        notes: dict[str, list[str]] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ForecastWarning)
            for name, values in named.items():
                prepared[name] = prepare_series(values, self.seasons, adjust_level_shifts=False)
                notes[name] = list(prepared[name].warnings)
        freqs = {p.freq for p in prepared.values()}
        if len(freqs) > 1:
            raise ValueError(
                f"fit_many needs series of one frequency, got {sorted(f.freqstr for f in freqs)}"
            )
        seasons = self._feature_seasons(next(iter(prepared.values())))
        layout = self._layout(seasons)
        windows = int(self.holdout_windows)
        if windows < 1:
            raise ValueError(f"holdout_windows must be >= 1, got {self.holdout_windows}")
        items = list(prepared.values())
        ends = [max(p.values.size - windows * layout.horizon, 0) for p in items]
        rng = np.random.default_rng(self.random_state)
        x, y = self._training_rows(items, ends, layout, rng)
        with self._threads():
            self.booster_ = self._booster().fit(x, y)
        self.layout_ = layout
        # Out-of-sample forecasts of the held-out windows (oldest first) for calibration.
        means = np.full((len(items), windows, layout.horizon), np.nan)
        actuals = np.full_like(means, np.nan)
        jobs: list[tuple[int, int, int]] = []
        for row, p in enumerate(items):
            for w in range(windows):
                origin = p.values.size - (windows - w) * layout.horizon
                if origin > layout.period:
                    jobs.append((row, w, origin))
                    stop = origin + layout.horizon
                    actuals[row, w] = np.where(
                        p.observed[origin:stop], p.values[origin:stop], np.nan
                    )
        if jobs:
            forecasts = self._batch_forecast([(items[r], o) for r, _, o in jobs])
            for (row, w, _), mean in zip(jobs, forecasts, strict=True):
                means[row, w] = mean
        base = np.array([_error_scale(p.values, layout.period) for p in items])
        self.holdout_means_ = dict(zip(prepared, means, strict=True))
        self.holdout_actuals_ = dict(zip(prepared, actuals, strict=True))
        self.base_scales_ = dict(zip(prepared, base, strict=True))
        errors = actuals - means
        if windows >= 2:
            # each window's errors in units mixing the series' scale and the previous
            # window's error (see local_error_scale); the last window sets the final unit
            units = np.stack(
                [local_error_scale(base, errors[:, w]) for w in range(windows)], axis=1
            )
            normalised = (errors[:, 1:] / units[:, :-1, None]).reshape(-1, layout.horizon)
            final = units[:, -1]
        else:
            normalised = (errors / base[:, None, None]).reshape(-1, layout.horizon)
            final = base
        self.scales_ = dict(zip(prepared, final, strict=True))
        self.calibration_ = _fleet_calibration(normalised, coverage, notes, list(prepared))
        self.prepared_ = prepared
        self.names_ = list(prepared)
        self.seasons_ = seasons
        self._mean_cache: dict[str, np.ndarray] | None = None
        self.series_warnings_ = {name: note for name, note in notes.items() if note}
        self.warnings_ = [
            f"series {name}: {line}"
            for name, note in self.series_warnings_.items()
            for line in note
        ]
        for line in self.warnings_:
            warnings.warn(f"GlobalGBMForecaster: {line}", ForecastWarning, stacklevel=2)
        return self

    def _batch_forecast(self, jobs: list[tuple[PreparedSeries, int]]) -> list[np.ndarray]:
        """Mean forecasts (max_horizon steps) from each (series, origin) in one predict call."""
        layout = self.layout_
        steps = np.arange(1, layout.horizon + 1)
        blocks: list[np.ndarray] = []
        levels: list[np.ndarray] = []
        for p, origin in jobs:
            hours, weekdays = self._calendar(p.index, layout.horizon)
            origins = np.full(layout.horizon, origin)
            features, level = _features(p.values[:origin], origins, steps, layout, hours, weekdays)
            blocks.append(features)
            levels.append(level)
        with self._threads():
            predicted = self.booster_.predict(np.vstack(blocks)) * np.concatenate(levels)
        return list(predicted.reshape(len(jobs), layout.horizon))

    def predict_many(self, horizon: int) -> dict[str, pd.DataFrame]:
        """Forecasts of every series given to ``fit_many``, by name."""
        check_is_fitted(self, "calibration_")
        if getattr(self, "names_", None) is None:
            raise ValueError("predict_many needs a model fitted with fit_many")
        horizon = check_horizon(horizon)
        if horizon > self.layout_.horizon:
            raise ValueError(
                f"horizon {horizon} is longer than max_horizon={self.layout_.horizon} "
                "this model was trained for"
            )
        means = self.mean_many(horizon)
        return {name: self._frame(name, means[name]) for name in means}

    def mean_many(self, horizon: int) -> dict[str, np.ndarray]:
        """Mean forecasts only (no intervals) of every series given to ``fit_many``."""
        check_is_fitted(self, "calibration_")
        if getattr(self, "names_", None) is None:
            raise ValueError("mean_many needs a model fitted with fit_many")
        if self._mean_cache is None:
            jobs = [(p, p.values.size) for p in self.prepared_.values()]
            self._mean_cache = dict(zip(self.prepared_, self._batch_forecast(jobs), strict=True))
        return {name: value[:horizon] for name, value in self._mean_cache.items()}

    def _frame(self, name: str, mean: np.ndarray) -> pd.DataFrame:
        p = self.prepared_[name]
        scale = self.scales_[name]
        lower, upper = self.calibration_.bounds(mean / scale)
        return forecast_frame(
            future_index(p.index[-1], p.freq, mean.size), mean, lower * scale, upper * scale
        )


def _error_scale(values: np.ndarray, period: int) -> float:
    """Per-series error unit: mean absolute seasonal difference (the MASE denominator)."""
    if values.size > period:
        scale = float(np.mean(np.abs(values[period:] - values[:-period])))
    else:
        scale = float(np.mean(np.abs(np.diff(values)))) if values.size > 1 else 0.0
    return scale if scale > 0 else max(float(np.mean(np.abs(values))), 1e-9)


def _fleet_calibration(
    errors: np.ndarray, coverage: float, notes: dict[str, list[str]], names: list[str]
) -> HorizonCalibration:
    """Pooled split-conformal calibration over the fleet's held-out windows."""
    if not np.isfinite(errors).any():
        for name in names:
            notes[name].append("no series was long enough to hold out a calibration window")
        steps = np.arange(1, errors.shape[1] + 1)
        errors = np.vstack([z * np.sqrt(steps) for z in (-1.96, 1.96)])
    return calibrate_from_errors(errors, coverage)
