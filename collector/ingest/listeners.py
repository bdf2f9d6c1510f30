"""Asyncio listeners for Graphite plaintext (TCP, UDP), carbon pickle (TCP) and statsd (UDP).

One :class:`IngestServer` owns every socket. It caps connections, closes idle ones,
pauses all reading while the store's cache is above its high watermark and resumes
below the low one (as carbon does), and flushes statsd aggregates every interval.
Each protocol callback handles one read at a time, so a slow or stalled client holds
only its own buffer and never blocks another.
"""

from __future__ import annotations

import asyncio
import logging
import math
import pickle
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

from collector.config import CollectorConfig
from collector.ingest.intake import Intake
from collector.ingest.pickle_frames import ForbiddenPickle, FrameDecoder, decode_payload
from collector.ingest.plaintext import LineSplitter
from collector.ingest.statsd import StatsdAggregator, StatsdError, looks_like_statsd
from collector.selfmetrics import CollectorMetrics
from tidemark.daemon import cancel_and_wait

__all__ = ["IngestServer", "CacheGauge"]

log = logging.getLogger("tidemark.collector.listeners")

_RESUME_POLL_SECONDS = 0.02
_UDP_MAX_NAMES = 100_000  # statsd names held per interval


class CacheGauge(Protocol):
    """How full the store is; read after every batch to decide on backpressure."""

    @property
    def cache_points(self) -> int: ...


