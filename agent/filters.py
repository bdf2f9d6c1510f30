"""The filter chain: built-in filters, user filters by import path, and running the chain.

Default order (``AgentConfig.filters``): ``access_log``, ``metrics``, ``switcher``,
``active_limit``, ``failover``, ``circuit_breaker``. Filters before ``failover`` see the
whole call once; ``failover`` picks a node for each attempt and runs the rest of the chain
per attempt, so node-level filters (``circuit_breaker``) come after it. A user filter is
named ``package.module:ClassName``; its constructor takes the :class:`FilterContext`.

Most filters only act before and after the rest of the chain and never wait themselves:
they derive from :class:`HookFilter` and write ``before``/``after``/``failed`` hooks. The
chain runs each run of adjacent hook filters in one coroutine, not one per filter, with the
same outcome as nesting their ``handle`` calls.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from multidict import CIMultiDict
from mypy_extensions import mypyc_attr
from prometheus_client import CollectorRegistry, Counter

from agent.balancer import Balancer, Endpoint, make_balancer
from agent.breaker import CircuitBreaker
from agent.call import (
    IDEMPOTENT_METHODS,
    NOT_SENT_HEADER,
    Call,
    Filter,
    Next,
    NodeUnavailable,
    Reply,
    UpstreamError,
    error_reply,
)
from agent.config import BUILTIN_FILTERS, AgentConfig
from agent.recorder import ERROR_CLASSES, Recorder
from agent.sketch import LogHistogram

__all__ = ["FilterContext", "AgentMetrics", "HookFilter", "build_chain", "run_chain",
           "active_filters", "AccessLogFilter", "MetricsFilter", "SwitcherFilter",
           "ActiveLimitFilter", "FailoverFilter", "CircuitBreakerFilter", "DegradeState"]

access_log = logging.getLogger("tidemark.agent.access")


class AgentMetrics:
    """The agent's own Prometheus metrics (on its /metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.degraded = Counter("tidemark_agent_degraded_total",
                                "Calls answered with the fallback of a degraded service",
                                ["service"], registry=registry)
        self.rejected = Counter("tidemark_agent_rejected_total",
                                "Calls rejected with 429 by the active limit", ["service"],
                                registry=registry)
        self.backups = Counter("tidemark_agent_backup_requests_total",
                               "Backup (hedged) requests sent", ["service"], registry=registry)
        self.failovers = Counter("tidemark_agent_failovers_total",
                                 "Attempts moved to another node after a failure", ["service"],
                                 registry=registry)
        self.upstream_errors = Counter("tidemark_agent_upstream_errors_total",
                                       "Failed attempts by error class", ["service", "error"],
                                       registry=registry)
        self.breaker_opened = Counter("tidemark_agent_breaker_opened_total",
                                      "Times a node's circuit breaker opened", ["service"],
                                      registry=registry)
        self.internal_errors = Counter("tidemark_agent_internal_errors_total",
                                       "Calls that failed inside the agent (a bug)",
                                       registry=registry)
        self.bad_requests = Counter("tidemark_agent_bad_requests_total",
                                    "Requests refused as malformed or too large", ["reason"],
                                    registry=registry)
        self.expired = Counter("tidemark_agent_expired_total",
                               "Per-service, per-node and per-caller state dropped to bound "
                               "memory, by what", ["what"], registry=registry)
        self.other_caller = Counter("tidemark_agent_other_caller_calls_total",
                                    "Calls recorded under caller _other: max_callers callers "
                                    "were already reported", registry=registry)
        self.watch_restarts = Counter("tidemark_agent_watch_restarts_total",
                                      "Registry watches of a service that ended by "
                                      "themselves and were started again", ["service"],
                                      registry=registry)
        self._per_service = (self.degraded, self.rejected, self.backups, self.failovers,
                             self.breaker_opened, self.watch_restarts)

    def forget(self, service: str) -> None:
        """Drop every series labelled with ``service`` (it is no longer routed to)."""
        for counter in self._per_service:
            _remove(counter, service)
        for error_class in ERROR_CLASSES:
            _remove(self.upstream_errors, service, error_class)


