"""Statsd-style lines as motan-go agents send them over UDP, aggregated per flush interval.

``name:value|type[|@rate]`` with type ``c`` (counter), ``ms`` (timer), ``g`` (gauge,
``+N``/``-N`` adjust it) or ``kv`` (motan-go's key-value: a value reported as is).
At each flush one point per name is produced, stamped with the interval's start:

| type | stored as |
| ---- | --------- |
| ``c``  | ``name`` = sum of values / sample rate over the interval |
| ``ms`` | ``name.count``, ``.mean``, ``.min``, ``.max``, ``.p50``, ``.p90``, ``.p99`` |
| ``g``  | ``name`` = last value (kept across intervals, like statsd) |
| ``kv`` | ``name`` = last value in the interval |
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["StatsdAggregator", "StatsdError", "looks_like_statsd"]

_MAX_TIMER_SAMPLES = 10_000  # per name per interval; beyond it values are counted, not kept


class StatsdError(ValueError):
    """A statsd line that cannot be parsed; the message says why."""


def looks_like_statsd(line: bytes) -> bool:
    """True for ``name:value|type`` lines (Graphite plaintext has spaces and no ``|``)."""
    return b"|" in line and b":" in line and b" " not in line.strip()


@dataclass(slots=True)
class _Timer:
    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    samples: list[float] = field(default_factory=list)


class StatsdAggregator:
    """Accumulates parsed statsd lines; :meth:`flush` returns the interval's points."""

    def __init__(self) -> None:
        self._counters: dict[str, float] = {}
        self._timers: dict[str, _Timer] = {}
        self._gauges: dict[str, float] = {}
        self._kvs: dict[str, float] = {}

    def add_line(self, line: str) -> str:
        """Parse and accumulate one line; return the metric name. Raises ``StatsdError``."""
        name, sep, rest = line.strip().partition(":")
        if not sep or not name:
            raise StatsdError("expected name:value|type")
        fields = rest.split("|")
        if len(fields) < 2:
            raise StatsdError("expected name:value|type")
        raw_value, kind = fields[0], fields[1]
        rate = 1.0
        if len(fields) > 2:
            if not fields[2].startswith("@"):
                raise StatsdError(f"bad sample rate {fields[2]!r}")
            try:
                rate = float(fields[2][1:])
            except ValueError:
                raise StatsdError(f"bad sample rate {fields[2]!r}") from None
            if not 0 < rate <= 1:
                raise StatsdError(f"sample rate {rate} outside (0, 1]")
        try:
            value = float(raw_value)
        except ValueError:
            raise StatsdError(f"bad value {raw_value!r}") from None
        if not math.isfinite(value):
            raise StatsdError(f"non-finite value {raw_value!r}")
        if kind == "c":
            self._counters[name] = self._counters.get(name, 0.0) + value / rate
        elif kind == "ms":
            timer = self._timers.get(name)
            if timer is None:
                timer = self._timers[name] = _Timer()
            timer.count += 1
            timer.total += value
            timer.low = min(timer.low, value)
            timer.high = max(timer.high, value)
            if len(timer.samples) < _MAX_TIMER_SAMPLES:
                timer.samples.append(value)
        elif kind == "g":
            if raw_value[:1] in "+-" and name in self._gauges:
                self._gauges[name] += value
            else:
                self._gauges[name] = value
        elif kind == "kv":
            self._kvs[name] = value
        else:
            raise StatsdError(f"unknown metric type {kind!r}")
        return name

    def flush(self) -> list[tuple[str, float]]:
        """The interval's ``(path, value)`` points; counters, timers and kvs start again."""
        points: list[tuple[str, float]] = list(self._counters.items())
        for name, timer in self._timers.items():
            ordered = sorted(timer.samples)
            points += [
                (f"{name}.count", float(timer.count)),
                (f"{name}.mean", timer.total / timer.count),
                (f"{name}.min", timer.low),
                (f"{name}.max", timer.high),
            ]
            for label, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99)):
                points.append((f"{name}.{label}", _nearest_rank(ordered, q)))
        points += list(self._gauges.items())
        points += list(self._kvs.items())
        self._counters.clear()
        self._timers.clear()
        self._kvs.clear()
        return points

    @property
    def pending_names(self) -> int:
        """Names holding data for the current interval (bounded by the cardinality guard)."""
        return len(self._counters) + len(self._timers) + len(self._gauges) + len(self._kvs)


def _nearest_rank(ordered: list[float], q: float) -> float:
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]
