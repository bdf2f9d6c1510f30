"""Alert policy on top of anomaly scores: minimum duration, hysteresis, deduplication,
explanations, and per-series sensitivity tuned from operator feedback.

A series is *firing* once its score has stayed at or above its trigger threshold for
``min_duration_points`` consecutive points; it stays firing until the score falls below
``resolve_threshold`` (hysteresis: a separate, lower level). An alert that fires again within
``dedup_seconds`` of the previous alert of the same series resolving re-opens that alert
instead of notifying again.

Feedback works in tail-probability space (``1 - threshold``) per series and per hour of the
week: a false positive at some time multiplies that hour's tail probability by
``feedback_factor`` (< 1, so the threshold rises), and half as much at the same hour on the
other days and the neighbouring hours; a missed incident divides it (the threshold falls).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

__all__ = ["AlertPolicyConfig", "Explanation", "Alert", "AlertPolicy"]

_HOURS_PER_WEEK = 168


@dataclass(frozen=True)
class AlertPolicyConfig:
    """Parameters of :class:`AlertPolicy` (thresholds are anomaly scores in [0, 1])."""

    trigger_threshold: float = 0.9975
    resolve_threshold: float = 0.99
    min_duration_points: int = 1
    dedup_seconds: float = 3600.0
    feedback_factor: float = 0.5
    max_threshold: float = 0.999999
    min_threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.trigger_threshold < 1.0:
            raise ValueError(f"trigger_threshold must lie in (0, 1), got {self.trigger_threshold}")
        if not 0.0 <= self.resolve_threshold <= self.trigger_threshold:
            raise ValueError("resolve_threshold must lie in [0, trigger_threshold]")
        if self.min_duration_points < 1:
            raise ValueError("min_duration_points must be >= 1")
        if self.dedup_seconds < 0:
            raise ValueError("dedup_seconds must be >= 0")
        if not 0.0 < self.feedback_factor < 1.0:
            raise ValueError("feedback_factor must lie in (0, 1)")
        if not 0.0 < self.min_threshold <= self.max_threshold < 1.0:
            raise ValueError("need 0 < min_threshold <= max_threshold < 1")


@dataclass(frozen=True)
class Explanation:
    """Why a point is anomalous: which signal, expected vs observed, and how unusual."""

    signal: str
    expected: float
    observed: float
    score: float

    @property
    def one_in(self) -> float:
        """How rare: the score's tail probability as '1 in N' points."""
        tail = 1.0 - self.score
        return math.inf if tail <= 0 else 1.0 / tail

    def text(self) -> str:
        """One human-readable line."""
        rarity = (
            "never seen before" if math.isinf(self.one_in) else f"about 1 in {self.one_in:,.0f}"
        )
        return (
            f"{self.signal}: observed {self.observed:.6g}, expected {self.expected:.6g} "
            f"(score {self.score:.4f}, {rarity})"
        )


@dataclass(frozen=True)
class Alert:
    """One (deduplicated) alert of one series."""

    series: str
    start: pd.Timestamp
    end: pd.Timestamp | None
    peak: Explanation
    reopened: int = 0


@dataclass
class _SeriesState:
    above: int = 0
    firing: bool = False
    alert: Alert | None = None
    last_resolved: float = -math.inf
    tails: np.ndarray = field(default_factory=lambda: np.ones(_HOURS_PER_WEEK))


def _hour_of_week(ts: pd.Timestamp) -> int:
    return int(ts.day_of_week) * 24 + int(ts.hour)


