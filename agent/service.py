"""``tidemark agent`` as a service: the proxy app, registry watches, registration, emission.

Client side (no ``upstream``): a caller sends ``http://AGENT/{service}/path`` (or sets the
Host header to the service name); the agent picks a node of that service from the registry
and forwards. Server side (``upstream`` set): the agent registers itself for ``service``
with heartbeats and forwards every inbound call to the upstream. Both measure every call
and report it to the collector. ``/healthz``, ``/metrics`` and ``/runtime`` are the agent's
own; every other path is proxied.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import math
import re
import time
import urllib.parse
from collections.abc import Awaitable
from typing import Any, Final

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from agent.balancer import Endpoint
from agent.call import Call, Reply, error_reply, json_reply
from agent.config import AgentConfig, join_host_port
from agent.directory import ServiceDirectory, ServiceView, TooManyServices
from agent.filters import (
    AgentMetrics,
    DegradeState,
    FilterContext,
    active_filters,
    build_chain,
    run_chain,
)
from agent.forwarder import HOP_BY_HOP, Forwarder
from agent.http_server import HttpServer, InboundRequest
from agent.naming import MetricNaming
from agent.native import data_path
from agent.recorder import Recorder
from agent.reporter import Reporter, ReporterConfig
from registry.client import BaseClient, Registration, open_registry
from registry.model import NAME_PATTERN, Node
from tidemark.daemon import cancel_and_wait
from tidemark.httpkit import daemon_metrics, health

__all__ = ["AgentService", "RESERVED_PATHS", "OTHER_CALLER"]

log = logging.getLogger("tidemark.agent")

RESERVED_PATHS: Final = ("/healthz", "/metrics", "/runtime")
_CALLER_HEADER: Final = "X-Tidemark-Caller"
_DEGRADE_SWITCHES: Final = ("degraded", "degrade")
_CALLER_LOWER: Final = _CALLER_HEADER.lower()
_JSON_UTF8: Final = {"Content-Type": "application/json; charset=utf-8"}  # as aiohttp answered
_DROP_HEADERS: Final = HOP_BY_HOP | {_CALLER_LOWER}
#: Client side: calls naming a caller beyond ``max_callers`` are reported under this one.
OTHER_CALLER: Final = "_other"


class AgentService:
    """The sidecar; ``await start()``, ``await stop()`` (idempotent, flushes metrics)."""

    def __init__(self, config: AgentConfig, *, metrics: CollectorRegistry | None = None,
                 registry_client: BaseClient | None = None) -> None:
        self.config = config
        self.metrics = metrics or daemon_metrics()
        self._client = registry_client
        self._own_client = registry_client is None
        self.port: int | None = None
        self._port_text = ""  # the listening port, as a Host header carries it
        self._ready = False
        self._stopped = False
        self._server: HttpServer | None = None
        self._registration: Registration | None = None
        self._register_task: asyncio.Task[None] | None = None
        upstream_host_port = None
        if config.upstream is not None:
            parsed = urllib.parse.urlsplit(config.upstream)
            if not parsed.hostname or parsed.port is None:
                raise ValueError(f"upstream: {config.upstream!r} must be http://HOST:PORT")
            upstream_host_port = f"{parsed.hostname}:{parsed.port}"
        self.node_name = upstream_host_port
        self.recorder = Recorder(config.interval_seconds, default_node=upstream_host_port)
        host, port = config.graphite_host_port
        self.reporter = Reporter(
            self.recorder,
            ReporterConfig(host=host, port=port, protocol=config.graphite_protocol,
                           buffer_seconds=config.buffer_seconds),
            naming=MetricNaming(prefix=config.prefix, idc=config.idc), registry=self.metrics)
        self.forwarder = Forwarder(timeout_seconds=config.request_timeout_seconds,
                                   connect_timeout_seconds=config.connect_timeout_seconds,
                                   max_response_bytes=config.max_response_bytes,
                                   max_connections=config.max_connections)
        self.agent_metrics = AgentMetrics(self.metrics)
        self._upstream_endpoint = (
            (Endpoint(self._node_id(), upstream_host_port, config.idc, 1.0),)
            if upstream_host_port else ())
        self.directory: ServiceDirectory | None = None
        self._views: dict[str, ServiceView] = {}  # the directory's, read on every call
        self._default_caller = config.caller or config.service
        # read on every call: native attributes, not the config's (an interpreted
        # dataclass, whose is_server_side is a property)
        self._server_side = config.is_server_side
        self._service = config.service
        if not NAME_PATTERN.fullmatch(self._default_caller):
            raise ValueError(f"caller: {self._default_caller!r} must match [A-Za-z0-9_.-]+")
        # per service: the view the degrade state was computed from, and the state
        self._degrade_cache: dict[str, tuple[ServiceView, DegradeState]] = {}
        # Bounded per-name state: every housekeeping round (``_housekeeping_seconds``)
        # numbers the calls made in it; services and callers not named for
        # ``service_idle_seconds`` are forgotten (see ``_housekeep_once``).
        self._round = 0
        self._service_round: dict[str, int] = {}  # service -> last round it was called in
        self._caller_round: dict[str, int] = {}  # X-Tidemark-Caller names seen, client side
        self._housekeeping_seconds = min(60.0, config.service_idle_seconds / 4)
        self._idle_rounds = max(1, math.ceil(config.service_idle_seconds
                                             / self._housekeeping_seconds))
        self._housekeeping_task: asyncio.Task[None] | None = None
        self._filter_ctx = FilterContext(
            config=config, recorder=self.recorder, metrics=self.agent_metrics,
            endpoints_for=self._endpoints_for, degrade_state=self._degrade_state,
            node_name=upstream_host_port)
        self.filters = build_chain(config.filters, self._filter_ctx)
        self._active_filters = active_filters(self.filters)  # what the chain runs
        self._chain = run_chain(self._active_filters, self.forwarder)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the registry, start emission, listen, then (server side) register."""
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        if self._client is None:
            self._client = open_registry(config.registry, token=config.registry_token,
                                         cache_dir=config.data_dir / "registry-cache",
                                         metrics=self.metrics)
        await self._client.start()
        self.directory = ServiceDirectory(
            self._client, max_services=config.max_services,
            first_snapshot_wait_seconds=config.first_snapshot_wait_seconds,
            on_restart=lambda service: self.agent_metrics.watch_restarts.labels(service).inc())
        self._views = self.directory.views
        self.reporter.start()
        await self.forwarder.start()
        self._server = HttpServer(
            self._handle, max_header_bytes=config.max_header_bytes,
            max_body_bytes=config.max_body_bytes,
            idle_timeout_seconds=config.idle_timeout_seconds,
            on_rejected=lambda reason: self.agent_metrics.bad_requests.labels(reason).inc(),
            set_apart=_DROP_HEADERS, max_connections=config.max_inbound_connections)
        host, port = config.listen_host_port
        await self._server.start(host, port)
        self.port = self._server.port
        self._port_text = str(self.port)
        if config.is_server_side:
            self.directory.watch(config.service)
            # Registration retries in the background: a registry that is down must not
            # keep the agent from serving.
            self._register_task = asyncio.get_running_loop().create_task(self._register())
        self._housekeeping_task = asyncio.get_running_loop().create_task(self._housekeep())
        self._ready = True
        log.info("agent listening", extra={"service": config.service, "port": self.port,
                                           "role": "server" if config.is_server_side
                                           else "client", "data_path": data_path()})

    async def _register(self) -> None:
        assert self._client is not None
        address = self.config.advertise or join_host_port(self.config.listen_host_port[0],
                                                          self.port or 0)
        node = Node(id=self._node_id(), address=address, idc=self.config.idc)
        while True:
            try:
                self._registration = await self._client.register(
                    self.config.service, node, ttl_seconds=self.config.heartbeat_ttl_seconds)
                return
            except Exception as exc:  # noqa: BLE001 - keep serving; retry in the background
                log.warning("cannot register yet; retrying", extra={"error": str(exc)})
            await asyncio.sleep(1.0)  # outside the handler: see ServiceDirectory._follow

    async def stop(self) -> None:
        """Deregister, stop listening (in-flight calls finish), close watches, flush."""
        if self._stopped:
            return
        self._stopped = True
        self._ready = False
        task, self._register_task = self._register_task, None
        housekeeping, self._housekeeping_task = self._housekeeping_task, None
        await cancel_and_wait(task, housekeeping)
        if self._registration is not None:
            await self._registration.stop()
            # Callers' agents still route here until they hear that the node left: a call
            # sent meanwhile on a kept-alive connection must find it open, not closed.
            await asyncio.sleep(self.config.deregister_grace_seconds)
        server, self._server = self._server, None
        if server is not None:
            await server.stop(self.config.shutdown_timeout_seconds)
        if self.directory is not None:
            await self.directory.stop()
        if self._client is not None and self._own_client:
            await self._client.stop()
        await self.forwarder.stop()
        await asyncio.to_thread(self.reporter.stop)

    # -- bounded state -------------------------------------------------------------------

    async def _housekeep(self) -> None:
        """Every ``_housekeeping_seconds``: forget what nobody used (``_housekeep_once``)."""
        while True:
            await asyncio.sleep(self._housekeeping_seconds)
            try:
                await self._housekeep_once()
            except Exception:  # a bug here must not stop the next rounds
                log.exception("housekeeping failed")

    async def _housekeep_once(self) -> None:
        """Close one round: unwatch services not called for ``service_idle_seconds`` (the
        server side's own service stays), forget callers not seen as long, and drop the
        circuit breakers of nodes no longer in their service's snapshot."""
        ended = self._round
        self._round = ended + 1
        directory = self.directory
        watched = set(directory.services()) if directory is not None else set()
        rounds = self._service_round
        for service in [s for s in rounds if s not in watched]:
            del rounds[service]
        for service in watched:
            last = rounds.setdefault(service, ended)
            if ended - last >= self._idle_rounds and not self._pinned(service):
                await self._forget_service(service, "service_idle")
        callers = self._caller_round
        for caller in [c for c, last in callers.items() if ended - last >= self._idle_rounds]:
            del callers[caller]
            self.agent_metrics.expired.labels("caller").inc()
        self._forget_breakers()

    def _pinned(self, service: str) -> bool:
        return self._server_side and service == self._service

    async def _evict_one_service(self) -> bool:
        """Make room for a new service: unwatch the least recently called one that was not
        called in this round; False when every watched service was."""
        directory = self.directory
        if directory is None:
            return False
        candidates = [(self._service_round.get(s, self._round), s)
                      for s in directory.services() if not self._pinned(s)]
        idle = [c for c in candidates if c[0] < self._round]
        if not idle:
            return False
        await self._forget_service(min(idle)[1], "service_evicted")
        return True

    async def _forget_service(self, service: str, reason: str) -> None:
        """Unwatch ``service`` and drop everything the agent keeps for it."""
        if self.directory is not None:
            await self.directory.unwatch(service)
        self._service_round.pop(service, None)
        self._degrade_cache.pop(service, None)
        breakers = self._filter_ctx.breakers
        for key in [k for k in breakers if k[0] == service]:
            del breakers[key]
        self.agent_metrics.forget(service)
        self.agent_metrics.expired.labels(reason).inc()
        log.info("service no longer watched", extra={"service": service, "reason": reason})

    def _forget_breakers(self) -> None:
        """Drop the breakers of nodes that left their service's snapshot (nodes churn)."""
        breakers = self._filter_ctx.breakers
        known: dict[str, set[str]] = {}
        for key in list(breakers):
            service, node_id = key
            ids = known.get(service)
            if ids is None:
                ids = known[service] = self._node_ids(service)
            if node_id not in ids:
                del breakers[key]
                self.agent_metrics.expired.labels("breaker").inc()

    def _node_ids(self, service: str) -> set[str]:
        if self._server_side:
            return {e.id for e in self._upstream_endpoint}
        view = self._views.get(service)
        return {n.id for n in view.snapshot.nodes} if view is not None else set()

    # -- routing state -------------------------------------------------------------------

    def _node_id(self) -> str:
        if self.config.node_id:
            return self.config.node_id
        return re.sub(r"[^A-Za-z0-9_.-]", "-", self.node_name or "node")

    def _endpoints_for(self, service: str) -> tuple[Endpoint, ...]:
        if self._server_side:
            return self._upstream_endpoint
        view = self._views.get(service)
        return view.endpoints if view is not None else ()

    def _degrade_state(self, service: str) -> DegradeState | None:
        view = self._views.get(service)
        if view is None:
            return None
        cached = self._degrade_cache.get(service)
        if cached is not None and cached[0] is view:
            return cached[1]
        state = self._degrade_state_of(view)
        if len(self._degrade_cache) > 4 * self.config.max_services:
            self._degrade_cache.clear()
        self._degrade_cache[service] = (view, state)
        return state

    def _degrade_state_of(self, view: ServiceView) -> DegradeState:
        """What the switcher filter obeys for one registry snapshot of a service."""
        config = view.snapshot.config
        switches = tuple(sorted(config.switches.items()))
        switched = any(config.switches.get(name) for name in _DEGRADE_SWITCHES)
        if config.degraded is not None:
            status = config.degraded.fallback_status
            if status == 503:
                status = self.config.degraded_status
            return DegradeState(True, config.degraded.reason, status, switches)
        if switched:
            return DegradeState(True, "switch", self.config.degraded_status, switches)
        return DegradeState(False, switches=switches)

    # -- handlers ------------------------------------------------------------------------

    def _route(self, request: InboundRequest) -> tuple[str, str]:
        """(service, path and query to send on) of an inbound request."""
        raw = request.raw_path
        if not raw.startswith("/"):
            raise ValueError("request target must be an absolute path")
        if self._server_side:
            return self._service, raw
        host_service = _service_in_host(request.apart.get("host") or "", self._port_text)
        if host_service:
            return host_service, raw
        path, sep, query = raw.partition("?")
        parts = path.split("/", 2)
        service = _service_in_path(parts[1] if len(parts) > 1 else "")
        rest = "/" + (parts[2] if len(parts) > 2 else "")
        return service, rest + (sep + query if sep else "")

    def _handle(self, request: InboundRequest) -> Awaitable[Reply]:
        """The agent's own endpoints, else proxy the call (the proxy's coroutine is handed
        back as it is, not awaited in one more)."""
        path = request.raw_path.partition("?")[0]
        if path in RESERVED_PATHS and request.method in ("GET", "HEAD"):
            return self._own_endpoint(path)
        return self._proxy(request)

    async def _own_endpoint(self, path: str) -> Reply:
        if path == "/healthz":
            return json_reply(*health(self._ready), **_JSON_UTF8)
        if path == "/metrics":
            return Reply(200, {"Content-Type": CONTENT_TYPE_LATEST},
                         generate_latest(self.metrics))
        return json_reply(200, await self._runtime(), **_JSON_UTF8)

    async def _proxy(self, request: InboundRequest) -> Reply:
        try:
            service, path_qs = self._route(request)
        except ValueError as exc:
            self.agent_metrics.bad_requests.labels("route").inc()
            return error_reply(400, str(exc))
        headers = request.headers  # without hop-by-hop ones (set apart by the server)
        caller = request.apart.get(_CALLER_LOWER)
        if not caller:
            caller = self._default_caller
        elif not NAME_PATTERN.fullmatch(caller):
            self.agent_metrics.bad_requests.labels("caller").inc()
            return error_reply(400, f"bad {_CALLER_HEADER} header")
        elif not self._server_side:  # client side: callers are reported, bounded
            callers = self._caller_round
            if caller in callers or len(callers) < self.config.max_callers:
                callers[caller] = self._round
            else:  # metric paths per caller are bounded: the call goes, reported apart
                self.agent_metrics.other_caller.inc()
                caller = OTHER_CALLER
        directory = self.directory
        if (not self._server_side and directory is not None
                and service not in self._views):  # watched already: no coroutine
            refused = await self._watch(directory, service)
            if refused is not None:
                return refused
        self._service_round[service] = self._round
        call = Call(service=service, method=request.method, path_qs=path_qs, headers=headers,
                    body=request.body, caller=caller)
        try:
            return await self._chain(call)
        except Exception:  # a filter bug must cost one call, never the agent
            self.agent_metrics.internal_errors.inc()
            log.exception("call failed inside the agent", extra={"service": service})
            return error_reply(500, "internal error in the agent")

    async def _watch(self, directory: ServiceDirectory, service: str) -> Reply | None:
        """Start watching ``service`` (unwatching the least recently called one when
        ``max_services`` are watched); a 503 when every watched service is in use."""
        message = ""
        for attempt in range(2):
            try:
                await directory.view(service)
                return None
            except TooManyServices as too_many:
                message = str(too_many)
            # Outside the handler: compiled, no await while an exception propagates.
            if attempt or not await self._evict_one_service():
                break
        self.agent_metrics.bad_requests.labels("too_many_services").inc()
        return error_reply(503, f"{message}, each called within the last "
                           f"{self._housekeeping_seconds:g} s")

    async def _runtime(self) -> dict[str, Any]:
        directory = self.directory
        services: dict[str, Any] = {}
        names = directory.services() if directory else []
        for name in names:
            view = directory.current(name) if directory else None
            age = self._client.cache.age_seconds(name) if self._client and self._client.cache \
                else None
            if view is None:
                services[name] = {"snapshot": None, "staleness_seconds": age}
                continue
            snap = view.snapshot
            effective = {e.id: e.weight for e in view.endpoints}
            services[name] = {
                "revision": snap.revision, "from_cache": snap.from_cache,
                "received_at": view.received_at, "staleness_seconds": age,
                "degraded": snap.config.degraded.to_dict() if snap.config.degraded else None,
                "switches": dict(snap.config.switches),
                "idc_weights": dict(snap.config.idc_weights),
                "node_weights": dict(snap.config.node_weights),
                "nodes": [{**n.to_dict(), "effective_weight": effective.get(n.id),
                           "active": self._filter_ctx.active_per_node.get(n.id, 0),
                           "breaker": self._breaker_state(name, n.id)}
                          for n in snap.nodes],
            }
        body = {
            "role": "server" if self.config.is_server_side else "client",
            "service": self.config.service, "idc": self.config.idc, "port": self.port,
            "upstream": self.config.upstream,
            "registered": None if self._registration is None else {
                "node": self._registration.node.to_dict(),
                "heartbeat_age_seconds": round(
                    time.monotonic() - self._registration.last_heartbeat_at, 3)},
            "filters": [f.name for f in self.filters],
            "active_filters": [f.name for f in self._active_filters],
            "load_balancer": self.config.load_balancer,
            "data_path": data_path(),
            "services": services,
            "last_changes": list(directory.changes)[-20:] if directory else [],
            "last_commands": await self._last_commands(names),
            "reporter": {"buffered_points": self.reporter.buffered_points,
                         "sent_points": self.reporter.sent_points,
                         "dropped_points": self.reporter.dropped_points},
            "upstream_connections": self.forwarder.open_connections,
            # inbound connections, and what callers pipelining ahead make the agent hold
            "inbound": self._server.inbound_state() if self._server is not None else None,
            # the sizes of the agent's per-name state (each bounded, docs/agent.md)
            "bounded_state": {"services": len(names), "callers": len(self._caller_round),
                              "breakers": len(self._filter_ctx.breakers),
                              "upstream_pools": self.forwarder.pooled_addresses},
        }
        return body

    def _breaker_state(self, service: str, node_id: str) -> str | None:
        breaker = self._filter_ctx.breakers.get((service, node_id))
        return breaker.state if breaker is not None else None

    async def _last_commands(self, services: list[str]) -> dict[str, Any]:
        """The last commands of each service from the registry, fetched concurrently
        (at most 1 s in all, so /runtime answers even when the registry hangs)."""
        client = self._client
        if client is None:
            return {}

        async def one(name: str) -> Any:
            try:
                history = await asyncio.wait_for(client.history(name), 1.0)
                return [c.to_dict() for c in history[-5:]]
            except Exception as exc:  # noqa: BLE001 - /runtime must answer anyway
                return {"error": f"{type(exc).__name__}: {exc}"[:200]}

        names = services[:20]
        results = await asyncio.gather(*[one(name) for name in names])
        return dict(zip(names, results, strict=True))


@functools.lru_cache(maxsize=4096)
def _service_in_host(host_header: str, own_port: str) -> str:
    """The service a Host header names, or "" when it names the agent itself: an address,
    localhost, or any name with the agent's own port (a caller reaching the agent by the
    host's name, ``http://node-7.internal:9981/orders/list``, routes by the path)."""
    host, sep, port = host_header.rpartition(":")
    if not sep or "]" in port:  # no port (an IPv6 address in brackets has colons)
        host, port = host_header, ""
    host = host.strip("[]")
    if port == own_port or not host or host == "localhost" or _is_address(host):
        return ""
    return host if NAME_PATTERN.fullmatch(host) else ""


@functools.lru_cache(maxsize=4096)
def _service_in_path(segment: str) -> str:
    """The service named by the first path segment; ValueError when there is none or it
    is not a valid name (results are cached: callers use few services)."""
    service = urllib.parse.unquote(segment) if "%" in segment else segment
    if not service:
        raise ValueError("no service: send /{service}/path or set Host to the service")
    if not NAME_PATTERN.fullmatch(service) or service in (".", ".."):
        raise ValueError(f"bad service name {service[:60]!r}: use [A-Za-z0-9_.-]")
    return service


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

