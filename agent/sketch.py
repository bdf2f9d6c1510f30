"""A mergeable log-bucket latency histogram with 1 % relative error (DDSketch-style)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from agent.buckets import bucket_index, quantile_from_counts

__all__ = ["LogHistogram"]


class LogHistogram:
    """Counts of latencies (ms) per log bucket, plus exact count, sum, min and max.

    Quantiles are within 1 % of the exact value of the same rank and are clamped to the
    exact ``[min, max]``. ``merge`` adds another histogram's buckets, so histograms of many
    nodes or intervals combine without losing accuracy. Not thread-safe by itself.
    """

    __slots__ = ("buckets", "count", "sum_ms", "min_ms", "max_ms")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.sum_ms = 0.0
        self.min_ms = math.inf
        self.max_ms = -math.inf

    def add(self, value_ms: float, count: int = 1) -> None:
        """Record ``count`` calls of ``value_ms`` milliseconds."""
        index = bucket_index(value_ms)
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + count
        self.count += count
        self.sum_ms += value_ms * count
        if value_ms < self.min_ms:
            self.min_ms = value_ms
        if value_ms > self.max_ms:
            self.max_ms = value_ms

    def merge(self, other: LogHistogram) -> None:
        """Add every call recorded by ``other`` to this histogram."""
        buckets = self.buckets
        for index, count in other.buckets.items():
            buckets[index] = buckets.get(index, 0) + count
        self.count += other.count
        self.sum_ms += other.sum_ms
        self.min_ms = min(self.min_ms, other.min_ms)
        self.max_ms = max(self.max_ms, other.max_ms)

    @classmethod
    def from_counts(cls, counts: Mapping[int, int]) -> LogHistogram:
        """A histogram from sparse bucket counts (as reported in ``latency.hist.{i}``).

        Sum, min and max are unknown in that encoding; they are estimated from the
        buckets' representative values.
        """
        from agent.buckets import bucket_value

        hist = cls()
        for index, count in counts.items():
            if count <= 0:
                continue
            hist.buckets[index] = hist.buckets.get(index, 0) + count
            value = bucket_value(index)
            hist.count += count
            hist.sum_ms += value * count
            hist.min_ms = min(hist.min_ms, value)
            hist.max_ms = max(hist.max_ms, value)
        return hist

    def quantile(self, q: float) -> float | None:
        """The q-quantile in ms (None when empty), within 1 % of the exact one."""
        value = quantile_from_counts(self.buckets, q)
        if value is None:
            return None
        return min(max(value, self.min_ms), self.max_ms)

    @property
    def mean_ms(self) -> float | None:
        """Exact mean in ms, None when empty."""
        return self.sum_ms / self.count if self.count else None

    def __repr__(self) -> str:
        return (f"LogHistogram(count={self.count}, buckets={len(self.buckets)}, "
                f"min_ms={self.min_ms}, max_ms={self.max_ms})")
