"""What the agent knows about services from the registry, kept current by watches.

Each service the agent routes to gets a watch on first use (at most ``max_services``;
:meth:`ServiceDirectory.unwatch` ends one, see ``AgentService`` for when);
every snapshot replaces the service's :class:`ServiceView` at once, so node changes,
weights and degrade switches take effect as soon as the registry delivers them. The
registry client's fail-static cache keeps the last snapshot on disk: after a restart
with the registry unreachable, the agent serves from it.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

from agent.balancer import Endpoint, effective_endpoints
from registry.client import BaseClient
from registry.model import Snapshot
from tidemark.daemon import cancel_and_wait

__all__ = ["ServiceView", "ServiceDirectory", "TooManyServices"]

log = logging.getLogger("tidemark.agent.directory")


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
    """Views of the services watched so far; ``stop`` closes every watch (idempotent)."""

    def __init__(self, client: BaseClient, *, max_services: int = 256,
                 first_snapshot_wait_seconds: float = 2.0) -> None:
        self._client = client
        self._max_services = max_services
        self._first_wait = first_snapshot_wait_seconds
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
        task = asyncio.get_running_loop().create_task(self._follow(service))
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
        if task is None:
            return False
        await cancel_and_wait(task)
        return True

    def _done(self, service: str, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("watch of a service failed", extra={"service": service},
                      exc_info=task.exception())
            self._tasks.pop(service, None)  # the next call starts it again

    async def _follow(self, service: str) -> None:
        # Not ``async with`` (nor ``finally: await ...``): compiled by mypyc (2.4), code that
        # awaits while an exception propagates re-raises whatever sys.exc_info() holds when
        # it resumes, not the exception it caught. Watch.aclose suspends, so a cancel at
        # shutdown became an invalid exception and left this task pending for ever. The
        # close runs outside the handler and the caught exception is raised by name.
        watch = self._client.watch(service)
        error: BaseException | None = None
        try:
            async for snapshot in watch:
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
