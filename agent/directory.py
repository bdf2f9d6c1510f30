"""What the agent knows about services from the registry, kept current by watches.

Each service the agent routes to gets a watch on first use (at most ``max_services``;
:meth:`ServiceDirectory.unwatch` ends one, see ``AgentService`` for when);
every snapshot replaces the service's :class:`ServiceView` at once, so node changes,
weights and degrade switches take effect as soon as the registry delivers them. The
registry client's fail-static cache keeps the last snapshot on disk: after a restart
with the registry unreachable, the agent serves from it. A watch that ends by itself (a
bug, or a client whose watch raised) is started again, after a backoff, and the service
keeps its last view meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.balancer import Endpoint, effective_endpoints
from registry.client import BaseClient
from registry.model import Snapshot
from tidemark.daemon import cancel_and_wait

__all__ = ["ServiceView", "ServiceDirectory", "TooManyServices"]

log = logging.getLogger("tidemark.agent.directory")

#: A watch that ended is started again after this, doubled per failure in a row (a
#: snapshot delivered resets it), at most ``_MAX_RESTART_DELAY_SECONDS``.
_RESTART_DELAY_SECONDS = 0.5
_MAX_RESTART_DELAY_SECONDS = 30.0


class TooManyServices(Exception):
    """More distinct services were asked for than ``max_services``."""


@dataclass(frozen=True)
class ServiceView:
    """One service as the agent routes to it."""

    snapshot: Snapshot
    endpoints: tuple[Endpoint, ...]
    received_at: float  # epoch seconds

    @classmethod
    def of(cls, snapshot: Snapshot) -> ServiceView:
        return cls(snapshot, effective_endpoints(snapshot), time.time())


class ServiceDirectory:
    """Views of the services watched so far; ``stop`` closes every watch (idempotent).

    ``on_restart(service)`` is called each time the watch of a service ended by itself and
    is started again.
    """

    def __init__(self, client: BaseClient, *, max_services: int = 256,
                 first_snapshot_wait_seconds: float = 2.0,
                 on_restart: Callable[[str], None] | None = None) -> None:
        self._client = client
        self._max_services = max_services
        self._first_wait = first_snapshot_wait_seconds
        self._on_restart = on_restart
        # service -> watches in a row that ended without delivering a snapshot (backoff)
        self._failures: dict[str, int] = {}
        # service -> latest view; one dict for the directory's life, which the agent's
        # data path reads directly (``current`` for everyone else)
        self.views: dict[str, ServiceView] = {}
        self._first: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.changes: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        self._stopped = False

    def current(self, service: str) -> ServiceView | None:
        """The latest view of ``service`` (None before its first snapshot)."""
        return self.views.get(service)

    def services(self) -> list[str]:
        return sorted(self._tasks)

    async def view(self, service: str) -> ServiceView | None:
        """The view of ``service``, starting its watch and waiting for a first snapshot."""
        view = self.views.get(service)
        if view is not None:
            return view
        self.watch(service)
        first = self._first.get(service)
        if first is None:  # unwatched meanwhile
            return None
        try:
            await asyncio.wait_for(first.wait(), self._first_wait)
        except TimeoutError:
            pass
        return self.views.get(service)

    def watch(self, service: str) -> None:
        """Start watching ``service`` unless already watched."""
        if self._stopped:
            raise RuntimeError("directory stopped")
        if service in self._tasks:
            return
        if len(self._tasks) >= self._max_services:
            raise TooManyServices(f"the agent routes to at most {self._max_services} services")
        self._first[service] = asyncio.Event()
        self._start(service, 0.0)

    def _start(self, service: str, delay_seconds: float) -> None:
        task = asyncio.get_running_loop().create_task(self._follow(service, delay_seconds))
        task.add_done_callback(functools.partial(self._done, service))
        self._tasks[service] = task

    async def unwatch(self, service: str) -> bool:
        """Stop watching ``service`` and forget its view; False if it was not watched.

        The next call for it starts a new watch (the agent unwatches services nobody
        called for ``service_idle_seconds``, or the least recently called one when a new
        service would exceed ``max_services``).
        """
        task = self._tasks.pop(service, None)
        self.views.pop(service, None)
        self._first.pop(service, None)
        self._failures.pop(service, None)
        if task is None:
            return False
        await cancel_and_wait(task)
        return True

    def _done(self, service: str, task: asyncio.Task[None]) -> None:
        """A watch task ended. Cancelled: unwatched or stopped. Else it died (it raised, or
        its stream ended): start a new one after a backoff; the last view stays in use."""
        if task.cancelled() or self._stopped or self._tasks.get(service) is not task:
            return
        failures = self._failures.get(service, 0) + 1
        self._failures[service] = failures
        delay = min(_MAX_RESTART_DELAY_SECONDS,
                    _RESTART_DELAY_SECONDS * 2.0 ** min(failures - 1, 16))
        error = task.exception()
        log.error("watch of a service ended; watching it again", exc_info=error, extra={
            "service": service, "error": repr(error), "in_seconds": delay})
        self._start(service, delay)
        if self._on_restart is not None:
            self._on_restart(service)

    async def _follow(self, service: str, delay_seconds: float) -> None:
        # Not ``async with`` (nor ``finally: await ...``): compiled by mypyc (2.4), code that
        # awaits while an exception propagates re-raises whatever sys.exc_info() holds when
        # it resumes, not the exception it caught. Watch.aclose suspends, so a cancel at
        # shutdown became an invalid exception and left this task pending for ever. The
        # close runs outside the handler and the caught exception is raised by name.
        if delay_seconds > 0:
            await asyncio.sleep(delay_seconds)
        watch = self._client.watch(service)
        error: BaseException | None = None
        try:
            async for snapshot in watch:
                self._failures.pop(service, None)
                previous = self.views.get(service)
                self.views[service] = ServiceView.of(snapshot)
                first = self._first.get(service)
                if first is not None:
                    first.set()
                if previous is None or previous.snapshot.config != snapshot.config:
                    self.changes.append({
                        "at": time.time(), "service": service, "revision": snapshot.revision,
                        "from_cache": snapshot.from_cache,
                        "config": snapshot.config.to_dict()})
                log.info("service snapshot", extra={
                    "service": service, "revision": snapshot.revision,
                    "nodes": len(snapshot.nodes), "from_cache": snapshot.from_cache,
                    "degraded": snapshot.config.degraded is not None})
        except BaseException as exc:  # noqa: BLE001 - raised again below, after the close
            error = exc
        await watch.aclose()
        if error is not None:
            raise error

    async def stop(self) -> None:
        self._stopped = True
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await cancel_and_wait(*tasks)
