"""Fail static: the last snapshot of every watched service, kept on disk.

When the registry cannot be reached, or before it first answers, clients serve these
instead, so a registry outage never takes traffic down with it. Files are replaced
atomically (write, fsync, rename) and named after the service, which is validated, so
nothing user-supplied becomes a path outside the cache directory.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from registry.model import Snapshot, check_name

__all__ = ["FailStaticCache"]

log = logging.getLogger("registry.failstatic")


class FailStaticCache:
    """Per-service snapshot files plus their age as Prometheus gauges.

    ``tidemark_registry_snapshot_age_seconds{service}`` is 0 while a live watch or answer
    backs the snapshot and grows from the moment the registry was last heard from;
    ``tidemark_registry_serving_from_cache{service}`` is 1 while the last snapshot is being
    served without the registry vouching for it: read back from disk, or kept in memory by a
    watch that lost the registry (the same snapshot, saved when it arrived).
    """

    def __init__(self, directory: Path | str, metrics: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._last_live: dict[str, float] = {}
        self._live: set[str] = set()
        self._serving_cache: set[str] = set()
        if metrics is not None:
            metrics.register(_AgeCollector(self))

    def _path(self, service: str) -> Path:
        return self._dir / f"{check_name(service, 'service')}.json"

    def save(self, snapshot: Snapshot) -> None:
        """Atomically replace the service's file with ``snapshot``; marks it live."""
        record = {**snapshot.to_dict(), "from_cache": False}
        data = {"saved_at": self._clock(), "snapshot": record}
        path = self._path(snapshot.service)
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.mark_live(snapshot.service)

    def load(self, service: str) -> Snapshot | None:
        """The cached snapshot (``from_cache=True``), or None if absent or unreadable."""
        path = self._path(service)
        try:
            data = json.loads(path.read_text())
            snapshot = Snapshot.from_dict({**data["snapshot"], "from_cache": True})
            saved_at = float(data["saved_at"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable fail-static snapshot", extra={"path": str(path),
                                                                   "error": str(exc)})
            return None
        self._last_live.setdefault(service, saved_at)
        return snapshot

    def mark_live(self, service: str) -> None:
        """The registry answered for ``service`` just now and the watch is connected."""
        self._live.add(service)
        self._serving_cache.discard(service)
        self._last_live[service] = self._clock()

    def mark_lost(self, service: str, serving_cache: bool) -> None:
        """The registry stopped answering for ``service``."""
        if service in self._live:
            self._last_live[service] = self._clock()
        self._live.discard(service)
        if serving_cache:
            self._serving_cache.add(service)

    def forget(self, service: str) -> None:
        """No watch follows ``service`` any more: drop its gauges (a service unwatched for
        good, e.g. one nobody calls, must not read "live" for ever). The file stays, for
        fail static when it is watched again."""
        self._live.discard(service)
        self._serving_cache.discard(service)
        self._last_live.pop(service, None)

    def age_seconds(self, service: str) -> float | None:
        """Seconds since the registry last vouched for the snapshot (0 while live)."""
        if service in self._live:
            return 0.0
        last = self._last_live.get(service)
        return None if last is None else max(0.0, self._clock() - last)

    def services(self) -> list[str]:
        """Services with an age known to this process."""
        return sorted(set(self._last_live) | self._live)

    def stored_services(self) -> list[str]:
        """Services with a snapshot file in the cache directory."""
        return sorted(p.stem for p in self._dir.glob("*.json") if not p.name.startswith("."))

    def is_serving_cache(self, service: str) -> bool:
        """Whether the cached copy is what is being served for ``service``."""
        return service in self._serving_cache


class _AgeCollector(Collector):
    def __init__(self, cache: FailStaticCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        age = GaugeMetricFamily("tidemark_registry_snapshot_age_seconds",
                                "Seconds since the registry last vouched for the snapshot",
                                labels=["service"])
        serving = GaugeMetricFamily("tidemark_registry_serving_from_cache",
                                    "1 while the fail-static copy is served", labels=["service"])
        for service in self._cache.services():
            value = self._cache.age_seconds(service)
            if value is not None:
                age.add_metric([service], value)
            serving.add_metric([service], 1.0 if self._cache.is_serving_cache(service) else 0.0)
        yield age
        yield serving
