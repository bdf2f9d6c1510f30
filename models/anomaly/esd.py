"""Seasonal-hybrid ESD (Hochenbaum et al., 2017, Twitter's AnomalyDetection), streaming form.

Over a sliding window of the last ``window_points`` values the series is decomposed into a
daily seasonal component (per-slot medians) plus the median; residuals are scaled by their
MAD. A new point's statistic ``R = |x - seasonal - median| / MAD`` is the generalised ESD
(Grubbs) test statistic; with ``lambda`` the first ESD critical value for the window at level
``alpha``, the score is ``1 - alpha ** (R / lambda)``: so ``score >= 1 - alpha`` exactly
when the ESD test rejects, and the score keeps growing with R far beyond that (a p-value
would underflow to exactly 1.0 and leave a single corpus-wide threshold nothing to rank).
:func:`esd_p_value` gives the test's Bonferroni-corrected p-value itself. The decomposition
is refitted every ``refit_points`` points; between refits each point costs O(1).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from scipy.special import stdtr, stdtrit

from models.anomaly.base import BaseDetector
from models.anomaly.online import DAY_SECONDS

__all__ = ["SeasonalHybridESD", "esd_critical_value", "esd_p_value"]

_MAD_TO_SIGMA = 1.4826


def esd_critical_value(n: int, alpha: float) -> float:
    """The first generalised-ESD critical value for ``n`` points at level ``alpha``."""
    if n < 3:
        return math.inf
    t = float(stdtrit(n - 2, 1.0 - alpha / (2.0 * n)))
    return (n - 1) * t / math.sqrt((n - 2 + t * t) * n)


def esd_p_value(r: float, n: int) -> float:
    """Bonferroni-corrected p-value of the Grubbs statistic ``r`` of one point among ``n``."""
    if n < 3 or math.isnan(r):
        return 1.0
    denom = (n - 1) ** 2 - n * r * r
    if denom <= 0:
        return 0.0
    t = math.sqrt(n * (n - 2) * r * r / denom)
    return min(1.0, 2.0 * n * float(stdtr(n - 2, -t)))


class _Signal:
    """Window and fitted decomposition of one signal."""

    def __init__(self, window: int) -> None:
        self.times: deque[float] = deque(maxlen=window)
        self.values: deque[float] = deque(maxlen=window)
        self.seasonal: np.ndarray | None = None
        self.center = math.nan
        self.scale = math.nan
        self.n = 0
        self.critical = math.inf


class _ESDState:
    def __init__(self, n: int, d: SeasonalHybridESD) -> None:
        self.d = d
        self.signals = [_Signal(d.window_points) for _ in range(n)]
        self.expected = np.full(n, math.nan)
        self.signal = 0
        self.count = 0
        self.first_t = math.nan
        self.step_seconds = math.nan
        self.slots = 0

    def _slot(self, t: float) -> int:
        return int(t // self.step_seconds) % self.slots if self.slots else 0

    def _refit(self, sig: _Signal) -> None:
        values = np.asarray(sig.values)
        times = np.asarray(sig.times)
        seasonal_values = np.zeros(len(values))
        sig.seasonal = None
        if self.slots and times[-1] - times[0] >= 2 * DAY_SECONDS:
            slots = (times // self.step_seconds).astype(np.int64) % self.slots
            table = np.full(self.slots, np.nan)
            centered = values - np.median(values)
            for s in np.unique(slots):
                table[s] = np.median(centered[slots == s])
            table = np.nan_to_num(table)
            half = self.slots // 48  # smooth over +-30 minutes of the day (circularly)
            if half:
                kernel = np.ones(2 * half + 1) / (2 * half + 1)
                table = np.convolve(
                    np.concatenate([table[-half:], table, table[:half]]), kernel, "valid"
                )
            sig.seasonal = table
            seasonal_values = table[slots]
        rest = values - seasonal_values
        sig.center = float(np.median(rest))
        mad = float(np.median(np.abs(rest - sig.center)))
        sig.scale = _MAD_TO_SIGMA * mad if mad > 0 else max(1e-9, float(np.std(rest)))
        sig.n = len(values)
        sig.critical = esd_critical_value(sig.n, self.d.alpha)

    def step(self, t: float, x: np.ndarray) -> float:
        if math.isnan(self.first_t):
            self.first_t = t
        elif math.isnan(self.step_seconds) and t > self.first_t:
            self.step_seconds = t - self.first_t
            slots = int(round(DAY_SECONDS / self.step_seconds))
            if self.d.daily and 4 <= slots <= 1440:
                self.slots = slots
                self.step_seconds = DAY_SECONDS / slots
        best, best_j = 0.0, 0
        for j, value in enumerate(x):
            if math.isnan(value):
                continue
            sig = self.signals[j]
            score = 0.0
            if sig.n:
                seasonal = sig.seasonal[self._slot(t)] if sig.seasonal is not None else 0.0
                expected = seasonal + sig.center
                self.expected[j] = expected
                r = abs(value - expected) / sig.scale
                score = 1.0 - self.d.alpha ** (r / sig.critical)
            sig.times.append(t)
            sig.values.append(float(value))
            due = (
                sig.n == 0 or self.count % self.d.refit_points == 0 or len(sig.values) >= 2 * sig.n
            )
            if len(sig.values) >= self.d.min_points and due:
                self._refit(sig)
            if score > best:
                best, best_j = score, j
        self.count += 1
        self.signal = best_j
        return best


class SeasonalHybridESD(BaseDetector):
    """Streaming seasonal-hybrid ESD at level ``alpha`` (``threshold`` defaults to
    ``1 - alpha``: ``predict`` says -1 exactly where the ESD test rejects)."""

    def __init__(
        self,
        *,
        window_points: int = 4032,
        refit_points: int = 288,
        min_points: int = 100,
        daily: bool = True,
        alpha: float = 0.05,
        threshold: float = 0.95,
        hold_seconds: float = 0.0,
        alarm_level: float = 0.999,
    ) -> None:
        self.window_points = window_points
        self.refit_points = refit_points
        self.min_points = min_points
        self.daily = daily
        self.alpha = alpha
        self.threshold = threshold
        self.hold_seconds = hold_seconds
        self.alarm_level = alarm_level

    def _new_state(self, n_features: int) -> _ESDState:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha!r}")
        if self.window_points < 3 or self.refit_points < 1 or self.min_points < 3:
            raise ValueError("window_points and min_points must be >= 3, refit_points >= 1")
        return _ESDState(n_features, self)
