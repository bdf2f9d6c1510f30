"""Graphite plaintext protocol framing: bytes in, complete lines out, over-long lines skipped."""

from __future__ import annotations

__all__ = ["LineSplitter"]


class LineSplitter:
    """Splits a byte stream into lines of at most ``max_line_bytes``.

    A line longer than the limit is skipped up to its newline (carbon drops the whole
    connection instead); ``feed`` reports how many were skipped so the caller counts them.
    """

    __slots__ = ("_max", "_pending", "_skipping")

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._pending = b""
        self._skipping = False

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Add ``data``; return the complete lines and the number of over-long lines skipped."""
        skipped = 0
        if self._skipping:
            newline = data.find(b"\n")
            if newline < 0:
                return [], 0
            data = data[newline + 1:]
            self._skipping = False
        buffer = self._pending + data if self._pending else data
        lines = buffer.split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > self._max:
            self._pending = b""
            self._skipping = True
            skipped += 1
        if lines and max(map(len, lines)) > self._max:
            kept = [line for line in lines if len(line) <= self._max]
            skipped += len(lines) - len(kept)
            lines = kept
        return lines, skipped

    def finish(self) -> list[bytes]:
        """At end of stream: the last line if it had no newline (and was not over-long)."""
        rest, self._pending = self._pending, b""
        if self._skipping or not rest.strip():
            return []
        return [rest]
