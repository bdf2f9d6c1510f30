"""Multivariate IsolationForest over the signals (e.g. qps, error rate, latency) and their
first differences, refitted periodically on a sliding window of past points only."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from sklearn.ensemble import IsolationForest

from models.anomaly.base import BaseDetector
from models.anomaly.online import TailCalibrator

__all__ = ["IsolationForestDetector"]


class _ForestState:
    def __init__(self, n: int, d: IsolationForestDetector) -> None:
        self.d = d
        self.n = n
        self.rows: deque[np.ndarray] = deque(maxlen=d.window_points)
        self.model: IsolationForest | None = None
        self.previous = np.full(n, math.nan)
        self.since_fit = 0
        self.fits = 0
        self.calibrator = TailCalibrator(d.history, d.min_history, d.tail_index)
        self.median = np.full(n, math.nan)
        self.expected = np.full(n, math.nan)
        self.signal = 0

    def _features(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([x, x - self.previous])

    def _refit_due(self) -> bool:
        return len(self.rows) >= self.d.min_points and (
            self.model is None or self.since_fit >= self.d.refit_points
        )

    def _refit(self) -> None:
        data = np.asarray(self.rows)
        self.model = IsolationForest(
            n_estimators=self.d.n_estimators,
            max_samples=min(256, len(data)),
            random_state=None if self.d.random_state is None else self.d.random_state + self.fits,
        ).fit(data)
        self.median = np.median(data[:, : self.n], axis=0)
        self.fits += 1
        self.since_fit = 0

    def _finish(self, t: float, x: np.ndarray, feats: np.ndarray, raw: float) -> float:
        """Calibrate, learn the row, refit when due."""
        score = 0.0
        if not math.isnan(raw):
            score = self.calibrator.score(raw)
            self.calibrator.learn(raw)
        self.expected = self.median.copy()
        if self.model is not None and not np.isnan(x).any():
            self.signal = int(np.argmax(np.abs(x - self.median) / (np.abs(self.median) + 1e-9)))
        if not np.isnan(feats).any():
            self.rows.append(feats)
            self.since_fit += 1
        if not np.isnan(x).any():
            self.previous = x.astype(float).copy()
        if self._refit_due():
            self._refit()
        return score

    def step(self, t: float, x: np.ndarray) -> float:
        feats = self._features(x)
        raw = math.nan
        if self.model is not None and not np.isnan(feats).any():
            raw = float(-self.model.score_samples(feats[None, :])[0])
        return self._finish(t, x, feats, raw)

    def step_many(self, seconds: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Same results as calling :meth:`step` on each row; scores runs between refits at once."""
        out = np.empty(len(seconds))
        i = 0
        while i < len(seconds):
            if self.model is None or np.isnan(values[i]).any():
                out[i] = self.step(float(seconds[i]), values[i])
                i += 1
                continue
            # rows until the next refit can be scored by the current model together
            room = max(1, self.d.refit_points - self.since_fit)
            end = min(len(seconds), i + room)
            nan_rows = np.flatnonzero(np.isnan(values[i:end]).any(axis=1))
            if len(nan_rows):
                end = i + int(nan_rows[0])
            chunk = values[i:end]
            prev = np.vstack([self.previous[None, :], chunk[:-1]])
            feats = np.hstack([chunk, chunk - prev])
            ok = ~np.isnan(feats).any(axis=1)
            raw = np.full(len(chunk), math.nan)
            if ok.any():
                raw[ok] = -self.model.score_samples(feats[ok])
            for k in range(len(chunk)):
                model_before = self.model
                fk = self._features(chunk[k])
                out[i + k] = self._finish(
                    float(seconds[i + k]),
                    chunk[k],
                    fk,
                    raw[k] if not np.isnan(fk).any() else math.nan,
                )
                if self.model is not model_before:
                    end = i + k + 1
                    break
            i = end
        return out


class IsolationForestDetector(BaseDetector):
    """IsolationForest on [signals, first differences], refitted every ``refit_points``
    points on the last ``window_points`` points; the forest's score is calibrated to [0, 1]
    by its tail probability under its own history."""

    def __init__(
        self,
        *,
        window_points: int = 2000,
        refit_points: int = 1000,
        min_points: int = 200,
        n_estimators: int = 50,
        random_state: int | None = 0,
        history: int = 20000,
        min_history: int = 100,
        tail_index: float = 4.0,
        threshold: float = 0.999,
        hold_seconds: float = 0.0,
        alarm_level: float = 0.999,
    ) -> None:
        self.window_points = window_points
        self.refit_points = refit_points
        self.min_points = min_points
        self.n_estimators = n_estimators
        self.random_state = random_state
        self.history = history
        self.min_history = min_history
        self.tail_index = tail_index
        self.threshold = threshold
        self.hold_seconds = hold_seconds
        self.alarm_level = alarm_level

    def _new_state(self, n_features: int) -> _ForestState:
        if self.min_points < 2 or self.refit_points < 1 or self.window_points < self.min_points:
            raise ValueError("need min_points >= 2, refit_points >= 1, window_points >= min_points")
        return _ForestState(n_features, self)
