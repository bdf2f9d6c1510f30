"""Per-call recording: requests, errors by class and a latency histogram per key and window.

One :class:`Recorder` holds the current window's statistics for every
``(service, node, caller)`` key. ``record`` is the hot path: a log, a lock and a few
dict and attribute updates, about as cheap as prometheus_client's ``Histogram.observe``
(see docs/benchmarks.md). ``swap`` closes the window, aligned to the interval, and
returns it as a :class:`WindowSnapshot` for :mod:`agent.naming` to turn into points.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeVar

from agent.buckets import bucket_index
from agent.sketch import LogHistogram

__all__ = ["ERROR_CLASSES", "SeriesKey", "WindowStats", "WindowSnapshot", "Recorder",
           "Measurement", "classify_exception"]

ERROR_CLASSES: Final[tuple[str, ...]] = ("timeout", "connection", "5xx", "business")
_ERROR_SET: Final = frozenset(ERROR_CLASSES)
_perf_counter = time.perf_counter

F = TypeVar("F", bound=Callable[..., Any])


class SeriesKey(NamedTuple):
    """Who a statistic is about: the service, the node serving it, or the caller."""

    service: str
    node: str | None = None
    caller: str | None = None


class _Cell:
    """Mutable statistics of one key in the open window (only touched under the lock)."""

    __slots__ = ("requests", "errors", "buckets", "sum_ms", "max_ms")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = dict.fromkeys(ERROR_CLASSES, 0)
        self.buckets: dict[int, int] = {}
        self.sum_ms = 0.0
        self.max_ms = 0.0

    def histogram(self) -> LogHistogram:
        hist = LogHistogram()
        hist.buckets = self.buckets
        hist.count = self.requests
        hist.sum_ms = self.sum_ms
        hist.max_ms = self.max_ms
        hist.min_ms = 0.0  # not tracked on the hot path; quantiles come from the buckets
        return hist


@dataclass(frozen=True)
class WindowStats:
    """One key's statistics over one closed window."""

    requests: int
    errors: dict[str, int]
    histogram: LogHistogram

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True)
class WindowSnapshot:
    """A closed window: its aligned start (epoch seconds), length, and each key's stats.

    ``idle`` lists keys that had calls in one of the last ``idle_windows`` windows but
    none in this one; they are reported with zero counts so rates fall to 0.
    """

    start: int
    interval_seconds: int
    stats: dict[SeriesKey, WindowStats]
    idle: tuple[SeriesKey, ...] = ()


def classify_exception(exc: BaseException) -> str:
    """The error class of an exception escaping a measured call."""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(exc, (ConnectionError, OSError)):
        return "connection"
    return "business"


class Measurement:
    """One measured call: ``with recorder.measure("svc") as m:``; ``m.fail()`` to classify.

    An exception escaping the block counts as an error (:func:`classify_exception`)
    unless ``fail`` already set the class.
    """

    __slots__ = ("error", "latency_ms", "_recorder", "_key", "_started")

    def __init__(self, recorder: Recorder, service: str, node: str | None,
                 caller: str | None) -> None:
        self.error: str | None = None
        self.latency_ms: float | None = None
        self._recorder = recorder
        self._key = (service, node, caller)
        self._started = 0.0

    def fail(self, error_class: str = "business") -> None:
        """Count this call as an error of ``error_class``."""
        if error_class not in _ERROR_SET:
            raise ValueError(f"unknown error class {error_class!r}; use one of {ERROR_CLASSES}")
        self.error = error_class

    def __enter__(self) -> Measurement:
        self._started = _perf_counter()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        latency_ms = (_perf_counter() - self._started) * 1000.0
        self.latency_ms = latency_ms
        if exc is not None and self.error is None and isinstance(exc, Exception):
            self.error = classify_exception(exc)
        service, node, caller = self._key
        self._recorder.record(service, latency_ms, self.error, node, caller)


def _check_part(what: str, value: str | None, required: bool) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")


