"""What every tidemark HTTP daemon shares: /healthz and /metrics."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["add_health_and_metrics", "daemon_metrics", "health"]


def daemon_metrics() -> CollectorRegistry:
    """A registry for a daemon's own ``/metrics`` that already carries the process's CPU,
    resident memory and open files (``process_*``) and its garbage collections
    (``python_gc_*``), so bounded memory can be watched from outside."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def health(ready: bool) -> tuple[int, dict[str, str]]:
    """Status and JSON body of ``GET /healthz``: 200 ok when ready, 503 starting before."""
    return (200, {"status": "ok"}) if ready else (503, {"status": "starting"})


def add_health_and_metrics(
    app: web.Application, registry: CollectorRegistry, is_ready: Callable[[], bool]
) -> None:
    """Add ``GET /healthz`` (200 when ready, 503 before) and Prometheus ``GET /metrics``."""

    async def healthz(request: web.Request) -> web.Response:
        status, body = health(is_ready())
        return web.json_response(body, status=status)

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
