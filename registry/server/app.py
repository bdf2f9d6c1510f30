"""The embedded registry daemon: aiohttp app, SQLite store, node expiry, long-poll wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from registry.server.store import RegistryStore
from registry.server.views import SERVER_KEY, add_routes
from tidemark.daemon import cancel_and_wait
from tidemark.httpkit import add_health_and_metrics, daemon_metrics

__all__ = ["RegistryServerConfig", "RegistryServer"]

log = logging.getLogger("registry.server")


@dataclass(frozen=True)
class RegistryServerConfig:
    """Settings of ``tidemark registry`` (TOML ``[registry]``, env ``TIDEMARK_REGISTRY_*``)."""

    data_dir: Path = Path("./data/registry")
    host: str = "127.0.0.1"
    http_port: int = 8500
    token_file: Path | None = None
    max_wait_seconds: float = 60.0
    max_long_polls: int = 10000
    max_body_bytes: int = 65536
    expiry_interval_seconds: float = 0.2
    shutdown_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.http_port < 65536:
            raise ValueError(f"http_port: {self.http_port} is not a port")
        if self.max_wait_seconds <= 0 or self.expiry_interval_seconds <= 0:
            raise ValueError("max_wait_seconds and expiry_interval_seconds must be positive")
        if self.max_long_polls < 1:
            raise ValueError("max_long_polls: must be at least 1")
        if not 1024 <= self.max_body_bytes <= 16 * 1024 * 1024:
            raise ValueError("max_body_bytes: must be between 1KiB and 16MiB")


class RegistryServer:
    """The registry as a service: ``await start()``, ``await stop()`` (idempotent)."""

    def __init__(self, config: RegistryServerConfig, *, token: str | None = None,
                 metrics: CollectorRegistry | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.config = config
        self.token = token
        self.metrics = metrics or daemon_metrics()
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = RegistryStore(config.data_dir / "registry.sqlite3",
                                   **({"clock": clock} if clock else {}))
        self.store.on_change = self._notify
        self._changed_any = asyncio.Event()
        self._changed: dict[str, asyncio.Event] = {}
        self._polls = 0  # long polls waiting, at most config.max_long_polls
        self._polls_on: dict[str, int] = {}  # ... of them per service (for _changed)
        self._stopping = False
        self._runner: web.AppRunner | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self._ready = False
        self.port: int | None = None
        self._writes = Counter("tidemark_registry_writes", "Accepted writes by operation",
                               ["op"], registry=self.metrics)
        self._expired = Counter("tidemark_registry_nodes_expired",
                                "Nodes removed because their TTL passed", registry=self.metrics)
        self._waiters = Gauge("tidemark_registry_long_polls",
                              "Long polls waiting and watch streams open",
                              registry=self.metrics)
        self._refused = Counter("tidemark_registry_long_polls_refused",
                                "Long polls and streams refused (429): max_long_polls were open",
                                registry=self.metrics)
        revision = Gauge("tidemark_registry_revision", "Current global revision",
                         registry=self.metrics)
        revision.set_function(lambda: self.store.revision)

    @property
    def watched_services(self) -> int:
        """Services with a wake-up event held for long polls (bounded by those waiting)."""
        return len(self._changed)

    def count_write(self, op: str) -> None:
        """Count an accepted write."""
        self._writes.labels(op).inc()

    def _notify(self, service: str | None = None) -> None:
        """Wake long polls on ``service`` and prefix watches (``None``: wake everyone)."""
        if service is None:
            events = [self._changed_any, *self._changed.values()]
            self._changed.clear()
        else:
            events = [self._changed_any]
            if service in self._changed:
                events.append(self._changed.pop(service))
        self._changed_any = asyncio.Event()
        for event in events:
            event.set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` began: long polls and streams end."""
        return self._stopping

    @contextlib.contextmanager
    def poll_slot(self, service: str | None = None) -> Iterator[None]:
        """Hold one of the ``max_long_polls`` places for a long poll or a watch stream.

        One more than that is refused with a 429 (memory stays bounded however many
        watchers connect). ``service`` keeps that service's wake-up event alive while held.
        """
        if self._polls >= self.config.max_long_polls:
            self._refused.inc()
            raise web.HTTPTooManyRequests(
                text=json.dumps({"error": f"wait: more than {self.config.max_long_polls} "
                                          "long polls are waiting; retry later"}),
                content_type="application/json", headers={"Retry-After": "1"})
        self._polls += 1
        if service is not None:
            self._polls_on[service] = self._polls_on.get(service, 0) + 1
        self._waiters.inc()
        try:
            yield
        finally:
            self._waiters.dec()
            self._polls -= 1
            if service is not None:
                left = self._polls_on.pop(service) - 1
                if left:
                    self._polls_on[service] = left
                else:  # no one waits on it any more: do not keep its event
                    self._changed.pop(service, None)

    async def wait_change(self, done: Callable[[], bool], wait_seconds: float,
                          service: str | None = None) -> bool:
        """Wait until ``done()`` holds (True), or ``wait_seconds`` pass or the server stops
        (``done()`` then). Waiters on one service are woken only by changes to it;
        ``service=None`` wakes on any change. Call it inside :meth:`poll_slot`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while not done():
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stopping:
                return False
            if service is None:
                event = self._changed_any
            else:
                event = self._changed.setdefault(service, asyncio.Event())
            try:
                async with asyncio.timeout(remaining):
                    await event.wait()
            except TimeoutError:
                return done()
        return True

    async def wait_for(self, done: Callable[[], bool], wait_seconds: float,
                       service: str | None = None) -> None:
        """A long poll: return when ``done()`` holds, ``wait_seconds`` pass, or the server
        stops; refused with a 429 past ``max_long_polls`` (see :meth:`poll_slot`)."""
        if done() or wait_seconds <= 0:
            return
        with self.poll_slot(service):
            await self.wait_change(done, wait_seconds, service)

    def build_app(self) -> web.Application:
        """The aiohttp application (also used directly by tests)."""
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app[SERVER_KEY] = self
        add_routes(app)
        add_health_and_metrics(app, self.metrics, lambda: self._ready)
        return app

    async def start(self) -> None:
        """Open the store, start expiry and listen."""
        self.store.open()
        self._stopping = False
        self._expiry_task = asyncio.get_running_loop().create_task(self._expire_loop())
        self._expiry_task.add_done_callback(self._expiry_done)
        # handler_cancellation: a watch stream whose reader went away ends at once (and
        # frees its max_long_polls place); writes are synchronous, so no handler is cut
        # off halfway through a change.
        self._runner = web.AppRunner(self.build_app(), access_log=None,
                                     handler_cancellation=True,
                                     shutdown_timeout=self.config.shutdown_timeout_seconds)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.http_port,
                           reuse_address=True)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self.config.http_port
        self._ready = True
        log.info("registry listening", extra={"host": self.config.host, "port": self.port,
                                              "revision": self.store.revision,
                                              "auth": self.token is not None})

    def _expiry_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("node expiry stopped", exc_info=task.exception())
            self._ready = False

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.expiry_interval_seconds)
            removed = self.store.expire()
            if removed:
                self._expired.inc(removed)
                log.info("nodes expired", extra={"count": removed})

    async def stop(self) -> None:
        """Wake long-polls, stop listening, stop expiry, close the store; safe twice."""
        self._ready = False
        self._stopping = True
        self._notify()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        task, self._expiry_task = self._expiry_task, None
        await cancel_and_wait(task)
        self.store.close()
