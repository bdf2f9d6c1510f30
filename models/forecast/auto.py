"""AutoForecaster: choose or combine forecasters per series by rolling-origin backtest.

``fit(y)`` backtests every candidate on the last ``n_backtests`` windows of ``y`` (refitting
on each truncated history), keeps the best candidate or the average of the best two or
three when that backtests better, calibrates the intervals on the chosen forecast's
backtest errors, and refits the chosen members on the whole series.

``fit_many(series)`` is the fleet path, fast enough for hundreds of series: one global
gradient-boosting model learned across all series with two windows of each series held
out (A older, B newer). Per series, the boosted forecast, seasonal naive (daily and
weekly) and the average of boosted and daily seasonal naive are compared on window A.
Whether that per-series choice beats using the global model everywhere is itself
backtested on window B (``policy_``). The intervals are calibrated, pooled over the fleet,
on the winning policy's window-B errors in a per-series unit known before window B
(``local_error_scale`` of window A); forecasts use the unit of window B.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

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
from models.forecast.ets import HoltWintersForecaster
from models.forecast.global_gbm import GlobalGBMForecaster, SeriesCollection, as_series_dict
from models.forecast.mstl import MSTLForecaster
from models.forecast.seasonal_naive import SeasonalNaiveForecaster, seasonal_naive_matrix

__all__ = ["AutoForecaster", "default_candidates"]

Candidates = Sequence[tuple[str, BaseForecaster]]


def default_candidates(seasons: tuple[int, ...], horizon: int) -> list[tuple[str, BaseForecaster]]:
    """Seasonal naive (each season), Holt-Winters, MSTL and a single-series GBM."""
    candidates: list[tuple[str, BaseForecaster]] = []
    for period in seasons or (None,):
        label = f"seasonal_naive_{period}" if period else "naive"
        candidates.append((label, SeasonalNaiveForecaster(period=period)))
    candidates.append(("holt_winters", HoltWintersForecaster(initialization_method="heuristic")))
    if len(seasons) > 1:
        candidates.append(("mstl", MSTLForecaster()))
    candidates.append(("gbm", GlobalGBMForecaster(max_horizon=horizon, max_iter=100)))
    return candidates


def _fit_on(
    template: BaseForecaster,
    values: np.ndarray,
    index: pd.DatetimeIndex,
    freq: pd.DateOffset,
    seasons: tuple[int, ...],
) -> BaseForecaster:
    """A fresh clone of ``template`` fitted on prepared values (no backtests, no intervals)."""
    model = clone(template)
    model.index_ = index[: values.size]
    model.freq_ = freq
    usable = tuple(m for m in seasons if values.size >= 2 * m)
    model._fit_values(values, usable)
    return model


class AutoForecaster(BaseForecaster):
    """Chooses or combines forecasters per series by rolling-origin backtest.

    Parameters
    ----------
    coverage : interval coverage, default 0.95.
    seasons : seasonal periods; None infers them from the index frequency (hourly: 24 and
        168; 5-minute: 288 and 2016).
    candidates : list of (name, forecaster) pairs for ``fit``; None uses
        :func:`default_candidates`.
    combine : also consider the average of the best two and three candidates.
    n_backtests : backtest windows (rolling origins) per series.
    backtest_horizon : steps per window; None is two of the first season (or 24). The
        boosted member (and ``fit_many``) cannot forecast further than this.
    gbm_params : keyword arguments of the global model used by ``fit_many``.
    """

    def __init__(
        self,
        coverage: float = 0.95,
        seasons: tuple[int, ...] | None = None,
        candidates: Candidates | None = None,
        combine: bool = True,
        n_backtests: int = 3,
        backtest_horizon: int | None = None,
        gbm_params: dict[str, Any] | None = None,
    ) -> None:
        self.coverage = coverage
        self.seasons = seasons
        self.candidates = candidates
        self.combine = combine
        self.n_backtests = n_backtests
        self.backtest_horizon = backtest_horizon
        self.gbm_params = gbm_params

    # -- single series ---------------------------------------------------------------
    def _candidate_list(self, seasons: tuple[int, ...], horizon: int) -> Candidates:
        if self.candidates is None:
            return default_candidates(seasons, horizon)
        checked = list(self.candidates)
        if not checked:
            raise ValueError("candidates is empty")
        for item in checked:
            if (
                not isinstance(item, tuple)
                or len(item) != 2
                or not isinstance(item[0], str)
                or not isinstance(item[1], BaseForecaster)
            ):
                raise TypeError(f"candidates must be (name, forecaster) pairs, got {item!r}")
        return checked

    def fit(self, y: pd.Series) -> AutoForecaster:
        """Backtest the candidates on ``y``, keep the best (or a blend); returns self."""
        coverage = check_coverage(self.coverage)
        fleet_state = ("fleet_", "fleet_means_", "choices_", "policy_", "policy_scores_")
        for stale in (*fleet_state, "scales_", "series_warnings_"):
            self.__dict__.pop(stale, None)
        prepared = prepare_series(y, self.seasons)
        notes = list(prepared.warnings)
        values, seasons = prepared.values, prepared.seasons
        horizon = self._backtest_horizon(seasons)
        candidates = self._candidate_list(seasons, horizon)
        minimum = max(2 * min(seasons, default=1), 8)
        origins = [
            values.size - k * horizon
            for k in range(int(self.n_backtests), 0, -1)
            if values.size - k * horizon >= minimum
        ]
        forecasts: dict[str, np.ndarray] = {}
        for name, template in candidates:
            try:
                rows = [
                    _fit_on(
                        template, values[:o], prepared.index, prepared.freq, seasons
                    )._predict_mean(horizon)
                    for o in origins
                ]
            except Exception as exc:  # noqa: BLE001 - a failing candidate is skipped, said
                notes.append(f"candidate {name} failed in backtest and was skipped: {exc}")
                continue
            forecasts[name] = np.vstack(rows) if rows else np.empty((0, horizon))
        if not forecasts:
            raise ValueError("every candidate failed on this series: " + "; ".join(notes))
        actual = (
            np.vstack(
                [
                    np.where(prepared.observed[o : o + horizon], values[o : o + horizon], np.nan)
                    for o in origins
                ]
            )
            if origins
            else np.empty((0, horizon))
        )
        options = self._options(forecasts, actual)
        self.scores_ = {"+".join(members): score for members, score in options}
        chosen = min(options, key=lambda item: item[1])[0] if origins else (next(iter(forecasts)),)
        if not origins:
            notes.append(
                f"series of {values.size} points is too short for a {horizon}-step backtest; "
                f"using {chosen[0]} with random-walk intervals"
            )
            errors = self._fallback_errors(values, horizon)
        else:
            blend = np.mean([forecasts[name] for name in chosen], axis=0)
            errors = actual - blend
            if not np.isfinite(errors).any():
                errors = self._fallback_errors(values, horizon)
        self.calibration_: HorizonCalibration = calibrate_from_errors(errors, coverage)
        templates = dict(candidates)
        members: list[tuple[str, BaseForecaster]] = []
        for name in chosen:
            members.append(
                (name, _fit_on(templates[name], values, prepared.index, prepared.freq, seasons))
            )
        self.members_ = members
        self.chosen_ = tuple(chosen)
        self.index_ = prepared.index
        self.freq_ = prepared.freq
        self.seasons_ = seasons
        self.warnings_ = notes
        for note in notes:
            warnings.warn(f"AutoForecaster: {note}", ForecastWarning, stacklevel=2)
        return self

    def _options(
        self, forecasts: dict[str, np.ndarray], actual: np.ndarray
    ) -> list[tuple[tuple[str, ...], float]]:
        """(members, backtest mean absolute error) for each candidate and blend."""
        if actual.size == 0:
            return [((name,), float("nan")) for name in forecasts]
        singles: list[tuple[tuple[str, ...], float]] = [
            ((name,), float(np.nanmean(np.abs(actual - f)))) for name, f in forecasts.items()
        ]
        singles = [item for item in singles if np.isfinite(item[1])] or singles
        singles.sort(key=lambda item: item[1])
        options: list[tuple[tuple[str, ...], float]] = list(singles)
        if self.combine:
            for size in (2, 3):
                if len(singles) >= size:
                    members = tuple(name for (name,), _ in singles[:size])
                    blend = np.mean([forecasts[name] for name in members], axis=0)
                    options.append((members, float(np.nanmean(np.abs(actual - blend)))))
        return options

    def _predict_mean(self, horizon: int) -> np.ndarray:
        return np.mean([model._predict_mean(horizon) for _, model in self.members_], axis=0)

    # -- many series -----------------------------------------------------------------
    def fit_many(self, series: SeriesCollection) -> AutoForecaster:
        """Fit a fleet at once (global model + per-series choice); returns self."""
        coverage = check_coverage(self.coverage)
        named = as_series_dict(series)
        for stale in ("members_", "chosen_", "scores_", "index_", "freq_"):
            self.__dict__.pop(stale, None)
        params = dict(self.gbm_params or {})
        params.setdefault("n_threads", 1)
        gbm = GlobalGBMForecaster(
            coverage=coverage, seasons=self.seasons, holdout_windows=2, **params
        )
        if self.backtest_horizon is not None:
            gbm.set_params(max_horizon=check_horizon(self.backtest_horizon))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ForecastWarning)
            gbm.fit_many(named)
        layout = gbm.layout_
        horizon = layout.horizon
        periods = tuple(m for m in (layout.period, layout.week) if m)
        choices: dict[str, str] = {}
        option_sets: dict[str, dict[str, np.ndarray]] = {}
        gbm_means = gbm.mean_many(horizon)
        for name, p in gbm.prepared_.items():
            n = p.values.size
            window_origins = np.array([n - 2 * horizon, n - horizon, n])
            options: dict[str, np.ndarray] = {
                "gbm": np.vstack([gbm.holdout_means_[name], gbm_means[name][None, :]])
            }
            extended = np.concatenate([p.values, np.full(horizon, np.nan)])
            for period in periods:
                if n - 2 * horizon - period * int(np.ceil(horizon / period)) < 0:
                    continue
                options[f"seasonal_naive_{period}"] = seasonal_naive_matrix(
                    extended, window_origins, horizon, period
                )
            if f"seasonal_naive_{layout.period}" in options:
                options["gbm+seasonal_naive"] = 0.5 * (
                    options["gbm"] + options[f"seasonal_naive_{layout.period}"]
                )
            actual = gbm.holdout_actuals_[name]  # windows A (older), B (newer)
            scores = {
                label: float(np.nanmean(np.abs(actual[0] - f[0])))
                for label, f in options.items()
                if np.isfinite(actual[0] - f[0]).any()
            }
            choices[name] = min(scores, key=scores.__getitem__) if scores else "gbm"
            option_sets[name] = options
        # Does choosing per series (on window A) beat the global model on window B?
        policy_errors: dict[str, list[float]] = {"per_series": [], "global": []}
        for name, options in option_sets.items():
            actual_b = gbm.holdout_actuals_[name][1]
            scale = gbm.base_scales_[name]
            for policy, label in (("per_series", choices[name]), ("global", "gbm")):
                error = np.abs(actual_b - options[label][1]) / scale
                if np.isfinite(error).any():
                    policy_errors[policy].append(float(np.nanmean(error)))
        self.policy_scores_ = {
            policy: float(np.mean(values)) if values else float("inf")
            for policy, values in policy_errors.items()
        }
        per_series = self.policy_scores_["per_series"] < self.policy_scores_["global"]
        self.policy_ = "per_series" if per_series else "global"
        if not per_series:
            choices = {name: "gbm" for name in choices}
        final: dict[str, np.ndarray] = {}
        calibration_errors: list[np.ndarray] = []
        units: dict[str, float] = {}
        for name, options in option_sets.items():
            label = choices[name]
            actual = gbm.holdout_actuals_[name]
            base = np.array([gbm.base_scales_[name]])
            window_errors = actual - options[label][:2]
            unit_a = local_error_scale(base, window_errors[0][None, :])[0]
            units[name] = float(local_error_scale(base, window_errors[1][None, :])[0])
            # window B in the unit known before it (window A's): an honest calibration,
            # also for a per-series choice, which was made on window A
            calibration_errors.append(window_errors[1] / unit_a)
            final[name] = options[label][2]
        errors = np.vstack(calibration_errors)
        if not np.isfinite(errors).any():
            steps = np.arange(1, horizon + 1)
            errors = np.vstack([z * np.sqrt(steps) for z in (-1.96, 1.96)])
        self.calibration_ = calibrate_from_errors(errors, coverage)
        self.fleet_ = gbm
        self.choices_ = choices
        self.fleet_means_ = final
        self.scales_ = units
        self.seasons_ = periods
        self.series_warnings_ = gbm.series_warnings_
        self.warnings_ = list(gbm.warnings_)
        for line in self.warnings_:
            warnings.warn(f"AutoForecaster: {line}", ForecastWarning, stacklevel=2)
        return self

    def predict_many(self, horizon: int) -> dict[str, pd.DataFrame]:
        """Forecasts of every series given to ``fit_many``, by name."""
        check_is_fitted(self, "calibration_")
        if not hasattr(self, "fleet_means_"):
            raise ValueError("predict_many needs a model fitted with fit_many")
        horizon = check_horizon(horizon)
        limit = self.fleet_.layout_.horizon
        if horizon > limit:
            raise ValueError(f"horizon {horizon} is longer than the {limit} steps fit_many learnt")
        frames: dict[str, pd.DataFrame] = {}
        for name, mean in self.fleet_means_.items():
            p: PreparedSeries = self.fleet_.prepared_[name]
            scale = self.scales_[name]
            mean = mean[:horizon]
            lower, upper = self.calibration_.bounds(mean / scale)
            frames[name] = forecast_frame(
                future_index(p.index[-1], p.freq, horizon), mean, lower * scale, upper * scale
            )
        return frames

    def predict(self, horizon: int) -> pd.DataFrame:
        """Forecast the series given to ``fit``: DataFrame of mean, lower, upper."""
        check_is_fitted(self, "calibration_")
        if not hasattr(self, "members_"):
            raise ValueError("this AutoForecaster was fitted with fit_many; use predict_many")
        return super().predict(horizon)
