"""MetricStore: the collector's durable storage (write-ahead log, cache, whisper writer).

Lifecycle: ``await start()`` replays the log and starts the fsync task and the writer
thread; :meth:`append` (event-loop thread) puts points in the cache at once and in the log
within one fsync interval; ``await stop()`` syncs the log, drains the cache to whisper
within ``drain_timeout_seconds`` and deletes the log segments that are fully written.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import whisper

from collector.config import CollectorConfig
from collector.selfmetrics import CollectorMetrics
from collector.series import FetchedSeries, MetricNode, Point
from collector.storage import fastwhisper
from collector.storage.cache import MetricCache
from collector.storage.globs import compile_segment, has_wildcard, split_pattern
from collector.storage.nametree import NameTree
from collector.storage.schemas import StorageRules, load_rules
from collector.storage.wal import WriteAheadLog, encode_record
from collector.storage.whisper_files import (
    WSP,
    WhisperTree,
    empty_fetch,
    merge_with_cache,
)
from collector.storage.writer import WhisperWriter
from tidemark.logs import RateLimitedLog

__all__ = ["MetricStore", "StoreClosed", "WAL_DIRNAME"]

log = logging.getLogger(__name__)

WAL_DIRNAME = ".wal"  # hidden: graphite-web and find skip dot entries; no metric maps here
_RETENTION_MEMO_MAX = 200_000
_NO_FILE: Any = object()  # fetch: the metric has no whisper file (yet)


class StoreClosed(RuntimeError):
    """append() on a store that is not running."""


class MetricStore:
    """Implements :class:`collector.series.SeriesSource` over whisper files plus the cache."""

    def __init__(self, config: CollectorConfig, metrics: CollectorMetrics, *,
                 clock: Callable[[], float] = time.time,
                 drain_timeout_seconds: float = 60.0,
                 rules: StorageRules | None = None) -> None:
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._drain_timeout_seconds = drain_timeout_seconds
        self._data_dir = Path(os.path.abspath(config.data_dir))
        self.rules = rules if rules is not None else load_rules(config.schemas_dir)
        self.tree = WhisperTree(self._data_dir)
        # Names in the cache whose file this process has not written yet: find() walks
        # them beside the directory tree.
        self._unwritten_names = NameTree()
        self._cache = MetricCache(on_new_name=self._note_cached_name)
        self._wal = WriteAheadLog(self._data_dir / WAL_DIRNAME, config.wal_segment_bytes)
        self._pending: list[Point] = []
        self._epoch = 0  # the log segment the next flush writes to
        self._pinned_epoch: int | None = None  # lowest epoch holding points whisper refused
        self._retention_memo: dict[str, int] = {}
        self._state = "new"
        self._stop_event = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._flush_task: asyncio.Task[None] | None = None
        self._writer: WhisperWriter | None = None
        self._writer_paused = False
        self._running_once = False  # start() completed: only then may stop delete segments
        self._stopping: asyncio.Future[None] | None = None
        # Log writes get their own thread: a busy default executor must not delay fsyncs.
        self._wal_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._wal_errors = RateLimitedLog(log, per_seconds=10.0)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Create directories, replay the log, start the fsync task and the writer thread."""
        if self._state != "new":
            raise RuntimeError(f"MetricStore.start() called on a {self._state} store")
        self._state = "starting"
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._epoch = await asyncio.to_thread(self._replay)
        self._wal_executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="wal-fsync")
        self._writer = WhisperWriter(
            self._cache, self.tree, self.rules, self._metrics, clock=self._clock,
            max_updates_per_second=self._config.writer_max_updates_per_second,
            after_pass=self._after_pass, on_failure=self._pin,
            on_first_write=self._unwritten_names.discard,
            min_age_seconds=self._config.writer_min_age_seconds,
            pressure_points=self._config.cache_low_watermark_points // 2)
        if self._writer_paused:
            self._writer.pause()
        self._writer.start()
        self._flush_task = asyncio.create_task(self._flush_loop(), name="wal-fsync")
        self._flush_task.add_done_callback(self._flush_task_done)
        self._state = "running"
        self._running_once = True

    def _replay(self) -> int:
        next_epoch = self._wal.open()
        replayed = 0
        now = self._clock()
        with self._cache.lock:
            for seg_id, points in self._wal.replay():
                self._cache.add_locked(points, len(points), seg_id, now)
                replayed += len(points)
        for seg_id in self._wal.unreadable:
            self._pin(seg_id)
        if replayed:
            self._metrics.wal_replayed_points.inc(replayed)
            log.info("replayed the write-ahead log", extra={
                "points": replayed, "segments": len(self._wal.segment_ids)})
        self._update_gauges()
        return next_epoch

    def _flush_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("write-ahead log fsync task crashed; refusing new points",
                      exc_info=task.exception())
            self._state = "failed"

    async def stop(self) -> None:
        """Final fsync, drain the cache (bounded), delete written segments; idempotent."""
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return
        if self._stopping is not None:
            await asyncio.shield(self._stopping)
            return
        self._stopping = asyncio.get_running_loop().create_future()
        try:
            await self._stop()
        finally:
            self._stopping.set_result(None)

    async def _stop(self) -> None:
        self._state = "stopping"
        self._stop_event.set()
        if self._flush_task is not None:
            try:
                await self._flush_task
            except Exception:  # already logged by the done callback
                pass
        try:
            await self._flush()  # whatever arrived since the last group commit
        except OSError as exc:
            log.error("final write-ahead log flush failed; draining the cache to whisper",
                      extra={"error": str(exc)})
        writer = self._writer
        if writer is not None:
            writer.request_drain()
            if not await asyncio.to_thread(writer.join, self._drain_timeout_seconds):
                log.warning("cache not fully drained before the timeout; the rest stays in "
                            "the write-ahead log", extra={"points": self._cache.size})
                writer.abort()
                await asyncio.to_thread(writer.join)
        await asyncio.to_thread(self._final_cleanup)
        if self._wal_executor is not None:
            self._wal_executor.shutdown(wait=True)
        self._update_gauges()
        self._state = "stopped"

    def _final_cleanup(self) -> None:
        self._wal.close()
        if self._running_once:  # a failed start replayed nothing: delete nothing
            self._delete_flushed(final=True)

    def __del__(self) -> None:
        if getattr(self, "_state", "new") in ("running", "starting", "failed"):
            warnings.warn(f"MetricStore on {self._data_dir} was never stopped",
                          ResourceWarning, stacklevel=1)

    # -- ingest ------------------------------------------------------------------------
    def append(self, points: list[Point]) -> None:
        """Accept validated points: readable at once, in the log within one fsync interval."""
        if self._state != "running":
            raise StoreClosed(f"MetricStore is {self._state}; points not accepted")
        if not points:
            return
        now = self._clock()
        cache = self._cache
        with cache.lock:
            self._pending.extend(points)
            cache.add_locked(points, len(points), self._epoch, now)

    def pause_writer(self) -> None:
        """Hold whisper writes (points keep arriving in the log and cache); stop overrides.

        May be called before :meth:`start` (replayed points then stay in the cache).
        """
        self._writer_paused = True
        if self._writer is not None:
            self._writer.pause()

    def resume_writer(self) -> None:
        """Undo :meth:`pause_writer`."""
        self._writer_paused = False
        if self._writer is not None:
            self._writer.resume()

    @property
    def cache_points(self) -> int:
        """Points accepted but not yet written to whisper (listeners' backpressure signal)."""
        return self._cache.size

    async def flush(self) -> None:
        """Group-commit what is pending now (the fsync task does this every interval)."""
        await self._flush()

    async def _flush_loop(self) -> None:
        interval = self._config.wal_fsync_interval_seconds
        loop = asyncio.get_running_loop()
        deadline = loop.time() + interval
        while not self._stop_event.is_set():
            try:
                await asyncio.wait_for(self._stop_event.wait(), max(0.0, deadline - loop.time()))
                return
            except TimeoutError:
                pass
            deadline = loop.time() + interval
            try:
                await self._flush()
            except OSError as exc:  # e.g. disk full: points stay pending, retried next tick
                self._wal_errors.warning("wal", "write-ahead log write failed; retrying",
                                         error=str(exc))
            self._update_gauges(lag=False)  # the O(metrics) lag scan runs on the writer

    async def _flush(self) -> None:
        async with self._flush_lock:  # one group commit at a time, in order
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        with self._cache.lock:
            batch, self._pending = self._pending, []
            epoch = self._epoch
        if not batch:
            return
        loop = asyncio.get_running_loop()
        try:
            size = await loop.run_in_executor(self._wal_executor, self._write_batch, epoch, batch)
        except OSError:
            # Keep the points for the next try, in a new segment: a partly written record
            # must stay the tail of its segment, or replay would stop before later records.
            with self._cache.lock:
                self._pending[:0] = batch
                self._epoch = max(self._epoch, epoch + 1)
            raise
        if size >= self._wal.segment_bytes:
            with self._cache.lock:
                self._epoch = epoch + 1
        if self._writer is not None:
            self._writer.wake()

    def _write_batch(self, epoch: int, batch: list[Point]) -> int:
        size, fsync_seconds = self._wal.write(epoch, encode_record(batch))
        self._metrics.wal_fsync_seconds.observe(fsync_seconds)
        return size

    # -- writer hooks (writer thread) --------------------------------------------------
    def _pin(self, epoch: int) -> None:
        with self._cache.lock:
            if self._pinned_epoch is None or epoch < self._pinned_epoch:
                self._pinned_epoch = epoch

    def _after_pass(self) -> None:
        self._delete_flushed(final=False)
        self._update_gauges()

    def _delete_flushed(self, *, final: bool) -> None:
        if not final:
            ids = self._wal.segment_ids
            if not ids or ids[0] >= self._epoch:
                return  # no closed segment: skip the scan of the cache
        # One critical section: a flush rotating the epoch between reading the cache and
        # reading the epoch would otherwise let a segment holding cached points go.
        with self._cache.lock:
            oldest_epoch, _ = self._cache.oldest_locked()
            bounds = [b for b in (oldest_epoch, self._pinned_epoch) if b is not None]
            if not final:
                bounds.append(self._epoch)
            pending = bool(self._pending)
        if final and pending:
            return  # unreachable in practice: stop flushed everything
        bound = min(bounds) if bounds else 1 << 62
        self._wal.delete_below(bound, self._data_dir)

    def _update_gauges(self, *, lag: bool = True) -> None:
        m = self._metrics
        m.cache_points.set(self._cache.size)
        m.cache_metrics.set(self._cache.metric_count)
        m.wal_bytes.set(self._wal.total_bytes)
        if not lag:
            return
        _, arrival = self._cache.oldest()
        m.flush_lag_seconds.set(max(0.0, self._clock() - arrival) if arrival is not None else 0.0)

    # -- reads (worker threads) --------------------------------------------------------
    def max_retention_seconds(self, path: str) -> int:
        """Longest retention of the schema matching ``path`` (what its file would keep)."""
        value = self._retention_memo.get(path)
        if value is None:
            value = self.rules.schema_for(path).max_retention_seconds
            if len(self._retention_memo) >= _RETENTION_MEMO_MAX:
                self._retention_memo.clear()
            self._retention_memo[path] = value
        return value

    def fetch(self, path: str, start: int, end: int,
              now: int | None = None) -> FetchedSeries | None:
        """Values of ``path`` in [start, end) from whisper merged with cached points."""
        start, end = int(start), int(end)
        if start > end:
            raise ValueError(f"fetch of {path!r}: start {start} is after end {end}")
        file_path = self.tree.file_path(path)  # ValueError for unsafe paths
        if now is None:
            now = int(self._clock())
        cached = self._cache.snapshot(path)  # before the disk read: no gap with the writer
        try:
            data = fastwhisper.fetch(file_path, start, end, now)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            data = _NO_FILE
        except (OSError, whisper.WhisperException) as exc:
            log.warning("cannot read whisper file", extra={
                "file": file_path, "error": str(exc)})
            return None
        if data is not _NO_FILE:
            if data is None:
                return None
            header, (from_t, until_t, step), values = data
            method = header.aggregation_method
            xff = header.x_files_factor
            raw_step = header.archives[0].seconds_per_point
            raw_retention = header.archives[0].retention
        elif cached:
            schema = self.rules.schema_for(path)
            rule = self.rules.aggregation_for(path)
            empty = empty_fetch(schema, start, end, now)
            if empty is None:
                return None
            (from_t, until_t, step), values = empty
            method = rule.aggregation_method or "average"
            xff = rule.x_files_factor if rule.x_files_factor is not None else 0.5
            raw_step = schema.retentions[0].seconds_per_point
            raw_retention = schema.retentions[0].seconds
        else:
            return None
        if cached:
            values = merge_with_cache(cached, from_t, step, list(values), method, raw_step,
                                      xff, now - raw_retention)
        return FetchedSeries(path, from_t, until_t, step, list(values), method, xff)

    def find(self, pattern: str) -> list[MetricNode]:
        """Branches and leaves matching a Graphite glob, on disk and in the cache; sorted."""
        parts = split_pattern(pattern)  # ValueError for unsafe patterns
        found: set[tuple[str, bool]] = set()
        self._find_on_disk(self.tree.root, parts, 0, "", found)
        found.update(self._unwritten_names.match(parts))
        return [MetricNode(p, leaf) for p, leaf in sorted(found, key=lambda n: (n[0], n[1]))]

    def _note_cached_name(self, path: str) -> None:
        writer = self._writer
        if writer is None or path not in writer.on_disk:
            self._unwritten_names.add(path)

    def _find_on_disk(self, directory: Path | str, parts: list[str], index: int, prefix: str,
                      found: set[tuple[str, bool]]) -> None:
        part = parts[index]
        last = index == len(parts) - 1
        base = str(directory)
        if has_wildcard(part):
            regex = compile_segment(part)
            try:
                entries = list(os.scandir(base))
            except OSError:
                return
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    continue
                if is_dir:
                    if "." in name or regex.fullmatch(name) is None:
                        continue
                    if last:
                        found.add((prefix + name, False))
                    else:
                        self._find_on_disk(entry.path, parts, index + 1, prefix + name + ".",
                                           found)
                elif last and name.endswith(WSP):
                    stem = name[: -len(WSP)]
                    if stem and "." not in stem and regex.fullmatch(stem) is not None:
                        found.add((prefix + stem, True))
            return
        target = self.tree.dir_path([*prefix.split(".")[:-1], part] if prefix else [part])
        if os.path.isdir(target):
            if last:
                found.add((prefix + part, False))
            else:
                self._find_on_disk(target, parts, index + 1, prefix + part + ".", found)
        if last and os.path.isfile(target + WSP):
            found.add((prefix + part, True))
