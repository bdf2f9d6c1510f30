"""The agent's data path on real loopback sockets: ``agent.http_server.HttpServer`` driven by
raw clients sending hand-written bytes, and ``agent.forwarder.Forwarder`` talking to raw
upstreams (``asyncio.start_server``) that write canned bytes.

No mocks and no timing assertions: every network wait is bounded by ``wait_for`` with a
generous timeout, so a hang fails the test instead of the suite. Every test runs twice:
on the standard asyncio loop and on uvloop (the agent daemon's default loop).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop
from multidict import CIMultiDict

from agent.balancer import Endpoint
from agent.call import Call, Reply, UpstreamError
from agent.filters import run_chain
from agent.forwarder import Forwarder
from agent.http_server import HttpServer, InboundRequest, render_reply

WAIT = 5.0  # bound on any single network wait: generous, never reached when things work


pytestmark = pytest.mark.both_loops  # every test here runs on asyncio's loop and on uvloop


async def test_each_run_is_on_the_loop_its_id_names(request: pytest.FixtureRequest) -> None:
    named = request.node.callspec.id  # "asyncio" or "uvloop"
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop) == (named == "uvloop")


def bounded(aw: Awaitable[Any], timeout: float = WAIT) -> Awaitable[Any]:
    return asyncio.wait_for(aw, timeout)


# -- raw HTTP on the wire ---------------------------------------------------------------

@dataclass
class Resp:
    """A response as read off the wire."""

    status: int
    headers: CIMultiDict[str]
    body: bytes
    raw_head: bytes


def parse_head(head: bytes) -> tuple[str, CIMultiDict[str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.add(name.strip(), value.strip())
    return lines[0], headers


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size = int((await bounded(reader.readuntil(b"\r\n"))).split(b";")[0], 16)
        if size == 0:
            while (await bounded(reader.readuntil(b"\r\n"))) != b"\r\n":
                pass  # trailers
            return body
        body += await bounded(reader.readexactly(size))
        assert await bounded(reader.readexactly(2)) == b"\r\n"


async def read_response(reader: asyncio.StreamReader, *, head: bool = False) -> Resp:
    """One response: the head, then a body by Content-Length (none for HEAD, 1xx, 204)."""
    raw = await bounded(reader.readuntil(b"\r\n\r\n"))
    status_line, headers = parse_head(raw)
    version, status_text, _ = (status_line + " ").split(" ", 2)
    assert version in ("HTTP/1.1", "HTTP/1.0"), status_line
    status = int(status_text)
    body = b""
    if not head and status >= 200 and status not in (204, 304):
        if "Content-Length" in headers:
            body = await bounded(reader.readexactly(int(headers["Content-Length"])))
        elif headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = await read_chunked(reader)
    return Resp(status, headers, body, raw)


async def read_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything until the peer closes (bounded): b"" means it closed with nothing more."""
    return await bounded(reader.read())  # type: ignore[no-any-return]


@asynccontextmanager
async def raw_client(port: int) -> AsyncIterator[tuple[asyncio.StreamReader,
                                                        asyncio.StreamWriter]]:
    reader, writer = await bounded(asyncio.open_connection("127.0.0.1", port))
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(OSError, TimeoutError):
            await bounded(writer.wait_closed())


async def send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await bounded(writer.drain())


# -- the inbound server -----------------------------------------------------------------

@dataclass
class Served:
    server: HttpServer
    port: int
    rejected: list[str]
    requests: list[InboundRequest]


async def echo(request: InboundRequest) -> Reply:
    """Answers what it got, as JSON."""
    return Reply(200, {"Content-Type": "application/json", "X-Path": request.raw_path},
                 json.dumps({"method": request.method, "path": request.raw_path,
                             "body": request.body.decode("latin-1"),
                             "headers": {k.lower(): v for k, v in request.headers.items()},
                             }).encode())


Handler = Callable[[InboundRequest], Awaitable[Reply]]


@asynccontextmanager
async def serving(handler: Handler = echo, **options: Any) -> AsyncIterator[Served]:
    rejected: list[str] = []
    requests: list[InboundRequest] = []

    async def recording(request: InboundRequest) -> Reply:
        requests.append(request)
        return await handler(request)

    settings: dict[str, Any] = {"max_header_bytes": 4096, "max_body_bytes": 1024,
                                "on_rejected": rejected.append}
    settings.update(options)
    server = HttpServer(recording, **settings)
    await server.start("127.0.0.1", 0)
    assert server.port
    try:
        yield Served(server, server.port, rejected, requests)
    finally:
        await bounded(server.stop(2.0), 10)


