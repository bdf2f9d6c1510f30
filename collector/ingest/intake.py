"""Validation of incoming points and their hand-off to the store; every rejection counted.

Parsers produce raw fields; :class:`Intake` checks each point (path, value, timestamp,
retention, cardinality), hands the good ones to the store in one batch, and counts and
logs (rate-limited) the bad ones by reason. One bad point never affects its neighbours.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from collector.config import CollectorConfig
from collector.ingest.paths import check_path
from collector.selfmetrics import CollectorMetrics
from collector.series import Point
from tidemark.logs import RateLimitedLog

__all__ = ["Intake", "PointSink"]

log = logging.getLogger("tidemark.collector.ingest")

_KNOWN_PATHS_LIMIT = 2_000_000  # memo of validated paths; cleared when it grows past this


class PointSink(Protocol):
    """What the intake writes to (the store)."""

    def append(self, points: list[Point]) -> None: ...

    def max_retention_seconds(self, path: str) -> int: ...


class Intake:
    """Validates points from every protocol and appends the good ones to the sink."""

    def __init__(self, sink: PointSink, metrics: CollectorMetrics, config: CollectorConfig,
                 *, clock: Callable[[], float] = time.time) -> None:
        self._sink = sink
        self._metrics = metrics
        self._clock = clock
        self._max_future = config.max_future_seconds
        self._new_per_minute = config.max_new_metrics_per_minute
        self._data_dir = Path(config.data_dir)
        # raw path bytes or str -> (path, retention seconds); memo of paths already checked
        self._known: dict[Any, tuple[str, int]] = {}
        self._new_metric_times: deque[float] = deque()
        self._log = RateLimitedLog(log, per_seconds=10.0)
        self._rejected = metrics.points_rejected
        self._received = metrics.points_received
        self._accepted = metrics.points_accepted

    # -- protocols ---------------------------------------------------------------------
    def plaintext_lines(self, lines: list[bytes], protocol: str, peer: str = "") -> None:
        """Validate and store ``path value timestamp`` lines (empty lines are ignored)."""
        now = self._clock()
        newest = now + self._max_future
        known_paths = self._known
        good: list[Point] = []
        append = good.append
        received = 0
        for line in lines:
            parts = line.split()
            if len(parts) == 3:
                received += 1
                raw_path, raw_value, raw_timestamp = parts
                known = known_paths.get(raw_path)
                # Fast path: a known path, a finite value and an integer timestamp in range.
                if known is not None:
                    try:
                        value = float(raw_value)
                        timestamp = int(raw_timestamp)
                    except ValueError:
                        pass
                    else:
                        if value - value == 0.0 and now - known[1] < timestamp <= newest:
                            append((known[0], timestamp, value))
                            continue
                point = self._check(raw_path, raw_value, raw_timestamp, now, line, peer)
                if point is not None:
                    append(point)
            elif parts:
                received += 1
                reason = "missing_timestamp" if len(parts) == 2 else "field_count"
                self._reject(reason, f"expected 'path value timestamp', got {len(parts)} "
                             f"fields", line, peer)
        self._finish(good, received, protocol)

    def datapoints(self, items: Iterable[Any], protocol: str, peer: str = "") -> None:
        """Validate and store ``(path, (timestamp, value))`` items, as pickle frames carry."""
        now = self._clock()
        good: list[Point] = []
        received = 0
        for item in items:
            received += 1
            try:
                path, (timestamp, value) = item
            except (TypeError, ValueError):
                self._reject("field_count", "expected (path, (timestamp, value))", item, peer)
                continue
            point = self._check(path, value, timestamp, now, item, peer)
            if point is not None:
                good.append(point)
        self._finish(good, received, protocol)

    def values(self, items: list[tuple[str, float]], timestamp: int, protocol: str) -> None:
        """Store aggregated ``(path, value)`` points stamped ``timestamp`` (statsd flush)."""
        now = self._clock()
        good = [p for path, value in items
                if (p := self._check(path, value, timestamp, now, path, "")) is not None]
        self._finish(good, len(items), protocol)

    def reject(self, reason: str, message: str, sample: Any = b"", peer: str = "",
               count: int = 1) -> None:
        """Count (and log, rate-limited) input rejected before it became a point."""
        self._received.labels("unparsed").inc(count)
        self._reject(reason, message, sample, peer, count)

    # -- internals ---------------------------------------------------------------------
    def _finish(self, good: list[Point], received: int, protocol: str) -> None:
        if received:
            self._received.labels(protocol).inc(received)
        if good:
            self._sink.append(good)
            self._accepted.labels(protocol).inc(len(good))

    def _check(self, raw_path: Any, raw_value: Any, raw_timestamp: Any, now: float,
               sample: Any, peer: str) -> Point | None:
        known = self._known.get(raw_path)
        if known is None:
            known = self._admit_path(raw_path, sample, peer)
            if known is None:
                return None
        path, retention = known
        try:
            value = float(raw_value)
        except (TypeError, ValueError):
            self._reject("bad_value", "value is not a number", sample, peer)
            return None
        if value - value != 0.0:  # NaN or +-inf
            self._reject("non_finite", "value is NaN or infinite", sample, peer)
            return None
        try:
            stamp = float(raw_timestamp)
            if stamp != stamp or stamp in (math.inf, -math.inf):
                raise ValueError
            timestamp = int(stamp)
        except (TypeError, ValueError, OverflowError):
            self._reject("bad_timestamp", "timestamp is not a number", sample, peer)
            return None
        if timestamp == -1:  # "now", as carbon reads it (carbon issue 54)
            timestamp = int(now)
        if timestamp > now + self._max_future:
            self._reject("future_timestamp", "timestamp is too far in the future", sample, peer)
            return None
        if timestamp <= now - retention:
            self._reject("too_old", "timestamp is older than the retention", sample, peer)
            return None
        return (path, timestamp, value)

    def _admit_path(self, raw_path: Any, sample: Any, peer: str) -> tuple[str, int] | None:
        if isinstance(raw_path, bytes):
            try:
                path = raw_path.decode("utf-8")
            except UnicodeDecodeError:
                self._reject("invalid_utf8", "path is not valid UTF-8", sample, peer)
                return None
        elif isinstance(raw_path, str):
            path = raw_path
        else:
            self._reject("bad_path", "path is not a string", sample, peer)
            return None
        problem = check_path(path)
        if problem is not None:
            self._reject("bad_path", problem, sample, peer)
            return None
        if self._new_per_minute and not self._exists(path) and not self._may_create():
            self._reject("cardinality", "too many new metrics this minute", sample, peer)
            return None
        known = (path, int(self._sink.max_retention_seconds(path)))
        if len(self._known) >= _KNOWN_PATHS_LIMIT:
            self._known.clear()
        self._known[raw_path] = known
        return known

    def _exists(self, path: str) -> bool:
        return (self._data_dir / (path.replace(".", "/") + ".wsp")).exists()

    def _may_create(self) -> bool:
        now = self._clock()
        times = self._new_metric_times
        while times and times[0] <= now - 60.0:
            times.popleft()
        if len(times) >= self._new_per_minute:
            return False
        times.append(now)
        return True

    def _reject(self, reason: str, message: str, sample: Any, peer: str, count: int = 1) -> None:
        self._rejected.labels(reason).inc(count)
        shown = sample[:200] if isinstance(sample, (bytes, str)) else repr(sample)[:200]
        self._log.warning(reason, f"rejected input: {message}", reason=reason, peer=peer,
                          sample=shown)
