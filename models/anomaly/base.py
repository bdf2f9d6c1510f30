"""The detector contract shared by every anomaly detector.

Like scikit-learn's ``EllipticEnvelope``: ``__init__`` only stores parameters; ``fit``
validates, learns and returns ``self``; learned state ends with ``_``; ``score_samples``
returns the raw score (the opposite of the anomaly score: lower is more abnormal),
``decision_function = score_samples - offset_`` (negative for outliers) and ``predict``
returns -1 for outliers and +1 for inliers.

Time series specifics: every detector is *causal*. ``fit(X)`` runs an online state machine
over ``X`` (each point scored from the points before it), ``score_samples(X)`` continues
from the fitted state over new data without changing it, and ``update(timestamp, value)``
scores one new point in constant time and learns it (streaming use). So
``fit(A).anomaly_score(B)`` (= ``-score_samples``) equals calling ``update`` on each row of
``B`` in turn. ``fit_predict(X)`` labels ``X`` from its own causal scores. Detectors with a
``hold_seconds`` parameter > 0 mute repeated firings after an alarm (see
:class:`~models.anomaly.online.Refractory`).
``anomaly_score`` gives scores in [0, 1] (higher is more abnormal) and
``fit_anomaly_score(X)`` the causal scores of ``X`` from scratch, as in live use.

``X`` is a ``pandas.Series`` or ``DataFrame`` with a ``DatetimeIndex`` (one column per signal),
or a NumPy array (rows one second apart; an array given after ``fit`` continues the fitted
rows).
"""

from __future__ import annotations

import copy
import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_is_fitted

from models.anomaly.online import Refractory

__all__ = ["DetectorState", "BaseDetector", "ScoredPoint", "as_series_frame"]


class _Suppressed:
    """A state whose scores pass through a :class:`Refractory`."""

    def __init__(self, inner: DetectorState, refractory: Refractory) -> None:
        self.inner = inner
        self.refractory = refractory

    @property
    def expected(self) -> np.ndarray:
        return self.inner.expected

    @property
    def signal(self) -> int:
        return self.inner.signal

    def step(self, t: float, x: np.ndarray) -> float:
        return self.refractory.apply(t, self.inner.step(t, x))

    def step_many(self, seconds: np.ndarray, values: np.ndarray) -> np.ndarray:
        many = getattr(self.inner, "step_many", None)
        if many is None:
            return np.array([self.step(float(t), v) for t, v in zip(seconds, values, strict=True)])
        scores = many(seconds, values)
        return np.array(
            [self.refractory.apply(float(t), s) for t, s in zip(seconds, scores, strict=True)]
        )


class DetectorState(Protocol):
    """The online state of a fitted detector."""

    @property
    def expected(self) -> np.ndarray:
        """Expected value per signal at the last step (NaN if unknown)."""

    @property
    def signal(self) -> int:
        """Index of the signal that drove the last score."""

    def step(self, t: float, x: np.ndarray) -> float:
        """Score the point ``x`` (one value per signal) at time ``t`` seconds, then learn it."""


@dataclass(frozen=True)
class ScoredPoint:
    """One streaming score with its explanation."""

    score: float
    signal: int
    expected: float
    observed: float


def as_series_frame(X: Any) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """Validate ``X``; returns (seconds since epoch, values [n, k], index)."""
    if isinstance(X, pd.Series):
        X = X.to_frame()
    if isinstance(X, pd.DataFrame):
        if not isinstance(X.index, pd.DatetimeIndex):
            raise TypeError("X must have a DatetimeIndex (timestamps of the points)")
        if X.shape[1] == 0:
            raise ValueError("X has no value column")
        try:
            values = X.to_numpy(dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"X values must be numeric: {exc}") from None
        index: pd.Index = X.index
        seconds = X.index.as_unit("ns").asi8.astype(np.float64) / 1e9
    elif isinstance(X, np.ndarray | list | tuple):
        values = np.asarray(X, dtype=float)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2 or values.shape[1] == 0:
            raise ValueError(
                f"X must be 1-D or 2-D with at least one column, got shape {values.shape}"
            )
        seconds = np.arange(values.shape[0], dtype=np.float64)
        index = pd.RangeIndex(values.shape[0])
    else:
        raise TypeError(
            f"X must be a pandas Series/DataFrame or a NumPy array, not {type(X).__name__}"
        )
    if len(seconds) > 1 and not np.all(np.diff(seconds) >= 0):
        raise ValueError("X timestamps must not go backwards (sort the rows by time)")
    if np.isinf(values).any():
        raise ValueError("X contains infinite values")
    return seconds, values, index