def _remove(counter: Counter, *labels: str) -> None:
    try:
        counter.remove(*labels)
    except KeyError:  # never had that series
        pass


@dataclass(frozen=True)
class DegradeState:
    """What the switcher needs to know about a service right now."""

    degraded: bool
    reason: str = ""
    fallback_status: int = 503
    switches: tuple[tuple[str, bool], ...] = ()


@dataclass
class FilterContext:
    """Shared state the filters are built with."""

    config: AgentConfig
    recorder: Recorder
    metrics: AgentMetrics
    endpoints_for: Callable[[str], Sequence[Endpoint]]
    degrade_state: Callable[[str], DegradeState | None]
    node_name: str | None = None  # server side: the node the metrics are reported for
    active_per_node: dict[str, int] = field(default_factory=dict)
    breakers: dict[tuple[str, str], CircuitBreaker] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic


@mypyc_attr(allow_interpreted_subclasses=True)  # user filters may extend it
class HookFilter:
    """A filter that acts before and after the rest of the chain without waiting itself.

    ``before`` may answer at once (return a :class:`Reply`) or raise; otherwise the rest
    of the chain runs and then ``after`` sees its reply, or ``failed`` the exception it
    raised (``asyncio.CancelledError`` included). A filter that answered or raised in
    ``before`` gets neither. ``started`` is ``time.perf_counter()`` when the call reached
    the filter. :func:`run_chain` runs adjacent hook filters in one coroutine; ``handle``
    gives the same result for one filter on its own.
    """

    name = "hook"

    def before(self, call: Call) -> Reply | None:
        return None

    def after(self, call: Call, reply: Reply, started: float) -> None:
        return None

    def failed(self, call: Call, error: BaseException, started: float) -> None:
        return None

    def handle(self, call: Call, next_: Next) -> Awaitable[Reply]:
        return _Hooks((self,), next_)(call)


