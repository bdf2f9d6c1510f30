"""A faster ``update_many`` for whisper files, same format and same results as the
``whisper`` package's: points go to the finest archive that still covers their age, then
propagate to coarser archives with the file's aggregation method and xFilesFactor.

It is faster because it reads the header once with one ``pread``, writes contiguous runs
with one ``pwrite`` each, and reads the finer archive once per coarser archive instead of
once per coarser interval. Files it writes read back with ``whisper.fetch`` unchanged.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import whisper

__all__ = ["Header", "Archive", "read_header", "update_many", "fetch", "plan_fetch",
           "fetch_intervals"]

_META = struct.Struct(whisper.metadataFormat)
_ARCHIVE = struct.Struct(whisper.archiveInfoFormat)
_POINT = struct.Struct(whisper.pointFormat)
POINT_SIZE = _POINT.size
_METHODS = whisper.aggregationTypeToMethod
_MAX_ARCHIVES = 64


@dataclass(frozen=True, slots=True)
class Archive:
    offset: int
    seconds_per_point: int
    points: int

    @property
    def retention(self) -> int:
        return self.seconds_per_point * self.points

    @property
    def size(self) -> int:
        return self.points * POINT_SIZE


@dataclass(frozen=True, slots=True)
class Header:
    aggregation_method: str
    max_retention: int
    x_files_factor: float
    archives: tuple[Archive, ...]


def read_header(fd: int, name: str = "") -> Header:
    """Parse a whisper header; CorruptWhisperFile when it is not one."""
    data = os.pread(fd, _META.size + _ARCHIVE.size * _MAX_ARCHIVES, 0)
    if len(data) < _META.size:
        raise whisper.CorruptWhisperFile("Unable to read header", name)
    agg_type, max_retention, xff, count = _META.unpack_from(data, 0)
    if agg_type not in _METHODS or not 0 <= xff <= 1 or not 0 < count <= _MAX_ARCHIVES:
        raise whisper.CorruptWhisperFile("Unable to read header", name)
    if len(data) < _META.size + _ARCHIVE.size * count:
        raise whisper.CorruptWhisperFile("Unable to read archive metadata", name)
    archives = tuple(
        Archive(*_ARCHIVE.unpack_from(data, _META.size + i * _ARCHIVE.size))
        for i in range(count))
    if any(a.points <= 0 or a.seconds_per_point <= 0 for a in archives):
        raise whisper.CorruptWhisperFile("Bad archive metadata", name)
    return Header(_METHODS[agg_type], max_retention, xff, archives)


def _read_base(fd: int, archive: Archive) -> int:
    data = os.pread(fd, POINT_SIZE, archive.offset)
    if len(data) < POINT_SIZE:
        return 0  # a sparse file never written: whisper reads zeros here too
    return int(_POINT.unpack(data)[0])


def _slot(archive: Archive, base: int, interval: int) -> int:
    distance = (interval - base) // archive.seconds_per_point * POINT_SIZE
    return archive.offset + distance % archive.size


def _write_run(fd: int, archive: Archive, offset: int, packed: bytes) -> None:
    end = archive.offset + archive.size
    beyond = offset + len(packed) - end
    if beyond > 0:
        os.pwrite(fd, packed[:-beyond], offset)
        os.pwrite(fd, packed[-beyond:], archive.offset)
    else:
        os.pwrite(fd, packed, offset)


def _read_span(fd: int, archive: Archive, offset: int, count: int) -> bytes:
    size = count * POINT_SIZE
    end = archive.offset + archive.size
    if offset + size <= end:
        data = os.pread(fd, size, offset)
    else:
        data = os.pread(fd, end - offset, offset)
        data += os.pread(fd, size - (end - offset), archive.offset)
    if len(data) < size:  # sparse tail shorter than expected: pad like zero blocks
        data += b"\x00" * (size - len(data))
    return data


def _aggregate(method: str, known: list[float], neighbours: list[float | None]) -> float:
    if method == "avg_zero":
        return float(sum(v or 0 for v in neighbours)) / len(neighbours)
    return float(whisper.aggregate(method, known))


def _archive_update(fd: int, header: Header, index: int,
                    points: Sequence[tuple[int, float]]) -> None:
    """Write chronological ``points`` to archive ``index`` and propagate downwards."""
    archive = header.archives[index]
    step = archive.seconds_per_point
    aligned: dict[int, float] = {}
    for ts, value in points:  # chronological: the last point of an interval wins
        aligned[ts - ts % step] = value
    intervals = sorted(aligned)
    base = _read_base(fd, archive)
    if base == 0:
        base = intervals[0]
    run_start = intervals[0]
    run: list[float] = []
    previous = None
    for interval in intervals:
        if previous is not None and interval != previous + step:
            _write_run(fd, archive, _slot(archive, base, run_start),
                       b"".join(_POINT.pack(run_start + i * step, v) for i, v in enumerate(run)))
            run_start, run = interval, []
        run.append(aligned[interval])
        previous = interval
    _write_run(fd, archive, _slot(archive, base, run_start),
               b"".join(_POINT.pack(run_start + i * step, v) for i, v in enumerate(run)))

    higher = archive
    for lower in header.archives[index + 1:]:
        if lower.seconds_per_point <= archive.seconds_per_point:
            continue
        if not _propagate(fd, header, higher, lower, intervals):
            break
        higher = lower


def _propagate(fd: int, header: Header, higher: Archive, lower: Archive,
               intervals: list[int]) -> bool:
    """Recompute the ``lower`` points covering ``intervals``; True if any was written."""
    lstep, hstep = lower.seconds_per_point, higher.seconds_per_point
    per_lower = lstep // hstep
    targets = sorted({i - i % lstep for i in intervals})
    higher_base = _read_base(fd, higher)
    span = (targets[-1] - targets[0]) // hstep + per_lower
    values_at: dict[int, float] = {}
    if higher_base != 0 and span <= higher.points:
        first = targets[0]
        raw = _read_span(fd, higher, _slot(higher, higher_base, first), span)
        for k in range(span):
            ts, value = _POINT.unpack_from(raw, k * POINT_SIZE)
            if ts == first + k * hstep:  # a slot counts only if it holds its own interval
                values_at[ts] = value
    elif higher_base != 0:
        for target in targets:
            raw = _read_span(fd, higher, _slot(higher, higher_base, target), per_lower)
            for k in range(per_lower):
                ts, value = _POINT.unpack_from(raw, k * POINT_SIZE)
                if ts == target + k * hstep:
                    values_at[ts] = value
    lower_base = _read_base(fd, lower)
    propagated = False
    for target in targets:
        neighbours = [values_at.get(target + k * hstep) for k in range(per_lower)]
        known = [v for v in neighbours if v is not None]
        if not known or len(known) / per_lower < header.x_files_factor:
            continue
        value = _aggregate(header.aggregation_method, known, neighbours)
        if lower_base == 0:
            lower_base = target
        os.pwrite(fd, _POINT.pack(target, value), _slot(lower, lower_base, target))
        propagated = True
    return propagated


def update_many(path: str, points: Sequence[tuple[int, float]], now: int) -> None:
    """Like ``whisper.update_many(path, points, now=now)``; last value wins per timestamp."""
    if not points:
        return
    latest: dict[int, float] = {}
    for ts, value in points:
        latest[int(ts)] = float(value)
    ordered = sorted(latest.items(), reverse=True)  # newest first, as whisper walks them
    fd = os.open(path, os.O_RDWR)
    try:
        header = read_header(fd, path)
        archives = header.archives
        index = 0
        batch: list[tuple[int, float]] = []
        for point in ordered:
            age = now - point[0]
            while archives[index].retention < age:
                if batch:
                    batch.reverse()
                    _archive_update(fd, header, index, batch)
                    batch = []
                index += 1
                if index == len(archives):
                    return  # older than every archive: dropped, as whisper does
            batch.append(point)
        if batch:
            batch.reverse()
            _archive_update(fd, header, index, batch)
    finally:
        os.close(fd)


FetchResult = tuple[Header, tuple[int, int, int], list[float | None]]


def fetch(path: str, from_time: int, until_time: int, now: int) -> FetchResult | None:
    """``whisper.fetch(path, from_time, until_time, now=now)`` with one open and the header.

    Same archive choice and the same values as the whisper package (one ``pread`` for the
    header, one or two for the span); returns the header too, so callers need no
    ``whisper.info``. None when the range is wholly in the future or beyond retention.
    """
    if from_time > until_time:
        raise whisper.InvalidTimeInterval(
            f"Invalid time interval: from time '{from_time}' is after until time "
            f"'{until_time}'")
    fd = os.open(path, os.O_RDONLY)
    try:
        header = read_header(fd, path)
        plan = plan_fetch(header.archives, from_time, until_time, now)
        if plan is None:
            return None
        return header, *_archive_fetch(fd, *plan)
    finally:
        os.close(fd)


def plan_fetch(archives: Sequence[Archive], from_time: int, until_time: int,
               now: int) -> tuple[Archive, int, int] | None:
    """whisper's ``file_fetch`` choice: the range clamped to the retention and the first
    archive that covers ``now - from``; None when the range is in the future or too old."""
    oldest = now - max(archive.retention for archive in archives)
    if from_time > now or until_time < oldest:
        return None
    from_time = max(from_time, oldest)
    diff = now - from_time
    archive = archives[-1]
    for candidate in archives:
        if candidate.retention >= diff:
            archive = candidate
            break
    return archive, from_time, min(until_time, now)


def fetch_intervals(step: int, from_time: int, until_time: int) -> tuple[int, int, int]:
    """``(from_interval, until_interval, count)`` as whisper's ``__archive_fetch`` sets them."""
    from_interval = int(from_time - (from_time % step)) + step
    until_interval = int(until_time - (until_time % step)) + step
    if from_interval == until_interval:
        until_interval += step  # zero-length range: whisper includes the next point
    return from_interval, until_interval, (until_interval - from_interval) // step


def _archive_fetch(fd: int, archive: Archive, from_time: int,
                   until_time: int) -> tuple[tuple[int, int, int], list[float | None]]:
    step = archive.seconds_per_point
    from_interval, until_interval, count = fetch_intervals(step, from_time, until_time)
    base = _read_base(fd, archive)
    if base == 0:
        return (from_interval, until_interval, step), [None] * count
    from_offset = archive.offset + ((from_interval - base) // step * POINT_SIZE) % archive.size
    until_offset = archive.offset + ((until_interval - base) // step * POINT_SIZE) % archive.size
    if from_offset < until_offset:
        span = (until_offset - from_offset) // POINT_SIZE
    else:  # wraps around the end of the archive (or spans all of it)
        span = (archive.offset + archive.size - from_offset + until_offset
                - archive.offset) // POINT_SIZE
    data = _read_span(fd, archive, from_offset, span)
    unpacked = struct.unpack(">" + "Ld" * span, data)
    values: list[float | None] = [None] * span
    expected = from_interval
    for i in range(span):
        if unpacked[2 * i] == expected:
            values[i] = unpacked[2 * i + 1]
        expected += step
    return (from_interval, until_interval, step), values