class Recorder:
    """Statistics of every call in the current window, keyed by service, node and caller.

    ``interval_seconds`` is the window length (a whole number of seconds); windows start
    at multiples of it since the epoch. ``clock`` gives epoch seconds (injectable for
    tests). ``default_node`` is used when ``record`` gets no node and no caller.
    ``max_keys`` bounds memory: calls for new keys past it are counted in
    ``rejected_keys`` and not recorded. Thread-safe.
    """

    def __init__(self, interval_seconds: int = 10, *, default_node: str | None = None,
                 clock: Callable[[], float] = time.time, idle_windows: int = 6,
                 max_keys: int = 10_000) -> None:
        if not isinstance(interval_seconds, int) or interval_seconds < 1:
            raise ValueError(f"interval_seconds must be an integer >= 1, got {interval_seconds!r}")
        _check_part("default_node", default_node, required=False)
        self.interval_seconds = interval_seconds
        self.default_node = default_node
        self.idle_windows = idle_windows
        self.max_keys = max_keys
        self.rejected_keys = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._cells: dict[tuple[str, str | None, str | None], _Cell] = {}
        self._window_start = self.align(clock())
        self._last_active: dict[SeriesKey, int] = {}

    def align(self, epoch_seconds: float) -> int:
        """Start of the window holding ``epoch_seconds``."""
        return int(epoch_seconds // self.interval_seconds) * self.interval_seconds

    @property
    def window_start(self) -> int:
        """Aligned start of the open window."""
        return self._window_start

    def record(self, service: str, latency_ms: float, error: str | None = None,
               node: str | None = None, caller: str | None = None) -> None:
        """Count one call of ``service`` that took ``latency_ms`` ms.

        ``error`` is None for a success or one of :data:`ERROR_CLASSES`. ``node`` is the
        node that served the call (default ``default_node``); ``caller`` is set by a
        client-side agent to report per caller instead.
        """
        index = bucket_index(latency_ms)  # compiled: a native call, math.log in C
        if error is not None and error not in _ERROR_SET:
            raise ValueError(f"unknown error class {error!r}; use one of {ERROR_CLASSES}")
        if node is None and caller is None:
            node = self.default_node
        lock = self._lock
        lock.acquire()
        try:
            cell = self._cells.get((service, node, caller))
            if cell is None:
                cell = self._new_cell((service, node, caller))
                if cell is None:
                    return
            cell.requests += 1
            if error is not None:
                cell.errors[error] += 1
            buckets = cell.buckets
            buckets[index] = buckets.get(index, 0) + 1
            cell.sum_ms += latency_ms
            if latency_ms > cell.max_ms:
                cell.max_ms = latency_ms
        finally:
            lock.release()

    def _new_cell(self, key: tuple[str, str | None, str | None]) -> _Cell | None:
        service, node, caller = key
        _check_part("service", service, required=True)
        _check_part("node", node, required=False)
        _check_part("caller", caller, required=False)
        if node is None and caller is None:
            raise ValueError("record needs a node or a caller (or a Recorder default_node)")
        if len(self._cells) >= self.max_keys:
            self.rejected_keys += 1
            return None
        cell = _Cell()
        self._cells[key] = cell
        return cell

    def swap(self, now: float | None = None) -> WindowSnapshot:
        """Close the open window and start the one holding ``now`` (default: the clock)."""
        now = self._clock() if now is None else now
        with self._lock:
            cells, self._cells = self._cells, {}
            start = self._window_start
            self._window_start = max(self.align(now), start + self.interval_seconds)
        stats = {SeriesKey(*key): WindowStats(cell.requests, cell.errors, cell.histogram())
                 for key, cell in cells.items()}
        for key in stats:
            self._last_active[key] = start
        horizon = start - self.idle_windows * self.interval_seconds
        idle = []
        for key, last in list(self._last_active.items()):
            if last < horizon:
                del self._last_active[key]
            elif key not in stats:
                idle.append(key)
        return WindowSnapshot(start, self.interval_seconds, stats, tuple(idle))

    def measure(self, service: str, node: str | None = None,
                caller: str | None = None) -> Measurement:
        """Time a ``with`` block as one call; an escaping exception counts as an error."""
        return Measurement(self, service, node, caller)

    def timed(self, service: str, node: str | None = None,
              caller: str | None = None) -> Callable[[F], F]:
        """Decorator measuring each call of a function or coroutine function."""

        def decorate(func: F) -> F:
            if inspect.iscoroutinefunction(func):
                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    with self.measure(service, node, caller):
                        return await func(*args, **kwargs)
                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with self.measure(service, node, caller):
                    return func(*args, **kwargs)
            return wrapper  # type: ignore[return-value]

        return decorate
