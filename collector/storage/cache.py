"""The write cache: points per metric waiting for the whisper writer.

Each metric's list remembers the write-ahead log segment (the *epoch*) current when the
list was started, so the store knows which segments still hold unwritten points. A metric
taken by the writer stays visible ("in flight") until its write finished.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from collector.series import Point

__all__ = ["MetricCache"]


class MetricCache:
    """Per-metric lists of ``(ts, value)`` guarded by one short-held lock."""

    def __init__(self, on_new_name: Callable[[str], None] | None = None) -> None:
        self.lock = threading.Lock()
        self._on_new_name = on_new_name  # told of each metric that starts a new list
        self._points: dict[str, list[tuple[int, float]]] = {}
        self._first: dict[str, tuple[int, float]] = {}  # path -> (epoch, arrival time)
        self._inflight: dict[str, tuple[list[tuple[int, float]], int, float]] = {}
        self.size = 0  # points in _points plus in flight

    def add_locked(self, points: Iterable[Point], count: int, epoch: int, now: float) -> None:
        """Add points; the caller holds :attr:`lock` (so it can log them in the same step)."""
        cache = self._points
        first = self._first
        for path, ts, value in points:
            entry = cache.get(path)
            if entry is None:
                cache[path] = entry = []
                first[path] = (epoch, now)
                if self._on_new_name is not None:
                    self._on_new_name(path)
            entry.append((ts, value))
        self.size += count

    @property
    def metric_count(self) -> int:
        with self.lock:
            return len(self._points) + len(self._inflight)

    def drain_order(self, arrived_before: float | None = None) -> list[str]:
        """Metrics with cached points, largest backlog first (carbon's MAX strategy).

        With ``arrived_before``, only metrics whose oldest cached point arrived before it.
        """
        with self.lock:
            if arrived_before is None:
                sizes = [(len(v), k) for k, v in self._points.items()]
            else:
                first = self._first
                sizes = [(len(v), k) for k, v in self._points.items()
                         if first[k][1] < arrived_before]
        sizes.sort(reverse=True)
        return [k for _, k in sizes]

    def take(self, path: str) -> tuple[list[tuple[int, float]], int] | None:
        """Remove a metric's points for writing; they stay readable until :meth:`done`."""
        with self.lock:
            points = self._points.pop(path, None)
            if points is None:
                return None
            epoch, arrival = self._first.pop(path)
            self._inflight[path] = (points, epoch, arrival)
            return points, epoch

    def requeue(self, path: str) -> None:
        """Put a taken metric's points back (before newer ones) to retry them later."""
        with self.lock:
            entry = self._inflight.get(path)
            if entry is None:
                return
            points, epoch, arrival = entry
            newer = self._points.get(path)
            if newer is None:
                self._points[path] = list(points)
                self._first[path] = (epoch, arrival)
            else:
                self._points[path] = points + newer
                e, a = self._first[path]
                self._first[path] = (min(e, epoch), min(a, arrival))
            self.size += len(points)  # done() subtracts them again

    def done(self, path: str) -> None:
        """The writer finished (or gave up on) a metric taken with :meth:`take`."""
        with self.lock:
            entry = self._inflight.pop(path, None)
            if entry is not None:
                self.size -= len(entry[0])

    def snapshot(self, path: str) -> list[tuple[int, float]]:
        """Every cached point of ``path``, oldest first (in flight, then waiting)."""
        with self.lock:
            inflight = self._inflight.get(path)
            waiting = self._points.get(path)
            out: list[tuple[int, float]] = list(inflight[0]) if inflight else []
            if waiting:
                out.extend(waiting)
            return out

    def oldest(self) -> tuple[int | None, float | None]:
        """(lowest epoch, earliest arrival time) over every cached point, None if empty."""
        with self.lock:
            return self.oldest_locked()

    def oldest_locked(self) -> tuple[int | None, float | None]:
        """:meth:`oldest` for a caller already holding :attr:`lock`."""
        firsts = list(self._first.values())
        firsts.extend((e, a) for _, e, a in self._inflight.values())
        if not firsts:
            return None, None
        return min(e for e, _ in firsts), min(a for _, a in firsts)
