"""Forecast-residual detector: robust z-score of the residual from a seasonal baseline."""

from __future__ import annotations

import math

import numpy as np

from models.anomaly.base import BaseDetector
from models.anomaly.online import RollingQuantile, SeasonalBaseline, TailCalibrator, per_day_score

__all__ = ["SeasonalResidualDetector"]

_MAD_TO_SIGMA = 1.4826
_WARMUP_RESIDUALS = 50  # residuals needed before z-scores are trusted


class _ResidualState:
    def __init__(self, n: int, d: SeasonalResidualDetector) -> None:
        self.baselines = [
            SeasonalBaseline(
                daily=d.daily,
                weekly=d.weekly,
                level_alpha=d.level_alpha,
                season_alpha=d.season_alpha,
                error_alpha=d.error_alpha,
            )
            for _ in range(n)
        ]
        self.abs_residuals = [RollingQuantile(d.scale_window) for _ in range(n)]
        self.recent_z = [RollingQuantile(max(1, d.smoothing_points)) for _ in range(n)]
        self.calibrators = [
            TailCalibrator(d.history, d.min_history, d.tail_index, d.history_scaling)
            for _ in range(n)
        ]
        self.expected = np.full(n, math.nan)
        self.signal = 0
        self.warmup = min(d.scale_window, _WARMUP_RESIDUALS)
        self.time_scaling = d.time_scaling
        self.smoothing = max(1, d.smoothing_points)

    def step(self, t: float, x: np.ndarray) -> float:
        best = 0.0
        best_j = 0
        for j, value in enumerate(x):
            base = self.baselines[j]
            if math.isnan(value):
                continue
            expected = base.expect(t)
            self.expected[j] = expected
            score = 0.0
            if not math.isnan(expected):
                residual = abs(value - expected)
                scale = self.abs_residuals[j]
                mad = scale.quantile(0.5) if len(scale) else 0.0
                eps = 1e-9 + 1e-6 * abs(expected)
                z = residual / (_MAD_TO_SIGMA * mad + eps)
                recent = self.recent_z[j]
                recent.add(z)
                raw = z if self.smoothing == 1 else max(z, recent.quantile(0.5))
                cal = self.calibrators[j]
                if len(scale) >= self.warmup:  # the robust scale is settled
                    score = cal.score(raw)
                    score = per_day_score(score, base.step_seconds, self.time_scaling)
                    cal.learn(raw)
                scale.add(residual)
            base.update(t, float(value))
            if score > best:
                best, best_j = score, j
        self.signal = best_j
        return best


class SeasonalResidualDetector(BaseDetector):
    """Scores each point by how unusual its residual from a seasonal forecast is.

    The forecast is :class:`~models.anomaly.online.SeasonalBaseline` (level, daily and
    weekly profiles, whichever predicted best lately); the residual is divided by a robust
    scale (1.4826 x the median absolute residual over ``scale_window`` points) and the
    resulting z-score is calibrated to [0, 1] by its tail probability under its own history
    (:class:`~models.anomaly.online.TailCalibrator`). With ``smoothing_points > 1`` the
    statistic is the larger of the point's z and the median z of the last points, which makes
    sustained shifts stand out. Several signals: each is scored, the highest score wins.
    """

    def __init__(
        self,
        *,
        daily: bool = True,
        weekly: bool = True,
        level_alpha: float = 0.1,
        season_alpha: float = 0.25,
        error_alpha: float = 0.02,
        scale_window: int = 1000,
        smoothing_points: int = 1,
        history: int = 5000,
        min_history: int = 100,
        tail_index: float = 2.0,
        time_scaling: float = 0.0,
        history_scaling: float = 0.0,
        threshold: float = 0.999,
        hold_seconds: float = 0.0,
        alarm_level: float = 0.999,
    ) -> None:
        self.daily = daily
        self.weekly = weekly
        self.level_alpha = level_alpha
        self.season_alpha = season_alpha
        self.error_alpha = error_alpha
        self.scale_window = scale_window
        self.smoothing_points = smoothing_points
        self.history = history
        self.min_history = min_history
        self.tail_index = tail_index
        self.time_scaling = time_scaling
        self.history_scaling = history_scaling
        self.threshold = threshold
        self.hold_seconds = hold_seconds
        self.alarm_level = alarm_level

    def _new_state(self, n_features: int) -> _ResidualState:
        if self.scale_window < 1 or self.history < 1:
            raise ValueError("scale_window and history must be positive")
        return _ResidualState(n_features, self)
