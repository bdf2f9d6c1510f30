"""The write-ahead log: numbered append-only segments of checksummed records.

Record layout: ``b"TMW1"``, payload length (u32 LE), crc32 of payload (u32 LE), payload;
the payload is ``marshal.dumps`` of a flat list of ``(path, ts, value)`` tuples. A reader
stops at the first incomplete or corrupt record of a segment (a torn tail after a crash).
The log never appends to a segment it found on disk: after replay it starts a new one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import marshal
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from collector.series import Point

__all__ = ["WriteAheadLog", "encode_record", "decode_records", "sync_filesystem"]

log = logging.getLogger(__name__)

MAGIC = b"TMW1"
HEADER = struct.Struct("<4sII")
SUFFIX = ".wal"


def encode_record(points: list[Point]) -> bytes:
    """One record holding ``points``."""
    payload = marshal.dumps(points, 4)
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def _valid_points(obj: object) -> bool:
    if not isinstance(obj, list):
        return False
    for item in obj:
        if not (isinstance(item, tuple) and len(item) == 3 and isinstance(item[0], str)
                and isinstance(item[1], int) and isinstance(item[2], (float, int))):
            return False
    return True


def decode_records(data: bytes) -> tuple[list[list[Point]], int]:
    """Records in ``data`` up to the first bad one; returns them and the bytes consumed."""
    out: list[list[Point]] = []
    pos = 0
    end = len(data)
    while pos + HEADER.size <= end:
        magic, length, crc = HEADER.unpack_from(data, pos)
        body = pos + HEADER.size
        if magic != MAGIC or body + length > end:
            break
        payload = data[body:body + length]
        if zlib.crc32(payload) != crc:
            break
        try:
            points = marshal.loads(payload)
        except (ValueError, EOFError, TypeError):
            break
        if not _valid_points(points):
            break
        out.append(points)
        pos = body + length
    return out, pos


_libc_syncfs = None
_libc_name = ctypes.util.find_library("c")
if _libc_name:
    try:
        _libc = ctypes.CDLL(_libc_name, use_errno=True)
        _libc_syncfs = _libc.syncfs
        _libc_syncfs.argtypes = [ctypes.c_int]
        _libc_syncfs.restype = ctypes.c_int
    except (OSError, AttributeError):
        _libc_syncfs = None


def sync_filesystem(path: Path) -> None:
    """Flush the file system holding ``path`` (syncfs, else sync) before dropping log data."""
    if _libc_syncfs is not None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if _libc_syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


class WriteAheadLog:
    """Segments ``<dir>/<id>.wal``; one writer thread at a time calls :meth:`write`."""

    def __init__(self, directory: Path, segment_bytes: int) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}  # segment id -> bytes, every segment on disk
        self._fd: int | None = None
        self._fd_id: int | None = None
        self.unreadable: list[int] = []  # segments replay could not read; never delete them

    # -- start -------------------------------------------------------------------------
    def open(self) -> int:
        """Create the directory and index the segments on disk; returns the next segment id."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for entry in os.scandir(self.directory):
            name = entry.name
            if name.endswith(SUFFIX) and name[: -len(SUFFIX)].isdigit() and entry.is_file():
                self._sizes[int(name[: -len(SUFFIX)])] = entry.stat().st_size
        return max(self._sizes, default=0) + 1

    def replay(self) -> Iterator[tuple[int, list[Point]]]:
        """``(segment id, points)`` for every valid record of the segments found at open."""
        for seg_id in sorted(self._sizes):
            path = self._path(seg_id)
            try:
                data = path.read_bytes()
            except OSError as exc:
                log.error("cannot read write-ahead log segment; kept for a later start",
                          extra={"segment": str(path), "error": str(exc)})
                self.unreadable.append(seg_id)
                continue
            records, used = decode_records(data)
            if used != len(data):
                log.warning("write-ahead log segment has a torn or corrupt tail; ignored", extra={
                    "segment": str(path), "valid_bytes": used, "ignored_bytes": len(data) - used})
            for points in records:
                yield seg_id, points

    # -- writing -----------------------------------------------------------------------
    def _path(self, seg_id: int) -> Path:
        return self.directory / f"{seg_id:020d}{SUFFIX}"

    def write(self, seg_id: int, record: bytes) -> tuple[int, float]:
        """Append ``record`` to segment ``seg_id`` and fsync; returns (segment size, fsync s)."""
        if self._fd_id != seg_id:
            self._close_fd()
            fd = os.open(self._path(seg_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # make the new segment's name durable
            finally:
                os.close(dir_fd)
            self._fd, self._fd_id = fd, seg_id
            with self._lock:
                self._sizes.setdefault(seg_id, 0)
        assert self._fd is not None
        view = memoryview(record)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        started = time.perf_counter()
        os.fsync(self._fd)
        fsync_seconds = time.perf_counter() - started
        with self._lock:
            self._sizes[seg_id] = self._sizes.get(seg_id, 0) + len(record)
            return self._sizes[seg_id], fsync_seconds

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = self._fd_id = None

    def close(self) -> None:
        """Close the open segment (idempotent)."""
        self._close_fd()

    # -- cleanup -----------------------------------------------------------------------
    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    @property
    def segment_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._sizes)

    def delete_below(self, bound: int, sync_root: Path) -> int:
        """Delete every segment with id < ``bound`` other than the open one; returns count.

        The caller guarantees every point of those segments is in whisper; the file system
        is synced first so a power loss cannot lose what the log no longer holds.
        """
        with self._lock:
            doomed = [s for s in self._sizes if s < bound and s != self._fd_id]
        if not doomed:
            return 0
        sync_filesystem(sync_root)
        for seg_id in doomed:
            try:
                os.unlink(self._path(seg_id))
            except FileNotFoundError:
                pass
            with self._lock:
                self._sizes.pop(seg_id, None)
        return len(doomed)
