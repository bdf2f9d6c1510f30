"""The collector daemon: store, ingest listeners and the HTTP API, started and stopped in order."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from collector.config import CollectorConfig
from collector.ingest.intake import Intake
from collector.ingest.listeners import IngestServer
from collector.selfmetrics import CollectorMetrics
from collector.storage.store import MetricStore
from tidemark.httpkit import add_health_and_metrics, daemon_metrics

__all__ = ["CollectorService"]

log = logging.getLogger("tidemark.collector")


class CollectorService:
    """``tidemark collector``: ``start`` brings every part up, ``stop`` flushes and closes.

    Start order: store (replays the write-ahead log), HTTP (``/healthz`` says 503 until
    ready), ingest listeners. Stop order: listeners (stop accepting, finish what was
    read), store (fsync, drain the cache into whisper), HTTP.
    """

    def __init__(self, config: CollectorConfig, *, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.registry = registry if registry is not None else daemon_metrics()
        self.metrics = CollectorMetrics(self.registry)
        self.store = MetricStore(config, self.metrics, clock=clock,
                                 drain_timeout_seconds=config.drain_timeout_seconds)
        self.intake = Intake(self.store, self.metrics, config, clock=clock)
        self.ingest = IngestServer(config, self.intake, self.store, self.metrics, clock=clock)
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._ready = False
        self._started = False
        self._stopped = False
        self.ports: dict[str, int] = {}

    @property
    def ready(self) -> bool:
        """True once every enabled listener is up, until stop begins."""
        return self._ready

    def build_app(self) -> web.Application:
        """The aiohttp application: /healthz, /metrics and the Graphite read API."""
        app = web.Application(client_max_size=self.config.http_max_body_bytes)
        add_health_and_metrics(app, self.registry, lambda: self._ready)
        from collector.render.views import add_render_routes

        add_render_routes(app, self.store, self.metrics, max_series=self.config.render_max_series,
                          max_body_bytes=self.config.http_max_body_bytes, clock=self._clock)
        return app

    async def start(self) -> None:
        """Bring the collector up; raises if a port cannot be bound (after cleaning up)."""
        if self._started:
            return
        self._started = True
        try:
            self.config.data_dir.mkdir(parents=True, exist_ok=True)
            await self.store.start()
            if self.config.http_port:
                self._runner = web.AppRunner(self.build_app(), access_log=None,
                                             handle_signals=False)
                await self._runner.setup()
                site = web.TCPSite(self._runner, self.config.host, self.config.http_port,
                                   reuse_address=True)
                await site.start()
                self.ports["http"] = int(self._runner.addresses[0][1])
            await self.ingest.start()
            self.ports.update(self.ingest.ports)
        except BaseException:
            await self.stop()
            raise
        self._ready = True
        log.info("collector ready", extra={"ports": self.ports,
                                            "data_dir": str(self.config.data_dir)})

    async def stop(self) -> None:
        """Stop accepting, flush everything to disk, close. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._ready = False
        await self.ingest.stop()
        await self.store.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        log.info("collector stopped")
