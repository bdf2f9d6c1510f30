"""Carbon's pickle protocol: 4-byte big-endian length, then a pickled list of
``(path, (timestamp, value))``. Decoded by an unpickler that refuses every global,
so a hostile pickle can build only lists, tuples, strings and numbers and runs nothing.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import Any

__all__ = ["FrameDecoder", "ForbiddenPickle", "decode_payload"]

_LENGTH = struct.Struct("!L")


class ForbiddenPickle(pickle.UnpicklingError):
    """The pickle asked for a global (a class or a function): refused."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise ForbiddenPickle(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid: Any) -> Any:
        raise ForbiddenPickle("persistent ids are not allowed")


def decode_payload(payload: bytes) -> list[Any]:
    """Unpickle one frame's payload; raise ``ForbiddenPickle`` or ``UnpicklingError``."""
    try:
        value = _RestrictedUnpickler(io.BytesIO(payload), encoding="utf-8").load()
    except (ForbiddenPickle, UnicodeDecodeError):
        raise
    except Exception as exc:  # truncated or malformed pickles raise many types
        raise pickle.UnpicklingError(f"malformed pickle: {exc}") from None
    if not isinstance(value, (list, tuple)):
        raise pickle.UnpicklingError(f"expected a list of datapoints, got {type(value).__name__}")
    return list(value)


class FrameDecoder:
    """Turns a byte stream into frame payloads; an over-long frame is skipped, not fatal.

    ``feed`` returns ``(payloads, oversized)``: complete payloads in order, and how many
    frames were over ``max_frame_bytes`` (their bytes are discarded as they arrive).
    """

    __slots__ = ("_max", "_buffer", "_discard")

    def __init__(self, max_frame_bytes: int) -> None:
        self._max = max_frame_bytes
        self._buffer = bytearray()
        self._discard = 0

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Add ``data`` from the socket; return complete payloads and the oversized count."""
        if self._discard:
            skip = min(self._discard, len(data))
            self._discard -= skip
            data = data[skip:]
        self._buffer += data
        payloads: list[bytes] = []
        oversized = 0
        offset = 0
        buffer = self._buffer
        while len(buffer) - offset >= 4:
            (length,) = _LENGTH.unpack_from(buffer, offset)
            if length > self._max:
                oversized += 1
                available = len(buffer) - offset - 4
                if available >= length:
                    offset += 4 + length
                    continue
                self._discard = length - available
                offset = len(buffer)
                break
            if len(buffer) - offset - 4 < length:
                break
            payloads.append(bytes(buffer[offset + 4: offset + 4 + length]))
            offset += 4 + length
        del buffer[:offset]
        return payloads, oversized

    @property
    def buffered_bytes(self) -> int:
        """Bytes of an incomplete frame held in memory (at most one frame's size)."""
        return len(self._buffer)
