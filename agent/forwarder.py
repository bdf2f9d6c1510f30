"""The end of the chain: send a call to its node over HTTP and read the whole answer."""

from __future__ import annotations

import aiohttp
from multidict import CIMultiDict

from agent.call import Call, Reply, UpstreamError

__all__ = ["Forwarder", "HOP_BY_HOP"]

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length",
})


class Forwarder:
    """Forwards calls with one shared connection pool; ``start``/``stop`` own the pool."""

    def __init__(self, *, timeout_seconds: float, connect_timeout_seconds: float,
                 max_response_bytes: int, max_connections: int) -> None:
        self._timeout = timeout_seconds
        self._connect_timeout = connect_timeout_seconds
        self._max_response = max_response_bytes
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._client_timeout = aiohttp.ClientTimeout(total=timeout_seconds,
                                                     sock_connect=connect_timeout_seconds)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0,
                                         ttl_dns_cache=60, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                              skip_auto_headers=("User-Agent",))

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __call__(self, call: Call) -> Reply:
        """Send ``call`` to ``call.node``; raises :class:`UpstreamError` when no answer."""
        if self._session is None:
            raise RuntimeError("forwarder not started")
        assert call.node is not None, "the failover filter picks the node"
        url = f"http://{call.node.address}{call.path_qs}"
        timeout = self._client_timeout
        try:  # call.headers has no hop-by-hop headers (the service builds it so)
            async with self._session.request(call.method, url, headers=call.headers,
                                             data=call.body or None, allow_redirects=False,
                                             timeout=timeout) as resp:
                body = await self._read_body(resp, call)
                out_headers = CIMultiDict((k, v) for k, v in resp.headers.items()
                                          if k.lower() not in HOP_BY_HOP)
                return Reply(resp.status, out_headers, body)
        except UpstreamError:
            raise
        except TimeoutError:
            raise UpstreamError("timeout", f"node {call.node.id} did not answer within "
                                f"{self._timeout:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError("connection", f"cannot connect to node {call.node.id}: "
                                f"{exc.os_error or exc}", sent=False) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError("connection", f"node {call.node.id} failed: "
                                f"{type(exc).__name__}: {exc}") from None

    async def _read_body(self, resp: aiohttp.ClientResponse, call: Call) -> bytes:
        """The whole body, refusing more than ``max_response_bytes``."""
        limit = self._max_response
        if resp.content_length is not None and resp.content_length <= limit:
            return await resp.read()
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > limit:
                assert call.node is not None
                raise UpstreamError("5xx", f"node {call.node.id} answered more than "
                                    f"max_response_bytes={limit}")
            chunks.append(chunk)
        return b"".join(chunks)
