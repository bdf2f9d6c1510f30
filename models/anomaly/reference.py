"""NAB's reference detector ``windowedGaussian``, reproduced to validate our NAB scorer.

A Gaussian over a sliding window of the last 6,400 values (refreshed every 100 points once
full); a point's score is ``1 - Q(|x - mean| / std)`` (NAB's two-sided ``normalProbability``,
including its ``erfc(z / 1.4142)``). NAB publishes 39.6 for it on the whole corpus.
"""

from __future__ import annotations

import math

import numpy as np

from models.anomaly.base import BaseDetector

__all__ = ["WindowedGaussianDetector"]


class _WindowedGaussianState:
    def __init__(self, n: int, window: int, step: int) -> None:
        self.window = window
        self.step_points = step
        self.data: list[list[float]] = [[] for _ in range(n)]
        self.buffers: list[list[float]] = [[] for _ in range(n)]
        self.mean = np.zeros(n)
        self.std = np.ones(n)
        self.expected = np.full(n, math.nan)
        self.signal = 0

    def _refresh(self, j: int) -> None:
        self.mean[j] = float(np.mean(self.data[j]))
        std = float(np.std(self.data[j]))
        self.std[j] = std if std != 0.0 else 0.000001

    def step(self, t: float, x: np.ndarray) -> float:
        best, best_j = 0.0, 0
        for j, value in enumerate(x):
            if math.isnan(value):
                continue
            score = 0.0
            data = self.data[j]
            if data:
                self.expected[j] = self.mean[j]
                z = abs(value - self.mean[j]) / self.std[j]
                score = 1.0 - 0.5 * math.erfc(z / 1.4142)
            if len(data) < self.window:
                data.append(float(value))
                self._refresh(j)
            else:
                buffer = self.buffers[j]
                buffer.append(float(value))
                if len(buffer) == self.step_points:
                    self.data[j] = data[self.step_points :] + buffer
                    self.buffers[j] = []
                    self._refresh(j)
            if score > best:
                best, best_j = score, j
        self.signal = best_j
        return best


class WindowedGaussianDetector(BaseDetector):
    """NAB's windowedGaussian (window 6,400 points, step 100)."""

    def __init__(
        self, *, window_points: int = 6400, step_points: int = 100, threshold: float = 0.999
    ) -> None:
        self.window_points = window_points
        self.step_points = step_points
        self.threshold = threshold

    def _new_state(self, n_features: int) -> _WindowedGaussianState:
        if self.window_points < 1 or self.step_points < 1:
            raise ValueError("window_points and step_points must be positive")
        return _WindowedGaussianState(n_features, self.window_points, self.step_points)
