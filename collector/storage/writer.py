"""The background thread that drains the cache into whisper files."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from collector.selfmetrics import CollectorMetrics
from collector.storage.cache import MetricCache
from collector.storage.schemas import StorageRules
from collector.storage.whisper_files import WhisperTree
from tidemark.logs import RateLimitedLog

__all__ = ["WhisperWriter"]

log = logging.getLogger(__name__)

class WhisperWriter:
    """Writes every cached metric with ``update_many``, largest backlog first, in passes.

    ``after_pass`` runs on the thread after every pass (the store deletes flushed log
    segments there); ``on_failure(epoch)`` is told the log epoch of points that could not
    be written, which must then stay in the log.
    """

    def __init__(self, cache: MetricCache, tree: WhisperTree, rules: StorageRules,
                 metrics: CollectorMetrics, *, clock: Callable[[], float],
                 max_updates_per_second: float, after_pass: Callable[[], None],
                 on_failure: Callable[[int], None],
                 on_first_write: Callable[[str], None] | None = None,
                 min_age_seconds: float = 0.0, pressure_points: int = 0,
                 idle_seconds: float = 0.05,
                 failure_backoff_seconds: float = 1.0) -> None:
        self._cache = cache
        self._tree = tree
        self._rules = rules
        self._metrics = metrics
        self._clock = clock
        self._min_interval = 1.0 / max_updates_per_second if max_updates_per_second > 0 else 0.0
        self._after_pass = after_pass
        self._on_failure = on_failure
        self._on_first_write = on_first_write  # told once per metric whose file it wrote
        # A metric is written once its oldest cached point has waited min_age_seconds (so
        # one update_many carries many points), at once when the cache holds more than
        # pressure_points, and everything when draining for stop.
        self._min_age_seconds = min_age_seconds
        self._pressure_points = pressure_points
        self._idle_seconds = idle_seconds
        self._failure_backoff_seconds = failure_backoff_seconds
        self._wake = threading.Event()
        self._draining = threading.Event()  # stop requested: write all, no rate limit, exit
        self._abort = threading.Event()  # give up now; what is left stays in the log
        self._interrupt = threading.Event()  # ends a rate-limit sleep (drain or abort only)
        self._paused = threading.Event()  # hold writes (backups, tests); a drain overrides
        self._errors = RateLimitedLog(log, per_seconds=10.0)
        # Metrics whose file this writer has written: find() need not match them in the
        # cache, since the walk of the tree finds their files (read from other threads).
        self.on_disk: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="whisper-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def pause(self) -> None:
        """Hold whisper writes after the current file until :meth:`resume`."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()
        self._wake.set()

    def _held(self) -> bool:
        return self._paused.is_set() and not self._draining.is_set()

    def request_drain(self) -> None:
        """Write everything cached, then exit."""
        self._draining.set()
        self._interrupt.set()
        self._wake.set()

    def abort(self) -> None:
        """Exit after the current file."""
        self._abort.set()
        self._interrupt.set()
        self._wake.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True if it has exited."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._abort.is_set():
            if self._held():
                self._wake.wait(self._idle_seconds)
                self._wake.clear()
                continue
            try:
                wrote = self._one_pass()
                self._after_pass()
            except Exception:  # keep writing; the log still holds every point
                log.exception("whisper writer pass failed")
                time.sleep(0.1)
                continue
            attempted, succeeded = wrote
            if not attempted:
                if self._draining.is_set():
                    return
                self._wake.wait(self._idle_seconds)
                self._wake.clear()
            elif not succeeded:  # every write failed (disk full?): do not spin
                self._wake.wait(self._failure_backoff_seconds)
                self._wake.clear()

    def _one_pass(self) -> tuple[bool, bool]:
        batching = (self._min_age_seconds > 0 and not self._draining.is_set()
                    and self._cache.size < self._pressure_points)
        names = self._cache.drain_order(
            self._clock() - self._min_age_seconds if batching else None)
        next_at = time.monotonic()
        succeeded = False
        for name in names:
            if self._abort.is_set() or self._held():
                break
            if self._min_interval and not self._draining.is_set():
                delay = next_at - time.monotonic()
                if delay > 0:
                    self._interrupt.wait(delay)  # not _wake: every group commit sets that
                next_at = max(next_at, time.monotonic()) + self._min_interval
            succeeded = self.write_metric(name) or succeeded
        return bool(names), succeeded

    def write_metric(self, name: str) -> bool:
        """Write one metric's cached points to its file, creating it first if needed.

        An OSError (disk full, I/O error, permissions) puts the points back in the cache to
        retry in a later pass (while draining for stop: they stay in the log instead); any
        other failure (a corrupt file, a path leading outside the tree) leaves them in the
        log for the next start. Returns True when the points were written.
        """
        taken = self._cache.take(name)
        if taken is None:
            return False
        points, epoch = taken
        try:
            file_path = self._tree.file_path(name)
            if not os.path.isfile(file_path):
                self._tree.create(name, self._rules.schema_for(name),
                                  self._rules.aggregation_for(name))
                self._metrics.files_created.inc()
            written = self._tree.write(file_path, points, now=int(self._clock()))
            self._metrics.points_written.inc(written)
            if name not in self.on_disk:
                self.on_disk.add(name)
                if self._on_first_write is not None:
                    self._on_first_write(name)
            self._metrics.whisper_updates.inc()
            return True
        except OSError as exc:
            self._metrics.write_errors.inc()
            if self._draining.is_set():
                self._on_failure(epoch)
            else:
                self._cache.requeue(name)
            self._errors.warning(f"write:{type(exc).__name__}", "whisper write failed; "
                                 "retrying", metric=name, error=str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - any failure keeps the points in the log
            self._metrics.write_errors.inc()
            self._on_failure(epoch)
            self._errors.warning(f"write:{type(exc).__name__}", "whisper write failed; "
                                 "points kept in the write-ahead log", metric=name,
                                 error=str(exc))
            return False
        finally:
            self._cache.done(name)
