"""The sidecar's inbound HTTP/1.1 server: asyncio protocols and a C parser (httptools).

Every call through the mesh crosses two of these servers, so the data path avoids a web
framework: bytes are parsed by llhttp (through httptools), a complete request is handed to
one ``handler(request) -> Reply`` coroutine, and the reply is written back as one buffer
with a ``Content-Length``. Requests on one connection are answered in order (pipelining
works); keep-alive follows HTTP/1.1 rules.

Limits and errors (the caller always gets an answer naming the problem, and the reason
is passed to ``on_rejected``): a malformed request is 400, headers larger than
``max_header_bytes`` 431, a body larger than ``max_body_bytes`` 413 (checked against
``Content-Length`` before the body is read), an upgrade or CONNECT 501; then the
connection is closed. Connections idle (or stalled in the middle of a request) for longer
than ``idle_timeout_seconds`` are closed. A connection stops being read while more than 16
of its requests wait, or while the requests it sent and not yet answered hold more than
``max_body_bytes + max_header_bytes`` (a caller pipelining large bodies), and is read again
as answers go out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Any, Final, cast

import httptools
from multidict import CIMultiDict

from agent.call import Reply, error_reply

__all__ = ["InboundRequest", "HttpServer", "render_reply"]

log = logging.getLogger("tidemark.agent.http")

_STATUS_LINES: Final = {status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n"
                 for status in HTTPStatus}
# headers the server itself obeys; llhttp reads keep-alive from both connection headers
_WATCHED: Final = frozenset({b"content-length", b"expect", b"connection", b"proxy-connection"})
_SLICE: Final = 16384  # bytes fed to the parser at a time


class InboundRequest:
    """A complete request as received: target as sent (``raw_path``), headers, body.

    Headers the server was told to set apart (``HttpServer(set_apart=...)``, e.g. the
    hop-by-hop ones a proxy must not forward) are in ``apart``, by lower-case name, and
    not in ``headers``. A plain class (see :class:`agent.call.Reply`).
    """

    def __init__(self, method: str, raw_path: str, headers: CIMultiDict[str], body: bytes,
                 peer: str, apart: dict[str, str]) -> None:
        self.method = method
        self.raw_path = raw_path
        self.headers = headers
        self.body = body
        self.peer = peer
        self.apart = apart

    def __repr__(self) -> str:
        return (f"InboundRequest(method={self.method!r}, raw_path={self.raw_path!r}, "
                f"peer={self.peer!r})")


Handler = Callable[[InboundRequest], Awaitable[Reply]]


def render_reply(reply: Reply, *, keep_alive: bool, head: bool = False,
                 http10: bool = False) -> bytes:
    """The bytes of ``reply`` on the wire: status line, headers, Content-Length, body.

    ``http10``: the request was HTTP/1.0, whose keep-alive must be confirmed."""
    status = reply.status
    parts = [_STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n"]
    for name, value in reply.headers.items():
        parts.append(f"{name}: {value}\r\n")
    if not keep_alive:
        parts.append("Connection: close\r\n")
    elif http10:
        parts.append("Connection: keep-alive\r\n")
    body = reply.body
    if status >= 200 and status not in (204, 304):
        parts.append(f"Content-Length: {len(body)}\r\n\r\n")
    else:
        body = b""
        parts.append("\r\n")
    wire = "".join(parts).encode("latin-1", "replace")
    return wire + body if body and not head else wire


class _Rejected(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class _Connection(asyncio.Protocol):
    """One client connection: parse, queue complete requests, answer them in order."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        # + keep-alive, HTTP/1.0, and the bytes of the request (head and body)
        self._queue: deque[tuple[InboundRequest, bool, bool, int]] = deque()
        # bytes of the requests queued or being answered (each counted until its answer is
        # written); reading pauses above ``server.max_unanswered_bytes``
        self._unanswered_bytes = 0
        # One task per connection answers its requests in order; between requests it waits
        # on `_wakeup` (cheaper than a task per request).
        self._worker: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._busy = False  # a request is being answered
        self._closing = False
        self._paused = False
        self._write_paused = False
        self._final: bytes | None = None  # a rejection to send after the answers in flight
        self._eof = False  # the caller half-closed: answer what it sent, then close
        self._in_head = False  # between the start of a request and the end of its headers
        self._head_bytes = 0  # bytes of the current head so far, as measured per read
        self._began_in_read = False  # a request started within the current read
        self._in_body = False  # between the end of the headers and the end of the request
        self._read_body = 0  # body bytes handed over during the current read
        self._framing = 0  # bytes of the body phase that were not body (chunk sizes, trailers)
        self._chunks = 0
        self._backlog = b""  # bytes not fed to the parser while too many requests wait
        self._last_request = False  # a request said Connection: close; ignore the rest
        self.last_active = time.monotonic()
        # When the request being received began, or the agent last answered (0.0: none
        # being received): a request must arrive whole within the idle timeout of that.
        self.receiving_since = 0.0
        # the request being parsed
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._apart: dict[str, str] = {}
        self._expect_continue = False
        self._connection_header = False  # only then may an HTTP/1.0 request keep alive
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        if len(self._server.connections) >= self._server.max_connections:
            self._server.on_rejected("too_many_connections")
            self._final = render_reply(error_reply(
                503, f"too many connections (max_connections={self._server.max_connections})"),
                keep_alive=False)
            self._write(self._final, close=True)
            return
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._closing = True
        self._transport = None
        self._queue.clear()
        self._unanswered_bytes = 0
        if self._worker is not None:
            self._worker.cancel()  # nobody is left to answer

    def eof_received(self) -> bool:
        """The caller sent all it will send; answer what is complete, then close."""
        self._eof = True
        if not self._busy and not self._queue:
            self.close()
        return True  # keep the transport open for the answers still owed

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self._backlog:  # reading is paused; this is what was already on its way
            self._backlog += data
            return
        self._take(data)

    def _take(self, data: bytes) -> None:
        """Feed ``data`` to the parser in slices; once more than 16 requests wait, or the
        unanswered ones hold more than ``max_unanswered_bytes``, keep the rest for later
        (so one large read of pipelined requests cannot queue thousands of them, nor many
        large bodies)."""
        size = len(data)
        start = 0
        while start < size:  # not a range: one read is one slice, nearly always
            if self._closing or self._final is not None or self._last_request:
                return
            if len(self._queue) > 16 \
                    or self._unanswered_bytes > self._server.max_unanswered_bytes:
                self._backlog = data[start:]
                self._update_reading()
                return
            self._feed(data[start:start + _SLICE] if size > _SLICE else data)
            start += _SLICE

    def _feed(self, data: bytes) -> None:
        self._began_in_read = False
        in_body = self._in_body
        self._read_body = 0
        try:
            self._parser.feed_data(data)
            if self._in_head:
                self._measure_head(len(data))
            elif in_body and self._in_body and not self._began_in_read:
                self._measure_framing(len(data))
        # Each handler names its exception apart: compiled (agent/native.py), a name keeps
        # the type of its first binding.
        except _Rejected as rejected:
            self._reject(rejected.status, rejected.reason, str(rejected))
        except httptools.HttpParserCallbackError as failed:
            cause = failed.__context__
            if not isinstance(cause, _Rejected):
                raise
            self._reject(cause.status, cause.reason, str(cause))
        except httptools.HttpParserUpgrade:
            self._reject(501, "upgrade", "upgrades and CONNECT are not supported")
        except httptools.HttpParserError as malformed:
            if not self._last_request:  # else: bytes after a Connection: close, ignored
                self._reject(400, "malformed", f"malformed request: {malformed}")

    def _measure_head(self, read: int) -> None:
        """Refuse a head over ``max_header_bytes`` even while its line has not ended.

        httptools hands over a header only once its line is complete, so the head is also
        measured per read: every read after the one the head began in counts whole (no
        guessing where the head began inside a read). What is buffered stays within
        ``max_header_bytes`` plus one read.
        """
        if self._began_in_read:
            self._head_bytes = 0
        else:
            self._head_bytes += read
        if self._head_bytes > self._server.max_header_bytes:
            raise self._headers_too_large()

    def _measure_framing(self, read: int) -> None:
        """Chunk sizes, extensions and trailers are not body; httptools buffers a trailer
        line whole, so they are measured per read: at most ``max_header_bytes`` plus 16
        bytes per chunk."""
        self._framing += read - self._read_body
        if self._framing > self._server.max_header_bytes + 16 * self._chunks:
            raise _Rejected(431, "headers_too_large", "chunk framing and trailers larger "
                            f"than max_header_bytes={self._server.max_header_bytes}")

    def pause_writing(self) -> None:  # the caller reads slowly: stop taking requests
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    def _update_reading(self) -> None:
        """Read while answers flow: not while the caller does not read its answers, nor
        while it has pipelined more than 16 requests, or ``max_unanswered_bytes``, ahead."""
        over_bytes = self._unanswered_bytes > self._server.max_unanswered_bytes
        pause = self._write_paused or len(self._queue) > 16 or bool(self._backlog) \
            or over_bytes
        if pause != self._paused and self._transport is not None and not self._closing:
            self._paused = pause
            if pause:
                if over_bytes:
                    self._server.read_pauses_for_bytes += 1
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()

    # -- httptools callbacks -----------------------------------------------------------
    def on_message_begin(self) -> None:
        self.receiving_since = self.last_active
        self._in_head = True
        self._began_in_read = True
        self._framing = 0
        self._chunks = 0
        self._head_bytes = 0
        self._url = b""
        self._headers = []
        self._apart = {}
        self._expect_continue = False
        self._connection_header = False
        self._header_bytes = 0
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        if not self._in_head:  # a trailer (after a chunked body): counted, not passed on
            return
        lower = name.lower()
        if lower in _WATCHED:
            if lower == b"content-length" and value.isdigit() \
                    and int(value) > self._server.max_body_bytes:
                raise self._too_large()
            if lower == b"expect" and value.lower() == b"100-continue":
                self._expect_continue = True
            if lower == b"connection" or lower == b"proxy-connection":
                self._connection_header = True
        if lower in self._server.set_apart:
            self._apart[lower.decode("latin-1")] = value.decode("latin-1")
        else:
            self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self._server.max_header_bytes:
            raise self._headers_too_large()

    def _headers_too_large(self) -> _Rejected:
        return _Rejected(431, "headers_too_large", "request line and headers larger than "
                         f"max_header_bytes={self._server.max_header_bytes}")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._in_body = True
        # Invite the body only when no earlier answer is owed (an interim answer must not
        # overtake them); a caller not invited sends its body after its own short wait.
        if self._expect_continue and self._parser.get_http_version() != "1.0" \
                and not self._busy and not self._queue \
                and self._transport is not None and not self._parser.should_upgrade():
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._read_body += len(body)
        self._chunks += 1
        self._body_size += len(body)
        if self._body_size > self._server.max_body_bytes:
            raise self._too_large()
        self._body.append(body)

    def _too_large(self) -> _Rejected:
        return _Rejected(413, "body_too_large", "request body larger than "
                         f"max_body_bytes={self._server.max_body_bytes}")

    def on_message_complete(self) -> None:
        self.receiving_since = 0.0
        self._in_body = False
        parser = self._parser
        if parser.should_upgrade():  # llhttp completes the message before it says upgrade
            raise _Rejected(501, "upgrade", "upgrades and CONNECT are not supported")
        method = parser.get_method().decode("ascii", "replace")
        request = InboundRequest(method, self._url.decode("latin-1"),
                                 CIMultiDict(self._headers), b"".join(self._body), self._peer,
                                 self._apart)
        keep_alive = parser.should_keep_alive()
        if not keep_alive:
            self._last_request = True
        size = self._header_bytes + self._body_size
        self._unanswered_bytes += size
        unanswered = self._unanswered_bytes
        server = self._server
        if unanswered > server.largest_unanswered_bytes:
            server.largest_unanswered_bytes = unanswered
        # An HTTP/1.0 request keeps alive only when it asked to in a Connection header;
        # get_http_version formats a string, so it is asked only then.
        http10 = keep_alive and self._connection_header \
            and parser.get_http_version() == "1.0"
        self._queue.append((request, keep_alive, http10, size))
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)
        elif self._worker is None:
            self._worker = server.loop.create_task(self._answer())
        elif len(self._queue) > 16 or unanswered > server.max_unanswered_bytes:
            self._update_reading()

    # -- answering ---------------------------------------------------------------------
    async def _answer(self) -> None:
        server = self._server
        try:
            while not self._closing:
                if not self._queue:
                    if self._final is not None or self._eof:
                        break
                    self._wakeup = server.loop.create_future()
                    await self._wakeup
                    continue
                request, keep_alive, http10, size = self._queue.popleft()
                self._busy = True
                server.in_flight += 1
                try:
                    reply = await server.handler(request)
                except Exception:  # a handler bug costs one call, never the connection
                    log.exception("request failed inside the agent")
                    reply = error_reply(500, "internal error in the agent")
                finally:
                    server.in_flight -= 1
                    self._busy = False
                    if server.draining is not None and not server.in_flight:
                        server.draining.set()
                # The caller half-closed and this is its last answer: say close, and let
                # `finally` close. A rejection still to come says close itself.
                last = self._eof and not self._queue and self._final is None
                keep_alive = keep_alive and not server.closing and not last
                self._write(render_reply(reply, keep_alive=keep_alive,
                                         head=request.method == "HEAD", http10=http10),
                            close=not keep_alive and not last)
                self._unanswered_bytes -= size
                if self._backlog and len(self._queue) <= 4:
                    backlog, self._backlog = self._backlog, b""
                    self._take(backlog)
                if self._paused:
                    self._update_reading()
        finally:
            self._worker = None
            self._wakeup = None
            if self._final is not None:
                self._write(self._final, close=True)
            elif self._eof and not self._queue:
                self.close()

    def _write(self, data: bytes, *, close: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        self.last_active = time.monotonic()
        if self.receiving_since:  # the caller may have waited for this before sending on
            self.receiving_since = self.last_active
        if close:
            self._closing = True
            transport.close()

    def _reject(self, status: int, reason: str, message: str) -> None:
        """Answer ``status`` after the requests already complete, then close."""
        self._server.on_rejected(reason)
        self._final = render_reply(error_reply(status, message), keep_alive=False)
        if self._transport is not None:
            self._transport.pause_reading()
        if not self._busy and not self._queue:  # else the worker sends it after them
            self._write(self._final, close=True)

    # -- for the server ----------------------------------------------------------------
    @property
    def idle(self) -> bool:
        return not self._busy and not self._queue

    @property
    def reading_paused(self) -> bool:
        return self._paused

    @property
    def unanswered_bytes(self) -> int:
        return self._unanswered_bytes

    def time_out_request(self) -> None:
        """The request being received is overdue (trickled in, a slowloris): 408, close."""
        self.receiving_since = 0.0
        if self._final is None and not self._closing:
            self._reject(408, "request_timeout", "request not received within "
                         f"idle_timeout_seconds={self._server.idle_timeout_seconds:g}")

    def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()


class HttpServer:
    """Listens on ``host:port`` and answers every request with ``handler``.

    ``await start()``; ``await stop(timeout)`` stops listening, closes idle connections,
    lets in-flight requests finish for up to ``timeout`` seconds, then closes the rest.
    """

    def __init__(self, handler: Handler, *, max_header_bytes: int, max_body_bytes: int,
                 idle_timeout_seconds: float = 60.0,
                 on_rejected: Callable[[str], None] = lambda reason: None,
                 set_apart: Iterable[str] = (), max_connections: int = 10_000) -> None:
        self.handler = handler
        self.max_connections = max_connections
        self.set_apart = frozenset(name.lower().encode("latin-1") for name in set_apart)
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        # per connection: reading pauses while its unanswered requests hold more than this
        # (so one request of the largest size never pauses it)
        self.max_unanswered_bytes = max_body_bytes + max_header_bytes
        self.read_pauses_for_bytes = 0  # times a connection paused for that
        self.largest_unanswered_bytes = 0  # the most one connection held unanswered
        self.idle_timeout_seconds = idle_timeout_seconds
        self.on_rejected = on_rejected
        self.connections: set[_Connection] = set()
        self.in_flight = 0
        self.closing = False
        self.port: int | None = None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # start()
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.draining: asyncio.Event | None = None  # set when the last call in flight ends

    async def start(self, host: str, port: int) -> None:
        # Kept: asyncio.get_running_loop() makes a getpid() system call every time.
        self.loop = loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port,
                                                reuse_address=True, backlog=1024)
        server: Any = self._server  # its sockets are a list on uvloop, not a tuple
        self.port = int(server.sockets[0].getsockname()[1])
        self._sweeper = loop.call_later(self._sweep_every(), self._sweep)

    def inbound_state(self) -> dict[str, int]:
        """Open connections and what their pipelined requests hold (for ``/runtime``)."""
        connections = list(self.connections)
        return {"connections": len(connections),
                "reading_paused": sum(1 for c in connections if c.reading_paused),
                "unanswered_request_bytes": sum(c.unanswered_bytes for c in connections),
                "max_unanswered_request_bytes": self.max_unanswered_bytes,
                "largest_unanswered_request_bytes": self.largest_unanswered_bytes,
                "read_pauses_for_bytes": self.read_pauses_for_bytes}

    def _sweep_every(self) -> float:
        return max(0.05, min(5.0, self.idle_timeout_seconds / 4))

    def _sweep(self) -> None:
        """Close connections idle or stalled for longer than the idle timeout, and answer
        408 to a request still arriving that long after it began (or after the last
        answer on its connection): a byte now and then does not keep it open."""
        deadline = time.monotonic() - self.idle_timeout_seconds
        for conn in list(self.connections):
            if not conn.idle:
                continue
            if conn.last_active < deadline:  # stalled, or idle between requests
                conn.close()
            elif 0.0 < conn.receiving_since < deadline:  # bytes keep coming, too slowly
                conn.time_out_request()
        self._sweeper = self.loop.call_later(self._sweep_every(), self._sweep)

    async def stop(self, timeout: float) -> None:
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.idle:
                conn.close()
        if self.in_flight:
            self.draining = asyncio.Event()
            try:
                await asyncio.wait_for(self.draining.wait(), timeout)
            except TimeoutError:
                log.warning("closing connections with calls in flight",
                            extra={"in_flight": self.in_flight})
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