def get(path: str = "/", *extra: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: svc", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def echoed(resp: Resp) -> dict[str, Any]:
    assert resp.status == 200, resp
    return json.loads(resp.body)  # type: ignore[no-any-return]


async def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    async with serving() as s, raw_client(s.port) as (reader, writer):
        for i in range(3):
            await send(writer, get(f"/hello?i={i}", "X-Trace: abc"))
            resp = await read_response(reader)
            answer = echoed(resp)
            assert answer["method"] == "GET" and answer["path"] == f"/hello?i={i}"
            assert answer["headers"]["x-trace"] == "abc"
            assert resp.headers["Content-Length"] == str(len(resp.body))
            assert "Connection" not in resp.headers
            assert resp.headers["X-Path"] == f"/hello?i={i}"
        assert len(s.server.connections) == 1
        assert [r.peer for r in s.requests] == [s.requests[0].peer] * 3
        assert s.requests[0].peer.startswith("127.0.0.1:")


async def test_pipelined_requests_are_answered_in_order() -> None:
    async def slow_first(request: InboundRequest) -> Reply:
        if request.raw_path == "/0":
            await asyncio.sleep(0.05)  # the later ones must still wait for this one
        return await echo(request)

    async with serving(slow_first) as s, raw_client(s.port) as (reader, writer):
        batch = b"".join(get(f"/{i}") for i in range(5))
        batch += b"POST /5 HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\n\r\nbody"
        await send(writer, batch)
        answers = [echoed(await read_response(reader)) for _ in range(6)]
        assert [a["path"] for a in answers] == [f"/{i}" for i in range(6)]
        assert answers[5]["method"] == "POST" and answers[5]["body"] == "body"


async def test_many_pipelined_requests_pause_and_resume_reading() -> None:
    """More than 16 requests ahead pauses reading; every one is still answered, in order."""
    async with serving() as s, raw_client(s.port) as (reader, writer):
        await send(writer, b"".join(get(f"/{i}") for i in range(60)))
        for i in range(60):
            assert echoed(await read_response(reader))["path"] == f"/{i}"
        await send(writer, get("/after"))
        assert echoed(await read_response(reader))["path"] == "/after"


async def test_caller_reading_slowly_gets_every_answer() -> None:
    """Big answers to many pipelined requests, read only later: writing pauses reading,
    and reading resumes as the caller catches up."""
    async def big(request: InboundRequest) -> Reply:
        return Reply(200, {"X-Path": request.raw_path}, request.raw_path.encode() * 40_000)

    async with serving(big) as s, raw_client(s.port) as (reader, writer):
        writer.write(b"".join(get(f"/{i:02d}") for i in range(60)))  # no drain: not reading
        await asyncio.sleep(0.2)
        for i in range(60):
            resp = await read_response(reader)
            assert resp.headers["X-Path"] == f"/{i:02d}"
            assert resp.body == f"/{i:02d}".encode() * 40_000
        await send(writer, get("/after"))
        assert (await read_response(reader)).headers["X-Path"] == "/after"


async def test_request_body_by_content_length_split_across_writes() -> None:
    async with serving() as s, raw_client(s.port) as (reader, writer):
        await send(writer, b"PUT /doc HTTP/1.1\r\nHost: svc\r\nContent-Length: 11\r\n\r\nhello")
        await asyncio.sleep(0.01)
        await send(writer, b" world")
        answer = echoed(await read_response(reader))
        assert answer["method"] == "PUT" and answer["body"] == "hello world"


async def test_chunked_request_body_is_decoded() -> None:
    async with serving() as s, raw_client(s.port) as (reader, writer):
        await send(writer, b"POST /up HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n"
                           b"\r\n5\r\nhello\r\n")
        await asyncio.sleep(0.01)
        await send(writer, b"1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n")
        answer = echoed(await read_response(reader))
        assert answer["body"] == "hello world"
        # the connection is in a clean state afterwards
        await send(writer, get("/next"))
        assert echoed(await read_response(reader))["path"] == "/next"


async def test_head_gets_content_length_but_no_body() -> None:
    async with serving() as s, raw_client(s.port) as (reader, writer):
        await send(writer, get("/thing", method="HEAD"))
        resp = await read_response(reader, head=True)
        assert resp.status == 200 and resp.body == b""
        assert int(resp.headers["Content-Length"]) > 0  # what a GET would have sent
        assert s.requests[0].method == "HEAD"
        # no body bytes followed: the next answer starts right at a status line
        await send(writer, get("/next"))
        assert echoed(await read_response(reader))["path"] == "/next"


async def test_no_content_reply_has_no_body_nor_length() -> None:
    async def no_content(request: InboundRequest) -> Reply:
        return Reply(204, {"X-A": "1"}, b"ignored")

    async with serving(no_content) as s, raw_client(s.port) as (reader, writer):
        await send(writer, get("/a") + get("/b"))
        for _ in range(2):
            resp = await read_response(reader)
            assert resp.status == 204 and resp.headers["X-A"] == "1"
            assert "Content-Length" not in resp.headers
        assert len(s.requests) == 2


def test_render_reply() -> None:
    reply = Reply(200, {"X-A": "b"}, b"abc")
    assert render_reply(reply, keep_alive=True) == \
        b"HTTP/1.1 200 OK\r\nX-A: b\r\nContent-Length: 3\r\n\r\nabc"
    assert render_reply(reply, keep_alive=False, head=True) == \
        b"HTTP/1.1 200 OK\r\nX-A: b\r\nConnection: close\r\nContent-Length: 3\r\n\r\n"
    assert render_reply(Reply(304, {}, b"x"), keep_alive=True) == \
        b"HTTP/1.1 304 Not Modified\r\n\r\n"
    assert render_reply(Reply(599), keep_alive=True).startswith(b"HTTP/1.1 599 Unknown\r\n")


async def test_connection_close_is_honoured() -> None:
    async with serving() as s, raw_client(s.port) as (reader, writer):
        await send(writer, get("/x", "Connection: close") + get("/never"))
        resp = await read_response(reader)
        assert echoed(resp)["path"] == "/x"
        assert resp.headers["Connection"].lower() == "close"
        assert await read_eof(reader) == b""
        assert [r.raw_path for r in s.requests] == ["/x"]


async def test_requests_after_connection_close_are_ignored_not_rejected() -> None:
    async with serving() as s, raw_client(s.port) as (reader, writer):
        await send(writer, get("/x", "Connection: close") + get("/never"))
        assert echoed(await read_response(reader))["path"] == "/x"
        assert await read_eof(reader) == b""  # no answer of any kind to /never
    assert s.rejected == []


async def test_http10_closes_unless_keep_alive_asked() -> None:
    async with serving() as s:
        async with raw_client(s.port) as (reader, writer):
            await send(writer, get("/old", version="1.0"))
            resp = await read_response(reader)
            assert echoed(resp)["path"] == "/old"
            assert resp.headers["Connection"].lower() == "close"
            assert await read_eof(reader) == b""
        async with raw_client(s.port) as (reader, writer):
            for i in range(2):
                await send(writer, get(f"/ka{i}", "Connection: keep-alive", version="1.0"))
                resp = await read_response(reader)
                assert echoed(resp)["path"] == f"/ka{i}"
                assert resp.headers.get("Connection", "").lower() != "close"


async def _expect_rejection(s: Served, data: bytes, status: int, reason: str) -> Resp:
    async with raw_client(s.port) as (reader, writer):
        await send(writer, data)
        resp = await read_response(reader)
        assert resp.status == status, resp
        assert resp.headers["Connection"].lower() == "close"
        assert "error" in json.loads(resp.body)
        assert await read_eof(reader) == b""
    assert s.rejected == [reason]
    assert s.requests == []  # the handler never saw it
    return resp


async def test_headers_too_large_is_431() -> None:
    async with serving(max_header_bytes=1024) as s:
        data = get("/", "X-Big: " + "a" * 2000)
        resp = await _expect_rejection(s, data, 431, "headers_too_large")
        assert "max_header_bytes=1024" in json.loads(resp.body)["error"]


async def test_long_request_target_is_431() -> None:
    async with serving(max_header_bytes=1024) as s:
        await _expect_rejection(s, get("/" + "p" * 3000), 431, "headers_too_large")


async def test_many_small_headers_add_up_to_431() -> None:
    async with serving(max_header_bytes=1024) as s:
        data = get("/", *(f"X-H{i}: v" for i in range(200)))
        await _expect_rejection(s, data, 431, "headers_too_large")


async def test_headers_just_under_the_limit_pass() -> None:
    async with serving(max_header_bytes=1024) as s, raw_client(s.port) as (reader, writer):
        await send(writer, get("/", "X-Big: " + "a" * 900))
        assert echoed(await read_response(reader))["headers"]["x-big"] == "a" * 900


async def test_endless_header_line_is_431_before_it_ends() -> None:
    async with serving(max_header_bytes=1024) as s, raw_client(s.port) as (reader, writer):
        answer = asyncio.get_running_loop().create_task(read_response(reader))
        await send(writer, b"GET / HTTP/1.1\r\nHost: svc\r\nX-Big: ")
        for _ in range(64):  # up to 64 KiB of one header line that never ends
            if answer.done():
                break
            try:
                await send(writer, b"a" * 1024)
            except ConnectionError:
                break
            await asyncio.sleep(0.01)
        assert (await answer).status == 431
        assert s.rejected == ["headers_too_large"]


async def test_content_length_over_max_is_413_before_the_body_is_sent() -> None:
    async with serving(max_body_bytes=1024) as s:
        data = b"POST /up HTTP/1.1\r\nHost: svc\r\nContent-Length: 100000\r\n\r\n"
        resp = await _expect_rejection(s, data, 413, "body_too_large")  # no body was sent
        assert "max_body_bytes=1024" in json.loads(resp.body)["error"]


async def test_body_at_max_passes() -> None:
    async with serving(max_body_bytes=1024) as s, raw_client(s.port) as (reader, writer):
        await send(writer, b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 1024\r\n\r\n"
                   + b"b" * 1024)
        assert len(echoed(await read_response(reader))["body"]) == 1024


async def test_streamed_chunked_body_over_max_is_413() -> None:
    async with serving(max_body_bytes=1024) as s, raw_client(s.port) as (reader, writer):
        await send(writer, b"POST /up HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n"
                           b"\r\n200\r\n" + b"x" * 0x200 + b"\r\n")
        await send(writer, b"200\r\n" + b"x" * 0x200 + b"\r\n")  # 1024 so far: still fine
        await send(writer, b"10\r\n" + b"x" * 0x10 + b"\r\n")  # over
        resp = await read_response(reader)
        assert resp.status == 413
        assert resp.headers["Connection"].lower() == "close"
        assert await read_eof(reader) == b""
    assert s.rejected == ["body_too_large"] and s.requests == []


GARBAGE_REQUESTS = {
    "tls": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 20,  # ClientHello
    "words": b"HELLO THERE\r\n\r\n",
    "bad-length": b"GET / HTTP/1.1\r\nHost: svc\r\nContent-Length: abc\r\n\r\n",
    "length-and-chunked": b"GET / HTTP/1.1\r\nContent-Length: 1\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "space-in-name": b"GET / HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
}


@pytest.mark.parametrize("garbage", GARBAGE_REQUESTS.values(), ids=GARBAGE_REQUESTS.keys())
async def test_garbage_is_400(garbage: bytes) -> None:
    async with serving() as s:
        await _expect_rejection(s, garbage, 400, "malformed")




UPGRADES = {
    "websocket": get("/ws", "Connection: Upgrade", "Upgrade: websocket",
                     "Sec-WebSocket-Version: 13"),
    "connect": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
}


@pytest.mark.parametrize("data", UPGRADES.values(), ids=UPGRADES.keys())
async def test_upgrade_and_connect_are_501(data: bytes) -> None:
    async with serving() as s:
        await _expect_rejection(s, data, 501, "upgrade")




async def test_upgrade_and_connect_never_answered_as_normal_keep_alive_requests() -> None:
    """Bytes after an upgrade request (a tunnel) are never parsed as more requests."""
    for data in (get("/ws", "Connection: Upgrade", "Upgrade: websocket"),
                 b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"):
        async with serving() as s, raw_client(s.port) as (reader, writer):
            await send(writer, data + b"raw tunnel bytes")
            resp = await read_response(reader)
            assert resp.headers["Connection"].lower() == "close"
            assert await read_eof(reader) == b""
            assert s.rejected == ["upgrade"]


async def test_expect_100_continue_gets_the_interim_answer_first() -> None:
    async with serving() as s, raw_client(s.port) as (reader, writer):
        await send(writer, b"POST /up HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n"
                           b"Expect: 100-continue\r\n\r\n")
        interim = await bounded(reader.readuntil(b"\r\n\r\n"))
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        await send(writer, b"hello")
        answer = echoed(await read_response(reader))
        assert answer["body"] == "hello" and answer["headers"]["expect"] == "100-continue"


async def test_expect_100_continue_is_ignored_for_http10() -> None:
    async with serving() as s, raw_client(s.port) as (reader, writer):
        await send(writer, b"POST /up HTTP/1.0\r\nContent-Length: 5\r\n"
                           b"Expect: 100-continue\r\n\r\n")
        await asyncio.sleep(0.05)
        await send(writer, b"hello")
        resp = await read_response(reader)
        assert resp.status == 200 and echoed(resp)["body"] == "hello"


async def test_expect_100_continue_with_length_over_max_is_413_without_100() -> None:
    """Content-Length sent before Expect: the 413 comes and no 100 Continue."""
    async with serving(max_body_bytes=1024) as s, raw_client(s.port) as (reader, writer):
        await send(writer, b"POST /up HTTP/1.1\r\nHost: svc\r\nContent-Length: 5000\r\n"
                           b"Expect: 100-continue\r\n\r\n")
        assert (await read_response(reader)).status == 413


async def test_expect_100_continue_before_length_over_max_is_413_without_100() -> None:
    async with serving(max_body_bytes=1024) as s, raw_client(s.port) as (reader, writer):
        await send(writer, b"POST /up HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\n"
                           b"Content-Length: 5000\r\n\r\n")
        assert (await read_response(reader)).status == 413


async def test_expect_100_continue_keeps_pipelined_answers_in_order() -> None:
    async with serving() as s, raw_client(s.port) as (reader, writer):
        await send(writer, get("/first") + b"POST /second HTTP/1.1\r\nHost: svc\r\n"
                   b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        first = await read_response(reader)
        assert first.status == 200 and echoed(first)["path"] == "/first"


async def test_handler_error_is_500_and_the_connection_keeps_working() -> None:
    async def flaky(request: InboundRequest) -> Reply:
        if request.raw_path == "/boom":
            raise RuntimeError("handler bug")
        return await echo(request)

    async with serving(flaky) as s, raw_client(s.port) as (reader, writer):
        await send(writer, get("/boom") + get("/ok"))
        resp = await read_response(reader)
        assert resp.status == 500 and "error" in json.loads(resp.body)
        assert resp.headers.get("Connection", "").lower() != "close"
        assert echoed(await read_response(reader))["path"] == "/ok"
        await send(writer, get("/boom"))
        assert (await read_response(reader)).status == 500
        await send(writer, get("/ok2"))
        assert echoed(await read_response(reader))["path"] == "/ok2"
        assert s.server.in_flight == 0


async def test_rejection_after_a_good_pipelined_request_still_answers_the_good_one() -> None:
    async with serving() as s, raw_client(s.port) as (reader, writer):
        await send(writer, get("/good") + b"NONSENSE\r\n\r\n")
        resp = await read_response(reader)
        assert echoed(resp)["path"] == "/good"
        # only the last answer says close: a caller honouring it earlier loses the 400
        assert resp.headers.get("Connection", "").lower() != "close"
        final = await read_response(reader)
        assert final.status == 400 and final.headers["Connection"].lower() == "close"
        await read_eof(reader)
        assert s.rejected == ["malformed"]


async def test_rejection_after_a_good_pipelined_request_is_answered_too() -> None:
    async with serving() as s, raw_client(s.port) as (reader, writer):
        await send(writer, get("/good") + b"NONSENSE\r\n\r\n")
        assert echoed(await read_response(reader))["path"] == "/good"
        assert (await read_response(reader)).status == 400


async def test_idle_connection_is_closed_after_idle_timeout() -> None:
    async with serving(idle_timeout_seconds=0.2) as s:
        async with raw_client(s.port) as (reader, _):  # never says anything
            assert await read_eof(reader) == b""
        async with raw_client(s.port) as (reader, writer):  # idle after one answer
            await send(writer, get("/once"))
            assert echoed(await read_response(reader))["path"] == "/once"
            assert await read_eof(reader) == b""
        async with raw_client(s.port) as (reader, writer):  # stalled inside the headers
            await send(writer, b"GET /stalled HTTP/1.1\r\nHost: svc\r\n")
            assert await read_eof(reader) == b""
        async with raw_client(s.port) as (reader, writer):  # stalled inside the body
            await send(writer, b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 10\r\n\r\nab")
            assert await read_eof(reader) == b""
        assert s.requests[0].raw_path == "/once" and len(s.requests) == 1


async def trickle_until_answered(writer: asyncio.StreamWriter, reader: asyncio.StreamReader,
                                 data: bytes) -> bytes:
    """Send ``data`` a byte every 50 ms (each byte within the idle timeout of the last)
    until the server answers or closes; what it sent back (b"" when all of ``data`` went
    and nothing came)."""
    for byte in data:
        await send(writer, bytes([byte]))
        with suppress(TimeoutError):
            answer = await asyncio.wait_for(reader.read(65536), 0.05)
            return answer or b"closed"
    return b""


async def test_a_request_trickled_in_a_byte_at_a_time_is_cut_with_408() -> None:
    """A slowloris: each byte resets the idle clock, but the whole request must arrive
    within the idle timeout of its start."""
    async with serving(idle_timeout_seconds=0.3) as s:
        async with raw_client(s.port) as (reader, writer):
            head = b"GET /slow HTTP/1.1\r\nHost: svc\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n"
            answer = await trickle_until_answered(writer, reader, head)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
        async with raw_client(s.port) as (reader, writer):  # the body too
            await send(writer, b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 200\r\n\r\n")
            answer = await trickle_until_answered(writer, reader, b"b" * 200)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert s.rejected == ["request_timeout", "request_timeout"] and not s.requests


async def test_a_request_sent_after_a_slow_answer_is_not_cut() -> None:
    """The clock of a request sent while an earlier one was being answered starts when
    that answer went out: pipelining behind a slow call is no slowloris."""
    async def slow(request: InboundRequest) -> Reply:
        await asyncio.sleep(1.4 if request.raw_path == "/slow" else 0)
        return await echo(request)

    async with serving(slow, idle_timeout_seconds=0.6) as s, \
            raw_client(s.port) as (reader, writer):
        await send(writer, get("/slow") + b"GET /next HTTP/1.1\r\n")
        assert echoed(await read_response(reader))["path"] == "/slow"
        await asyncio.sleep(0.2)  # within the idle timeout of the answer, not of the start
        await send(writer, b"Host: svc\r\n\r\n")
        assert echoed(await read_response(reader))["path"] == "/next"


async def test_slow_handler_is_not_cut_by_the_idle_timeout() -> None:
    async def slow(request: InboundRequest) -> Reply:
        await asyncio.sleep(0.8)  # several idle timeouts and sweeps
        return await echo(request)

    async with serving(slow, idle_timeout_seconds=0.2) as s, \
            raw_client(s.port) as (reader, writer):
        await send(writer, get("/slow"))
        assert echoed(await read_response(reader))["path"] == "/slow"


async def test_stop_lets_an_in_flight_request_finish() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def held(request: InboundRequest) -> Reply:
        entered.set()
        await release.wait()
        return await echo(request)

    async with serving(held) as s:
        async with raw_client(s.port) as (idle_reader, _), \
                raw_client(s.port) as (reader, writer):
            await send(writer, get("/inflight"))
            await bounded(entered.wait())
            stopping = asyncio.get_running_loop().create_task(s.server.stop(WAIT))
            assert await read_eof(idle_reader) == b""  # idle connections close at once
            assert not stopping.done()
            with pytest.raises(OSError):  # no longer listening
                await bounded(asyncio.open_connection("127.0.0.1", s.port))
            release.set()
            resp = await read_response(reader)
            assert echoed(resp)["path"] == "/inflight"
            assert resp.headers["Connection"].lower() == "close"
            assert await read_eof(reader) == b""
            await bounded(stopping)
            assert s.server.in_flight == 0 and not s.server.connections


async def test_stop_closes_a_stuck_request_after_its_timeout() -> None:
    entered = asyncio.Event()

    async def stuck(request: InboundRequest) -> Reply:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async with serving(stuck) as s, raw_client(s.port) as (reader, writer):
        await send(writer, get("/stuck"))
        await bounded(entered.wait())
        await bounded(s.server.stop(0.1))
        assert await read_eof(reader) == b""  # closed without an answer
        assert s.server.in_flight == 0


async def test_on_rejected_gets_each_reason() -> None:
    rejected: list[str] = []
    async with serving(max_header_bytes=1024, max_body_bytes=10,
                       on_rejected=rejected.append) as s:
        for data in (b"BAD\r\n\r\n", get("/", "X: " + "y" * 2000),
                     b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n",
                     get("/ws", "Connection: Upgrade", "Upgrade: websocket")):
            async with raw_client(s.port) as (reader, writer):
                await send(writer, data)
                await read_eof(reader)
    assert rejected == ["malformed", "headers_too_large", "body_too_large", "upgrade"]


# -- the forwarder and raw upstreams ----------------------------------------------------

@dataclass
class RawRequest:
    line: str
    headers: CIMultiDict[str]
    body: bytes


async def read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    """One request as an upstream reads it; None at a clean EOF."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    line, headers = parse_head(raw)
    body = b""
    if "Content-Length" in headers:
        body = await reader.readexactly(int(headers["Content-Length"]))
    return RawRequest(line, headers, body)


Script = Callable[["Upstream", asyncio.StreamReader, asyncio.StreamWriter, int],
                  Awaitable[None]]


@dataclass
class Upstream:
    """A raw upstream: runs ``script(upstream, reader, writer, index)`` per connection."""

    script: Script
    host: str = "127.0.0.1"
    accepted: int = 0
    requests: list[RawRequest] = field(default_factory=list)
    port: int = 0
    _server: asyncio.base_events.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await bounded(asyncio.gather(*self._tasks, return_exceptions=True))
        await bounded(self._server.wait_closed())

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self.accepted += 1
        try:
            await self.script(self, reader, writer, self.accepted)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()
            with suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    @property
    def endpoint(self) -> Endpoint:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return Endpoint(id="n1", address=f"{host}:{self.port}", idc="idc1", weight=1.0)

    async def next_request(self, reader: asyncio.StreamReader) -> RawRequest | None:
        request = await read_request(reader)
        if request is not None:
            self.requests.append(request)
        return request


def answering(*responses: bytes, close_after: bool = False) -> Script:
    """Answers each request with the next canned response (the last one repeats)."""
    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        n = 0
        while await up.next_request(reader) is not None:
            writer.write(responses[min(n, len(responses) - 1)])
            await writer.drain()
            n += 1
            if close_after:
                return
    return script


def ok(body: bytes = b"ok", *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return (f"HTTP/1.1 200 OK\r\n{head}Content-Length: {len(body)}\r\n\r\n").encode() + body


def make_call(up: Upstream | Endpoint, method: str = "GET", path: str = "/p?q=1",
              body: bytes = b"", headers: dict[str, str] | None = None) -> Call:
    node = up if isinstance(up, Endpoint) else up.endpoint
    return Call(service="svc", method=method, path_qs=path, headers=headers or {},
                body=body, node=node)


@asynccontextmanager
async def forwarder(**options: Any) -> AsyncIterator[Forwarder]:
    settings: dict[str, Any] = {"timeout_seconds": WAIT, "connect_timeout_seconds": 2.0,
                                "max_response_bytes": 1 << 20, "max_connections": 8}
    settings.update(options)
    fwd = Forwarder(**settings)
    await fwd.start()
    try:
        yield fwd
    finally:
        await fwd.stop()
        await asyncio.sleep(0)  # let the transports report connection_lost


async def forward(fwd: Forwarder, call: Call) -> Reply:
    return await bounded(fwd(call), WAIT * 2)  # type: ignore[no-any-return]


async def test_forward_sends_the_request_and_reads_the_reply() -> None:
    response = (b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\n"
                b"Set-Cookie: b=2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
                b"Content-Length: 7\r\n\r\ncreated")
    async with Upstream(answering(response)) as up, forwarder() as fwd:
        reply = await forward(fwd, make_call(up, "POST", "/items?x=1", b"payload",
                                             {"X-Trace": "t1"}))
        assert reply.status == 201 and reply.body == b"created"
        assert reply.headers["Content-Type"] == "text/plain"
        assert isinstance(reply.headers, CIMultiDict)
        assert reply.headers.getall("Set-Cookie") == ["a=1", "b=2"]
        for hop in ("Connection", "Keep-Alive", "Content-Length", "Transfer-Encoding"):
            assert hop not in reply.headers
        [request] = up.requests
        assert request.line == "POST /items?x=1 HTTP/1.1"
        assert request.headers["Host"] == f"127.0.0.1:{up.port}"
        assert request.headers["X-Trace"] == "t1"
        assert request.headers["Content-Length"] == "7" and request.body == b"payload"


async def test_forward_content_length_only_when_a_body_is_expected() -> None:
    async with Upstream(answering(ok())) as up, forwarder() as fwd:
        for method in ("GET", "DELETE", "POST", "PUT"):
            assert (await forward(fwd, make_call(up, method))).status == 200
        lengths = [r.headers.get("Content-Length") for r in up.requests]
        assert lengths == [None, None, "0", "0"]


async def test_idle_connections_to_nodes_that_left_are_closed_and_forgotten() -> None:
    """Nodes churn: the pool of an address nobody calls any more must not stay open or
    be kept for ever."""
    async with Upstream(answering(ok())) as first, Upstream(answering(ok())) as second, \
            forwarder(idle_seconds=0.2) as fwd:
        for up in (first, second):
            assert (await forward(fwd, make_call(up))).status == 200
        assert fwd.open_connections == 2 and fwd.pooled_addresses == 2
        for _ in range(100):  # sweeps run at least every idle_seconds / 2
            if fwd.open_connections == 0 and fwd.pooled_addresses == 0:
                break
            await asyncio.sleep(0.05)
        assert fwd.open_connections == 0 and fwd.pooled_addresses == 0
        assert (await forward(fwd, make_call(first))).status == 200  # and calls go on
        assert first.accepted == 2


async def test_keep_alive_connection_is_reused() -> None:
    async with Upstream(answering(ok(b"a"), ok(b"bb"), ok(b"ccc"))) as up, \
            forwarder() as fwd:
        bodies = [(await forward(fwd, make_call(up, path=f"/{i}"))).body for i in range(3)]
        assert bodies == [b"a", b"bb", b"ccc"]
        assert up.accepted == 1 and fwd.open_connections == 1
        assert [r.line for r in up.requests] == [f"GET /{i} HTTP/1.1" for i in range(3)]


async def test_server_closing_after_each_answer_does_not_fail_the_next_call() -> None:
    async with Upstream(answering(ok(), close_after=True)) as up, forwarder() as fwd:
        for i in range(5):
            assert (await forward(fwd, make_call(up, path=f"/{i}"))).body == b"ok"
        assert up.accepted == 5


async def test_reused_connection_closed_before_answering_is_retried_once() -> None:
    """The node closes a kept-alive connection as the next call arrives: a fresh one works."""
    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        await up.next_request(reader)
        writer.write(ok(f"conn{index}".encode()))
        await writer.drain()
        if index == 1:
            await up.next_request(reader)  # then close without a byte of answer
            return
        while await up.next_request(reader) is not None:
            writer.write(ok(f"conn{index}".encode()))
            await writer.drain()

    async with Upstream(script) as up, forwarder() as fwd:
        assert (await forward(fwd, make_call(up, path="/1"))).body == b"conn1"
        assert (await forward(fwd, make_call(up, path="/2"))).body == b"conn2"
        assert (await forward(fwd, make_call(up, path="/3"))).body == b"conn2"
        assert up.accepted == 2
        assert [r.line.split()[1] for r in up.requests] == ["/1", "/2", "/2", "/3"]


async def test_post_on_a_reused_connection_closed_before_answering_is_not_retried() -> None:
    """A call that must not be sent twice is not retried: the node may have read it."""
    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        await up.next_request(reader)
        writer.write(ok(f"conn{index}".encode()))
        await writer.drain()
        await up.next_request(reader)  # then close without a byte of answer

    async with Upstream(script) as up, forwarder() as fwd:
        assert (await forward(fwd, make_call(up, method="POST", body=b"a"))).body == b"conn1"
        with pytest.raises(UpstreamError) as info:
            await forward(fwd, make_call(up, method="POST", body=b"b"))
        assert info.value.error_class == "connection" and info.value.sent
        assert up.accepted == 1 and len(up.requests) == 2


async def test_fresh_connection_closed_without_answer_is_not_retried() -> None:
    async def hang_up(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, index: int) -> None:
        await up.next_request(reader)

    async with Upstream(hang_up) as up, forwarder() as fwd:
        with pytest.raises(UpstreamError) as info:
            await forward(fwd, make_call(up))
        assert info.value.error_class == "connection" and info.value.sent
        assert up.accepted == 1


async def test_reused_connection_closed_mid_answer_is_not_retried() -> None:
    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        await up.next_request(reader)
        writer.write(ok())
        await up.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart")
        await writer.drain()

    async with Upstream(script) as up, forwarder() as fwd:
        assert (await forward(fwd, make_call(up))).body == b"ok"
        with pytest.raises(UpstreamError) as info:
            await forward(fwd, make_call(up))
        assert info.value.error_class == "connection"
        assert up.accepted == 1 and len(up.requests) == 2


async def test_connection_close_from_upstream_is_not_reused() -> None:
    async with Upstream(answering(ok(b"x", "Connection: close"))) as up, forwarder() as fwd:
        for _ in range(2):
            assert (await forward(fwd, make_call(up))).body == b"x"
        assert up.accepted == 2


async def test_http10_upstream_is_not_reused() -> None:
    async with Upstream(answering(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nv0")) as up, \
            forwarder() as fwd:
        for _ in range(2):
            assert (await forward(fwd, make_call(up))).body == b"v0"
        assert up.accepted == 2


async def test_chunked_response_is_decoded() -> None:
    response = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
                b"5\r\nhello\r\n1;ext=y\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n")
    async with Upstream(answering(response)) as up, forwarder() as fwd:
        for _ in range(2):  # and the connection is reusable after it
            reply = await forward(fwd, make_call(up))
            assert reply.body == b"hello world" and reply.headers["X-A"] == "1"
            assert "Transfer-Encoding" not in reply.headers
        assert up.accepted == 1


async def test_response_written_byte_by_byte() -> None:
    response = ok(b"slowly", "X-A: 1")

    async def trickle(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, index: int) -> None:
        while await up.next_request(reader) is not None:
            for i in range(len(response)):
                writer.write(response[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0)

    async with Upstream(trickle) as up, forwarder() as fwd:
        reply = await forward(fwd, make_call(up))
        assert reply.body == b"slowly" and reply.headers["X-A"] == "1"


async def test_close_delimited_body() -> None:
    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        await up.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(f"world {index}".encode())
        await writer.drain()

    async with Upstream(script) as up, forwarder() as fwd:
        reply = await forward(fwd, make_call(up))
        assert reply.status == 200 and reply.body == b"hello world 1"
        assert reply.headers["Content-Type"] == "text/plain"
        assert (await forward(fwd, make_call(up))).body == b"hello world 2"
        assert up.accepted == 2


OVERSIZED_RESPONSES = {
    "content-length": ok(b"x" * 101),
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               + (b"40\r\n" + b"x" * 64 + b"\r\n") * 2 + b"0\r\n\r\n",
    "close-delimited": b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 101,
}


@pytest.mark.parametrize("response", OVERSIZED_RESPONSES.values(),
                         ids=OVERSIZED_RESPONSES.keys())
async def test_response_over_max_response_bytes_fails(response: bytes) -> None:
    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        await up.next_request(reader)
        writer.write(response)
        await writer.drain()
        await reader.read()  # keep the connection open: the forwarder must give up by itself

    async with Upstream(script) as up, forwarder(max_response_bytes=100) as fwd:
        with pytest.raises(UpstreamError) as info:
            await forward(fwd, make_call(up))
        assert info.value.error_class == "5xx"  # the node answered: not retried elsewhere
        assert info.value.sent
        assert "max_response_bytes=100" in str(info.value)




async def test_response_of_exactly_max_response_bytes_passes() -> None:
    async with Upstream(answering(ok(b"x" * 100))) as up, \
            forwarder(max_response_bytes=100) as fwd:
        assert len((await forward(fwd, make_call(up))).body) == 100


async def test_timeout_gives_up_and_drops_the_connection() -> None:
    closed = asyncio.Event()

    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        request = await up.next_request(reader)
        assert request is not None
        if request.line.startswith("GET /slow"):
            await reader.read()  # never answers; returns when the forwarder hangs up
            closed.set()
            return
        writer.write(ok())
        await writer.drain()
        await reader.read()

    async with Upstream(script) as up, forwarder(timeout_seconds=0.2) as fwd:
        with pytest.raises(UpstreamError) as info:
            await forward(fwd, make_call(up, path="/slow"))
        assert info.value.error_class == "timeout" and info.value.sent
        await bounded(closed.wait())  # the timed-out connection was closed, not pooled
        assert (await forward(fwd, make_call(up, path="/fast"))).body == b"ok"
        assert up.accepted == 2


async def test_connect_refused_is_a_connection_error_not_sent() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        async with forwarder() as fwd:
            node = Endpoint(id="dead", address=f"127.0.0.1:{port}", idc="idc1", weight=1.0)
            with pytest.raises(UpstreamError) as info:
                await forward(fwd, make_call(node, "POST", body=b"x"))
            assert info.value.error_class == "connection" and info.value.sent is False
            assert "dead" in str(info.value)
            assert fwd.open_connections == 0


async def test_large_response_body() -> None:
    body = bytes(range(256)) * 8192  # 2 MiB
    async with Upstream(answering(ok(body))) as up, \
            forwarder(max_response_bytes=len(body)) as fwd:
        for _ in range(2):
            assert (await forward(fwd, make_call(up))).body == body
        assert up.accepted == 1


async def test_ipv6_node_address() -> None:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    async with Upstream(answering(ok(b"v6")), host="::1") as up, forwarder() as fwd:
        assert up.endpoint.address == f"[::1]:{up.port}"
        assert (await forward(fwd, make_call(up))).body == b"v6"
        assert up.requests[0].headers["Host"] == f"[::1]:{up.port}"


async def test_bad_address_is_a_connection_error_not_sent() -> None:
    async with forwarder() as fwd:
        node = Endpoint(id="bad", address="127.0.0.1:notaport", idc="idc1", weight=1.0)
        with pytest.raises(UpstreamError) as info:
            await forward(fwd, make_call(node))
        assert info.value.error_class == "connection" and info.value.sent is False
        assert fwd.open_connections == 0


async def test_head_reply_with_content_length_and_no_body() -> None:
    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        while (request := await up.next_request(reader)) is not None:
            if request.line.startswith("HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-A: 1\r\n\r\n")
            else:
                writer.write(ok(b"get"))
            await writer.drain()

    async with Upstream(script) as up, forwarder() as fwd:
        reply = await forward(fwd, make_call(up, "HEAD"))  # not waiting for 1234 bytes
        assert reply.status == 200 and reply.body == b"" and reply.headers["X-A"] == "1"
        assert "Content-Length" not in up.requests[0].headers
        assert (await forward(fwd, make_call(up))).body == b"get"
        assert (await forward(fwd, make_call(up, "HEAD"))).status == 200


async def test_interim_100_continue_is_skipped() -> None:
    response = (b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: 4\r\n\r\ndone")
    async with Upstream(answering(response)) as up, forwarder() as fwd:
        for _ in range(2):
            reply = await forward(fwd, make_call(up, "POST", body=b"data"))
            assert reply.status == 200 and reply.body == b"done"
            assert reply.headers["X-Final"] == "yes" and "X-Interim" not in reply.headers
        assert up.accepted == 1


async def test_interim_answers_in_separate_writes() -> None:
    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        await up.next_request(reader)
        for part in (b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\n"
                     b"Link: </a.css>\r\n\r\n", ok(b"final")):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)
        await reader.read()

    async with Upstream(script) as up, forwarder() as fwd:
        reply = await forward(fwd, make_call(up))
        assert reply.status == 200 and reply.body == b"final" and "Link" not in reply.headers


async def test_no_content_and_not_modified_replies() -> None:
    async with Upstream(answering(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
                                  b"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\n",
                                  ok(b"after"))) as up, forwarder() as fwd:
        reply = await forward(fwd, make_call(up))
        assert reply.status == 204 and reply.body == b"" and reply.headers["X-A"] == "1"
        reply = await forward(fwd, make_call(up))
        assert reply.status == 304 and reply.body == b"" and reply.headers["ETag"] == '"e"'
        assert (await forward(fwd, make_call(up))).body == b"after"
        assert up.accepted == 1


async def test_max_connections_one_makes_the_second_call_wait() -> None:
    got_first = asyncio.Event()
    gate = asyncio.Event()

    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        while (request := await up.next_request(reader)) is not None:
            if request.line.startswith("GET /first"):
                got_first.set()
                await gate.wait()
            writer.write(ok(request.line.split()[1].encode()))
            await writer.drain()

    async with Upstream(script) as up, forwarder(max_connections=1) as fwd:
        loop = asyncio.get_running_loop()
        first = loop.create_task(fwd(make_call(up, path="/first")))
        await bounded(got_first.wait())
        second = loop.create_task(fwd(make_call(up, path="/second")))
        await asyncio.sleep(0.05)
        assert not second.done() and fwd.open_connections == 1
        gate.set()
        replies = await bounded(asyncio.gather(first, second))
        assert [r.body for r in replies] == [b"/first", b"/second"]
        assert up.accepted == 1


async def test_max_connections_reached_until_the_deadline_is_a_timeout_not_sent() -> None:
    got_first = asyncio.Event()

    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        await up.next_request(reader)
        got_first.set()
        await reader.read()  # never answers

    async with Upstream(script) as up, \
            forwarder(max_connections=1, timeout_seconds=0.3) as fwd:
        loop = asyncio.get_running_loop()
        # started together, so that both deadlines are the same to within microseconds:
        # the first call's connection is only freed after its deadline, too late for the
        # second call to use it
        first = loop.create_task(fwd(make_call(up, path="/first")))
        second = loop.create_task(fwd(make_call(up, path="/second")))
        await bounded(got_first.wait())
        with pytest.raises(UpstreamError) as info:
            await bounded(second)
        assert info.value.error_class == "timeout" and info.value.sent is False
        with pytest.raises(UpstreamError) as first_info:
            await bounded(first)
        assert first_info.value.error_class == "timeout" and first_info.value.sent
        assert up.accepted == 1


async def test_max_connections_across_nodes_closes_an_idle_one() -> None:
    async with Upstream(answering(ok(b"a"))) as a, Upstream(answering(ok(b"b"))) as b, \
            forwarder(max_connections=1) as fwd:
        node_b = Endpoint(id="n2", address=f"127.0.0.1:{b.port}", idc="idc1", weight=1.0)
        assert (await forward(fwd, make_call(a))).body == b"a"
        assert (await forward(fwd, make_call(node_b))).body == b"b"
        assert (await forward(fwd, make_call(a))).body == b"a"
        assert fwd.open_connections <= 1
        assert a.accepted == 2 and b.accepted == 1


async def test_many_concurrent_calls_share_a_small_pool() -> None:
    async with Upstream(answering(ok(b"r"))) as up, forwarder(max_connections=3) as fwd:
        replies = await bounded(asyncio.gather(*(fwd(make_call(up, path=f"/{i}"))
                                                 for i in range(30))))
        assert [r.body for r in replies] == [b"r"] * 30
        assert 1 <= up.accepted <= 3
        assert sorted(int(r.line.split()[1][1:]) for r in up.requests) == list(range(30))


GARBAGE_RESPONSES = {
    "protocol": b"SPDY/3 200 OK\r\n\r\n",
    "status": b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
    "length": b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n",
    "binary": b"\x00\x01\x02\x03garbage\r\n\r\n",
}


@pytest.mark.parametrize("response", GARBAGE_RESPONSES.values(), ids=GARBAGE_RESPONSES.keys())
async def test_garbage_response_is_a_connection_error(response: bytes) -> None:
    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        await up.next_request(reader)
        writer.write(response)
        await writer.drain()
        await reader.read()

    async with Upstream(script) as up, forwarder() as fwd:
        with pytest.raises(UpstreamError) as info:
            await forward(fwd, make_call(up))
        assert info.value.error_class == "connection" and info.value.sent
        assert "malformed" in str(info.value)




async def test_not_started_and_stopped_forwarder() -> None:
    fwd = Forwarder(timeout_seconds=1, connect_timeout_seconds=1, max_response_bytes=10,
                    max_connections=1)
    async with Upstream(answering(ok())) as up:
        with pytest.raises(RuntimeError):
            await fwd(make_call(up))
        await fwd.start()
        assert (await forward(fwd, make_call(up))).body == b"ok"
        assert fwd.open_connections == 1
        await fwd.stop()
        with pytest.raises(RuntimeError):
            await fwd(make_call(up))
        for _ in range(100):
            if fwd.open_connections == 0:
                break
            await asyncio.sleep(0.01)
        assert fwd.open_connections == 0


async def test_stop_fails_a_call_in_flight() -> None:
    got = asyncio.Event()

    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        await up.next_request(reader)
        got.set()
        await reader.read()

    async with Upstream(script) as up, forwarder() as fwd:
        call = asyncio.get_running_loop().create_task(fwd(make_call(up)))
        await bounded(got.wait())
        await fwd.stop()
        with pytest.raises(UpstreamError) as info:
            await bounded(call)
        assert info.value.error_class == "connection"


async def test_connection_closed_inside_the_headers_is_an_error() -> None:
    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        await up.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/pl")  # then the node dies

    async with Upstream(script) as up, forwarder() as fwd:
        with pytest.raises(UpstreamError) as info:
            await forward(fwd, make_call(up))
        assert info.value.error_class == "connection"


async def test_connection_closed_after_an_interim_answer_is_a_connection_error() -> None:
    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        await up.next_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # then the node dies

    async with Upstream(script) as up, forwarder(timeout_seconds=1.0) as fwd:
        with pytest.raises(UpstreamError) as info:
            await forward(fwd, make_call(up, "POST", body=b"x"))
        assert info.value.error_class == "connection"


async def test_bytes_after_the_answer_never_reach_the_next_call() -> None:
    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        await up.next_request(reader)
        if index == 1:  # one answer plus the start of another nobody asked for
            writer.write(ok(b"one") + b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nstale")
            await writer.drain()
            await up.next_request(reader)
        writer.write(ok(b"two"))
        await writer.drain()
        await reader.read()

    async with Upstream(script) as up, forwarder() as fwd:
        assert (await forward(fwd, make_call(up))).body == b"one"
        assert (await forward(fwd, make_call(up))).body == b"two"


async def test_half_closed_caller_still_gets_its_answer() -> None:
    async def upstream_like(request: InboundRequest) -> Reply:
        await asyncio.sleep(0.05)  # as a real call does: the EOF is read meanwhile
        return await echo(request)

    async with serving(upstream_like) as s:
        async with raw_client(s.port) as (reader, writer):
            await send(writer, get("/half"))
            writer.write_eof()
            assert echoed(await read_response(reader))["path"] == "/half"
            assert await read_eof(reader) == b""
        async with raw_client(s.port) as (reader, writer):  # pipelined, then half-closed
            await send(writer, get("/a") + get("/b"))
            writer.write_eof()
            assert echoed(await read_response(reader))["path"] == "/a"
            last = await read_response(reader)
            assert echoed(last)["path"] == "/b"
            assert last.headers["Connection"].lower() == "close"
            assert await read_eof(reader) == b""
        async with raw_client(s.port) as (reader, writer):  # half-closed while idle
            await send(writer, get("/c"))
            assert echoed(await read_response(reader))["path"] == "/c"
            writer.write_eof()
            assert await read_eof(reader) == b""


async def test_close_delimited_body_cut_by_a_reset_is_an_error() -> None:
    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        await up.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\npart of a longer bo")
        await writer.drain()
        await asyncio.sleep(0.2)  # let the forwarder read it, then reset (not a clean close)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async with Upstream(script) as up, forwarder() as fwd:
        with pytest.raises(UpstreamError) as info:
            await forward(fwd, make_call(up))
        assert info.value.error_class == "connection"


async def test_stop_fails_a_call_waiting_for_a_connection_with_upstream_error() -> None:
    got = asyncio.Event()

    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        await up.next_request(reader)
        got.set()
        await reader.read()

    async with Upstream(script) as up, forwarder(max_connections=1) as fwd:
        loop = asyncio.get_running_loop()
        first = loop.create_task(fwd(make_call(up, path="/first")))
        await bounded(got.wait())
        second = loop.create_task(fwd(make_call(up, path="/second")))
        await asyncio.sleep(0.05)  # the second call is now waiting for the only connection
        await fwd.stop()
        results = await bounded(asyncio.gather(first, second, return_exceptions=True))
        assert isinstance(results[0], UpstreamError)
        assert isinstance(results[1], UpstreamError), repr(results[1])


async def test_small_chunks_before_a_pipelined_head_do_not_count_as_head() -> None:
    """A read holding a chunked request of many small chunks, then the start of the next
    request's head: only that head counts against max_header_bytes."""
    chunks = b"1\r\na\r\n" * 1500  # 9000 bytes on the wire for 1500 bytes of body
    async with serving(max_header_bytes=1024, max_body_bytes=4096) as s, \
            raw_client(s.port) as (reader, writer):
        await send(writer, b"POST /chunks HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked"
                           b"\r\n\r\n" + chunks + b"0\r\n\r\nGET /next HTTP/1.1\r\nHost: svc\r\n")
        assert echoed(await read_response(reader))["body"] == "a" * 1500
        await send(writer, b"\r\n")
        assert echoed(await read_response(reader))["path"] == "/next"
        assert s.rejected == []


async def test_no_retry_on_a_new_connection_after_stop() -> None:
    got_second = asyncio.Event()

    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        while (request := await up.next_request(reader)) is not None:
            if index == 1 and request.line.startswith("GET /2"):
                got_second.set()
                await reader.read()
                return
            writer.write(ok(f"conn{index}".encode()))
            await writer.drain()

    async with Upstream(script) as up, forwarder() as fwd:
        assert (await forward(fwd, make_call(up, path="/1"))).body == b"conn1"
        call = asyncio.get_running_loop().create_task(fwd(make_call(up, path="/2")))
        await bounded(got_second.wait())
        await fwd.stop()
        with pytest.raises(UpstreamError):
            await bounded(call)
        assert up.accepted == 1 and fwd.open_connections == 0


# -- found in review: bounds on what is not body, trailers, binding, retries ------------

async def test_endless_trailer_line_is_431_and_trailers_are_not_headers() -> None:
    async with serving(max_header_bytes=1024) as s, raw_client(s.port) as (reader, writer):
        await send(writer, b"POST /t HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"1\r\na\r\n0\r\nX-User: admin\r\n\r\n")
        assert "x-user" not in echoed(await read_response(reader))["headers"]
        await send(writer, b"POST /t HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"1\r\na\r\n0\r\nX-T: ")
        with suppress(OSError, RuntimeError):  # the trailer line never ends
            await send(writer, b"t" * 32768)
        resp = await read_response(reader)
        assert resp.status == 431 and s.rejected == ["headers_too_large"]


async def test_a_flood_of_pipelined_requests_in_one_write_is_answered_in_order() -> None:
    async with serving() as s, raw_client(s.port) as (reader, writer):
        await send(writer, b"".join(get(f"/{i}") for i in range(300)))
        for i in range(300):
            assert (await read_response(reader)).headers["X-Path"] == f"/{i}"
        assert len(s.requests) == 300


async def test_too_many_connections_get_503() -> None:
    async with serving(max_connections=1) as s, raw_client(s.port) as (reader, writer):
        await send(writer, get("/first"))
        assert echoed(await read_response(reader))["path"] == "/first"
        async with raw_client(s.port) as (reader2, _):
            assert (await read_response(reader2)).status == 503
        assert "too_many_connections" in s.rejected


async def test_endless_header_from_the_node_is_a_5xx_not_unbounded_memory() -> None:
    async def endless(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, index: int) -> None:
        await up.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        for _ in range(64):  # 1 MiB of one header value, never ended
            writer.write(b"v" * 16384)
            await writer.drain()
        await reader.read()

    async with Upstream(endless) as up, forwarder() as fwd:
        with pytest.raises(UpstreamError) as info:
            await forward(fwd, make_call(up))
        assert info.value.error_class == "5xx" and fwd.open_connections == 0


async def test_an_upgrade_answer_from_the_node_is_an_upstream_error() -> None:
    answer = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\n\r\n")
    async with Upstream(answering(answer)) as up, forwarder() as fwd:
        with pytest.raises(UpstreamError):
            await forward(fwd, make_call(up))


async def test_the_retry_of_an_idempotent_call_takes_a_new_connection() -> None:
    """Two kept-alive connections, both closed by the node when reused: the retry must not
    take the second one."""
    release = asyncio.Event()

    async def script(up: Upstream, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, index: int) -> None:
        await up.next_request(reader)
        if index <= 2:
            await release.wait()
            writer.write(ok(f"conn{index}".encode()))
            await writer.drain()
            await up.next_request(reader)  # reused: close without answering
            return
        writer.write(ok(b"fresh"))
        await writer.drain()

    async with Upstream(script) as up, forwarder() as fwd:
        first = asyncio.ensure_future(forward(fwd, make_call(up, path="/1")))
        second = asyncio.ensure_future(forward(fwd, make_call(up, path="/2")))
        while up.accepted < 2:
            await asyncio.sleep(0.01)
        release.set()
        assert {(await first).body, (await second).body} == {b"conn1", b"conn2"}
        assert (await forward(fwd, make_call(up, path="/3"))).body == b"fresh"
        assert up.accepted == 3


async def test_a_filter_may_name_its_next_parameter_as_it_likes() -> None:
    class Tagging:
        name = "tagging"

        async def handle(self, call: Call, proceed: Any) -> Reply:
            reply = await proceed(call)
            return Reply(reply.status, {"X-Tag": "yes"}, reply.body)

    async def terminal(call: Call) -> Reply:
        return Reply(200, {}, b"done")

    chain = run_chain([Tagging()], terminal)
    reply = await chain(make_call(Endpoint("n", "127.0.0.1:1", "idc", 1.0)))
    assert reply.headers["X-Tag"] == "yes" and reply.body == b"done"


def test_a_filter_putting_a_line_break_in_a_header_is_refused() -> None:
    call = make_call(Endpoint("n", "127.0.0.1:1", "idc", 1.0),
                     headers={"X-Evil": "a\r\nX-Injected: 1"})
    with pytest.raises(ValueError):
        Forwarder._render(call, "127.0.0.1:1")
