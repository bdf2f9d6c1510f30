"""The registry client interface, and the machinery both backends share.

:class:`RegistryClient` is the seam: the agent, ``registryctl`` and the benchmarks only use
it. :func:`open_registry` picks a backend by URL (``http://HOST:PORT`` for the embedded
registry, ``etcd://HOST:PORT[,HOST:PORT...]`` for etcd v3). :class:`BaseClient` turns a
backend's raw snapshot stream into watches that deliver the latest snapshot per service,
reconnect by themselves, and fall back to the fail-static cache; :class:`Registration`
keeps a node registered by heartbeats until it is stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from registry.errors import NotFound, RegistryUnavailable
from registry.failstatic import FailStaticCache
from registry.model import Command, Node, Snapshot, check_name, check_prefix
from tidemark.daemon import cancel_and_wait
from tidemark.logs import RateLimitedLog

__all__ = ["RegistryClient", "BaseClient", "Registration", "Watch", "open_registry"]

log = logging.getLogger("registry.client")
_cache_log = RateLimitedLog(log, per_seconds=60.0)

MIN_TTL_SECONDS = 1.0
MAX_TTL_SECONDS = 3600.0


class RegistryClient(Protocol):
    """What every registry backend offers. All methods raise ValueError on bad input."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def register(self, service: str, node: Node,
                       ttl_seconds: float = 10.0) -> Registration: ...

    async def deregister(self, service: str, node_id: str) -> None: ...

    async def snapshot(self, service: str) -> Snapshot: ...

    async def services(self) -> list[str]: ...

    async def history(self, service: str) -> list[Command]: ...

    async def command(self, service: str, kind: str, args: Mapping[str, Any], *,
                      who: str, why: str = "") -> Command: ...

    def watch(self, service: str) -> Watch: ...

    def watch_prefix(self, prefix: str) -> Watch: ...

    async def degrade(self, service: str, *, reason: str, who: str,
                      fallback_status: int = 503) -> Command: ...

    async def restore(self, service: str, *, who: str, why: str = "") -> Command: ...

    async def set_idc_weights(self, service: str, weights: Mapping[str, int | None], *,
                              who: str, why: str = "") -> Command: ...

    async def set_node_weights(self, service: str, weights: Mapping[str, int | None], *,
                               who: str, why: str = "") -> Command: ...

    async def set_switches(self, service: str, switches: Mapping[str, bool | None], *,
                           who: str, why: str = "") -> Command: ...

    async def revert(self, service: str, command_id: int, *, who: str, why: str = ""
                     ) -> Command: ...


def check_ttl(ttl_seconds: float) -> float:
    """A node TTL in seconds, 1 s to 1 h."""
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, (int, float)):
        raise ValueError(f"ttl_seconds: expected a number, got {ttl_seconds!r}")
    if not MIN_TTL_SECONDS <= ttl_seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"ttl_seconds: {ttl_seconds} is outside "
                         f"{MIN_TTL_SECONDS:g}-{MAX_TTL_SECONDS:g}")
    return float(ttl_seconds)


