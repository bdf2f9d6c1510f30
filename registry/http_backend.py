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


# A watch stream's lines are whole snapshots (a long poll's answer has no bound at all).
_MAX_STREAM_LINE_BYTES = 64 * 1024 * 1024


def _answer_data(text: str) -> Any:
    """An answer's JSON body (``{}`` when empty; ``{"error": ...}`` when not JSON)."""
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {"error": text[:200]}


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
        data = _answer_data(text)
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
        """Watch through a stream; long-poll a registry without stream routes (asked again
        at every reconnect, so a registry upgraded meanwhile is streamed from)."""
        index = 0
        while True:
            try:
                await self._follow_stream(service, prefix, emit, index)
            except _TooManyPolls as busy:
                # The registry is up but has no room for another watcher: read the current
                # state (a read need not wait), then ask again later (no reconnect).
                index = await self._poll(service, prefix, emit, index, "0s")
                await asyncio.sleep(busy.retry_after_seconds)
                continue
            except _NoStreams as absent:
                log.info("registry has no watch streams; long-polling",
                         extra={"registry": self._base, "answer": str(absent)})
                await self._follow_polls(service, prefix, emit, index)
            raise RegistryUnavailable(f"{self._base}: watch stream ended")

    async def _follow_stream(self, service: str | None, prefix: str | None,
                             emit: Callable[[Snapshot], None], index: int) -> None:
        """Follow one watch stream (a JSON line per change) until the registry ends it."""
        if service is not None:
            path, params = self._svc(service) + "/stream", {}
        else:
            path, params = "/v1/watch/stream", {"prefix": prefix or ""}
        params.update(index=str(index), wait=f"{self._wait:g}s")
        try:
            async with self._get_session().get(self._base + path, params=params,
                                               timeout=self._stream_timeout) as response:
                if response.status == 200:
                    await self._read_stream(response, service, emit)
                    return
                text = await response.text()
                status, retry_after = response.status, response.headers.get("Retry-After", "1")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RegistryUnavailable(f"{self._base}: {type(exc).__name__}: {exc}") from exc
        if status == 404:  # the stream routes never answer 404 themselves: none here
            raise _NoStreams(f"HTTP 404: {text[:200]}")
        self._raise_for(status, _answer_data(text), text, retry_after)

    async def _read_stream(self, response: aiohttp.ClientResponse, service: str | None,
                           emit: Callable[[Snapshot], None]) -> None:
        """Emit every line of a watch stream (empty lines are keep-alives)."""
        pending = bytearray()
        async for chunk in response.content.iter_any():
            start = len(pending)
            pending += chunk
            end = pending.find(b"\n", start)
            while end >= 0:
                line = bytes(pending[:end])
                del pending[:end + 1]
                if line:
                    try:
                        self._emit_answer(json.loads(line), service, emit, 0, always=True)
                    except (ValueError, KeyError, TypeError) as exc:
                        raise RegistryUnavailable(
                            f"{self._base}: bad watch stream line: {exc}") from exc
                end = pending.find(b"\n")
            if len(pending) > _MAX_STREAM_LINE_BYTES:
                raise RegistryUnavailable(f"{self._base}: a watch stream line over "
                                          f"{_MAX_STREAM_LINE_BYTES} bytes")

    async def _follow_polls(self, service: str | None, prefix: str | None,
                            emit: Callable[[Snapshot], None], index: int) -> None:
        """Follow by long polls (``?index=N&wait=...``), for registries without streams."""
        wait = "0s"
        while True:
            try:
                index = await self._poll(service, prefix, emit, index, wait)
            except _TooManyPolls as busy:  # ask again from the same index later
                await asyncio.sleep(busy.retry_after_seconds)
                continue
            wait = f"{self._wait:g}s"

    async def _poll(self, service: str | None, prefix: str | None,
                    emit: Callable[[Snapshot], None], index: int, wait: str) -> int:
        """One long poll from ``index`` (``wait="0s"``: a plain read, whose answer is emitted
        whatever its revision); returns the revision reached."""
        if service is not None:
            path, params = self._svc(service), {}
        else:
            path, params = "/v1/watch", {"prefix": prefix or ""}
        params.update(index=str(index), wait=wait)
        data = await self._request("GET", path, params=params,
                                   timeout_seconds=self._wait + self._timeout)
        return self._emit_answer(data, service, emit, index, always=wait == "0s")

    @staticmethod
    def _emit_answer(data: Any, service: str | None, emit: Callable[[Snapshot], None],
                     index: int, *, always: bool) -> int:
        """Emit a snapshot answer (or a prefix answer's snapshots); the revision reached.
        A service snapshot not past ``index`` is emitted only with ``always``."""
        if service is not None:
            snapshot = Snapshot.from_dict(data)
            if always or snapshot.revision > index:
                emit(snapshot)
            return max(index, snapshot.revision)
        for item in data["snapshots"]:
            emit(Snapshot.from_dict(item))
        return max(index, int(data["revision"]))
