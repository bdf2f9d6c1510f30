"""The metric naming contract (docs/metrics.md): window statistics -> Graphite points.

Server side: ``{prefix}.{service}.{idc}.{node}.{stat}``.
Client side (per caller): ``{prefix}.client.{caller}.{service}.{idc}.{stat}``.
Every character outside ``[A-Za-z0-9_-]`` in a name part becomes ``_``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent.recorder import ERROR_CLASSES, SeriesKey, WindowSnapshot, WindowStats

__all__ = ["sanitize", "MetricNaming", "Point", "QUANTILES", "STATS"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

# stat name -> quantile, in the order they are emitted.
QUANTILES: tuple[tuple[str, float], ...] = (
    ("latency.p50", 0.50), ("latency.p90", 0.90), ("latency.p99", 0.99),
    ("latency.p999", 0.999),
)
STATS: tuple[str, ...] = (
    "requests", "errors", *[f"errors.{c}" for c in ERROR_CLASSES], "qps", "success_rate",
    "latency.avg", *[name for name, _ in QUANTILES], "latency.max", "latency.hist.{bucket}",
)

Point = tuple[str, float, int]


def sanitize(part: str) -> str:
    """One name part with every character outside ``[A-Za-z0-9_-]`` replaced by ``_``."""
    if not part:
        raise ValueError("a metric name part must not be empty")
    return _UNSAFE.sub("_", part)


@dataclass(frozen=True)
class MetricNaming:
    """How keys become metric paths: the prefix (dots allowed between parts) and the IDC."""

    prefix: str = "tidemark"
    idc: str = "default"
    _cache: dict[SeriesKey, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.prefix or any(not p for p in self.prefix.split(".")):
            raise ValueError(f"prefix must be dot-separated non-empty parts, got {self.prefix!r}")
        sanitize(self.idc)

    @property
    def safe_prefix(self) -> str:
        return ".".join(sanitize(p) for p in self.prefix.split("."))

    def base(self, key: SeriesKey) -> str:
        """The path every stat of ``key`` hangs under (without the trailing dot)."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        idc = sanitize(self.idc)
        if key.caller is not None:
            path = (f"{self.safe_prefix}.client.{sanitize(key.caller)}."
                    f"{sanitize(key.service)}.{idc}")
        elif key.node is not None:
            path = f"{self.safe_prefix}.{sanitize(key.service)}.{idc}.{sanitize(key.node)}"
        else:
            raise ValueError(f"series key {key!r} has neither a node nor a caller")
        if len(self._cache) < 100_000:
            self._cache[key] = path
        return path

    def points(self, snapshot: WindowSnapshot) -> list[Point]:
        """Every point of one closed window, each stamped with the window's start."""
        ts = snapshot.start
        out: list[Point] = []
        for key, stats in snapshot.stats.items():
            out.extend(self._stat_points(self.base(key), stats, snapshot.interval_seconds, ts))
        for key in snapshot.idle:
            base = self.base(key)
            out.append((f"{base}.requests", 0, ts))
            out.append((f"{base}.errors", 0, ts))
            out.extend((f"{base}.errors.{c}", 0, ts) for c in ERROR_CLASSES)
            out.append((f"{base}.qps", 0.0, ts))
        return out

    @staticmethod
    def _stat_points(base: str, stats: WindowStats, interval: int, ts: int) -> list[Point]:
        requests = stats.requests
        errors = stats.error_count
        out: list[Point] = [
            (f"{base}.requests", requests, ts),
            (f"{base}.errors", errors, ts),
            *[(f"{base}.errors.{c}", stats.errors[c], ts) for c in ERROR_CLASSES],
            (f"{base}.qps", round(requests / interval, 6), ts),
        ]
        if requests:
            hist = stats.histogram
            out.append((f"{base}.success_rate", round((requests - errors) / requests, 6), ts))
            out.append((f"{base}.latency.avg", round(hist.sum_ms / hist.count, 6), ts))
            for name, q in QUANTILES:
                value = hist.quantile(q)
                if value is not None:
                    out.append((f"{base}.{name}", round(value, 6), ts))
            out.append((f"{base}.latency.max", round(hist.max_ms, 6), ts))
            out.extend((f"{base}.latency.hist.{index}", count, ts)
                       for index, count in sorted(hist.buckets.items()))
        return out