@mypyc_attr(allow_interpreted_subclasses=True)  # user filters may extend it
class AccessLogFilter(HookFilter):
    """One JSON log line per call: method, path, status, ms, node, error."""

    name = "access_log"

    def __init__(self, ctx: FilterContext) -> None:
        self._ctx = ctx

    @staticmethod
    def enabled() -> bool:
        """Whether access lines would be written at all (checked when the chain is built)."""
        return access_log.isEnabledFor(logging.INFO)

    def after(self, call: Call, reply: Reply, started: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        access_log.info("call", extra={
            "service": call.service, "method": call.method, "path": call.path_qs[:200],
            "status": reply.status, "ms": round((time.perf_counter() - call.started) * 1000, 3),
            "node": call.node.id if call.node else None, "error": call.error,
            "attempts": call.attempts, "backup": call.backup_sent})


@mypyc_attr(allow_interpreted_subclasses=True)  # user filters may extend it
class MetricsFilter(HookFilter):
    """Records every call that reached the service into the recorder."""

    name = "metrics"

    def __init__(self, ctx: FilterContext) -> None:
        self._ctx = ctx

    def after(self, call: Call, reply: Reply, started: float) -> None:
        if not call.skip_metrics:
            self._record(call, started, call.error or ("5xx" if reply.status >= 500 else None))

    def failed(self, call: Call, error: BaseException, started: float) -> None:
        if isinstance(error, Exception):  # not a cancel: the caller went away
            self._record(call, started, call.error or "5xx")

    def _record(self, call: Call, started: float, error: str | None) -> None:
        latency_ms = (time.perf_counter() - started) * 1000.0
        if self._ctx.node_name is not None:
            self._ctx.recorder.record(call.service, latency_ms, error, node=self._ctx.node_name)
        else:
            self._ctx.recorder.record(call.service, latency_ms, error,
                                      caller=call.caller or self._ctx.config.service)


@mypyc_attr(allow_interpreted_subclasses=True)  # user filters may extend it
class SwitcherFilter(HookFilter):
    """Degraded services are not called: the fallback answers at once.

    Named switches of the service are passed upstream in ``X-Tidemark-Switches``.
    """

    name = "switcher"

    def __init__(self, ctx: FilterContext) -> None:
        self._ctx = ctx

    def before(self, call: Call) -> Reply | None:
        state = self._ctx.degrade_state(call.service)
        if state is None:
            return None
        if state.degraded:
            call.skip_metrics = True
            self._ctx.metrics.degraded.labels(call.service).inc()
            config = self._ctx.config
            reason = "".join(c if c.isprintable() else " " for c in state.reason)[:200] or "yes"
            headers = {"X-Tidemark-Degraded": reason}
            if config.degraded_body:
                headers["Content-Type"] = config.degraded_content_type
                return Reply(state.fallback_status, headers, config.degraded_body.encode())
            return error_reply(state.fallback_status,
                               f"service {call.service} is degraded: {reason}", **headers)
        if state.switches:
            forwarded = CIMultiDict(call.headers)  # repeated headers (Cookie) stay repeated
            forwarded.popall("X-Tidemark-Switches", None)  # only the registry's word counts
            forwarded.add("X-Tidemark-Switches", ",".join(
                f"{name}={'on' if on else 'off'}" for name, on in state.switches))
            call.headers = forwarded
        return None


@mypyc_attr(allow_interpreted_subclasses=True)  # user filters may extend it
class ActiveLimitFilter(HookFilter):
    """At most ``max_active`` calls in flight; the excess gets 429 and is counted."""

    name = "active_limit"

    def __init__(self, ctx: FilterContext) -> None:
        self._ctx = ctx
        self.active = 0

    def before(self, call: Call) -> Reply | None:
        limit = self._ctx.config.max_active
        if self.active >= limit:
            call.skip_metrics = True
            self._ctx.metrics.rejected.labels(call.service).inc()
            return error_reply(429, f"too many concurrent calls (max_active={limit})")
        self.active += 1
        return None

    def after(self, call: Call, reply: Reply, started: float) -> None:
        self.active -= 1

    def failed(self, call: Call, error: BaseException, started: float) -> None:
        self.active -= 1


_NOT_SENT: Final = {NOT_SENT_HEADER: "1"}


class _Rolling:
    """Latencies and request/backup counts over the last two windows of a service."""

    def __init__(self, window_seconds: float, clock: Callable[[], float]) -> None:
        self._window = window_seconds
        self._clock = clock
        self._started = clock()
        self.current = LogHistogram()
        self.previous = LogHistogram()
        self.requests = [0, 0]  # previous, current
        self.backups = [0, 0]

    def roll(self) -> None:
        now = self._clock()
        if now - self._started >= self._window:
            stale = now - self._started >= 2 * self._window
            self.previous = LogHistogram() if stale else self.current
            self.current = LogHistogram()
            self.requests = [0 if stale else self.requests[1], 0]
            self.backups = [0 if stale else self.backups[1], 0]
            self._started = now

    def p90_ms(self, min_samples: int) -> float | None:
        merged = LogHistogram()
        merged.merge(self.previous)
        merged.merge(self.current)
        return merged.quantile(0.9) if merged.count >= min_samples else None

    def backup_allowed(self, ratio: float) -> bool:
        return sum(self.backups) + 1 <= ratio * sum(self.requests)


@mypyc_attr(allow_interpreted_subclasses=True)  # user filters may extend it
class FailoverFilter:
    """Picks a node per attempt; fails over on connection errors; sends backup requests.

    A call whose first attempt has not answered after the service's live p90 (over the
    last 10-20 s, once ``backup_min_samples`` calls were seen) gets one backup attempt at
    another node, if backups stay within ``backup_budget_ratio`` of the calls (15 %);
    the first good answer wins and the other attempt is cancelled. Only idempotent methods
    are retried after the request was sent, or hedged.
    """

    name = "failover"

    def __init__(self, ctx: FilterContext) -> None:
        self._ctx = ctx
        self._balancers: dict[str, Balancer] = {}
        self._rolling: dict[str, _Rolling] = {}

    def _balancer(self, service: str) -> Balancer:
        balancer = self._balancers.get(service)
        if balancer is None:
            if len(self._balancers) >= self._ctx.config.max_services:
                self._forget_unrouted()
            balancer = make_balancer(self._ctx.config.load_balancer, self._ctx.active_per_node)
            self._balancers[service] = balancer
        return balancer

    def rolling(self, service: str) -> _Rolling:
        rolling = self._rolling.get(service)
        if rolling is None:
            if len(self._rolling) >= self._ctx.config.max_services:
                self._forget_unrouted()
            rolling = _Rolling(10.0, self._ctx.clock)
            self._rolling[service] = rolling
        rolling.roll()
        return rolling

    def _forget_unrouted(self) -> None:
        """Drop the balancer and live latencies of services with no node now (services
        unwatched, or gone from the registry), so they stay within ``max_services``."""
        endpoints_for = self._ctx.endpoints_for
        self._balancers = {s: b for s, b in self._balancers.items() if endpoints_for(s)}
        self._rolling = {s: r for s, r in self._rolling.items() if endpoints_for(s)}

    async def handle(self, call: Call, next_: Next) -> Reply:
        config = self._ctx.config
        endpoints = self._ctx.endpoints_for(call.service)
        if not endpoints:
            call.error = "connection"
            return error_reply(503, f"no available node for service {call.service}")
        balancer = self._balancer(call.service)
        idempotent = call.method in IDEMPOTENT_METHODS
        # The live p90 and the backup budget only matter where a backup can go elsewhere.
        rolling = None
        if config.backup_requests and len(endpoints) > 1:
            rolling = self.rolling(call.service)
            rolling.requests[1] += 1
        tried: set[str] = set()
        last: UpstreamError | None = None
        sent = False  # whether an attempt may have reached a service
        single = len(endpoints) == 1
        for attempt in range(config.max_attempts):
            if single:  # the common server-side case: nothing to balance
                node = None if tried else endpoints[0]
            else:
                node = balancer.pick(endpoints, tried)
            if node is None:
                break
            tried.add(node.id)
            if attempt:
                self._ctx.metrics.failovers.labels(call.service).inc()
            try:
                if attempt == 0 and idempotent and rolling is not None:
                    reply, used = await self._hedged(call, node, endpoints, tried, next_,
                                                     rolling, balancer)
                else:  # one attempt at a time: the call itself goes, no copy, and no
                    # coroutine of its own
                    self._enter(call, node, copy=False)
                    try:
                        reply = await next_(call)
                    finally:
                        self._leave(node)
                    reply, used = self._checked(reply, node), call
            except UpstreamError as exc:
                last = exc
                sent = sent or exc.sent or call.backup_sent
                if not isinstance(exc, NodeUnavailable):
                    self._ctx.metrics.upstream_errors.labels(call.service,
                                                             exc.error_class).inc()
                if not exc.sent or (idempotent and exc.error_class == "connection"):
                    continue
                break
            call.node, call.error = used.node, used.error
            if rolling is not None and reply.status < 500:
                rolling.current.add((time.perf_counter() - call.started) * 1000.0)
            return reply
        call.error = last.error_class if last is not None else "connection"
        if last is None:
            return error_reply(503, f"no available node for service {call.service}")
        status = 504 if last.error_class == "timeout" else 502
        return error_reply(status, f"service {call.service}: {last}",
                           **({} if sent else _NOT_SENT))

    async def _attempt(self, call: Call, node: Endpoint, next_: Next) -> tuple[Reply, Call]:
        """One attempt that may run beside another (hedging): it gets its own copy."""
        sub = self._enter(call, node, copy=True)
        try:
            reply = await next_(sub)
        finally:
            self._leave(node)
        return self._checked(reply, node), sub

    def _enter(self, call: Call, node: Endpoint, *, copy: bool) -> Call:
        """Count an attempt at ``node`` in flight; the call to send (``copy``: a copy)."""
        active = self._ctx.active_per_node
        active[node.id] = active.get(node.id, 0) + 1
        call.attempts += 1
        if copy:
            return call.for_node(node)
        call.node, call.error = node, None
        return call

    def _leave(self, node: Endpoint) -> None:
        """An attempt at ``node`` is no longer in flight."""
        active = self._ctx.active_per_node
        left = active.get(node.id, 1) - 1
        if left > 0:
            active[node.id] = left
        else:
            active.pop(node.id, None)

    @staticmethod
    def _checked(reply: Reply, node: Endpoint) -> Reply:
        """``reply``, unless the node's agent could not reach its service: that is as safe
        to move on from as a connection refused here (its circuit breaker counted the 5xx)."""
        if reply.status >= 500 and NOT_SENT_HEADER in reply.headers:
            raise UpstreamError("timeout" if reply.status == 504 else "connection",
                                f"node {node.id} cannot reach its service ({reply.status})",
                                sent=False)
        return reply

    async def _hedged(self, call: Call, node: Endpoint, endpoints: Sequence[Endpoint],
                      tried: set[str], next_: Next, rolling: _Rolling, balancer: Balancer
                      ) -> tuple[Reply, Call]:
        delay_ms = rolling.p90_ms(self._ctx.config.backup_min_samples)
        if delay_ms is None:
            return await self._attempt(call, node, next_)
        first = asyncio.ensure_future(self._attempt(call, node, next_))
        try:
            done, _ = await asyncio.wait({first}, timeout=delay_ms / 1000.0)
        except asyncio.CancelledError:
            first.cancel()
            raise
        if done:
            return first.result()
        backup_node = balancer.pick(endpoints, tried)
        if backup_node is None or not rolling.backup_allowed(
                self._ctx.config.backup_budget_ratio):
            return await first
        tried.add(backup_node.id)
        rolling.backups[1] += 1
        call.backup_sent = True
        self._ctx.metrics.backups.labels(call.service).inc()
        second = asyncio.ensure_future(self._attempt(call, backup_node, next_))
        # The losing attempt is cancelled and waited for after the handler, not in a
        # ``finally``: see ServiceDirectory._follow (compiled, an await while an exception
        # propagates re-raises the wrong one).
        winner: tuple[Reply, Call] | None = None
        error: BaseException | None = None
        try:
            winner = await self._first_good({first, second})
        except BaseException as raised:  # noqa: BLE001 - raised again below, after the cleanup
            error = raised
        left = [task for task in (first, second) if not task.done()]
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
        if error is not None:
            raise error
        assert winner is not None
        return winner

    @staticmethod
    async def _first_good(pending: set[asyncio.Future[tuple[Reply, Call]]]
                          ) -> tuple[Reply, Call]:
        """The first attempt answering below 500, else the first answer, else the failure."""
        failure: BaseException | None = None
        fallback: tuple[Reply, Call] | None = None
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None:
                    failure = exc
                    continue
                result = task.result()
                if result[0].status < 500:
                    return result
                fallback = fallback or result
        if fallback is not None:
            return fallback
        assert failure is not None
        raise failure


@mypyc_attr(allow_interpreted_subclasses=True)  # user filters may extend it
class CircuitBreakerFilter(HookFilter):
    """Per node: refuses calls while the node's breaker is open (failover moves on)."""

    name = "circuit_breaker"

    def __init__(self, ctx: FilterContext) -> None:
        self._ctx = ctx

    def _breaker(self, service: str, node_id: str) -> CircuitBreaker:
        key = (service, node_id)
        breaker = self._ctx.breakers.get(key)
        if breaker is None:
            config = self._ctx.config
            breaker = CircuitBreaker(
                window_seconds=config.breaker_window_seconds,
                min_requests=config.breaker_min_requests,
                error_ratio=config.breaker_error_ratio,
                open_seconds=config.breaker_open_seconds, clock=self._ctx.clock)
            self._ctx.breakers[key] = breaker
        return breaker

    def before(self, call: Call) -> Reply | None:
        if call.node is not None and not self._breaker(call.service, call.node.id).allow():
            raise NodeUnavailable(f"circuit breaker open for node {call.node.id}")
        return None

    def after(self, call: Call, reply: Reply, started: float) -> None:
        if call.node is not None:
            self._count(call, reply.status < 500)

    def failed(self, call: Call, error: BaseException, started: float) -> None:
        if call.node is None:
            return
        if isinstance(error, UpstreamError):
            self._count(call, False)
        elif isinstance(error, asyncio.CancelledError):
            self._breaker(call.service, call.node.id).release()

    def _count(self, call: Call, ok: bool) -> None:
        assert call.node is not None
        breaker = self._breaker(call.service, call.node.id)
        opened = breaker.opened_count
        breaker.on_result(ok)
        if breaker.opened_count > opened:
            self._ctx.metrics.breaker_opened.labels(call.service).inc()


_BUILTIN: dict[str, type] = {
    "access_log": AccessLogFilter, "metrics": MetricsFilter, "switcher": SwitcherFilter,
    "active_limit": ActiveLimitFilter, "failover": FailoverFilter,
    "circuit_breaker": CircuitBreakerFilter,
}
assert set(_BUILTIN) == set(BUILTIN_FILTERS)


def _load(name: str) -> type:
    if name in _BUILTIN:
        return _BUILTIN[name]
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"filter {name!r} is neither built in ({', '.join(_BUILTIN)}) "
                         "nor an import path package.module:ClassName")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"filter {name!r} cannot be loaded: {exc}") from None
    if not isinstance(cls, type) or not callable(getattr(cls, "handle", None)):
        raise ValueError(f"filter {name!r} is not a class with a handle(call, next_) method")
    return cls


