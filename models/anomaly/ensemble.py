"""Ensemble: member detectors' calibrated scores combined per point, then NAB-style
suppression of repeated firings."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from models.anomaly.base import BaseDetector, DetectorState
from models.anomaly.changepoint import CusumDetector
from models.anomaly.residual import SeasonalResidualDetector

__all__ = ["EnsembleDetector", "default_members"]

_COMBINERS = ("max", "mean", "weighted", "geometric")


def default_members() -> list[tuple[str, BaseDetector]]:
    """The members used when none are given (the best combination on the NAB dev split)."""
    return [
        (
            "residual",
            SeasonalResidualDetector(
                error_alpha=0.002,
                level_alpha=0.5,
                tail_index=4.0,
                history=20000,
                scale_window=5000,
                time_scaling=0.25,
                history_scaling=0.5,
            ),
        ),
        ("cusum", CusumDetector(drift=1.5, time_scaling=0.25, history_scaling=0.5)),
    ]


class _EnsembleState:
    def __init__(
        self, states: list[DetectorState], combine: str, weights: np.ndarray, n: int
    ) -> None:
        self.states = states
        self.combine = combine
        self.weights = weights
        self.expected = np.full(n, math.nan)
        self.signal = 0
        self.member = 0

    def step(self, t: float, x: np.ndarray) -> float:
        scores = np.array([s.step(t, x) for s in self.states])
        k = int(np.argmax(scores))
        self.member = k
        self.signal = int(self.states[k].signal)
        self.expected = np.asarray(self.states[k].expected, dtype=float)
        if self.combine == "max":
            return float(scores[k])
        if self.combine == "geometric":
            tails = np.maximum(1.0 - scores, 1e-300)
            return float(1.0 - np.exp(np.dot(self.weights, np.log(tails)) / self.weights.sum()))
        return float(np.dot(self.weights, scores) / self.weights.sum())


class EnsembleDetector(BaseDetector):
    """Combines member detectors' scores (all in [0, 1]): ``combine="max"`` (default),
    ``"mean"`` or ``"weighted"`` (with ``weights``). With ``hold_seconds > 0`` a score of at
    least ``alarm_level`` mutes the next scores for ``hold_seconds`` (one alarm per incident)."""

    def __init__(
        self,
        *,
        detectors: Sequence[tuple[str, BaseDetector]] | None = None,
        combine: str = "max",
        weights: Sequence[float] | None = None,
        threshold: float = 0.9975,
        hold_seconds: float = 60000.0,
        alarm_level: float = 0.9975,
        suppress: str = "alarm",
    ) -> None:
        self.detectors = detectors
        self.combine = combine
        self.weights = weights
        self.threshold = threshold
        self.hold_seconds = hold_seconds
        self.alarm_level = alarm_level
        self.suppress = suppress

    def members(self) -> list[tuple[str, BaseDetector]]:
        """The (name, detector) members in use."""
        return list(self.detectors) if self.detectors is not None else default_members()

    def _new_state(self, n_features: int) -> _EnsembleState:
        if self.combine not in _COMBINERS:
            raise ValueError(
                f"combine must be one of {', '.join(_COMBINERS)}, got {self.combine!r}"
            )
        members = self.members()
        if not members:
            raise ValueError("an ensemble needs at least one detector")
        for name, det in members:
            if not isinstance(det, BaseDetector):
                raise TypeError(f"member {name!r} is not a detector")
        if self.combine == "weighted":
            if self.weights is None or len(self.weights) != len(members):
                raise ValueError("combine='weighted' needs one weight per detector")
            weights = np.asarray(self.weights, dtype=float)
            if (weights < 0).any() or weights.sum() <= 0:
                raise ValueError("weights must be non-negative and not all zero")
        else:
            weights = np.ones(len(members))
        states = [det._make_state(n_features) for _, det in members]
        return _EnsembleState(states, self.combine, weights, n_features)
