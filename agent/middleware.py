"""Measuring Python services in-process: aiohttp, ASGI and WSGI middleware.

Each call is recorded under one service name. A status >= 500 counts as a ``5xx`` error,
a timeout as ``timeout``, a connection error as ``connection``; anything else that
escapes the application counts as ``5xx`` (the server will answer 500). 4xx answers are
the caller's fault and count as successes unless ``error_statuses`` says otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from aiohttp import web

from agent.recorder import Recorder

__all__ = ["aiohttp_middleware", "ASGIMiddleware", "WSGIMiddleware", "status_error_class"]


def status_error_class(status: int, error_statuses: frozenset[int] = frozenset()) -> str | None:
    """The error class of an HTTP status: ``5xx`` for >= 500 or a listed status, else None."""
    if status >= 500 or status in error_statuses:
        return "5xx"
    return None


def _exception_error_class(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionError):
        return "connection"
    return "5xx"


def aiohttp_middleware(recorder: Recorder, service: str, *,
                       error_statuses: frozenset[int] = frozenset()) -> Any:
    """An aiohttp middleware recording every request handled by the application."""

    @web.middleware
    async def measure(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            recorder.record(service, (time.perf_counter() - started) * 1000.0,
                            status_error_class(exc.status, error_statuses))
            raise
        except asyncio.CancelledError:
            recorder.record(service, (time.perf_counter() - started) * 1000.0, "connection")
            raise
        except Exception as exc:
            recorder.record(service, (time.perf_counter() - started) * 1000.0,
                            _exception_error_class(exc))
            raise
        recorder.record(service, (time.perf_counter() - started) * 1000.0,
                        status_error_class(response.status, error_statuses))
        return response

    return measure


class ASGIMiddleware:
    """Wraps an ASGI application; measures each HTTP request until its response ends."""

    def __init__(self, app: Any, recorder: Recorder, service: str, *,
                 error_statuses: frozenset[int] = frozenset()) -> None:
        self.app = app
        self.recorder = recorder
        self.service = service
        self.error_statuses = error_statuses

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: list[int] = []

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                status.append(int(message.get("status", 500)))
            await send(message)

        error: str | None = None
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            error = _exception_error_class(exc)
            raise
        finally:
            if error is None:
                error = status_error_class(status[0], self.error_statuses) if status else "5xx"
            self.recorder.record(self.service, (time.perf_counter() - started) * 1000.0, error)


class WSGIMiddleware:
    """Wraps a WSGI application; a call lasts until the server closes the response body."""

    def __init__(self, app: Callable[..., Iterable[bytes]], recorder: Recorder, service: str,
                 *, error_statuses: frozenset[int] = frozenset()) -> None:
        self.app = app
        self.recorder = recorder
        self.service = service
        self.error_statuses = error_statuses

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        started = time.perf_counter()
        status: list[int] = []

        def start_wrapper(status_line: str, headers: list[Any], exc_info: Any = None) -> Any:
            status.append(int(status_line.split(" ", 1)[0]))
            if exc_info is not None:
                return start_response(status_line, headers, exc_info)
            return start_response(status_line, headers)

        try:
            body = self.app(environ, start_wrapper)
        except Exception as exc:
            self._finish(started, _exception_error_class(exc))
            raise
        return _ClosingBody(body, lambda error: self._finish(
            started, error or (status_error_class(status[-1], self.error_statuses)
                               if status else "5xx")))

    def _finish(self, started: float, error: str | None) -> None:
        self.recorder.record(self.service, (time.perf_counter() - started) * 1000.0, error)


class _ClosingBody:
    """The application's body iterable; records the call once, when closed."""

    def __init__(self, body: Iterable[bytes], on_close: Callable[[str | None], None]) -> None:
        self._body = body
        self._on_close = on_close
        self._error: str | None = None
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._body
        except Exception as exc:
            self._error = _exception_error_class(exc)
            raise

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if not self._done:
                self._done = True
                self._on_close(self._error)