class BaseDetector(OutlierMixin, BaseEstimator):  # type: ignore[misc]
    """Base class: subclasses implement :meth:`_new_state` only.

    ``threshold`` (a parameter of every subclass) is the anomaly score in [0, 1] from which
    ``predict`` says -1; ``offset_ = -threshold``.
    """

    threshold: float

    @abstractmethod
    def _new_state(self, n_features: int) -> DetectorState:
        """A fresh online state for ``n_features`` signals."""

    def _make_state(self, n_features: int) -> DetectorState:
        state = self._new_state(n_features)
        hold = float(getattr(self, "hold_seconds", 0.0) or 0.0)
        if hold > 0:
            alarm = float(getattr(self, "alarm_level", 0.99))
            mode = str(getattr(self, "suppress", "alarm"))
            return _Suppressed(state, Refractory(alarm, hold, mode=mode))
        return state

    @staticmethod
    def _run(
        state: DetectorState, seconds: np.ndarray, values: np.ndarray, details: bool = False
    ) -> np.ndarray:
        """Scores (or rows of score, signal, expected when ``details``) of each point."""
        many = getattr(state, "step_many", None)
        if many is not None and not details:
            return np.asarray(many(seconds, values), dtype=float)
        out = np.empty((len(seconds), 3)) if details else np.empty(len(seconds))
        for i in range(len(seconds)):
            score = state.step(float(seconds[i]), values[i])
            if details:
                j = int(state.signal)
                out[i] = (score, j, state.expected[j])
            else:
                out[i] = score
        return out

    def fit(self, X: Any, y: Any = None) -> BaseDetector:
        """Run the detector causally over ``X``; the state at the end is the fitted state."""
        self.fit_anomaly_score(X)
        return self

    def _fit(self, X: Any, details: bool) -> tuple[np.ndarray, pd.Index]:
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {self.threshold!r}")
        seconds, values, index = as_series_frame(X)
        if len(seconds) == 0:
            raise ValueError("X is empty")
        state = self._make_state(values.shape[1])
        out = self._run(state, seconds, values, details=details)
        self.state_ = state
        self.n_features_in_ = values.shape[1]
        self.last_timestamp_ = float(seconds[-1])
        self.offset_ = -float(self.threshold)
        return out, index

    def fit_predict(self, X: Any, y: Any = None, **kwargs: Any) -> np.ndarray:
        """Fit on ``X`` and label it from its causal scores: -1 outliers, +1 inliers."""
        return np.where(self.fit_anomaly_score(X) >= float(self.threshold), -1, 1)

    def fit_anomaly_score(self, X: Any) -> np.ndarray:
        """Fit on ``X`` and return its causal anomaly scores in [0, 1] (live-use scores)."""
        return self._fit(X, details=False)[0]

    def fit_explained(self, X: Any) -> pd.DataFrame:
        """Like :meth:`fit_anomaly_score`, with per point the index of the signal that drove
        the score (``signal``) and that signal's expected value (``expected``)."""
        rows, index = self._fit(X, details=True)
        return pd.DataFrame(
            {"anomaly_score": rows[:, 0], "signal": rows[:, 1].astype(int), "expected": rows[:, 2]},
            index=index,
        )

    def _check_x(self, X: Any) -> tuple[np.ndarray, np.ndarray, pd.Index]:
        check_is_fitted(self, "state_")
        seconds, values, index = as_series_frame(X)
        if values.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {values.shape[1]} signals, the detector was fitted on {self.n_features_in_}"
            )
        if not isinstance(X, pd.Series | pd.DataFrame):
            seconds = seconds + self.last_timestamp_ + 1.0  # arrays continue the fitted rows
        return seconds, values, index

    def anomaly_score(self, X: Any) -> np.ndarray:
        """Causal anomaly scores in [0, 1] of ``X`` continuing from the fitted state."""
        seconds, values, _ = self._check_x(X)
        if len(seconds) and seconds[0] < self.last_timestamp_:
            raise ValueError("X must start after the data the detector was fitted on")
        return self._run(copy.deepcopy(self.state_), seconds, values)

    def score_samples(self, X: Any) -> np.ndarray:
        """Raw score: the opposite of the anomaly score (lower is more abnormal)."""
        return -self.anomaly_score(X)

    def decision_function(self, X: Any) -> np.ndarray:
        """``score_samples(X) - offset_``: negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """-1 for outliers, +1 for inliers."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    def update(self, timestamp: pd.Timestamp | str | float, value: float | np.ndarray) -> float:
        """Score one new point and learn it (constant time); returns the anomaly score."""
        return self.update_explained(timestamp, value).score

    def update_explained(
        self, timestamp: pd.Timestamp | str | float, value: float | np.ndarray
    ) -> ScoredPoint:
        """Like :meth:`update`, with which signal drove the score and its expected value."""
        check_is_fitted(self, "state_")
        if isinstance(timestamp, int | float | np.integer | np.floating):
            t = float(timestamp)
        else:
            t = pd.Timestamp(timestamp).value / 1e9
        x = np.atleast_1d(np.asarray(value, dtype=float))
        if x.shape != (self.n_features_in_,):
            raise ValueError(
                f"value must hold {self.n_features_in_} signal(s), got shape {x.shape}"
            )
        if not t >= self.last_timestamp_:
            raise ValueError("timestamps must not go backwards")
        score = self.state_.step(t, x)
        self.last_timestamp_ = t
        j = int(self.state_.signal)
        expected = float(self.state_.expected[j]) if len(self.state_.expected) > j else math.nan
        return ScoredPoint(float(score), j, expected, float(x[j]))