def build_chain(names: Sequence[str], ctx: FilterContext) -> list[Filter]:
    """Instantiate the filters named in ``names``, in order."""
    return [_load(name)(ctx) for name in names]


def run_chain(filters: Sequence[Filter], terminal: Next) -> Next:
    """A callable running ``filters`` in order around ``terminal``.

    Each link calls the filter's ``handle(call, next_)`` directly and returns its
    coroutine, with no wrapper coroutine per link (the chain runs on every call); each run
    of adjacent :class:`HookFilter` that keep the inherited ``handle`` is one link.
    """
    handler = terminal
    hooks: list[HookFilter] = []
    for f in reversed(filters):
        if isinstance(f, HookFilter) and type(f).handle is HookFilter.handle:
            hooks.append(f)
            continue
        if hooks:
            handler = _Hooks(tuple(reversed(hooks)), handler)
            hooks = []
        handler = _Link(f.handle, handler)
    if hooks:
        handler = _Hooks(tuple(reversed(hooks)), handler)
    return handler


def active_filters(filters: Sequence[Filter]) -> list[Filter]:
    """The filters to chain: those whose ``enabled()``, if they have one, is True now (the
    access log at a log level above info is left out)."""
    return [f for f in filters
            if not callable(getattr(f, "enabled", None)) or f.enabled()]  # type: ignore[attr-defined]


