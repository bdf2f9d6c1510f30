"""Client of the embedded registry (``http://HOST:PORT``), over aiohttp; watches follow a
stream of snapshots (long polls against a registry without streams)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit

import aiohttp
from prometheus_client import CollectorRegistry

from registry.client import BaseClient
from registry.errors import NotFound, RegistryError, RegistryUnavailable, Unauthorized
from registry.model import Command, Node, Snapshot, check_name

__all__ = ["HttpRegistryClient"]

log = logging.getLogger("registry.http")


class _TooManyPolls(RegistryUnavailable):
    """The registry has as many long polls waiting as it allows (HTTP 429)."""

    def __init__(self, message: str, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class _NoStreams(Exception):
    """The registry answered 404 for a watch stream: it predates them; long-poll."""


# A watch stream's lines are whole snapshots; aiohttp refuses a line over twice this.
_STREAM_READ_BUFFER_BYTES = 4 * 1024 * 1024


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


class HttpRegistryClient(BaseClient):
    """Talks to ``tidemark registry``; writes carry ``Authorization: Bearer TOKEN``."""

    def __init__(self, url: str, *, token: str | None = None,
                 cache_dir: Path | str | None = None, metrics: CollectorRegistry | None = None,
                 wait_seconds: float = 30.0, request_timeout_seconds: float = 5.0) -> None:
        super().__init__(cache_dir=cache_dir, metrics=metrics)
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if (parts.scheme != "http" or not parts.hostname or not port
                or parts.path not in ("", "/") or parts.query or parts.fragment
                or parts.username is not None):
            raise ValueError(f"registry URL {url!r} must be http://HOST:PORT")
        self._base = f"http://{parts.netloc}"
        self._token = token
        self._wait = wait_seconds
        self._timeout = request_timeout_seconds
        self._session: aiohttp.ClientSession | None = None
        self._streams = True  # watch through streams until the registry says it has none
        # A stream stays open; the registry sends a keep-alive line every wait_seconds.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=request_timeout_seconds,
            sock_read=wait_seconds + request_timeout_seconds)

    async def start(self) -> None:
        """Open the HTTP session (also done lazily on first use)."""
        self._get_session()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True))
        return self._session

    async def stop(self) -> None:
        """Deregister, close watches, close the session; safe to call twice."""
        await super().stop()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _request(self, method: str, path: str, *, body: Any = None,
                       params: Mapping[str, str] | None = None,
                       timeout_seconds: float | None = None) -> Any:
        headers = {}
        if method != "GET" and self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        timeout = aiohttp.ClientTimeout(total=timeout_seconds or self._timeout)
        try:
            async with self._get_session().request(
                    method, self._base + path, params=params, headers=headers,
                    data=None if body is None else json.dumps(body),
                    timeout=timeout) as response:
                text = await response.text()
                status = response.status
                retry_after = response.headers.get("Retry-After", "1")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RegistryUnavailable(f"{self._base}: {type(exc).__name__}: {exc}") from exc
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {"error": text[:200]}
        if status < 300:
            return data
        self._raise_for(status, data, text, retry_after)

    def _raise_for(self, status: int, data: Any, text: str, retry_after: str) -> NoReturn:
        """The exception for an answer of ``status`` (not 2xx) with body ``text``."""
        message = data.get("error", text[:200]) if isinstance(data, dict) else text[:200]
        if status == 400:
            raise ValueError(message)
        if status == 401:
            raise Unauthorized(message)
        if status == 404:
            raise NotFound(message)
        if status == 413:
            raise ValueError(f"body: too large ({message})")
        if status == 429:
            try:
                delay = min(max(float(retry_after), 0.1), 5.0)
            except ValueError:
                delay = 1.0
            raise _TooManyPolls(f"{self._base}: HTTP 429: {message}", delay)
        if status >= 500:
            raise RegistryUnavailable(f"{self._base}: HTTP {status}: {message}")
        raise RegistryError(f"{self._base}: HTTP {status}: {message}")

    @staticmethod
    def _svc(service: str) -> str:
        return "/v1/services/" + quote(check_name(service, "service"), safe="")

    async def _register_once(self, service: str, node: Node, ttl_seconds: float,
                             handle: Any = None) -> Any:
        await self._request("PUT", f"{self._svc(service)}/nodes/{quote(node.id, safe='')}",
                            body={"node": node.to_dict(), "ttl_seconds": ttl_seconds})
        return None

    async def _heartbeat(self, service: str, node: Node, handle: Any) -> None:
        await self._request("PUT",
                            f"{self._svc(service)}/nodes/{quote(node.id, safe='')}/heartbeat")

    async def _deregister_handle(self, service: str, node_id: str, handle: Any) -> None:
        await self._request("DELETE", f"{self._svc(service)}/nodes/{quote(node_id, safe='')}")

    async def _fetch_snapshot(self, service: str) -> Snapshot:
        return Snapshot.from_dict(await self._request("GET", self._svc(service)))

    async def services(self) -> list[str]:
        """Every service with nodes or configuration."""
        data = await self._request("GET", "/v1/services")
        return list(data["services"])

    async def history(self, service: str) -> list[Command]:
        """Recent commands of ``service``, oldest first."""
        data = await self._request("GET", f"{self._svc(service)}/history")
        return [Command.from_dict(c) for c in data["commands"]]

    async def command(self, service: str, kind: str, args: Mapping[str, Any], *,
                      who: str, why: str = "") -> Command:
        """Send an operator command; the server validates and applies it atomically."""
        data = await self._request("POST", f"{self._svc(service)}/commands",
                                   body={"kind": kind, "args": dict(args), "who": who,
                                         "why": why})
        return Command.from_dict(data)

    async def _follow(self, *, service: str | None, prefix: str | None,
                      emit: Callable[[Snapshot], None]) -> None:
        index = 0
        while True:
            try:
                if self._streams:
                    index = await self._follow_stream(service, prefix, emit, index)
                    raise RegistryUnavailable(f"{self._base}: watch stream ended")
                await self._follow_polls(service, prefix, emit, index)
            except _TooManyPolls as busy:
                # The registry is up but has no room for another watcher: read the current
                # state now (a read need not wait), then ask again from there later (the
                # connection is fine; no reconnect).
                index = await self._poll(service, prefix, emit, index, "0s")
                await asyncio.sleep(busy.retry_after_seconds)
            except _NoStreams:
                log.info("registry has no watch streams; long-polling instead",
                         extra={"registry": self._base})
                self._streams = False

    async def _follow_stream(self, service: str | None, prefix: str | None,
                             emit: Callable[[Snapshot], None], index: int) -> int:
        """Follow one watch stream (a line per change) from ``index``; returns the last
        revision seen when the registry ends the stream."""
        if service is not None:
            path, params = self._svc(service) + "/stream", {}
        else:
            path, params = "/v1/watch/stream", {"prefix": prefix or ""}
        params.update(index=str(index), wait=f"{self._wait:g}s")
        try:
            async with self._get_session().get(
                    self._base + path, params=params, timeout=self._stream_timeout,
                    read_bufsize=_STREAM_READ_BUFFER_BYTES) as response:
                if response.status != 200:
                    text = await response.text()
                    if response.status == 404 and not text.startswith("{"):
                        raise _NoStreams()  # a registry from before streams: no such route
                    self._raise_for(response.status, _json_or_none(text), text,
                                    response.headers.get("Retry-After", "1"))
                while line := await response.content.readline():
                    if line == b"\n":
                        continue  # keep-alive
                    data = json.loads(line)
                    if service is not None:
                        snapshot = Snapshot.from_dict(data)
                        emit(snapshot)
                        index = max(index, snapshot.revision)
                    else:
                        for item in data["snapshots"]:
                            emit(Snapshot.from_dict(item))
                        index = max(index, int(data["revision"]))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RegistryUnavailable(f"{self._base}: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # a line over the read buffer, or not JSON
            raise RegistryUnavailable(f"{self._base}: bad watch stream line: {exc}") from exc
        return index

    async def _follow_polls(self, service: str | None, prefix: str | None,
                            emit: Callable[[Snapshot], None], index: int) -> None:
        """Follow by long polls (``?index=N&wait=...``), for registries without streams."""
        wait = "0s"
        while True:
            try:
                index = await self._poll(service, prefix, emit, index, wait)
            except _TooManyPolls as busy:  # as in _follow
                await asyncio.sleep(busy.retry_after_seconds)
                continue
            wait = f"{self._wait:g}s"

    async def _poll(self, service: str | None, prefix: str | None,
                    emit: Callable[[Snapshot], None], index: int, wait: str) -> int:
        """One long poll from ``index`` (``wait="0s"``: a plain read, whose answer is emitted
        whatever its revision); returns the revision reached."""
        timeout = self._wait + self._timeout
        if service is not None:
            data = await self._request("GET", self._svc(service),
                                       params={"index": str(index), "wait": wait},
                                       timeout_seconds=timeout)
            snapshot = Snapshot.from_dict(data)
            if snapshot.revision > index or wait == "0s":
                emit(snapshot)
            return max(index, snapshot.revision)
        data = await self._request("GET", "/v1/watch",
                                   params={"prefix": prefix or "", "index": str(index),
                                           "wait": wait},
                                   timeout_seconds=timeout)
        for item in data["snapshots"]:
            emit(Snapshot.from_dict(item))
        return max(index, int(data["revision"]))
