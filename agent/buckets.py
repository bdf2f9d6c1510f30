"""The log-bucket mapping shared by the agent and the collector (pure constants, no I/O).

A latency ``v`` in milliseconds falls in bucket ``i = ceil(log(v) / log(GAMMA))``, which
covers ``(GAMMA**(i-1), GAMMA**i]``. The bucket's representative value is
``2 * GAMMA**i / (GAMMA + 1)``, within ``RELATIVE_ACCURACY`` (1 %) of every value in the
bucket, so any quantile read from bucket counts is within 1 % of the exact value of the
same rank (DDSketch, Masson et al. 2019). Values at or below ``MIN_TRACKED_MS`` share the
lowest bucket ``MIN_INDEX``. Counts of the same index add up across nodes and intervals,
which is what makes the histogram mergeable.

``collector.render.functions.histogram`` imports this module; keep it free of imports
beyond the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = ["RELATIVE_ACCURACY", "GAMMA", "INV_LOG_GAMMA", "MIN_TRACKED_MS", "MIN_INDEX",
           "bucket_index", "bucket_value", "bucket_bounds", "quantile_from_counts"]

# Final: compiled (agent/native.py), bucket_index reads them as C values, not globals.
RELATIVE_ACCURACY: Final = 0.01
GAMMA: Final = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
INV_LOG_GAMMA: Final = 1.0 / math.log(GAMMA)
MIN_TRACKED_MS: Final = 1e-3
MIN_INDEX: Final = math.ceil(math.log(MIN_TRACKED_MS) * INV_LOG_GAMMA)


def bucket_index(value_ms: float) -> int:
    """The bucket a latency in milliseconds falls in; ValueError for negative/NaN/inf."""
    if MIN_TRACKED_MS < value_ms < math.inf:
        return math.ceil(math.log(value_ms) * INV_LOG_GAMMA)
    if 0.0 <= value_ms <= MIN_TRACKED_MS:
        return MIN_INDEX
    raise ValueError(f"latency must be a finite number >= 0 ms, got {value_ms!r}")


def bucket_value(index: int) -> float:
    """The value reported for bucket ``index``: ``2 * GAMMA**index / (GAMMA + 1)`` ms."""
    return 2.0 * GAMMA**index / (GAMMA + 1.0)


def bucket_bounds(index: int) -> tuple[float, float]:
    """``(low, high]`` in ms covered by bucket ``index``."""
    return GAMMA ** (index - 1), GAMMA**index


def quantile_from_counts(counts: Mapping[int, float] | Iterable[tuple[int, float]],
                         q: float) -> float | None:
    """The q-quantile (0 <= q <= 1) of a histogram given as ``{bucket index: count}``.

    Nearest rank: returns the representative value of the bucket holding the k-th
    smallest call, ``k = max(1, ceil(q * n))`` (numpy's ``method="inverted_cdf"``: the
    smallest value with at least a fraction q of calls at or below it), or None when the
    histogram is empty. Non-positive counts are ignored.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q!r}")
    items = sorted((i, c) for i, c in (counts.items() if isinstance(counts, Mapping)
                                       else counts) if c and c > 0)
    total = sum(c for _, c in items)
    if total <= 0:
        return None
    rank = max(1.0, math.ceil(q * total - 1e-9))
    cumulative = 0.0
    for index, count in items:
        cumulative += count
        if cumulative >= rank - 1e-9:
            return bucket_value(index)
    return bucket_value(items[-1][0])
