"""The forecaster contract, input preparation and the forecast frame.

Every forecaster is a scikit-learn style estimator: ``__init__`` only stores parameters,
``fit(y)`` takes a ``pd.Series`` with a ``DatetimeIndex``, validates it, learns state whose
names end in ``_`` and returns ``self``; ``predict(horizon)`` returns a DataFrame indexed by
the next ``horizon`` timestamps at the series' frequency with columns ``mean``, ``lower``
and ``upper`` (an interval of the coverage given at construction, calibrated on
rolling-origin backtest errors). Problems in the data that the forecaster works around
(gaps, missing points, level shifts, series too short for a season) are listed in
``warnings_`` and raised as :class:`ForecastWarning`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from models.forecast.calibration import HorizonCalibration, calibrate_from_errors
from models.forecast.seasonality import infer_seasons, validate_seasons

__all__ = [
    "BaseForecaster",
    "ForecastWarning",
    "NotFittedError",
    "PreparedSeries",
    "prepare_series",
    "forecast_frame",
    "future_index",
    "check_horizon",
    "check_coverage",
]

_FORECAST_COLUMNS = ["mean", "lower", "upper"]


class ForecastWarning(UserWarning):
    """The data had a problem the forecaster worked around (the message says which)."""


@dataclass(frozen=True)
class PreparedSeries:
    """A validated series on a regular grid, gaps filled, with what was done to it."""

    values: np.ndarray  # regular grid, no NaN
    observed: np.ndarray  # True where the value was observed, False where filled
    index: pd.DatetimeIndex  # regular, same length as values
    freq: pd.DateOffset
    seasons: tuple[int, ...]  # periods usable with this length (each has >= 2 cycles)
    warnings: tuple[str, ...]
    name: object = None


def check_coverage(coverage: float) -> float:
    """Validate an interval coverage (a probability strictly between 0 and 1)."""
    if isinstance(coverage, bool) or not isinstance(coverage, (int, float, np.floating)):
        raise TypeError(f"coverage must be a number in (0, 1), got {coverage!r}")
    if not 0 < float(coverage) < 1:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    return float(coverage)


def check_horizon(horizon: int) -> int:
    """Validate a forecast horizon (a positive integer number of steps)."""
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)):
        raise TypeError(f"horizon must be a positive integer, got {horizon!r}")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    return int(horizon)


def future_index(last: pd.Timestamp, freq: pd.DateOffset, horizon: int) -> pd.DatetimeIndex:
    """The ``horizon`` timestamps following ``last`` at ``freq``."""
    return pd.date_range(last, periods=horizon + 1, freq=freq)[1:]


def forecast_frame(
    index: pd.DatetimeIndex, mean: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> pd.DataFrame:
    """The forecast DataFrame: ``mean``, ``lower``, ``upper`` with lower <= mean <= upper."""
    mean = np.asarray(mean, dtype=float)
    lower = np.minimum(np.asarray(lower, dtype=float), mean)
    upper = np.maximum(np.asarray(upper, dtype=float), mean)
    return pd.DataFrame({"mean": mean, "lower": lower, "upper": upper}, index=index)[
        _FORECAST_COLUMNS
    ]


def _regular_frequency(index: pd.DatetimeIndex) -> pd.DateOffset:
    if index.freq is not None:
        return index.freq
    with warnings.catch_warnings():
        # pandas 3 warns that infer_freq will return an offset; to_offset takes either.
        warnings.simplefilter("ignore", DeprecationWarning)
        inferred = pd.infer_freq(index) if index.size >= 3 else None
    if inferred is not None:
        return pd.tseries.frequencies.to_offset(inferred)
    if index.size < 2:
        raise ValueError("cannot tell the frequency of a series with one timestamp")
    step = pd.TimedeltaIndex(index[1:] - index[:-1]).median()
    if step <= pd.Timedelta(0):
        raise ValueError("cannot tell the frequency: timestamps do not increase")
    return pd.tseries.frequencies.to_offset(step)


def _fixed(freq: pd.DateOffset) -> bool:
    """Whether ``freq`` has a fixed length (hours, minutes, days; not months)."""
    try:
        pd.Timedelta(freq)
    except (ValueError, TypeError):
        return False
    return True


def _seasonal_fill(values: np.ndarray, period: int | None) -> np.ndarray:
    """Fill NaN from one period earlier when possible, otherwise by linear interpolation."""
    missing = np.isnan(values)
    positions = np.arange(values.size)
    linear = np.interp(positions, positions[~missing], values[~missing])
    if period is None:
        return linear
    filled = values.copy()
    for t in np.flatnonzero(missing):
        filled[t] = filled[t - period] if t >= period else linear[t]
    return filled


def _level_shift(values: np.ndarray, block: int) -> tuple[int, float] | None:
    """Find one persistent step change between blocks of ``block`` points (or None).

    Block means are compared with their neighbours; a jump far above the usual
    block-to-block change (robust scale) that persists over the later blocks counts.
    Returns (first position of the new level, size of the shift).
    """
    n_blocks = values.size // block
    if n_blocks < 4:
        return None
    start = values.size - n_blocks * block
    means = values[start:].reshape(n_blocks, block).mean(axis=1)
    diffs = np.diff(means)
    centred = diffs - np.median(diffs)
    spread = 1.4826 * np.median(np.abs(centred))
    noise = float(np.std(values[start:] - np.repeat(means, block))) / np.sqrt(block)
    threshold = 6.0 * max(spread, noise, 1e-9 * max(1.0, float(np.abs(means).mean())))
    k = int(np.argmax(np.abs(centred)))
    if abs(centred[k]) <= threshold:
        return None
    before = float(np.median(means[: k + 1]))
    after = float(np.median(means[k + 1 :]))
    shift = after - before
    if abs(shift) <= threshold or np.sign(shift) != np.sign(centred[k]):
        return None
    return start + (k + 1) * block, shift


def prepare_series(
    y: pd.Series,
    seasons: tuple[int, ...] | list[int] | int | None = None,
    *,
    adjust_level_shifts: bool = True,
) -> PreparedSeries:
    """Validate ``y`` and put it on a regular grid, saying what had to be repaired.

    Raises TypeError/ValueError for input no forecaster can use; works around (and
    reports) unsorted or duplicate timestamps, gaps, missing or infinite values, level
    shifts and seasons longer than half the series.
    """
    if not isinstance(y, pd.Series):
        raise TypeError(f"y must be a pandas Series with a DatetimeIndex, got {type(y).__name__}")
    if not isinstance(y.index, pd.DatetimeIndex):
        raise TypeError(
            f"y must have a DatetimeIndex, got {type(y.index).__name__} "
            "(give the series timestamps, e.g. pd.date_range(..., freq='h'))"
        )
    if not (pd.api.types.is_numeric_dtype(y.dtype) and not pd.api.types.is_bool_dtype(y.dtype)):
        raise TypeError(f"y must hold numbers, got dtype {y.dtype}")
    if y.index.hasnans:
        raise ValueError("y's index has missing timestamps (NaT)")
    notes: list[str] = []
    series = y.astype(float)
    if not series.index.is_monotonic_increasing:
        series = series.sort_index()
        notes.append("timestamps were not in order; the series was sorted")
    if series.index.has_duplicates:
        count = int(series.index.duplicated().sum())
        series = series.groupby(level=0).mean()
        notes.append(f"{count} duplicate timestamps were averaged")
    infinite = np.isinf(series.to_numpy())
    if infinite.any():
        series = series.where(~infinite)
        notes.append(f"{int(infinite.sum())} infinite values were treated as missing")
    observed_count = int(series.notna().sum())
    if observed_count < 2:
        raise ValueError(f"y has {observed_count} observed values; a forecast needs at least 2")
    freq = _regular_frequency(series.index)
    span_steps = (series.index[-1] - series.index[0]) / pd.Timedelta(freq) if _fixed(freq) else 0
    if span_steps > 10 * series.size + 10_000:
        raise ValueError(
            f"{series.size} points span {span_steps:.0f} steps of {freq.freqstr}: "
            "too sparse to forecast (check the timestamps)"
        )
    grid = pd.date_range(series.index[0], series.index[-1], freq=freq)
    if grid.size == series.size and grid.equals(series.index):
        regular = series
    elif series.index.isin(grid).all():
        regular = series.reindex(grid)
        notes.append(
            f"{grid.size - series.size} timestamps were absent (gaps) at frequency "
            f"{freq.freqstr}; they are treated as missing"
        )
    else:
        regular = series.resample(freq, origin="start").mean()
        notes.append(f"timestamps were irregular; values were averaged per {freq.freqstr} step")
    first_valid = regular.first_valid_index()
    if first_valid != regular.index[0]:
        dropped = int(regular.index.get_loc(first_valid))
        regular = regular.loc[first_valid:]
        notes.append(f"{dropped} leading missing points were dropped")
    values = regular.to_numpy(dtype=float)
    n = values.size
    wanted = validate_seasons(seasons)
    if wanted is None:
        wanted = infer_seasons(freq)
    usable = tuple(m for m in wanted if n >= 2 * m)
    for m in wanted:
        if m not in usable:
            notes.append(
                f"series of {n} points is too short for season {m} (needs {2 * m}); "
                "that season is ignored"
            )
    observed = ~np.isnan(values)
    missing = int(n - observed.sum())
    primary = usable[0] if usable else None
    if missing:
        values = _seasonal_fill(values, primary)
        how = f"the value one season ({primary}) earlier" if primary else "linear interpolation"
        notes.append(f"{missing} missing points were filled with {how}")
    if adjust_level_shifts:
        found = _level_shift(values, primary if primary else max(4, n // 12))
        if found is not None:
            position, shift = found
            values = values.copy()
            values[:position] += shift
            notes.append(
                f"level shift of {shift:+.4g} detected at {regular.index[position]}; "
                "the history before it was moved to the new level"
            )
    return PreparedSeries(
        values=values,
        observed=observed,
        index=pd.DatetimeIndex(regular.index, freq=freq),
        freq=freq,
        seasons=usable,
        warnings=tuple(notes),
        name=y.name,
    )


class BaseForecaster(BaseEstimator):  # type: ignore[misc]
    """Common fit/predict flow; subclasses implement ``_fit_values`` and ``_predict_mean``.

    Subclass parameters must include ``coverage`` and ``seasons``. The base class fits on
    the prepared values, then calibrates intervals on rolling-origin backtests
    (``n_backtests`` origins, each ``backtest_horizon`` steps, default two of the first
    season or 24 steps) by refitting a clone on each truncated history.
    """

    #: set False in subclasses whose fit does not benefit from the level-shift repair
    _adjust_level_shifts: bool = True

    # -- to implement -------------------------------------------------------------
    def _fit_values(self, values: np.ndarray, seasons: tuple[int, ...]) -> None:
        """Learn from prepared values; ``self.index_`` and ``self.freq_`` are already set."""
        raise NotImplementedError

    def _predict_mean(self, horizon: int) -> np.ndarray:
        raise NotImplementedError

    # -- shared flow ----------------------------------------------------------------
    def _backtest_horizon(self, seasons: tuple[int, ...]) -> int:
        given = getattr(self, "backtest_horizon", None)
        if given is not None:
            return check_horizon(given)
        return 2 * seasons[0] if seasons else 24

    def _backtest_errors(
        self, values: np.ndarray, observed: np.ndarray, seasons: tuple[int, ...], horizon: int
    ) -> np.ndarray:
        """Errors of refits on truncated histories (origins × steps), NaN where unobserved."""
        n_origins = int(getattr(self, "n_backtests", 3))
        rows: list[np.ndarray] = []
        minimum = max(2 * min(seasons, default=1), 8)
        for k in range(n_origins, 0, -1):
            origin = values.size - k * horizon
            if origin < minimum:
                continue
            usable = tuple(m for m in seasons if origin >= 2 * m)
            model = clone(self)
            model.index_ = self.index_[:origin]
            model.freq_ = self.freq_
            model._fit_values(values[:origin], usable)
            mean = model._predict_mean(horizon)
            actual = values[origin : origin + horizon]
            error = actual - mean[: actual.size]
            error = np.where(observed[origin : origin + horizon], error, np.nan)
            rows.append(np.pad(error, (0, horizon - error.size), constant_values=np.nan))
        if not rows:
            return np.empty((0, horizon))
        return np.vstack(rows)

    def _fallback_errors(self, values: np.ndarray, horizon: int) -> np.ndarray:
        """Random-walk errors of the history, used when it is too short for backtests."""
        steps = np.arange(1, horizon + 1)
        changes = np.diff(values)
        sigma = float(np.sqrt(np.mean(changes**2))) if changes.size else 0.0
        if sigma <= 0:
            sigma = max(0.1 * float(np.abs(values).mean()), 1e-9)
        return np.vstack([sigma * np.sqrt(steps) * z for z in (-1.96, 1.96)])

    def fit(self, y: pd.Series) -> BaseForecaster:
        """Learn from ``y`` (a Series with a DatetimeIndex); returns self."""
        coverage = check_coverage(self.coverage)
        prepared = prepare_series(
            y, getattr(self, "seasons", None), adjust_level_shifts=self._adjust_level_shifts
        )
        notes = list(prepared.warnings)
        self.index_ = prepared.index
        self.freq_ = prepared.freq
        self._fit_values(prepared.values, prepared.seasons)
        horizon = self._backtest_horizon(prepared.seasons)
        errors = self._backtest_errors(
            prepared.values, prepared.observed, prepared.seasons, horizon
        )
        if not np.isfinite(errors).any():
            notes.append(
                f"history of {prepared.values.size} points is too short for a backtest of "
                f"{horizon} steps; intervals assume random-walk errors"
            )
            errors = self._fallback_errors(prepared.values, horizon)
        self.calibration_: HorizonCalibration = calibrate_from_errors(errors, coverage)
        self.seasons_ = prepared.seasons
        self.warnings_ = notes
        for note in notes:
            warnings.warn(f"{type(self).__name__}: {note}", ForecastWarning, stacklevel=2)
        return self

    def predict(self, horizon: int) -> pd.DataFrame:
        """Forecast the next ``horizon`` steps: DataFrame of mean, lower, upper."""
        check_is_fitted(self, "calibration_")
        horizon = check_horizon(horizon)
        mean = np.asarray(self._predict_mean(horizon), dtype=float)
        lower, upper = self.calibration_.bounds(mean)
        return forecast_frame(
            future_index(self.index_[-1], self.freq_, horizon), mean, lower, upper
        )
