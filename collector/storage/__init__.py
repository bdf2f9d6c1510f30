"""Durable storage of the collector: write-ahead log, write cache, whisper files.

Modules: :mod:`.schemas` (carbon-format retention/aggregation rules), :mod:`.globs`
(Graphite glob matching), :mod:`.whisper_files` (path mapping, sparse creation, reads),
:mod:`.wal` (group-committed log segments), :mod:`.cache` (points per metric),
:mod:`.writer` (background whisper writer), :mod:`.store` (the :class:`MetricStore` facade).
"""

from collector.storage.store import MetricStore, StoreClosed
from collector.storage.whisper_files import PathEscapeError

__all__ = ["MetricStore", "StoreClosed", "PathEscapeError"]