class Watch:
    """An async iterator of snapshots: the current one first, then one after every change.

    A pump task reads the backend's stream into one slot per service, so a consumer that
    falls behind gets the latest snapshot, never a stale or torn one. Revisions only grow
    per service (a cached snapshot may be replaced by the registry's answer whatever its
    revision). Use ``async with`` or call :meth:`aclose`.
    """

    def __init__(self, client: BaseClient, *, service: str | None = None,
                 prefix: str | None = None, initial_wait_seconds: float = 1.0) -> None:
        self._client = client
        self._service = service
        self._prefix = prefix
        self._initial_wait = initial_wait_seconds
        self._pending: dict[str, Snapshot] = {}
        self._delivered: dict[str, Snapshot] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._closed = False
        self.connected = False
        self.reconnects = 0

    def __aiter__(self) -> Watch:
        return self

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _ensure_started(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._pump())
            self._task.add_done_callback(self._pump_done)
            self._client._watches.add(self)

    def _pump_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._error = task.exception()
            self._ready.set()

    async def __anext__(self) -> Snapshot:
        self._ensure_started()
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._pending:
                name = next(iter(self._pending))
                snapshot = self._pending.pop(name)
                self._delivered[name] = snapshot
                if not self._pending:
                    self._ready.clear()
                return snapshot
            if self._error is not None:
                raise self._error
            self._ready.clear()
            await self._ready.wait()

    def _offer(self, snapshot: Snapshot) -> None:
        name = snapshot.service
        if self._service is not None and name != self._service:
            return
        last = self._pending.get(name) or self._delivered.get(name)
        if last is not None and not last.from_cache:
            if snapshot.from_cache or snapshot.revision <= last.revision:
                return
        self._pending[name] = snapshot
        self._ready.set()

    def _serve_cache(self, cache: FailStaticCache) -> None:
        names = [self._service] if self._service else [
            s for s in cache.stored_services() if s.startswith(self._prefix or "")]
        for name in names:
            if name in self._pending or name in self._delivered:
                # The last snapshot stays in use, no longer vouched for by the registry:
                # it is the copy on disk (saved when it arrived), served from memory.
                cache.mark_lost(name, serving_cache=True)
                continue
            cached = cache.load(name)
            if cached is not None:
                cache.mark_lost(name, serving_cache=True)
                self._offer(cached)

    async def _pump(self) -> None:
        backoff = 0.05
        cache = self._client.cache
        first = True
        timer: asyncio.TimerHandle | None = None

        def on_snapshot(snapshot: Snapshot) -> None:
            nonlocal first, backoff, timer
            if timer is not None:
                timer.cancel()
                timer = None
            if not self.connected:
                self.connected = True
                if not first:
                    log.info("registry watch reconnected",
                             extra={"service": self._service, "prefix": self._prefix,
                                    "revision": snapshot.revision})
                first = False
                backoff = 0.05
            if cache is not None:
                try:
                    cache.save(snapshot)
                except OSError as exc:  # a full disk must not stop the watch
                    _cache_log.warning("cache-save", "cannot save fail-static snapshot",
                                       service=snapshot.service, error=str(exc))
            self._offer(snapshot)

        while not self._closed:
            if first and cache is not None:
                timer = asyncio.get_running_loop().call_later(
                    self._initial_wait, self._serve_cache, cache)
            try:
                await self._client._follow(service=self._service, prefix=self._prefix,
                                           emit=on_snapshot)
                raise RegistryUnavailable("watch stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any backend failure means reconnect
                if timer is not None:
                    timer.cancel()
                    timer = None
                if self._closed:
                    return
                if self.connected or first:
                    log.warning("registry watch lost; reconnecting",
                                extra={"service": self._service, "prefix": self._prefix,
                                       "error": f"{type(exc).__name__}: {exc}"})
                self.connected = False
                first = False
                self.reconnects += 1
                if cache is not None:
                    self._serve_cache(cache)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def aclose(self) -> None:
        """Stop watching; safe to call twice."""
        self._closed = True
        self._ready.set()
        self._client._watches.discard(self)
        cache, service = self._client.cache, self._service
        if cache is not None and service is not None and not any(
                watch._service == service for watch in self._client._watches):
            cache.forget(service)
        task, self._task = self._task, None
        await cancel_and_wait(task)


class Registration:
    """A node kept registered by heartbeats every ``ttl/3`` until :meth:`stop`.

    If the registry forgot the node (it expired during an outage, or the embedded registry
    restarted) the next heartbeat registers it again. Writes of the record (that
    re-registration, :meth:`update`, the final deregistration) take turns, so each one
    starts from the handle (etcd: lease) and record the previous one left.
    """

    def __init__(self, client: BaseClient, service: str, node: Node, ttl_seconds: float,
                 handle: Any) -> None:
        self.client = client
        self.service = service
        self.node = node
        self.ttl_seconds = ttl_seconds
        self._handle = handle
        self._writing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.last_heartbeat_at = time.monotonic()

    def start(self) -> None:
        """Start heartbeating."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        interval = self.ttl_seconds / 3.0
        while True:
            await asyncio.sleep(interval)
            try:
                await self._beat_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep trying; the TTL decides
                log.warning("heartbeat failed", extra={"service": self.service,
                                                       "node": self.node.id, "error": str(exc)})

    async def _beat_once(self) -> None:
        handle = self._handle
        try:
            await self.client._heartbeat(self.service, self.node, handle)
        except NotFound:
            async with self._writing:
                # An update that ran meanwhile may have registered again already (on etcd
                # with a new lease); re-registering on top would attach the node to a lease
                # nobody refreshes, or write back the record the update replaced.
                if self._handle == handle:
                    log.info("node unknown to the registry; registering again",
                             extra={"service": self.service, "node": self.node.id})
                    self._handle = await self.client._register_once(
                        self.service, self.node, self.ttl_seconds)
        self.last_heartbeat_at = time.monotonic()

    async def update(self, *, status: str | None = None, weight: int | None = None,
                     labels: Mapping[str, str] | None = None) -> Node:
        """Change the registered record (e.g. ``status="draining"`` before a shutdown)."""
        changes: dict[str, Any] = {}
        if status is not None:
            changes["status"] = status
        if weight is not None:
            changes["weight"] = weight
        if labels is not None:
            changes["labels"] = dict(labels)
        async with self._writing:
            node = replace(self.node, **changes)  # validates
            self._handle = await self.client._register_once(self.service, node,
                                                            self.ttl_seconds, self._handle)
            self.node = node
        return node

    async def stop(self, deregister: bool = True) -> None:
        """Stop heartbeating and (by default) deregister; safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
            if deregister:
                async with self._writing:  # after an update in flight, not before it
                    try:
                        await self.client._deregister_handle(self.service, self.node.id,
                                                             self._handle)
                    except (RegistryUnavailable, NotFound) as exc:
                        log.warning("deregister failed; the TTL will remove the node",
                                    extra={"node": self.node.id, "error": str(exc)})
        self.client._registrations.discard(self)


class BaseClient:
    """Shared parts: watches, fail static, registrations and command shortcuts.

    Backends implement ``_follow``, ``_register_once``, ``_heartbeat``,
    ``_deregister_handle``, ``_fetch_snapshot``, ``services``, ``history`` and ``command``.
    """

    def __init__(self, *, cache_dir: Path | str | None = None,
                 metrics: CollectorRegistry | None = None) -> None:
        self.cache = FailStaticCache(cache_dir, metrics) if cache_dir is not None else None
        self._watches: set[Watch] = set()
        self._registrations: set[Registration] = set()

    async def __aenter__(self) -> BaseClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open connections."""

    async def stop(self) -> None:
        """Stop registrations (deregistering), close watches; safe to call twice."""
        for registration in list(self._registrations):
            await registration.stop()
        for watch in list(self._watches):
            await watch.aclose()

    # --- backend hooks -------------------------------------------------------------------
    async def _follow(self, *, service: str | None, prefix: str | None,
                      emit: Callable[[Snapshot], None]) -> None:
        """Call ``emit`` with the current snapshot(s), then after every change, until the
        connection fails (raise) or the task is cancelled."""
        raise NotImplementedError

    async def _register_once(self, service: str, node: Node, ttl_seconds: float,
                             handle: Any = None) -> Any:
        """Write the node record; ``handle`` is the previous registration's, if any."""
        raise NotImplementedError

    async def _heartbeat(self, service: str, node: Node, handle: Any) -> None:
        raise NotImplementedError

    async def _deregister_handle(self, service: str, node_id: str, handle: Any) -> None:
        raise NotImplementedError

    async def _fetch_snapshot(self, service: str) -> Snapshot:
        raise NotImplementedError

    async def command(self, service: str, kind: str, args: Mapping[str, Any], *,
                      who: str, why: str = "") -> Command:
        raise NotImplementedError

    async def services(self) -> list[str]:
        raise NotImplementedError

    async def history(self, service: str) -> list[Command]:
        raise NotImplementedError

    # --- shared behaviour ----------------------------------------------------------------
    async def register(self, service: str, node: Node, ttl_seconds: float = 10.0
                       ) -> Registration:
        """Register ``node`` and keep it registered by heartbeats until stopped."""
        check_name(service, "service")
        if not isinstance(node, Node):
            raise TypeError("node: expected a registry.model.Node")
        ttl = check_ttl(ttl_seconds)
        if not node.registered_at:
            node = replace(node, registered_at=time.time())
        handle = await self._register_once(service, node, ttl)
        registration = Registration(self, service, node, ttl, handle)
        self._registrations.add(registration)
        registration.start()
        return registration

    async def deregister(self, service: str, node_id: str) -> None:
        """Remove a node now (stops its heartbeats if this client registered it)."""
        check_name(service, "service")
        check_name(node_id, "node")
        for registration in list(self._registrations):
            if registration.service == service and registration.node.id == node_id:
                await registration.stop()
                return
        await self._deregister_handle(service, node_id, None)

    async def snapshot(self, service: str) -> Snapshot:
        """The current snapshot; the fail-static copy if the registry is unreachable."""
        check_name(service, "service")
        try:
            snapshot = await self._fetch_snapshot(service)
        except RegistryUnavailable:
            cached = self.cache.load(service) if self.cache is not None else None
            if cached is None:
                raise
            self.cache.mark_lost(service, serving_cache=True)  # type: ignore[union-attr]
            return cached
        if self.cache is not None:
            try:
                self.cache.save(snapshot)
            except OSError as exc:
                _cache_log.warning("cache-save", "cannot save fail-static snapshot",
                                   service=service, error=str(exc))
        return snapshot

    def watch(self, service: str, *, initial_wait_seconds: float = 1.0) -> Watch:
        """Snapshots of ``service``: the current one first, then after every change."""
        return Watch(self, service=check_name(service, "service"),
                     initial_wait_seconds=initial_wait_seconds)

    def watch_prefix(self, prefix: str, *, initial_wait_seconds: float = 1.0) -> Watch:
        """Snapshots of every service whose name starts with ``prefix`` ("" for all)."""
        return Watch(self, prefix=check_prefix(prefix), initial_wait_seconds=initial_wait_seconds)

    async def degrade(self, service: str, *, reason: str, who: str,
                      fallback_status: int = 503) -> Command:
        """Degrade a service: callers answer ``fallback_status`` instead of calling it."""
        return await self.command(service, "degrade",
                                  {"reason": reason, "fallback_status": fallback_status},
                                  who=who, why=reason)

    async def restore(self, service: str, *, who: str, why: str = "") -> Command:
        """Lift a degrade."""
        return await self.command(service, "restore", {}, who=who, why=why)

    async def set_idc_weights(self, service: str, weights: Mapping[str, int | None], *,
                              who: str, why: str = "") -> Command:
        """Set traffic weights per IDC (None removes one)."""
        return await self.command(service, "idc_weights", {"weights": dict(weights)},
                                  who=who, why=why)

    async def set_node_weights(self, service: str, weights: Mapping[str, int | None], *,
                               who: str, why: str = "") -> Command:
        """Override weights of single nodes (None removes an override)."""
        return await self.command(service, "node_weights", {"weights": dict(weights)},
                                  who=who, why=why)

    async def set_switches(self, service: str, switches: Mapping[str, bool | None], *,
                           who: str, why: str = "") -> Command:
        """Turn named switches on or off (None removes one)."""
        return await self.command(service, "switches", {"switches": dict(switches)},
                                  who=who, why=why)

    async def revert(self, service: str, command_id: int, *, who: str, why: str = ""
                     ) -> Command:
        """Remove a command from effect: the values it replaced come back."""
        return await self.command(service, "revert", {"command": command_id}, who=who, why=why)


def open_registry(url: str, *, token: str | None = None, cache_dir: Path | str | None = None,
                  metrics: CollectorRegistry | None = None) -> BaseClient:
    """A client for ``http://HOST:PORT`` (embedded) or ``etcd://HOST:PORT[,...]`` (etcd v3)."""
    if not isinstance(url, str):
        raise ValueError("registry URL: expected a string")
    if url.startswith("http://"):
        from registry.http_backend import HttpRegistryClient

        return HttpRegistryClient(url, token=token, cache_dir=cache_dir, metrics=metrics)
    if url.startswith("etcd://"):
        from registry.etcd_backend import EtcdRegistryClient

        return EtcdRegistryClient(url, cache_dir=cache_dir, metrics=metrics)
    raise ValueError(f"registry URL {url!r} must start with http:// or etcd://")
