"""Structured logging: one JSON object per line on stderr, and rate-limited warnings."""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

__all__ = ["configure_logging", "RateLimitedLog"]

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as JSON with ``ts``, ``level``, ``logger``, ``msg`` and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = "".join(traceback.format_exception(*record.exc_info)).strip()
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info", stream: Any = None) -> None:
    """Send every tidemark log line to ``stream`` (stderr) as JSON."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class RateLimitedLog:
    """Logs at most ``per_seconds`` one message per key; counts what it suppressed.

    Used for protocol input: a flood of bad lines must not become a flood of logs.
    """

    def __init__(self, logger: logging.Logger, per_seconds: float = 10.0,
                 clock: Any = time.monotonic) -> None:
        self._logger = logger
        self._per_seconds = per_seconds
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, **extra: Any) -> None:
        """Log ``msg`` unless ``key`` was logged less than ``per_seconds`` ago."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._per_seconds:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        if len(self._last) > 1024:  # bound memory for many keys
            self._last.clear()
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        self._logger.warning(msg, extra={**extra, "suppressed_since_last": suppressed})
