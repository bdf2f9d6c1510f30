"""Online building blocks shared by the detectors: each costs O(1) (or O(window)) per point.

* :class:`RollingQuantile` - exact quantiles of the last ``size`` values (sorted list).
* :class:`SeasonalBaseline` - expected value from level, daily and weekly profiles, picking
  whichever has predicted best lately.
* :class:`TailCalibrator` - turns a raw surprise statistic into a score in [0, 1]: one minus
  the tail probability of the value under the empirical distribution of the statistic's own
  past, extended by a power-law tail beyond the largest value seen.
* :class:`Refractory` - NAB-style suppression: after an alarm, scores stay low for a while.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

import numpy as np

__all__ = [
    "RollingQuantile",
    "SeasonalBaseline",
    "TailCalibrator",
    "Refractory",
    "DAY_SECONDS",
    "per_day_score",
]

DAY_SECONDS = 86400.0
_WEEK_DAYS = 7


class RollingQuantile:
    """Quantiles of the last ``size`` values, exact, O(size) memmove per update."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._fifo)

    def add(self, value: float) -> None:
        """Append one value (evicting the oldest when full)."""
        if len(self._fifo) == self.size:
            old = self._fifo.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._fifo.append(value)
        bisect.insort(self._sorted, value)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (nearest rank); NaN when empty."""
        if not self._sorted:
            return math.nan
        index = min(len(self._sorted) - 1, max(0, int(q * (len(self._sorted) - 1) + 0.5)))
        return self._sorted[index]

    def count_at_least(self, value: float) -> int:
        """How many stored values are >= ``value``."""
        return len(self._sorted) - bisect.bisect_left(self._sorted, value)

    def maximum(self) -> float:
        """Largest stored value (NaN when empty)."""
        return self._sorted[-1] if self._sorted else math.nan


class SeasonalBaseline:
    """Expected value of the next point from a level and daily/weekly seasonal profiles.

    The sampling step is learned from the first two timestamps. Profiles are exponentially
    weighted per slot of the day (and of the week); the candidate (level, daily, weekly)
    with the smallest recent mean absolute error gives the expectation.
    """

    def __init__(
        self,
        *,
        daily: bool = True,
        weekly: bool = True,
        level_alpha: float = 0.1,
        season_alpha: float = 0.25,
        error_alpha: float = 0.02,
        max_slots_per_day: int = 1440,
    ) -> None:
        self.daily = daily
        self.weekly = weekly
        self.level_alpha = level_alpha
        self.season_alpha = season_alpha
        self.error_alpha = error_alpha
        self.max_slots_per_day = max_slots_per_day
        self.step_seconds = math.nan
        self.slots_per_day = 0
        self._last_t = math.nan
        self._level = math.nan
        self._day: np.ndarray | None = None
        self._week: np.ndarray | None = None
        self._errors = [math.nan, math.nan, math.nan]

    def _slots(self, t: float) -> tuple[int, int]:
        slot = int(t // self.step_seconds)
        return slot % self.slots_per_day, slot % (self.slots_per_day * _WEEK_DAYS)

    def _candidates(self, t: float) -> list[float]:
        out = [self._level, math.nan, math.nan]
        if self._day is not None:
            d, w = self._slots(t)
            out[1] = self._day[d]
            if self._week is not None:
                out[2] = self._week[w]
        return out

    def expect(self, t: float) -> float:
        """Expected value at time ``t`` (NaN before the first point)."""
        cands = self._candidates(t)
        best, best_err = cands[0], self._errors[0]
        for value, err in zip(cands[1:], self._errors[1:], strict=True):
            if (
                not math.isnan(value)
                and not math.isnan(err)
                and (math.isnan(best_err) or err < best_err)
            ):
                best, best_err = value, err
        return best

    def update(self, t: float, x: float) -> None:
        """Learn from the observed value ``x`` at time ``t``."""
        if math.isnan(self.step_seconds) and not math.isnan(self._last_t) and t > self._last_t:
            self.step_seconds = t - self._last_t
            slots = int(round(DAY_SECONDS / self.step_seconds))
            if self.daily and 4 <= slots <= self.max_slots_per_day:
                self.slots_per_day = slots
                self.step_seconds = DAY_SECONDS / slots
                self._day = np.full(slots, math.nan)
                if self.weekly:
                    self._week = np.full(slots * _WEEK_DAYS, math.nan)
        self._last_t = t
        cands = self._candidates(t)
        for i, value in enumerate(cands):
            if math.isnan(value):
                continue
            err = abs(x - value)
            prev = self._errors[i]
            self._errors[i] = err if math.isnan(prev) else prev + self.error_alpha * (err - prev)
        self._level = (
            x if math.isnan(self._level) else self._level + self.level_alpha * (x - self._level)
        )
        if self._day is not None:
            d, w = self._slots(t)
            for profile, slot in ((self._day, d), (self._week, w)):
                if profile is None:
                    continue
                old = profile[slot]
                profile[slot] = x if math.isnan(old) else old + self.season_alpha * (x - old)


class TailCalibrator:
    """Score in [0, 1] = 1 - tail probability of a raw statistic under its own history.

    The tail probability is empirical over the last ``history`` values; above the largest
    value seen it continues as a power law ``(max / r) ** tail_index`` so that a record by a
    wide margin scores higher than a record by a hair. With ``history_scaling = g > 0`` the
    tail is multiplied by ``(n / 1000) ** g`` for a history of ``n`` values: the longer the
    history, the rarer a point must be to stand out (fewer alarms per series over long
    runs). Before ``min_history`` values the score is 0.
    """

    def __init__(
        self,
        history: int = 5000,
        min_history: int = 100,
        tail_index: float = 2.0,
        history_scaling: float = 0.0,
    ) -> None:
        self.min_history = min_history
        self.tail_index = tail_index
        self.history_scaling = history_scaling
        self._window = RollingQuantile(history)

    def score(self, r: float) -> float:
        """Calibrated score of ``r`` (does not learn it)."""
        n = len(self._window)
        if n < self.min_history or math.isnan(r):
            return 0.0
        p = (1 + self._window.count_at_least(r)) / (n + 1)
        top = self._window.maximum()
        if r > top > 0:
            p *= (max(top, 1e-12) / r) ** self.tail_index
        if self.history_scaling:
            p = min(1.0, p * (n / 1000.0) ** self.history_scaling)
        return 1.0 - p

    def learn(self, r: float) -> None:
        """Add ``r`` to the history."""
        if not math.isnan(r):
            self._window.add(r)


def per_day_score(
    score: float,
    step_seconds: float,
    exponent: float = 1.0,
    reference_points_per_day: float = 288.0,
) -> float:
    """Rescale a per-point tail probability ``1 - score`` towards a per-time one.

    A tail probability of 1e-3 per point means one such point every ~3.5 days at 5-minute
    sampling but one every ~6 weeks at hourly sampling; multiplying the tail by
    ``(points_per_day / reference_points_per_day) ** exponent`` makes scores of differently
    sampled series comparable (``exponent`` 1: fully per time, 0: per point; identity at
    5-minute sampling or when the step is unknown).
    """
    if math.isnan(step_seconds) or step_seconds <= 0 or exponent == 0:
        return score
    factor = ((DAY_SECONDS / step_seconds) / reference_points_per_day) ** exponent
    return 1.0 - min(1.0, (1.0 - score) * factor)


class Refractory:
    """Suppression of repeated firings for ``hold_seconds``.

    ``mode="alarm"``: after a score >= ``alarm_level``, scores during the next
    ``hold_seconds`` are scaled by ``damping`` unless their tail probability ``1 - score`` is
    ``escalation`` times smaller than the alarm's (a much bigger incident right after a small
    one is still reported, and restarts the hold). ``mode="peak"``: a score is scaled by
    ``damping`` unless it is higher than every raw score of the previous ``hold_seconds``
    (only the strongest point of an incident keeps its score; needs no alarm level).
    """

    def __init__(
        self,
        alarm_level: float,
        hold_seconds: float,
        damping: float = 0.0,
        mode: str = "alarm",
        escalation: float = 100.0,
    ) -> None:
        if mode not in ("alarm", "peak"):
            raise ValueError(f"mode must be 'alarm' or 'peak', got {mode!r}")
        self.alarm_level = alarm_level
        self.hold_seconds = hold_seconds
        self.damping = damping
        self.mode = mode
        self.escalation = escalation
        self._until = -math.inf
        self._alarm_score = 1.0
        self._peaks: deque[tuple[float, float]] = deque()  # (time, score), scores decreasing

    def apply(self, t: float, score: float) -> float:
        """The score to report for the point at time ``t`` (seconds)."""
        if self.mode == "peak":
            peaks = self._peaks
            while peaks and peaks[0][0] < t - self.hold_seconds:
                peaks.popleft()
            higher = not peaks or score > peaks[0][1]
            while peaks and peaks[-1][1] <= score:
                peaks.pop()
            peaks.append((t, score))
            return score if higher else score * self.damping
        if t < self._until and (1.0 - score) * self.escalation > 1.0 - self._alarm_score:
            return score * self.damping
        if score >= self.alarm_level and self.hold_seconds > 0:
            self._until = t + self.hold_seconds
            self._alarm_score = score
        return score
