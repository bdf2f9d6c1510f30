"""Level-shift / change-point detector: two-sided CUSUM on robust seasonal residuals."""

from __future__ import annotations

import math

import numpy as np

from models.anomaly.base import BaseDetector
from models.anomaly.online import RollingQuantile, SeasonalBaseline, TailCalibrator, per_day_score

__all__ = ["CusumDetector"]

_MAD_TO_SIGMA = 1.4826
_WARMUP_RESIDUALS = 50  # residuals needed before z-scores are trusted


class _CusumState:
    def __init__(self, n: int, d: CusumDetector) -> None:
        self.d = d
        self.baselines = [
            SeasonalBaseline(
                daily=d.daily,
                weekly=False,
                level_alpha=d.reference_alpha,
                season_alpha=d.reference_alpha,
                error_alpha=0.002,
            )
            for _ in range(n)
        ]
        self.abs_residuals = [RollingQuantile(d.scale_window) for _ in range(n)]
        self.upper = [0.0] * n
        self.lower = [0.0] * n
        self.calibrators = [
            TailCalibrator(d.history, d.min_history, d.tail_index, d.history_scaling)
            for _ in range(n)
        ]
        self.expected = np.full(n, math.nan)
        self.signal = 0
        self.warmup = min(d.scale_window, _WARMUP_RESIDUALS)
        self.time_scaling = d.time_scaling

    def step(self, t: float, x: np.ndarray) -> float:
        d = self.d
        best, best_j = 0.0, 0
        for j, value in enumerate(x):
            if math.isnan(value):
                continue
            base = self.baselines[j]
            expected = base.expect(t)
            self.expected[j] = expected
            score = 0.0
            if not math.isnan(expected):
                residual = value - expected
                scale = self.abs_residuals[j]
                mad = scale.quantile(0.5) if len(scale) else 0.0
                sigma = _MAD_TO_SIGMA * mad + 1e-9 + 1e-6 * abs(expected)
                z = max(-d.clip, min(d.clip, residual / sigma))
                self.upper[j] = max(0.0, self.upper[j] + z - d.drift)
                self.lower[j] = max(0.0, self.lower[j] - z - d.drift)
                stat = max(self.upper[j], self.lower[j])
                cal = self.calibrators[j]
                if len(scale) >= self.warmup:  # the robust scale is settled
                    score = cal.score(stat)
                    score = per_day_score(score, base.step_seconds, self.time_scaling)
                    cal.learn(stat)
                if stat > d.reset_level:
                    self.upper[j] = self.lower[j] = 0.0
                scale.add(abs(residual))
            base.update(t, float(value))
            if score > best:
                best, best_j = score, j
        self.signal = best_j
        return best


class CusumDetector(BaseDetector):
    """Two-sided CUSUM of clipped robust z-scores of the residual from a slowly adapting
    (daily-seasonal) reference; the CUSUM statistic is calibrated to [0, 1] by its tail
    probability under its own history. Sums restart after exceeding ``reset_level`` (a
    change point was found and the reference will adapt to the new level)."""

    def __init__(
        self,
        *,
        drift: float = 0.5,
        clip: float = 4.0,
        reset_level: float = 30.0,
        reference_alpha: float = 0.01,
        daily: bool = True,
        scale_window: int = 2000,
        history: int = 20000,
        min_history: int = 100,
        tail_index: float = 4.0,
        time_scaling: float = 0.0,
        history_scaling: float = 0.0,
        threshold: float = 0.999,
        hold_seconds: float = 0.0,
        alarm_level: float = 0.999,
    ) -> None:
        self.drift = drift
        self.clip = clip
        self.reset_level = reset_level
        self.reference_alpha = reference_alpha
        self.daily = daily
        self.scale_window = scale_window
        self.history = history
        self.min_history = min_history
        self.tail_index = tail_index
        self.time_scaling = time_scaling
        self.history_scaling = history_scaling
        self.threshold = threshold
        self.hold_seconds = hold_seconds
        self.alarm_level = alarm_level

    def _new_state(self, n_features: int) -> _CusumState:
        if self.drift < 0 or self.clip <= 0 or self.reset_level <= 0:
            raise ValueError("drift must be >= 0, clip and reset_level > 0")
        return _CusumState(n_features, self)
