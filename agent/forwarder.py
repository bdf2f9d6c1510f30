"""The end of the chain: send a call to its node over HTTP/1.1 and read the whole answer.

Connections to nodes are kept alive and reused (at most ``max_connections`` open in all;
a call waits for one when all are busy). Responses are parsed by llhttp through httptools.
A connection is never shared by two calls at once, and is dropped after a timeout, an
error, a ``Connection: close`` or a HEAD (httptools cannot be told to expect no body).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Final, cast

import httptools
from multidict import CIMultiDict

from agent.call import IDEMPOTENT_METHODS, Call, Reply, UpstreamError

__all__ = ["Forwarder", "HOP_BY_HOP"]

HOP_BY_HOP: Final = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length", "expect",
})

_HOP_BY_HOP_BYTES: Final = frozenset(name.encode() for name in HOP_BY_HOP)
_MAX_RESPONSE_HEAD: Final = 65536  # status line, headers, chunk framing and trailers of an answer
_IDLE_SECONDS: Final = 15.0  # idle connections older than this are closed, not reused
# A call that must not be sent twice is never retried, so it only takes a connection that
# was busy very recently (servers close idle keep-alive connections after 2 s or more).
_IDLE_SECONDS_NOT_IDEMPOTENT: Final = 1.0


class _Failed(Exception):
    """The connection failed; ``answered`` says whether any response byte arrived."""

    def __init__(self, message: str, *, answered: bool, error_class: str = "connection"
                 ) -> None:
        super().__init__(message)
        self.answered = answered
        self.error_class = error_class


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a node, used by one call at a time."""

    def __init__(self, pool: Forwarder, address: str) -> None:
        self.pool = pool
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.reusable = True
        self.idle_since = 0.0
        self.deadline = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Reply] | None = None
        self._head = False
        self._answered = False
        self._headers_done = False
        self._framed = False  # the answer has Content-Length or Transfer-Encoding
        self._received = 0  # bytes of the current answer, body and all
        self._chunks = 0
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._limit = 0

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.open = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.reusable = False
        self.pool._forget(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if exc is None and self._headers_done and self._close_delimited():
                self._finish()  # a body that ends with the connection (not with a reset)
            else:
                reason = f"{type(exc).__name__}: {exc}" if exc else "connection closed"
                waiter.set_exception(_Failed(reason, answered=self._answered))

    def data_received(self, data: bytes) -> None:
        self._answered = True
        if self._waiter is None:  # a node talking out of turn: do not reuse
            self.close()
            return
        self._received += len(data)
        try:
            self._parser.feed_data(data)
            # What is not body (status line, headers, chunk sizes, trailers) is bounded too;
            # httptools buffers a header line whole, so it is measured here, per read.
            if self._received - self._size > _MAX_RESPONSE_HEAD + 16 * self._chunks:
                raise _Failed(f"answered a head (or chunk framing) over {_MAX_RESPONSE_HEAD} "
                              "bytes", answered=True, error_class="5xx")
        # Each handler names its exception apart: compiled (agent/native.py), a name keeps
        # the type of its first binding.
        except _Failed as failed:
            self._fail(failed)
        except httptools.HttpParserCallbackError as callback_error:
            cause = callback_error.__context__
            self._fail(cause if isinstance(cause, _Failed) else _Failed(
                str(cause or callback_error), answered=True))
        except httptools.HttpParserUpgrade:
            self._fail(_Failed("answered with a protocol upgrade", answered=True))
        except httptools.HttpParserError as malformed:
            self._fail(_Failed(f"malformed response: {malformed}", answered=True))

    # -- httptools callbacks -----------------------------------------------------------
    def on_message_begin(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():  # bytes beyond the answer: never reuse this
            self.reusable = False
            raise _Failed("answered more than one response", answered=True)
        self._headers_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._headers_done:  # a trailer: not passed on
            return
        lower = name.lower()
        if lower in _HOP_BY_HOP_BYTES:  # not passed on; framing headers noted
            if lower == b"content-length" or lower == b"transfer-encoding":
                self._framed = True
            return
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._head:  # no body follows, whatever the headers say
            self.reusable = False
            self._finish()

    def on_body(self, body: bytes) -> None:
        self._chunks += 1
        self._size += len(body)
        if self._size > self._limit:
            raise _Failed(f"answered more than max_response_bytes={self._limit}",
                          answered=True, error_class="5xx")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._parser.should_keep_alive():
            self.reusable = False
        self._finish()

    # -- a call ------------------------------------------------------------------------
    def send(self, request: bytes, *, head: bool, limit: int,
             deadline: float) -> asyncio.Future[Reply]:
        """Write ``request``; the future is the reply, a :class:`_Failed`, or a
        ``TimeoutError`` once the loop's clock passes ``deadline``."""
        assert self.transport is not None
        self.deadline = deadline
        self._waiter = self.pool.loop.create_future()
        self._head = head
        self._answered = False
        self._headers_done = False
        self._framed = False
        self._headers = []
        self._body = []
        self._size = 0
        self._received = 0
        self._chunks = 0
        self._limit = limit
        self.transport.write(request)
        return self._waiter

    def _close_delimited(self) -> bool:
        return not self._framed

    def _finish(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        status = self._parser.get_status_code()
        if status < 200:  # 1xx: an interim answer; the real one follows
            self._headers = []
            self._headers_done = False
            self._framed = False
            return
        headers = CIMultiDict(self._headers)  # hop-by-hop ones were left out
        waiter.set_result(Reply(status, headers, b"".join(self._body)))

    def _fail(self, error: _Failed) -> None:
        self.reusable = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    def expire(self, now: float) -> None:
        """Fail the call in progress if its deadline has passed."""
        waiter = self._waiter
        if waiter is not None and now >= self.deadline and not waiter.done():
            self.reusable = False
            waiter.set_exception(TimeoutError())

    def done(self) -> None:
        """The call is over: back to the pool or closed."""
        self._waiter = None
        self._headers = []
        self._body = []
        if self.reusable and self.open:
            self.idle_since = time.monotonic()
            self.pool._release(self)
        else:
            self.close()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class Forwarder:
    """Forwards calls over a pool of keep-alive connections; ``start``/``stop`` own it."""

    def __init__(self, *, timeout_seconds: float, connect_timeout_seconds: float,
                 max_response_bytes: int, max_connections: int,
                 idle_seconds: float = _IDLE_SECONDS) -> None:
        self._timeout = timeout_seconds
        self._idle_seconds = idle_seconds  # idle connections older than this are closed
        self._connect_timeout = connect_timeout_seconds
        self._max_response = max_response_bytes
        self._max_connections = max_connections
        self._idle: dict[str, deque[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._started = False
        self._tick_seconds = min(0.05, timeout_seconds / 10)
        self._ticker: asyncio.TimerHandle | None = None
        self._next_sweep = 0.0
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # start()

    async def start(self) -> None:
        # Kept: asyncio.get_running_loop() makes a getpid() system call every time.
        self.loop = asyncio.get_running_loop()
        self._started = True
        self._ticker = self.loop.call_later(self._tick_seconds, self._tick)

    def _tick(self) -> None:
        """Time out overdue calls. One ticker for all calls is cheaper than a timer per
        call; a call times out at most ``_tick_seconds`` after its deadline."""
        now = self.loop.time()
        for conn in list(self._open):
            conn.expire(now)
        if now >= self._next_sweep:
            self._next_sweep = now + min(1.0, self._idle_seconds / 2)
            self._close_stale_idle()
        self._ticker = self.loop.call_later(self._tick_seconds, self._tick)

    def _close_stale_idle(self) -> None:
        """Close idle connections unused for ``idle_seconds`` and forget addresses with
        none left: nodes come and go, and nothing else would ever ask for theirs."""
        stale_before = time.monotonic() - self._idle_seconds
        for address in list(self._idle):
            idle = self._idle[address]
            while idle and (not idle[0].open or idle[0].idle_since <= stale_before):
                conn = idle.popleft()  # the least recently used first
                self._open.discard(conn)
                conn.close()
            if not idle:
                del self._idle[address]

    @property
    def pooled_addresses(self) -> int:
        """Node addresses with idle connections kept for reuse."""
        return len(self._idle)

    async def stop(self) -> None:
        self._started = False
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(UpstreamError("connection", "the agent is stopping",
                                                   sent=False))

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def __call__(self, call: Call) -> Reply:
        """Send ``call`` to ``call.node``; raises :class:`UpstreamError` when no answer."""
        if not self._started:
            raise RuntimeError("forwarder not started")
        node = call.node
        assert node is not None, "the failover filter picks the node"
        request = self._render(call, node.address)
        head = call.method == "HEAD"
        loop = self.loop
        deadline = loop.time() + self._timeout
        idempotent = call.method in IDEMPOTENT_METHODS
        for retry in (idempotent, False):
            fresh = not retry and idempotent
            conn = None
            if not fresh and self._started:  # an idle one, without a coroutine: most calls
                conn = self._take_idle(node.address, idempotent)
            reused = conn is not None
            if conn is None:
                conn, reused = await self._connection(node.address, node.id, deadline,
                                                      idempotent, fresh)
            future = conn.send(request, head=head, limit=self._max_response, deadline=deadline)
            try:
                return await future
            except _Failed as exc:
                # A kept-alive connection the node closed as we wrote (no byte came back):
                # most likely it closed the idle connection before reading the call; an
                # idempotent call is tried once more on a fresh connection.
                if not (retry and reused and not exc.answered):
                    raise UpstreamError(exc.error_class,
                                        f"node {node.id} failed: {exc}") from None
            except TimeoutError:
                conn.reusable = False
                raise UpstreamError("timeout", f"node {node.id} did not answer within "
                                    f"{self._timeout:g} s") from None
            except asyncio.CancelledError:
                conn.reusable = False  # an answer may still come: never hand it to another
                raise
            finally:
                conn.done()
        raise AssertionError("unreachable")

    @staticmethod
    def _render(call: Call, address: str) -> bytes:
        lines = [f"{call.method} {call.path_qs} HTTP/1.1\r\nHost: {address}\r\n"]
        for name, value in call.headers.items():  # no hop-by-hop ones (the service saw to it)
            lines.append(f"{name}: {value}\r\n")
        body = call.body
        if body or call.method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        head = "".join(lines)
        breaks = len(lines) + 1  # the request line and Host share the first piece
        if head.count("\n") != breaks or head.count("\r") != breaks:
            raise ValueError("a filter put a line break into the request line or a header")
        return head.encode("latin-1", "replace") + body

    # -- the pool ----------------------------------------------------------------------
    async def _connection(self, address: str, node_id: str, deadline: float,
                          idempotent: bool, fresh: bool = False) -> tuple[_Connection, bool]:
        """A connection to ``address`` when no idle one was at hand: a new one, waiting
        (until ``deadline``) while ``max_connections`` are open, or an idle one (unless
        ``fresh``) that came back meanwhile."""
        if not self._started:
            raise UpstreamError("connection", "the agent is stopping", sent=False)
        while len(self._open) >= self._max_connections:
            if not self._close_one_idle():
                waiter = self.loop.create_future()
                self._waiters.append(waiter)
                try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                    async with asyncio.timeout_at(deadline):
                        await waiter
                except TimeoutError:
                    raise UpstreamError("timeout", f"no free connection to node {node_id} "
                                        f"(max_connections={self._max_connections})",
                                        sent=False) from None
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled():
                        self._wake()  # we were woken for a free slot: pass it on
                    raise
                conn = None if fresh else self._take_idle(address, idempotent)
                if conn is not None:
                    return conn, True
        return await self._connect(address, node_id), False

    def _take_idle(self, address: str, idempotent: bool) -> _Connection | None:
        """The most recently used idle connection to ``address`` fit for the call, if any
        (stale ones are closed on the way)."""
        idle = self._idle.get(address)
        now = time.monotonic()
        max_idle = self._idle_seconds if idempotent else _IDLE_SECONDS_NOT_IDEMPOTENT
        while idle:
            conn = idle[-1]  # the most recently used is the least likely to be closed
            if not conn.open or now - conn.idle_since >= self._idle_seconds:
                idle.pop()
                conn.close()
                continue
            if now - conn.idle_since < max_idle:
                return idle.pop()
            break  # good for idempotent calls only: keep it, open another
        return None

    async def _connect(self, address: str, node_id: str) -> _Connection:
        host, _, port = address.rpartition(":")
        loop = asyncio.get_running_loop()
        conn = _Connection(self, address)
        self._open.add(conn)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await loop.create_connection(lambda: conn, host.strip("[]"), int(port))
        except (OSError, TimeoutError, ValueError) as exc:
            self._open.discard(conn)
            self._wake()
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise UpstreamError("connection", f"cannot connect to node {node_id}: {reason}",
                                sent=False) from None
        except BaseException:
            self._open.discard(conn)
            conn.close()
            self._wake()
            raise
        if not self._started:  # stopped while connecting
            conn.close()
            raise UpstreamError("connection", "the agent is stopping", sent=False)
        return conn

    def _close_one_idle(self) -> bool:
        for idle in self._idle.values():
            if idle:
                conn = idle.popleft()
                self._open.discard(conn)
                conn.close()
                return True
        return False

    def _release(self, conn: _Connection) -> None:
        idle = self._idle.get(conn.address)
        if idle is None:
            idle = self._idle[conn.address] = deque()
        idle.append(conn)
        if self._waiters:
            self._wake()

    def _forget(self, conn: _Connection) -> None:
        self._open.discard(conn)
        idle = self._idle.get(conn.address)
        if idle and conn in idle:
            idle.remove(conn)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


