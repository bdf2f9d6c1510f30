"""The floor for a Python proxy hop: uvloop + httptools, a task per request, nothing else.

No filters, no metrics, no routing, no header handling, no limits: each inbound
connection gets its own upstream connection, the request line is re-sent with the path,
and the upstream's answer bytes are written back as they came. It is what
``benchmarks/agent_sidecar_overhead.py`` compares the agent pair with (``floor``), to show
how much of the pair's cost is the agent's own work. Not for any other use.

Usage: python benchmarks/minimal_proxy.py LISTEN_PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop


class _Upstream(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.chunks: list[bytes] = []
        self.answer: asyncio.Future[bytes] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        assert self.answer is not None
        self.answer.set_result(b"".join(self.chunks))
        self.chunks = []


class _Inbound(asyncio.Protocol):
    def __init__(self, upstream_port: int) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.upstream_port = upstream_port
        self.upstream: _Upstream | None = None
        self.url = b""
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.url = b""
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        self.loop.create_task(self.forward(b"GET " + self.url + b" HTTP/1.1\r\nHost: x\r\n\r\n"))

    async def forward(self, request: bytes) -> None:
        if self.upstream is None:
            _, self.upstream = await self.loop.create_connection(
                _Upstream, "127.0.0.1", self.upstream_port)
        assert self.upstream.transport is not None and self.transport is not None
        self.upstream.answer = self.loop.create_future()
        self.upstream.transport.write(request)
        self.transport.write(await self.upstream.answer)


async def main(listen_port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: _Inbound(upstream_port), "127.0.0.1", listen_port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