class _Link:
    """``handle(call, next_)`` with ``next_`` bound (positionally: user filters may name
    their second parameter as they like)."""

    __slots__ = ("_handle", "_next")

    def __init__(self, handle: Callable[[Call, Next], Awaitable[Reply]], next_: Next) -> None:
        self._handle = handle
        self._next = next_

    def __call__(self, call: Call) -> Awaitable[Reply]:
        return self._handle(call, self._next)


class _Hooks:
    """Adjacent hook filters around ``next_``, in one coroutine: as if each one's
    ``handle`` wrapped the next."""

    __slots__ = ("_hooks", "_next")

    def __init__(self, hooks: tuple[HookFilter, ...], next_: Next) -> None:
        self._hooks = hooks
        self._next = next_

    def __call__(self, call: Call) -> Awaitable[Reply]:
        return self._run(call)

    async def _run(self, call: Call) -> Reply:
        hooks = self._hooks
        started = time.perf_counter()
        entered = 0  # hooks whose before let the call on: they get after or failed
        reply: Reply | None = None
        error: BaseException | None = None
        try:
            for hook in hooks:
                reply = hook.before(call)
                if reply is not None:
                    break
                entered += 1
            else:
                reply = await self._next(call)
        except BaseException as raised:  # noqa: BLE001  handed to the hooks, then re-raised
            error = raised
        while entered:
            entered -= 1
            try:
                if error is None:
                    assert reply is not None
                    hooks[entered].after(call, reply, started)
                else:
                    hooks[entered].failed(call, error, started)
            except BaseException as hook_error:  # noqa: BLE001  as an outer handle would see
                error = hook_error
        if error is not None:
            raise error
        assert reply is not None
        return reply
