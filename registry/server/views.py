"""HTTP handlers of the embedded registry (routes are listed in :func:`add_routes`)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from registry.client import check_ttl
from registry.model import Node, check_name, check_prefix
from tidemark.config import parse_duration_seconds

if TYPE_CHECKING:
    from registry.server.app import RegistryServer

__all__ = ["SERVER_KEY", "add_routes"]

SERVER_KEY: web.AppKey[RegistryServer] = web.AppKey("registry_server")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _server(request: web.Request) -> RegistryServer:
    return request.app[SERVER_KEY]


def _path_name(request: web.Request, key: str, what: str) -> str:
    try:
        return check_name(request.match_info[key], what)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": str(exc)}),
                                 content_type="application/json") from None


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}),
                              content_type="application/json")


def _require_token(request: web.Request) -> None:
    token = _server(request).token
    if token is None:
        return
    given = request.headers.get("Authorization", "")
    if not given.startswith("Bearer ") or not hmac.compare_digest(
            given[len("Bearer "):].encode(), token.encode()):
        raise web.HTTPUnauthorized(text=json.dumps({"error": "missing or wrong token"}),
                                   content_type="application/json")


async def _body(request: web.Request, allowed: set[str]) -> Mapping[str, Any]:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise _bad("body: not valid JSON") from None
    except RecursionError:  # nesting deeper than the parser recurses, within the size limit
        raise _bad("body: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise _bad("body: expected a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _bad(f"body: unknown field {unknown[0]!r}")
    return data


def _no_query(request: web.Request, allowed: frozenset[str] = frozenset()) -> None:
    """400 naming the first query parameter not in ``allowed``."""
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise _bad(f"query: unknown parameter {unknown[0]!r}")


def _long_poll_args(request: web.Request, allowed: frozenset[str] = frozenset({"index", "wait"})
                    ) -> tuple[int, float]:
    _no_query(request, allowed)
    try:
        index = int(request.query.get("index", "0"))
        if index < 0:
            raise ValueError
    except ValueError:
        raise _bad("index: expected a non-negative integer") from None
    try:
        wait = parse_duration_seconds(request.query.get("wait", "0"))
        if not 0 <= wait:
            raise ValueError
    except ValueError:
        raise _bad("wait: expected a duration such as 30s") from None
    return index, min(wait, _server(request).config.max_wait_seconds)


async def list_services(request: web.Request) -> web.Response:
    """``GET /v1/services``: names of every service with nodes or configuration."""
    _no_query(request)
    store = _server(request).store
    return web.json_response({"services": store.services(), "revision": store.revision})


async def get_service(request: web.Request) -> web.Response:
    """``GET /v1/services/{service}[?index=N&wait=30s]``: snapshot, long-polled by revision."""
    service = _path_name(request, "service", "service")
    index, wait = _long_poll_args(request)
    server = _server(request)
    await server.wait_for(lambda: server.store.service_revision(service) > index, wait,
                          service)
    body, revision = server.store.snapshot_json(service)
    return web.Response(body=body, content_type="application/json",
                        headers={"X-Registry-Index": str(revision)})


_PREFIX_ARGS = frozenset({"index", "wait", "prefix"})


def _prefix_arg(request: web.Request) -> str:
    try:
        return check_prefix(request.query.get("prefix", ""))
    except ValueError as exc:
        raise _bad(str(exc)) from None


async def watch_prefix(request: web.Request) -> web.Response:
    """``GET /v1/watch?prefix=P&index=N&wait=30s``: services under P changed after N."""
    index, wait = _long_poll_args(request, _PREFIX_ARGS)
    prefix = _prefix_arg(request)
    server = _server(request)
    store = server.store
    await server.wait_for(lambda: bool(store.changed_since(prefix, index)), wait)
    return web.json_response({"revision": store.revision,
                              "snapshots": [s.to_dict()
                                            for s in store.changed_since(prefix, index)]})


_MIN_KEEPALIVE_SECONDS = 1.0
# A line this short, written with nothing queued before it, goes out without waiting on the
# reader (the transport only pauses writers past its 64 KiB high-water mark).
_SHORT_LINE_BYTES = 16 * 1024


class _Stream:
    """One watch stream's response: a JSON line per change, an empty line when ``heartbeat``
    seconds passed without one, and no write waiting on a stuck reader longer than that."""

    def __init__(self, request: web.Request, heartbeat_seconds: float) -> None:
        self.request = request
        self.response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                                    "Cache-Control": "no-store"})
        self.heartbeat = max(heartbeat_seconds, _MIN_KEEPALIVE_SECONDS)
        self._loop = asyncio.get_running_loop()
        self._last_write = self._loop.time()

    async def open(self) -> None:
        await self.response.prepare(self.request)

    async def send(self, line: bytes) -> None:
        """Write one line; a reader that takes it in for longer than ``heartbeat`` is cut."""
        transport = self.request.transport
        if transport is None:
            raise ConnectionResetError("watch stream reader gone")
        if transport.get_write_buffer_size() == 0 and len(line) < _SHORT_LINE_BYTES:
            await self.response.write(line)  # cannot wait on the reader: no timer needed
        else:
            try:
                async with asyncio.timeout(self.heartbeat):
                    await self.response.write(line)
            except TimeoutError:
                transport.abort()
                raise ConnectionResetError("watch stream reader stuck") from None
        self._last_write = self._loop.time()

    def until_keepalive(self) -> float:
        """Seconds left before an empty line is due."""
        return self._last_write + self.heartbeat - self._loop.time()


async def _follow_changes(server: RegistryServer, stream: _Stream,
                          next_line: Callable[[], bytes | None], changed: Callable[[], bool],
                          service: str | None) -> None:
    """Send ``next_line()`` (``None``: nothing new) after each change until the server stops
    or the reader goes; an empty line when nothing was sent for ``heartbeat`` seconds.

    One write at a time, and the line is built after the previous one went out: a reader
    that falls behind is sent the latest state, not every change in between.
    """
    with contextlib.suppress(ConnectionError):  # the reader went away (or was cut)
        while not server.stopping:
            line = next_line()
            if line is not None:
                await stream.send(line)
                continue
            remaining = stream.until_keepalive()
            if remaining <= 0:
                await stream.send(b"\n")
            else:
                await server.wait_change(changed, remaining, service)
        line = next_line()  # a change that came in while the last line went out
        if line is not None:
            await stream.send(line)
        await stream.response.write_eof()


def _heartbeat_seconds(request: web.Request, wait: float) -> float:
    return wait or _server(request).config.max_wait_seconds


async def stream_service(request: web.Request) -> web.StreamResponse:
    """``GET /v1/services/{service}/stream[?index=N&wait=30s]``: one JSON snapshot per line,
    the current one first (unless the service is not past N), then the latest after every
    change; an empty line every ``wait`` (at least 1 s) when nothing was sent."""
    service = _path_name(request, "service", "service")
    index, wait = _long_poll_args(request)
    server = _server(request)
    store = server.store
    sent = index if index else -1  # without an index the current snapshot goes first

    def changed() -> bool:
        return store.service_revision(service) > sent

    def next_line() -> bytes | None:
        nonlocal sent
        if not changed():
            return None
        body, sent = store.snapshot_json(service)
        return body

    with server.poll_slot(service):
        stream = _Stream(request, _heartbeat_seconds(request, wait))
        await stream.open()
        await _follow_changes(server, stream, next_line, changed, service)
    return stream.response


async def stream_prefix(request: web.Request) -> web.StreamResponse:
    """``GET /v1/watch/stream?prefix=P[&index=N&wait=30s]``: one line
    ``{"revision": R, "snapshots": [...]}`` first (services under P changed after N), then
    one after every change under P; an empty line every ``wait`` (at least 1 s) when nothing
    was sent."""
    index, wait = _long_poll_args(request, _PREFIX_ARGS)
    prefix = _prefix_arg(request)
    server = _server(request)
    store = server.store
    first = True

    def changed() -> bool:
        return store.revision > index

    def next_line() -> bytes | None:
        nonlocal index, first
        if not (first or changed()):
            return None
        snapshots = store.changed_since(prefix, index)
        index = store.revision  # changes elsewhere are seen, and not sent
        if not (snapshots or first):
            return None
        first = False
        return json.dumps({"revision": index, "snapshots": [s.to_dict() for s in snapshots]},
                          separators=(",", ":")).encode() + b"\n"

    with server.poll_slot():
        stream = _Stream(request, _heartbeat_seconds(request, wait))
        await stream.open()
        await _follow_changes(server, stream, next_line, changed, None)
    return stream.response


async def history(request: web.Request) -> web.Response:
    """``GET /v1/services/{service}/history``: recent commands, oldest first."""
    service = _path_name(request, "service", "service")
    _no_query(request)
    commands = _server(request).store.history(service)
    return web.json_response({"commands": [c.to_dict() for c in commands]})


async def register(request: web.Request) -> web.Response:
    """``PUT /v1/services/{service}/nodes/{node}`` with ``{"node": {...}, "ttl_seconds": T}``."""
    _require_token(request)
    _no_query(request)
    service = _path_name(request, "service", "service")
    node_id = _path_name(request, "node", "node")
    body = await _body(request, {"node", "ttl_seconds"})
    try:
        if "node" not in body:
            raise ValueError("node: missing")
        node = Node.from_dict(body["node"])
        if node.id != node_id:
            raise ValueError(f"node.id: {node.id!r} does not match the path ({node_id!r})")
        ttl = check_ttl(body.get("ttl_seconds", 10.0))
        revision = _server(request).store.register(service, node, ttl)
    except (ValueError, TypeError) as exc:
        raise _bad(str(exc)) from None
    _server(request).count_write("register")
    return web.json_response({"revision": revision})


async def heartbeat(request: web.Request) -> web.Response:
    """``PUT /v1/services/{service}/nodes/{node}/heartbeat``: 404 if the node is unknown."""
    _require_token(request)
    _no_query(request)
    service = _path_name(request, "service", "service")
    node_id = _path_name(request, "node", "node")
    if not _server(request).store.heartbeat(service, node_id):
        return _error(404, f"node {node_id!r} is not registered in {service!r}")
    return web.json_response({"ok": True})


async def deregister(request: web.Request) -> web.Response:
    """``DELETE /v1/services/{service}/nodes/{node}``."""
    _require_token(request)
    _no_query(request)
    service = _path_name(request, "service", "service")
    node_id = _path_name(request, "node", "node")
    if not _server(request).store.deregister(service, node_id):
        return _error(404, f"node {node_id!r} is not registered in {service!r}")
    _server(request).count_write("deregister")
    return web.json_response({"revision": _server(request).store.revision})


async def post_command(request: web.Request) -> web.Response:
    """``POST /v1/services/{service}/commands`` with ``{"kind", "args", "who", "why"}``."""
    _require_token(request)
    _no_query(request)
    service = _path_name(request, "service", "service")
    body = await _body(request, {"kind", "args", "who", "why"})
    try:
        for name in ("kind", "who"):
            if name not in body:
                raise ValueError(f"{name}: missing")
        if not isinstance(body["kind"], str):
            raise ValueError("kind: expected a string")
        command = _server(request).store.command(
            service, body["kind"], body.get("args", {}), who=body["who"], why=body.get("why", ""))
    except (ValueError, TypeError) as exc:
        raise _bad(str(exc)) from None
    _server(request).count_write(command.kind)
    return web.json_response(command.to_dict(), status=201)


def add_routes(app: web.Application) -> None:
    """Register every registry route on ``app``."""
    app.router.add_get("/v1/services", list_services)
    app.router.add_get("/v1/services/{service}", get_service)
    app.router.add_get("/v1/services/{service}/history", history)
    app.router.add_post("/v1/services/{service}/commands", post_command)
    app.router.add_put("/v1/services/{service}/nodes/{node}", register)
    app.router.add_delete("/v1/services/{service}/nodes/{node}", deregister)
    app.router.add_put("/v1/services/{service}/nodes/{node}/heartbeat", heartbeat)
    app.router.add_get("/v1/services/{service}/stream", stream_service, allow_head=False)
    app.router.add_get("/v1/watch", watch_prefix)
    app.router.add_get("/v1/watch/stream", stream_prefix, allow_head=False)