class AlertPolicy:
    """Stateful alert policy over many series (feed points in time order per series)."""

    def __init__(self, config: AlertPolicyConfig | None = None) -> None:
        self.config = config or AlertPolicyConfig()
        self._series: dict[str, _SeriesState] = {}
        self.alerts: list[Alert] = []

    def _state(self, series: str) -> _SeriesState:
        state = self._series.get(series)
        if state is None:
            state = self._series[series] = _SeriesState()
        return state

    def threshold(self, series: str, timestamp: pd.Timestamp) -> float:
        """The trigger threshold of ``series`` at ``timestamp`` after feedback."""
        c = self.config
        state = self._state(series)
        tail = (1.0 - c.trigger_threshold) * state.tails[_hour_of_week(pd.Timestamp(timestamp))]
        return min(c.max_threshold, max(c.min_threshold, 1.0 - tail))

    def _adjust(self, series: str, timestamp: pd.Timestamp, factor: float) -> None:
        tails = self._state(series).tails
        how = _hour_of_week(pd.Timestamp(timestamp))
        half = math.sqrt(factor)
        related = {(how + 24 * d) % _HOURS_PER_WEEK for d in range(1, 7)}
        related |= {(how - 1) % _HOURS_PER_WEEK, (how + 1) % _HOURS_PER_WEEK}
        tails[how] *= factor
        for h in related:
            tails[h] *= half

    def mark_false_positive(self, series: str, timestamp: pd.Timestamp) -> None:
        """Feedback: an alert at ``timestamp`` was wrong; be less sensitive around then."""
        self._adjust(series, timestamp, self.config.feedback_factor)

    def mark_missed(self, series: str, timestamp: pd.Timestamp) -> None:
        """Feedback: an incident at ``timestamp`` went unnoticed; be more sensitive then."""
        self._adjust(series, timestamp, 1.0 / self.config.feedback_factor)

    def is_firing(self, series: str) -> bool:
        """Whether ``series`` currently has an open alert."""
        return self._state(series).firing

    def observe(
        self, series: str, timestamp: pd.Timestamp, score: float, explanation: Explanation
    ) -> bool:
        """Feed one scored point; returns whether the series is firing at this point."""
        c = self.config
        state = self._state(series)
        ts = pd.Timestamp(timestamp)
        seconds = ts.value / 1e9
        if math.isnan(score):
            score = 0.0
        if state.firing:
            assert state.alert is not None
            if score < c.resolve_threshold:
                state.firing = False
                state.above = 0
                state.last_resolved = seconds
                self._replace(state, replace(state.alert, end=ts))
            elif score > state.alert.peak.score:
                self._replace(state, replace(state.alert, peak=explanation))
            return state.firing
        if score >= self.threshold(series, ts):
            state.above += 1
        else:
            state.above = 0
        if state.above >= c.min_duration_points:
            state.firing = True
            previous = state.alert
            if previous is not None and seconds - state.last_resolved <= c.dedup_seconds:
                peak = explanation if explanation.score > previous.peak.score else previous.peak
                self._replace(
                    state, replace(previous, end=None, peak=peak, reopened=previous.reopened + 1)
                )
            else:
                state.alert = Alert(series, ts, None, explanation)
                self.alerts.append(state.alert)
        return state.firing

    def _replace(self, state: _SeriesState, alert: Alert) -> None:
        old = state.alert
        state.alert = alert
        for i in range(len(self.alerts) - 1, -1, -1):
            if self.alerts[i] is old:
                self.alerts[i] = alert
                break

    def evaluate(
        self,
        series: str,
        timestamps: Sequence[pd.Timestamp] | pd.DatetimeIndex,
        scores: Sequence[float] | np.ndarray,
        signals: Sequence[str],
        expected: Sequence[float] | np.ndarray,
        observed: Sequence[float] | np.ndarray,
    ) -> np.ndarray:
        """Feed a whole scored series; returns the boolean firing state per point."""
        n = len(timestamps)
        if not (len(scores) == len(signals) == len(expected) == len(observed) == n):
            raise ValueError(
                "timestamps, scores, signals, expected and observed must have equal lengths"
            )
        out = np.zeros(n, dtype=bool)
        for i in range(n):
            score = float(scores[i])
            explanation = Explanation(
                str(signals[i]), float(expected[i]), float(observed[i]), score
            )
            out[i] = self.observe(series, timestamps[i], score, explanation)
        return out
