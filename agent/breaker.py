"""A per-node circuit breaker: opens on an error ratio over a window, probes half-open."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker", "CLOSED", "OPEN", "HALF_OPEN"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class _Second:
    """Calls and errors counted in one second of the window (a native class, compiled:
    plain fields, no boxed floats in a list)."""

    def __init__(self, second: float) -> None:
        self.second = second
        self.calls = 0
        self.errors = 0


class CircuitBreaker:
    """Closed: calls pass and results are counted per second over ``window_seconds``.

    When at least ``min_requests`` calls in the window failed at a ratio of at least
    ``error_ratio``, it opens: calls are refused for ``open_seconds``. Then one probe call
    is let through (half-open); its success closes the breaker, its failure opens it again.
    """

    def __init__(self, *, window_seconds: float = 10.0, min_requests: int = 20,
                 error_ratio: float = 0.5, open_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < error_ratio <= 1 or min_requests < 1 or window_seconds <= 0:
            raise ValueError("breaker needs 0 < error_ratio <= 1, min_requests >= 1, "
                             "window_seconds > 0")
        self.window_seconds = window_seconds
        self.min_requests = min_requests
        self.error_ratio = error_ratio
        self.open_seconds = open_seconds
        self._clock = clock
        self.state = CLOSED
        self._buckets: collections.deque[_Second] = collections.deque()
        self._newest: _Second | None = None  # the last of the buckets
        self._total = 0  # calls and errors over the buckets, kept as they come and go
        self._errors = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.opened_count = 0

    def allow(self) -> bool:
        """Whether a call may go to the node now (in half-open: only the one probe)."""
        if self.state == CLOSED:
            return True
        now = self._clock()
        if self.state == OPEN:
            if now - self._opened_at < self.open_seconds:
                return False
            self.state = HALF_OPEN
            self._probe_in_flight = False
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def on_result(self, ok: bool) -> None:
        """Count the outcome of a call that ``allow`` let through."""
        now = self._clock()
        if self.state == HALF_OPEN:
            self._probe_in_flight = False
            if ok:
                self.state = CLOSED
                self._clear()
            else:
                self._open(now)
            return
        if self.state == OPEN:
            return
        buckets = self._buckets
        second = float(int(now))
        bucket = self._newest
        if bucket is None or bucket.second != second:
            bucket = self._newest = _Second(second)
            buckets.append(bucket)
        oldest = buckets[0]
        while oldest is not bucket and oldest.second <= now - self.window_seconds:
            buckets.popleft()
            self._total -= oldest.calls
            self._errors -= oldest.errors
            oldest = buckets[0]
        bucket.calls += 1
        self._total += 1
        if not ok:
            bucket.errors += 1
            self._errors += 1
        if self._total >= self.min_requests and self._errors / self._total >= self.error_ratio:
            self._open(now)

    def release(self) -> None:
        """A call ``allow`` let through was abandoned (cancelled) without an outcome."""
        if self.state == HALF_OPEN:
            self._probe_in_flight = False

    def _open(self, now: float) -> None:
        self.state = OPEN
        self._opened_at = now
        self._clear()
        self.opened_count += 1

    def _clear(self) -> None:
        self._buckets.clear()
        self._newest = None
        self._total = self._errors = 0
