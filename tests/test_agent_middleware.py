"""In-process measuring: aiohttp middleware on a real server, WSGI behind wsgiref, ASGI."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.middleware import ASGIMiddleware, WSGIMiddleware, aiohttp_middleware
from agent.recorder import Recorder, SeriesKey

KEY = SeriesKey("svc", "n", None)


def errors_of(recorder: Recorder) -> tuple[int, dict[str, int]]:
    stats = recorder.swap().stats[KEY]
    return stats.requests, stats.errors


async def test_aiohttp_middleware_counts_requests_and_classifies_failures() -> None:
    recorder = Recorder(default_node="n")

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("bug")

    async def slow(request: web.Request) -> web.Response:
        raise TimeoutError

    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application(middlewares=[aiohttp_middleware(recorder, "svc")])
    app.router.add_get("/ok", ok)
    app.router.add_get("/boom", boom)
    app.router.add_get("/slow", slow)
    app.router.add_get("/503", unavailable)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            statuses = []
            for path in ("/ok", "/ok", "/boom", "/slow", "/503", "/missing"):
                async with session.get(server.make_url(path)) as resp:
                    statuses.append(resp.status)
        assert statuses == [200, 200, 500, 504, 503, 404]
    finally:
        await server.close()
    requests, errors = errors_of(recorder)
    assert requests == 6
    assert errors == {"timeout": 1, "connection": 0, "5xx": 2, "business": 0}


def test_wsgi_middleware_measures_calls_until_the_body_is_closed() -> None:
    recorder = Recorder(default_node="n")

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        path = environ["PATH_INFO"]
        if path == "/fail":
            raise TimeoutError("db timed out")
        status = "500 Internal Server Error" if path == "/500" else "200 OK"
        start_response(status, [("Content-Type", "text/plain")])
        yield b"hello "
        yield b"world"

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    httpd = make_server("127.0.0.1", 0, WSGIMiddleware(app, recorder, "svc"),
                        handler_class=Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    port = httpd.server_address[1]
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/ok", timeout=10).read()
        assert body == b"hello world"
        for path in ("/500", "/fail"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10)
            assert err.value.code == 500
    finally:
        httpd.shutdown()
        httpd.server_close()
    requests, errors = errors_of(recorder)
    assert requests == 3
    assert errors == {"timeout": 1, "connection": 0, "5xx": 1, "business": 0}


async def test_asgi_middleware_follows_the_asgi_protocol() -> None:
    """No ASGI server is installed here, so the test plays the server's part of the protocol."""
    recorder = Recorder(default_node="n")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        if scope["path"] == "/raise":
            raise ValueError("bug")
        status = 502 if scope["path"] == "/502" else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})

    wrapped = ASGIMiddleware(app, recorder, "svc")
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for path in ("/", "/502"):
        await wrapped({"type": "http", "path": path, "method": "GET"}, receive, send)
    with pytest.raises(ValueError):
        await wrapped({"type": "http", "path": "/raise", "method": "GET"}, receive, send)
    await wrapped({"type": "lifespan"}, receive, send)  # not a request: not counted
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200, 502]
    requests, errors = errors_of(recorder)
    assert requests == 3
    assert errors == {"timeout": 0, "connection": 0, "5xx": 2, "business": 0}
