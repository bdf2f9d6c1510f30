"""Whisper files under a data directory: safe path mapping, sparse atomic creation,
batched writes, and reads merged with cached points as graphite-web does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import whisper

from collector.storage import fastwhisper
from collector.storage.schemas import AggregationRule, StorageSchema

__all__ = [
    "WhisperTree", "PathEscapeError", "merge_with_cache", "empty_fetch", "consolidate",
]

WSP = ".wsp"


class PathEscapeError(ValueError):
    """A metric path or pattern that would name a file outside the data directory."""


def check_metric_path(path: str) -> list[str]:
    """Segments of a metric path; ValueError when it is not a safe dotted name."""
    if not isinstance(path, str):
        raise TypeError(f"metric path must be a str, not {type(path).__name__}")
    if not path:
        raise ValueError("metric path is empty")
    parts = path.split(".")
    for part in parts:
        if not part:
            raise ValueError(f"metric path {path!r} has an empty segment")
        if "/" in part or "\\" in part or "\x00" in part or not part.isprintable():
            raise ValueError(f"metric path {path!r} has a forbidden character")
    return parts


class WhisperTree:
    """The mapping ``a.b.c`` -> ``root/a/b/c.wsp`` and every file operation on it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self._root_str = str(self.root)
        self._real_root = os.path.realpath(self._root_str)

    def _inside(self, candidate: str, real_root: str) -> bool:
        return candidate == real_root or candidate.startswith(real_root + os.sep)

    def file_path(self, path: str) -> str:
        """Absolute .wsp path of a metric; PathEscapeError if it is not inside the root."""
        parts = check_metric_path(path)
        candidate = os.path.normpath(os.path.join(self._root_str, *parts) + WSP)
        if not self._inside(candidate, self._root_str):
            raise PathEscapeError(f"metric path {path!r} names a file outside the data directory")
        return candidate

    def dir_path(self, parts: Sequence[str]) -> str:
        """Absolute directory for pattern/metric segments (already literal, checked)."""
        candidate = os.path.normpath(os.path.join(self._root_str, *parts))
        if not self._inside(candidate, self._root_str):
            raise PathEscapeError(
                f"{'.'.join(parts)!r} names a directory outside the data directory")
        return candidate

    def exists(self, path: str) -> bool:
        return os.path.isfile(self.file_path(path))

    def create(self, path: str, schema: StorageSchema, aggregation: AggregationRule) -> str:
        """Create the metric's file sparse, atomically (temp file + rename); returns its path.

        A kill at any moment leaves either no file or a complete header: never a torn one.
        """
        target = self.file_path(path)
        parent = os.path.dirname(target)
        # Defence in depth: a symlinked directory must not carry a new directory or file
        # out of the tree; check the deepest existing ancestor, then the made directory.
        existing = parent
        while not os.path.isdir(existing):
            existing = os.path.dirname(existing)
        for candidate in (existing, parent):
            if candidate is parent:
                os.makedirs(parent, exist_ok=True)
            if not self._inside(os.path.realpath(candidate), self._real_root):
                raise PathEscapeError(
                    f"metric path {path!r} resolves outside the data directory")
        tmp = os.path.join(parent, "." + os.path.basename(target) + ".tmp")
        try:
            os.unlink(tmp)  # left by a crash during an earlier creation
        except FileNotFoundError:
            pass
        whisper.create(tmp, schema.archive_list(), aggregation.x_files_factor,
                       aggregation.aggregation_method, sparse=True)
        os.rename(tmp, target)
        return target

    def write(self, file_path: str, points: Iterable[tuple[int, float]], now: int) -> int:
        """Write points (last value wins per timestamp); returns how many were given."""
        latest = dict(points)
        fastwhisper.update_many(file_path, list(latest.items()), now=now)
        return len(latest)


def consolidate(func: str, values: Sequence[float | None]) -> float | None:
    """graphite-web's consolidation of several cached values into one step."""
    usable = [v for v in values if v is not None]
    if not usable:
        return None
    if func == "avg_zero":
        return sum(0.0 if v is None else v for v in values) / len(values)
    if func == "sum":
        return sum(usable)
    if func == "average":
        return sum(usable) / len(usable)
    if func == "max":
        return max(usable)
    if func == "min":
        return min(usable)
    if func == "last":
        return usable[-1]
    if func == "absmax":
        return max(usable, key=abs)
    if func == "absmin":
        return min(usable, key=abs)
    raise ValueError(f"invalid consolidation function {func!r}")


def merge_with_cache(cached: Sequence[tuple[int, float]], start: int, step: int,
                     values: list[float | None], func: str | None = None,
                     raw_step: int | None = None,
                     x_files_factor: float | None = None,
                     rolled_up_after: int | None = None) -> list[float | None]:
    """Overlay cached points on fetched values, as graphite-web's ``merge_with_cache``.

    When the fetched archive is coarser than the raw step, cached points are rolled up the
    way whisper will roll them up once written (so a render does not change when the
    writer catches up): a bucket of points newer than ``rolled_up_after`` (which whisper
    writes to the finest archive and propagates) is filled only when its share of known
    raw slots reaches ``x_files_factor``, and ``avg_zero`` divides by the slots in the
    bucket. Older points, which whisper writes straight into a coarser archive, and calls
    without ``x_files_factor`` are consolidated as graphite-web does.
    """
    points: Iterable[tuple[int, float | None]] = cached
    if raw_step is not None and raw_step > 1:
        # The last value per raw step wins (a dict keeps the last assignment).
        points = {ts - ts % raw_step: value for ts, value in cached}.items()
    if func and step != raw_step:
        slots = max(1, step // raw_step) if raw_step else 1
        groups: dict[int, list[float]] = {}
        for ts, value in sorted(points, key=lambda point: point[0]):
            if value is not None:
                groups.setdefault(ts - ts % step, []).append(value)
        rolled: list[tuple[int, float | None]] = []
        for ts, vals in groups.items():
            if x_files_factor is None or rolled_up_after is None or ts < rolled_up_after:
                rolled.append((ts, consolidate(func, vals)))
            elif len(vals) / slots >= x_files_factor:
                rolled.append((ts, sum(vals) / slots if func == "avg_zero"
                               else consolidate(func, vals)))
        points = rolled
    n = len(values)
    for ts, value in points:
        i = (ts - start) // step
        if 0 <= i < n:
            values[i] = value
    return values


def empty_fetch(schema: StorageSchema, start: int, end: int,
                now: int) -> tuple[tuple[int, int, int], list[float | None]] | None:
    """What ``whisper.fetch`` returns for a file of ``schema`` with no points yet."""
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    archives = [fastwhisper.Archive(0, r.seconds_per_point, r.points) for r in schema.retentions]
    plan = fastwhisper.plan_fetch(archives, start, end, now)
    if plan is None:
        return None
    archive, start, end = plan
    step = archive.seconds_per_point
    from_interval, until_interval, count = fastwhisper.fetch_intervals(step, start, end)
    return (from_interval, until_interval, step), [None] * count