class IngestServer:
    """Owns the ingest sockets; ``start`` binds them, ``stop`` closes them in order."""

    def __init__(self, config: CollectorConfig, intake: Intake, cache: CacheGauge,
                 metrics: CollectorMetrics, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.intake = intake
        self._cache = cache
        self._metrics = metrics
        self._clock = clock
        self._servers: list[asyncio.base_events.Server] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._streams: set[_StreamProtocol] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._paused = False
        self._stopped = False
        self.statsd = StatsdAggregator()
        self.ports: dict[str, int] = {}

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every enabled listener; record the bound ports in ``ports``."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        if cfg.plaintext_port:
            server = await loop.create_server(
                lambda: _PlaintextProtocol(self), cfg.host, cfg.plaintext_port,
                reuse_address=True, backlog=512)
            self._servers.append(server)
            self.ports["plaintext"] = server.sockets[0].getsockname()[1]
        if cfg.pickle_port:
            server = await loop.create_server(
                lambda: _PickleProtocol(self), cfg.host, cfg.pickle_port,
                reuse_address=True, backlog=512)
            self._servers.append(server)
            self.ports["pickle"] = server.sockets[0].getsockname()[1]
        if cfg.udp_port:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _DatagramProtocol(self), local_addr=(cfg.host, cfg.udp_port))
            self._udp = transport
            self.ports["udp"] = transport.get_extra_info("sockname")[1]
            self._tasks.append(self._spawn(self._statsd_flusher(), "statsd-flush"))
        self._tasks.append(self._spawn(self._idle_sweeper(), "idle-sweeper"))

    async def stop(self, drain_timeout_seconds: float = 5.0) -> None:
        """Stop accepting, let connections deliver what they sent, flush statsd. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for server in self._servers:
            server.close()
        for protocol in list(self._streams):
            protocol.close_gracefully()
        if self._streams:
            deadline = asyncio.get_running_loop().time() + drain_timeout_seconds
            while self._streams and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            for protocol in list(self._streams):
                protocol.abort()
        for server in self._servers:
            await server.wait_closed()
        if self._udp is not None:
            self._udp.close()
        await cancel_and_wait(*self._tasks)
        self._flush_statsd(final=True)

    # -- flow control -------------------------------------------------------------------
    def after_batch(self) -> None:
        """Called after each read: pause every socket once the cache is above the high mark."""
        if not self._paused and self._cache.cache_points >= self.config.cache_high_watermark_points:
            self._paused = True
            self._metrics.reading_paused.set(1)
            self._metrics.reading_pauses.inc()
            log.warning("cache above high watermark: pausing reads",
                        extra={"cache_points": self._cache.cache_points})
            for protocol in self._streams:
                protocol.pause()
            if self._udp is not None:
                self._udp.pause_reading()  # type: ignore[attr-defined]
            self._tasks.append(self._spawn(self._resume_when_drained(), "resume"))

    @property
    def paused(self) -> bool:
        """True while reads are paused by backpressure."""
        return self._paused

    async def _resume_when_drained(self) -> None:
        while self._cache.cache_points > self.config.cache_low_watermark_points:
            await asyncio.sleep(_RESUME_POLL_SECONDS)
        self._paused = False
        self._metrics.reading_paused.set(0)
        log.info("cache below low watermark: resuming reads")
        for protocol in self._streams:
            protocol.resume()
        if self._udp is not None and not self._stopped:
            self._udp.resume_reading()  # type: ignore[attr-defined]

    # -- connections ------------------------------------------------------------------
    def register(self, protocol: _StreamProtocol) -> bool:
        """Admit a new connection unless over ``max_connections``."""
        if self._stopped or len(self._streams) >= self.config.max_connections:
            self._metrics.connections_refused.inc()
            return False
        self._streams.add(protocol)
        self._metrics.connections.labels(protocol.kind).inc()
        if self._paused:
            protocol.pause()
        return True

    def unregister(self, protocol: _StreamProtocol) -> None:
        """Forget a closed connection."""
        if protocol in self._streams:
            self._streams.discard(protocol)
            self._metrics.connections.labels(protocol.kind).dec()

    async def _idle_sweeper(self) -> None:
        timeout = self.config.idle_timeout_seconds
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            cutoff = loop.time() - timeout
            for protocol in list(self._streams):
                if protocol.last_activity < cutoff and not self._paused:
                    log.info("closing idle connection", extra={"peer": protocol.peer})
                    protocol.close_gracefully()

    # -- statsd -------------------------------------------------------------------------
    def statsd_line(self, line: bytes, peer: str) -> None:
        """Accumulate one statsd line until the next flush."""
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self.intake.reject("invalid_utf8", "statsd line is not valid UTF-8", line, peer)
            return
        if self.statsd.pending_names >= _UDP_MAX_NAMES:
            self.intake.reject("cardinality", "too many statsd names this interval", line, peer)
            return
        try:
            self.statsd.add_line(text)
        except StatsdError as exc:
            self.intake.reject("bad_statsd", str(exc), line, peer)

    async def _statsd_flusher(self) -> None:
        interval = self.config.statsd_flush_interval_seconds
        while True:
            now = self._clock()
            await asyncio.sleep(interval - math.fmod(now, interval) + 0.001)
            self._flush_statsd()

    def _flush_statsd(self, final: bool = False) -> None:
        interval = self.config.statsd_flush_interval_seconds
        now = self._clock()
        start = int(now // interval * interval)
        if not final:
            start -= int(interval)
        points = self.statsd.flush()
        if points:
            self.intake.values(points, start, "statsd")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"collector-{name}")
        task.add_done_callback(_log_crash)
        return task


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task crashed", exc_info=task.exception(),
                  extra={"task": task.get_name()})


class _StreamProtocol(asyncio.Protocol):
    kind = "stream"

    def __init__(self, server: IngestServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.last_activity = 0.0
        self._reading = True
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else ""
        self.last_activity = asyncio.get_running_loop().time()
        if not self.server.register(self):
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.last_activity = asyncio.get_running_loop().time()
        self.handle(data)
        self.server.after_batch()

    def eof_received(self) -> bool:
        self.finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.unregister(self)

    def handle(self, data: bytes) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """End of stream: handle whatever complete input is left."""

    def pause(self) -> None:
        if self.transport is not None and self._reading and not self.transport.is_closing():
            self.transport.pause_reading()
            self._reading = False

    def resume(self) -> None:
        if self.transport is not None and not self._reading and not self.transport.is_closing():
            self.transport.resume_reading()
            self._reading = True

    def close_gracefully(self) -> None:
        """Stop reading; what the kernel already delivered is processed by close()."""
        if self.transport is not None and not self._closing:
            self._closing = True
            self.finish()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _PlaintextProtocol(_StreamProtocol):
    kind = "plaintext"

    def __init__(self, server: IngestServer) -> None:
        super().__init__(server)
        self._splitter = LineSplitter(server.config.max_line_bytes)

    def handle(self, data: bytes) -> None:
        lines, skipped = self._splitter.feed(data)
        if skipped:
            self.server.intake.reject("line_too_long", "line longer than max_line_bytes",
                                      data[:200], self.peer, count=skipped)
        if lines:
            self.server.intake.plaintext_lines(lines, "plaintext_tcp", self.peer)

    def finish(self) -> None:
        rest = self._splitter.finish()
        if rest:
            self.server.intake.plaintext_lines(rest, "plaintext_tcp", self.peer)


class _PickleProtocol(_StreamProtocol):
    kind = "pickle"

    def __init__(self, server: IngestServer) -> None:
        super().__init__(server)
        self._frames = FrameDecoder(server.config.max_pickle_frame_bytes)

    def handle(self, data: bytes) -> None:
        payloads, oversized = self._frames.feed(data)
        intake = self.server.intake
        if oversized:
            intake.reject("frame_too_large", "pickle frame longer than max_pickle_frame_bytes",
                          b"", self.peer, count=oversized)
        for payload in payloads:
            try:
                items = decode_payload(payload)
            except ForbiddenPickle as exc:
                intake.reject("forbidden_pickle", str(exc), payload[:200], self.peer)
                continue
            except UnicodeDecodeError:
                intake.reject("invalid_utf8", "pickle string is not valid UTF-8", payload[:200],
                              self.peer)
                continue
            except pickle.UnpicklingError as exc:
                intake.reject("bad_pickle", str(exc), payload[:200], self.peer)
                continue
            intake.datapoints(items, "pickle", self.peer)


class _DatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: IngestServer) -> None:
        self.server = server
        self._max_line = server.config.max_line_bytes

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        plaintext: list[bytes] = []
        server = self.server
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            if len(line) > self._max_line:
                server.intake.reject("line_too_long", "line longer than max_line_bytes",
                                     line[:200], peer)
            elif looks_like_statsd(line):
                server.statsd_line(line, peer)
            else:
                plaintext.append(line)
        if plaintext:
            server.intake.plaintext_lines(plaintext, "plaintext_udp", peer)
        server.after_batch()

    def error_received(self, exc: Exception) -> None:
        log.warning("udp socket error", extra={"error": str(exc)})
