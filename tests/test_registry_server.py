"""The embedded registry's HTTP API, persistence and daemon, over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from registry.client import open_registry
from registry.model import Node
from registry.server.app import RegistryServer, RegistryServerConfig
from tests.peers.process import free_port
from tests.test_registry_helpers import wait_until

TOKEN = "tok-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RegistryServer]:
    server = RegistryServer(RegistryServerConfig(data_dir=tmp_path, http_port=0,
                                                 max_body_bytes=4096), token=TOKEN)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def http(server: RegistryServer) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{server.port}"


def _node_body(node_id: str = "n1", **extra: object) -> dict[str, object]:
    return {"node": {"id": node_id, "address": "10.1.1.1:80", **extra}, "ttl_seconds": 5}


async def test_writes_need_the_token(http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    url = f"{base}/v1/services/svc/nodes/n1"
    async with session.put(url, json=_node_body()) as response:
        assert response.status == 401
    async with session.put(url, json=_node_body(),
                           headers={"Authorization": "Bearer wrong"}) as response:
        assert response.status == 401
    async with session.post(f"{base}/v1/services/svc/commands",
                            json={"kind": "restore", "who": "x"}) as response:
        assert response.status == 401
    async with session.get(f"{base}/v1/services/svc") as response:
        assert response.status == 200
        assert (await response.json())["nodes"] == []
    async with session.put(url, json=_node_body(), headers=AUTH) as response:
        assert response.status == 200
    # Heartbeats and deregistrations are writes too.
    async with session.put(url + "/heartbeat") as response:
        assert response.status == 401
    async with session.delete(url, headers={"Authorization": "Bearer wrong"}) as response:
        assert response.status == 401
    async with session.get(f"{base}/v1/services/svc") as response:
        assert [n["id"] for n in (await response.json())["nodes"]] == ["n1"]
    async with session.put(url + "/heartbeat", headers=AUTH) as response:
        assert response.status == 200
    async with session.delete(url, headers=AUTH) as response:
        assert response.status == 200


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/services/svc/nodes/n1", {**_node_body(), "colour": "red"}, "colour"),
    ("/v1/services/svc/nodes/n1", _node_body(weight=501), "weight"),
    ("/v1/services/svc/nodes/n1", _node_body(status="sleeping"), "status"),
    ("/v1/services/svc/nodes/n1", _node_body(nickname="x"), "nickname"),
    ("/v1/services/svc/nodes/n1", _node_body("n2"), "node.id"),
    ("/v1/services/svc/nodes/n1", {"node": {"id": "n1"}}, "address"),
    ("/v1/services/svc/nodes/n1", {**_node_body(), "ttl_seconds": -1}, "ttl_seconds"),
    ("/v1/services/svc/commands", {"kind": "switches", "who": "a",
                                   "args": {"switches": {"x": "yes"}}}, "switches.x"),
    ("/v1/services/svc/commands", {"kind": "degrade", "who": "a",
                                   "args": {"reason": "r", "fallback_status": 99}},
     "fallback_status"),
    ("/v1/services/svc/commands", {"kind": "degrade", "args": {"reason": "r"}}, "who"),
    ("/v1/services/svc/commands", {"kind": "revert", "who": "a", "args": {"command": 7}},
     "command"),
    ("/v1/services/" + "s" * 129 + "/commands", {"kind": "restore", "who": "a"}, "service"),
    ("/v1/services/b%20d/commands", {"kind": "restore", "who": "a"}, "service"),
    ("/v1/services/svc/commands?force=1", {"kind": "restore", "who": "a"}, "force"),
    ("/v1/services/svc/nodes/n1?ttl=5", _node_body(), "ttl"),
])
async def test_bad_input_is_a_400_naming_the_field(
        http: tuple[aiohttp.ClientSession, str], path: str, body: dict[str, object],
        field: str) -> None:
    session, base = http
    method = session.put if "/nodes/" in path else session.post
    async with method(base + path, json=body, headers=AUTH) as response:
        assert response.status == 400
        message = (await response.json())["error"]
        assert field in message
    async with session.get(f"{base}/v1/services") as response:
        assert (await response.json())["services"] == [], "nothing may be half-written"


async def test_body_size_is_bounded(http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    big = {"kind": "degrade", "who": "a", "args": {"reason": "x" * 10_000}}
    async with session.post(f"{base}/v1/services/svc/commands", json=big,
                            headers=AUTH) as response:
        assert response.status == 413
    async with session.post(f"{base}/v1/services/svc/commands", data=b"[1, 2",
                            headers=AUTH) as response:
        assert response.status == 400
        assert "JSON" in (await response.json())["error"]
    # Within the size limit, but nested deeper than the JSON parser recurses.
    async with session.post(f"{base}/v1/services/svc/commands",
                            data=b"[" * 2000 + b"]" * 2000, headers=AUTH) as response:
        assert response.status == 400
        assert "body" in (await response.json())["error"]
    async with session.get(f"{base}/v1/services") as response:
        assert (await response.json())["services"] == []


async def test_state_is_kept_in_sqlite_in_wal_mode(server: RegistryServer,
                                                   tmp_path: Path) -> None:
    server.store.command("svc", "restore", {}, who="ops", why="")
    with sqlite3.connect(tmp_path / "registry.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT name FROM services").fetchall() == [("svc",)]


async def test_registered_at_is_stamped_when_the_record_has_none(
        http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    url = f"{base}/v1/services/svc/nodes/n1"
    before = time.time()
    async with session.put(url, json=_node_body(), headers=AUTH) as response:
        assert response.status == 200
    async with session.get(f"{base}/v1/services/svc") as response:
        stamped = (await response.json())["nodes"][0]["registered_at"]
    assert stamped >= before
    # Registering the node again (e.g. a new weight) keeps when it was first registered.
    async with session.put(url, json=_node_body(weight=20), headers=AUTH) as response:
        assert response.status == 200
    async with session.get(f"{base}/v1/services/svc") as response:
        node = (await response.json())["nodes"][0]
    assert (node["weight"], node["registered_at"]) == (20, stamped)


async def test_long_polls_are_bounded(tmp_path: Path) -> None:
    server = RegistryServer(RegistryServerConfig(data_dir=tmp_path, http_port=0,
                                                 max_long_polls=1))
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as session:
            async def poll(service: str) -> aiohttp.ClientResponse:
                async with session.get(f"{base}/v1/services/{service}",
                                       params={"index": "0", "wait": "30s"}) as response:
                    await response.read()
                    return response

            first = asyncio.ensure_future(poll("svc"))
            await wait_until(lambda: server.metrics.get_sample_value(
                "tidemark_registry_long_polls") == 1.0, timeout_seconds=10)
            refused = await poll("other")
            assert refused.status == 429 and refused.headers["Retry-After"] == "1"
            async with session.get(f"{base}/v1/watch",
                                   params={"index": "0", "wait": "30s"}) as response:
                assert response.status == 429
                assert "long polls" in (await response.json())["error"]
            # A poll that need not wait is answered even at the limit.
            async with session.get(f"{base}/v1/services/svc") as response:
                assert response.status == 200
            server.store.command("svc", "restore", {}, who="ops", why="")
            assert (await asyncio.wait_for(first, 10)).status == 200
            # The slot is free again; polls on many services leave no per-service state.
            for i in range(20):
                async with session.get(f"{base}/v1/services/s{i}",
                                       params={"index": "0", "wait": "10ms"}) as response:
                    assert response.status == 200
            assert server.watched_services == 0
    finally:
        await server.stop()


async def test_a_watch_refused_a_long_poll_retries_without_reconnecting(tmp_path: Path) -> None:
    server = RegistryServer(RegistryServerConfig(data_dir=tmp_path, http_port=0,
                                                 max_long_polls=1))
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    client = open_registry(base)
    metric = server.metrics.get_sample_value
    try:
        async with aiohttp.ClientSession() as session:
            async def hog() -> int:  # another watcher holding the only slot
                async with session.get(f"{base}/v1/services/other",
                                       params={"index": "0", "wait": "30s"}) as response:
                    return response.status

            hogging = asyncio.ensure_future(hog())
            await wait_until(lambda: metric("tidemark_registry_long_polls") == 1.0,
                             timeout_seconds=10)
            async with client.watch("svc") as watch:
                first = await asyncio.wait_for(anext(watch), 10)
                await wait_until(
                    lambda: bool(metric("tidemark_registry_long_polls_refused_total")),
                    timeout_seconds=10)
                server.store.command("svc", "restore", {}, who="ops", why="")
                after = await asyncio.wait_for(anext(watch), 10)
                assert after.revision > first.revision
                assert watch.reconnects == 0 and watch.connected
            server.store.command("other", "restore", {}, who="ops", why="")
            assert await asyncio.wait_for(hogging, 10) == 200
    finally:
        await client.stop()
        await server.stop()


@pytest.mark.parametrize("url", ["http://127.0.0.1", "http://127.0.0.1:0", "http://h:99999",
                                 "http://h:8500/v1", "http://h:8500?x=1", "http://u@h:8500",
                                 "https://h:8500", "h:8500"])
def test_bad_http_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValueError, match="registry URL"):
        open_registry(url)


async def test_registryctl_reports_a_refused_request_in_one_line(tmp_path: Path) -> None:
    # A proxy in front of the registry that refuses everything with a status the client has
    # no special meaning for: one line on stderr and exit 1, not a traceback.
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": "forbidden by proxy"}, status=403)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "registry.ctl", "--registry",
                             f"http://127.0.0.1:{port}", "switch", "svc", "x=on"],
            capture_output=True, cwd=REPO_ROOT, timeout=60)
    finally:
        await runner.cleanup()
    assert done.returncode == 1, done.stderr
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "403" in lines[0] and "forbidden by proxy" in lines[0]


async def test_long_poll_returns_on_change(http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    async with session.get(f"{base}/v1/services/svc") as response:
        index = (await response.json())["revision"]

    async def poll() -> dict[str, object]:
        async with session.get(f"{base}/v1/services/svc",
                               params={"index": str(index), "wait": "30s"}) as response:
            assert response.status == 200
            return dict(await response.json())

    waiting = asyncio.ensure_future(poll())
    async with session.post(f"{base}/v1/services/other/commands", headers=AUTH,
                            json={"kind": "restore", "who": "a"}) as response:
        assert response.status == 201
    await asyncio.sleep(0.3)
    assert not waiting.done(), "a long poll must wait while only other services change"
    async with session.post(f"{base}/v1/services/svc/commands", headers=AUTH,
                            json={"kind": "switches", "who": "a",
                                  "args": {"switches": {"on": True}}}) as response:
        assert response.status == 201
    result = await asyncio.wait_for(waiting, 10)
    assert result["revision"] > index  # type: ignore[operator]
    assert result["config"]["switches"] == {"on": True}  # type: ignore[index]
    async with session.get(f"{base}/v1/services/svc",
                           params={"index": "x", "wait": "1s"}) as response:
        assert response.status == 400 and "index" in (await response.json())["error"]
    for path in ("/v1/services", "/v1/services/svc/history", "/v1/services/svc"):
        async with session.get(f"{base}{path}", params={"colour": "red"}) as response:
            assert response.status == 400 and "colour" in (await response.json())["error"]
    async with session.get(f"{base}/v1/watch", params={"prefix": "", "index": "0"}) as response:
        data = await response.json()
        assert [s["service"] for s in data["snapshots"]] == ["other", "svc"]


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, object] | None]:
    """Lines of a watch stream: a JSON object each, ``None`` for a keep-alive line."""
    while line := await response.content.readline():
        yield None if line == b"\n" else json.loads(line)


async def _next_line(lines: AsyncIterator[dict[str, object] | None],
                     keepalive: bool = False) -> dict[str, object] | None:
    """The next object of a stream (or the next line of any kind, with ``keepalive``)."""
    while True:
        line = await asyncio.wait_for(anext(lines), 10)
        if line is not None or keepalive:
            return line


async def _command(session: aiohttp.ClientSession, base: str, service: str,
                   switches: dict[str, bool]) -> int:
    async with session.post(f"{base}/v1/services/{service}/commands", headers=AUTH,
                            json={"kind": "switches", "who": "a",
                                  "args": {"switches": switches}}) as response:
        assert response.status == 201
    async with session.get(f"{base}/v1/services/{service}") as response:
        return int((await response.json())["revision"])


async def test_a_service_stream_sends_the_snapshot_then_every_change(
        http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    first_revision = await _command(session, base, "svc", {"a": True})
    async with session.get(f"{base}/v1/services/svc/stream",
                           params={"wait": "100ms"}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        lines = _lines(response)
        first = await _next_line(lines)
        assert first is not None and first["revision"] == first_revision
        assert first["config"]["switches"] == {"a": True}  # type: ignore[index]
        # Nothing changes: keep-alive lines, and a change to another service sends nothing.
        await _command(session, base, "other", {"x": True})
        assert await _next_line(lines, keepalive=True) is None
        revision = await _command(session, base, "svc", {"b": False})
        change = await _next_line(lines)
        assert change is not None and change["revision"] == revision
        assert change["config"]["switches"] == {"a": True, "b": False}  # type: ignore[index]
    # From an index the service is not past, the stream waits for the next change.
    async with session.get(f"{base}/v1/services/svc/stream",
                           params={"index": str(revision), "wait": "30s"}) as response:
        lines = _lines(response)
        later = await _command(session, base, "svc", {"c": True})
        change = await _next_line(lines)
        assert change is not None and change["revision"] == later


async def test_a_stream_reader_that_falls_behind_gets_the_latest_not_a_backlog(
        server: RegistryServer, http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    async with session.get(f"{base}/v1/services/svc/stream") as response:
        lines = _lines(response)
        first = await _next_line(lines)
        assert first is not None
        # 300 changes while the stream's handler cannot run (no await in between).
        for i in range(300):
            server.store.command("svc", "switches", {"switches": {f"s{i % 7}": i % 2 == 0}},
                                 who="a", why="")
        final = server.store.service_revision("svc")
        revisions: list[int] = []
        while not revisions or revisions[-1] != final:
            line = await _next_line(lines)
            assert line is not None
            revisions.append(int(line["revision"]))  # type: ignore[call-overload]
    # The state after the last change, in one line (not 300).
    assert revisions == [final]


async def test_a_large_snapshot_streams_as_one_line(server: RegistryServer) -> None:
    for i in range(600):  # about 200 KB of snapshot, over aiohttp's default line limit
        server.store.register("big", Node(id=f"n{i:04d}", address=f"10.0.{i // 250}.{i % 250}:80",
                                          labels={"zone": "z" * 100, "rack": f"r{i}"}), 60)
    client = open_registry(f"http://127.0.0.1:{server.port}")
    try:
        async with client.watch("big") as watch:
            snapshot = await asyncio.wait_for(anext(watch), 10)
            assert len(snapshot.nodes) == 600 and watch.connected
    finally:
        await client.stop()


async def test_a_stream_whose_reader_goes_away_frees_its_place(
        server: RegistryServer, http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    metric = server.metrics.get_sample_value
    for path in ("/v1/services/svc/stream", "/v1/watch/stream"):
        response = await session.get(f"{base}{path}", params={"wait": "60s"})
        assert await _next_line(_lines(response)) is not None
        assert metric("tidemark_registry_long_polls") == 1.0
        response.close()  # the reader drops the connection; the keep-alive is a minute away
        await wait_until(lambda: metric("tidemark_registry_long_polls") == 0.0,
                         timeout_seconds=10)
    assert server.watched_services == 0


async def test_a_prefix_stream_keeps_alive_while_other_services_change(
        server: RegistryServer, http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http

    async def churn() -> None:  # changes outside the prefix, more often than the keep-alive
        for i in range(1000):
            server.store.command("db", "switches", {"switches": {"x": i % 2 == 0}}, who="a",
                                 why="")
            await asyncio.sleep(0.05)

    async with session.get(f"{base}/v1/watch/stream",
                           params={"prefix": "web-", "wait": "1s"}) as response:
        lines = _lines(response)
        assert await _next_line(lines) is not None
        churning = asyncio.ensure_future(churn())
        try:
            assert await _next_line(lines, keepalive=True) is None
        finally:
            churning.cancel()


async def test_a_prefix_stream_sends_the_services_under_it(
        http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    await _command(session, base, "web-a", {"a": True})
    await _command(session, base, "db", {"a": True})
    async with session.get(f"{base}/v1/watch/stream",
                           params={"prefix": "web-", "wait": "30s"}) as response:
        assert response.status == 200
        lines = _lines(response)
        first = await _next_line(lines)
        assert first is not None
        assert [s["service"] for s in first["snapshots"]] == ["web-a"]  # type: ignore[attr-defined]
        await _command(session, base, "db", {"b": True})  # outside the prefix: no line
        revision = await _command(session, base, "web-b", {"b": True})
        change = await _next_line(lines)
        assert change is not None and change["revision"] == revision
        assert [s["service"] for s in change["snapshots"]] == ["web-b"]  # type: ignore[attr-defined]


async def test_stream_bad_input_is_a_400(http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    for path, params, field in [
            ("/v1/services/svc/stream", {"index": "-1"}, "index"),
            ("/v1/services/svc/stream", {"wait": "soon"}, "wait"),
            ("/v1/services/svc/stream", {"prefix": "x"}, "prefix"),
            ("/v1/services/b%20d/stream", {}, "service"),
            ("/v1/watch/stream", {"prefix": "a/b"}, "prefix"),
            ("/v1/watch/stream", {"colour": "red"}, "colour")]:
        async with session.get(f"{base}{path}", params=params) as response:
            assert response.status == 400, path
            assert field in (await response.json())["error"], path
    for path in ("/v1/services/svc/stream", "/v1/watch/stream"):
        async with session.head(f"{base}{path}") as response:
            assert response.status == 405, path


async def test_streams_count_as_long_polls_and_end_when_the_server_stops(
        tmp_path: Path) -> None:
    server = RegistryServer(RegistryServerConfig(data_dir=tmp_path, http_port=0,
                                                 max_long_polls=1))
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    metric = server.metrics.get_sample_value
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/v1/services/svc/stream") as response:
                lines = _lines(response)
                assert await _next_line(lines) is not None
                assert metric("tidemark_registry_long_polls") == 1.0
                async with session.get(f"{base}/v1/watch/stream") as refused:
                    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
                stopping = asyncio.ensure_future(server.stop())
                # The stream ends (no error) once the server stops.
                assert [line async for line in lines if line is not None] == []
                await asyncio.wait_for(stopping, 10)
            assert metric("tidemark_registry_long_polls") == 0.0
    finally:
        await server.stop()


async def test_a_client_long_polls_a_registry_without_streams(tmp_path: Path) -> None:
    # A registry from before watch streams: their routes do not exist (aiohttp's plain 404).
    stream_requests = []

    @web.middleware
    async def no_streams(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.endswith("/stream"):
            stream_requests.append(request.path)
            raise web.HTTPNotFound()
        return await handler(request)  # type: ignore[no-any-return]

    server = RegistryServer(RegistryServerConfig(data_dir=tmp_path, http_port=0))
    server.store.open()
    app = server.build_app()
    app.middlewares.append(no_streams)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = open_registry(f"http://127.0.0.1:{port}")
    try:
        async with client.watch("svc") as watch:
            first = await asyncio.wait_for(anext(watch), 10)
            server.store.command("svc", "switches", {"switches": {"on": True}}, who="a",
                                 why="")
            after = await asyncio.wait_for(anext(watch), 10)
            assert after.revision > first.revision and after.config.switches == {"on": True}
            server.store.command("svc", "switches", {"switches": {"on": False}}, who="a",
                                 why="")
            last = await asyncio.wait_for(anext(watch), 10)
            assert last.revision > after.revision and last.config.switches == {"on": False}
            assert watch.reconnects == 0 and watch.connected
        # One stream was asked for, answered 404; every change after came by long poll.
        assert stream_requests == ["/v1/services/svc/stream"]
    finally:
        await client.stop()
        await server.stop()  # wakes the long poll still waiting, closes the store
        await runner.cleanup()


async def test_healthz_and_metrics(http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    async with session.get(f"{base}/healthz") as response:
        assert response.status == 200
    async with session.put(f"{base}/v1/services/svc/nodes/n1", json=_node_body(),
                           headers=AUTH) as response:
        assert response.status == 200
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    assert 'tidemark_registry_writes_total{op="register"} 1.0' in text
    assert "tidemark_registry_revision 1.0" in text
    # the process's own figures, to watch memory and collections from outside
    assert "process_resident_memory_bytes " in text
    assert 'python_gc_collections_total{generation="2"}' in text


async def test_config_and_history_survive_restart(tmp_path: Path) -> None:
    config = RegistryServerConfig(data_dir=tmp_path, http_port=0)
    first = RegistryServer(config)
    await first.start()
    first.store.command("svc", "degrade", {"reason": "r"}, who="ops", why="r")
    first.store.command("svc", "idc_weights", {"weights": {"bj": 3}}, who="ops", why="")
    revision = first.store.revision
    await first.stop()
    await first.stop()
    second = RegistryServer(config)
    await second.start()
    try:
        snapshot = second.store.snapshot("svc")
        assert snapshot.config.degraded is not None
        assert snapshot.config.idc_weights == {"bj": 3}
        assert [c.kind for c in second.store.history("svc")] == ["degrade", "idc_weights"]
        second.store.command("svc", "restore", {}, who="ops", why="")
        assert second.store.revision == revision + 1, "revisions continue after a restart"
    finally:
        await second.stop()


def _get_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
        return int(response.status)


def _long_polls_waiting(base: str) -> bool:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        return b"tidemark_registry_long_polls 1.0" in response.read()


@pytest.mark.slow
def test_daemon_serves_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    with open(tmp_path / "daemon.log", "wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "tidemark", "registry", "--data-dir", str(tmp_path / "d"),
             "--http-port", str(port), "--token-file", str(token_file)],
            stdout=log, stderr=log, cwd=REPO_ROOT)
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if daemon.poll() is not None:
                    break
                time.sleep(0.1)
        registry = ["--registry", f"http://127.0.0.1:{port}", "--who", "alice"]
        # The console script once; then `python -m registry.ctl`, which is the same code
        # without importing every other tidemark command.
        done = subprocess.run([sys.executable, "-m", "tidemark", "registryctl", *registry,
                               "--token-file", str(token_file), "weights", "svc", "bj=60",
                               "sh=40"], capture_output=True, cwd=REPO_ROOT, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["changes"] == {"idc_weight/bj": 60, "idc_weight/sh": 40}
        ctl = [sys.executable, "-m", "registry.ctl", *registry]
        done = subprocess.run(ctl + ["switch", "svc", "x=on"], capture_output=True,
                              cwd=REPO_ROOT, timeout=60)
        assert done.returncode == 2 and b"unauthorized" in done.stderr
        done = subprocess.run(ctl + ["--token-file", str(token_file), "weights", "svc", "bj=0"],
                              capture_output=True, cwd=REPO_ROOT, timeout=60)
        assert done.returncode == 2 and b"weights.bj" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        done = subprocess.run(ctl + ["config", "svc"], capture_output=True, cwd=REPO_ROOT,
                              timeout=60)
        assert json.loads(done.stdout)["idc_weights"] == {"bj": 60, "sh": 40}
        done = subprocess.run(ctl + ["history", "svc"], capture_output=True, cwd=REPO_ROOT,
                              timeout=60)
        assert [(c["kind"], c["who"]) for c in json.loads(done.stdout)] == [
            ("idc_weights", "alice")]
        # A long poll waiting when SIGTERM comes is answered, not cut off.
        base = f"http://127.0.0.1:{port}"
        with ThreadPoolExecutor(1) as pool:
            poll = pool.submit(_get_status, f"{base}/v1/services/svc?index=1000&wait=60s")
            while not _long_polls_waiting(base):
                assert not poll.done(), poll.result()
                time.sleep(0.05)
            daemon.send_signal(signal.SIGTERM)
            assert poll.result(timeout=30) == 200
        assert daemon.wait(30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
    unreachable = subprocess.run(
        [sys.executable, "-m", "registry.ctl", "--registry",
         f"http://127.0.0.1:{port}", "nodes", "svc"], capture_output=True, cwd=REPO_ROOT,
        timeout=60)
    assert unreachable.returncode == 1 and unreachable.stderr.strip()


def test_daemon_refuses_an_unusable_database_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "registry.sqlite3").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "tidemark", "registry", "--data-dir", str(tmp_path),
         "--http-port", "0"], capture_output=True, cwd=REPO_ROOT, timeout=60)
    assert done.returncode == 2
    errors = [line for line in done.stderr.decode().splitlines()
              if not line.startswith("{")]  # JSON log lines aside
    assert len(errors) == 1 and "database" in errors[0], done.stderr


def test_daemon_rejects_an_empty_token_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    done = subprocess.run(
        [sys.executable, "-m", "tidemark", "registry", "--data-dir", str(tmp_path),
         "--http-port", "0", "--token-file", str(tmp_path / "token")],
        capture_output=True, cwd=REPO_ROOT, timeout=60)
    assert done.returncode == 2
    assert b"empty" in done.stderr
