"""Emission: every closed window goes to the collector through graphyte, from a thread.

The :class:`Reporter` thread wakes at each window boundary, closes the recorder's window,
turns it into plaintext lines and appends them as one batch to a bounded buffer, then
sends buffered batches oldest first. Requests never wait on it. While the collector is
unreachable batches stay buffered (default: 10 minutes of windows) and sending is retried
with exponential backoff; when the buffer is full the oldest batch is dropped and its
points counted in ``tidemark_agent_points_dropped_total``. ``stop`` closes the open
window and makes one last attempt to send everything.
"""

from __future__ import annotations

import collections
import logging
import math
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import graphyte
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.naming import MetricNaming, Point
from agent.recorder import Recorder

__all__ = ["ReporterConfig", "Reporter"]

log = logging.getLogger("tidemark.agent.reporter")

_MAX_SEND_BYTES = 1 << 20  # one connection carries at most about this much


@dataclass(frozen=True)
class ReporterConfig:
    """Where and how points are sent."""

    host: str = "127.0.0.1"
    port: int = 2003
    protocol: str = "tcp"  # or "udp"
    timeout_seconds: float = 5.0
    buffer_seconds: float = 600.0  # how much data waits while the collector is away
    max_buffered_points: int = 2_000_000
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    udp_datagram_bytes: int = 8192

    def __post_init__(self) -> None:
        if self.protocol not in ("tcp", "udp"):
            raise ValueError(f"protocol must be 'tcp' or 'udp', got {self.protocol!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be within 1..65535, got {self.port!r}")
        if self.buffer_seconds < 0 or self.max_buffered_points < 1:
            raise ValueError("buffer_seconds must be >= 0 and max_buffered_points >= 1")


@dataclass(frozen=True)
class _Batch:
    window_start: int
    payload: bytes
    points: int


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter("tidemark_agent_points_sent_total",
                            "Points delivered to the collector", registry=registry)
        self.dropped = Counter("tidemark_agent_points_dropped_total",
                               "Points dropped because the send buffer was full",
                               registry=registry)
        self.send_errors = Counter("tidemark_agent_send_errors_total",
                                   "Failed attempts to send a batch", registry=registry)
        self.buffered = Gauge("tidemark_agent_buffered_points",
                              "Points waiting for the collector", registry=registry)


class _RecorderCollector(Collector):
    """The recorder's own losses, read when /metrics is scraped."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "tidemark_agent_unrecorded_calls",
            "Calls not recorded: their window already held max_keys (service, node, caller) "
            "keys", value=self._recorder.rejected_keys)


class Reporter:
    """Closes ``recorder``'s windows on time and ships them; runs on its own thread.

    ``start``/``stop`` are explicit (``stop`` is idempotent and flushes). ``tick`` does
    one step of the loop and is public so tests can drive it with their own clock.
    """

    def __init__(self, recorder: Recorder, config: ReporterConfig, *,
                 naming: MetricNaming | None = None, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.recorder = recorder
        self.config = config
        self.naming = naming or MetricNaming()
        self._clock = clock
        registry = registry if registry is not None else CollectorRegistry()
        self._metrics = _Metrics(registry)
        registry.register(_RecorderCollector(recorder))
        self._sender = graphyte.Sender(config.host, config.port, timeout=config.timeout_seconds,
                                       protocol=config.protocol, raise_send_errors=True)
        self._max_batches = max(1, math.ceil(config.buffer_seconds / recorder.interval_seconds))
        self._buffer: collections.deque[_Batch] = collections.deque()
        self._buffered_points = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._backoff = 0.0
        self._next_send_at = 0.0
        self.dropped_points = 0
        self.sent_points = 0

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the sending thread."""
        if self._thread is not None:
            raise RuntimeError("reporter already started")
        self._thread = threading.Thread(target=self._run, name="tidemark-reporter", daemon=True)
        self._thread.start()

    def stop(self, timeout_seconds: float | None = None) -> None:
        """Close the open window, try once to send everything buffered, stop the thread."""
        if self._stopped:
            return
        self._stopped = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds if timeout_seconds is not None
                              else self.config.timeout_seconds * 2 + 1)
        else:
            self._final_flush()

    def __del__(self) -> None:
        if self._thread is not None and not self._stopped:
            warnings.warn("Reporter was never stopped; buffered points are lost",
                          ResourceWarning, stacklevel=1)

    # -- state for /runtime and tests ----------------------------------------------

    @property
    def buffered_points(self) -> int:
        return self._buffered_points

    @property
    def buffered_windows(self) -> list[int]:
        with self._lock:
            return [b.window_start for b in self._buffer]

    # -- the loop --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopped:
            self.tick()
            now = self._clock()
            next_boundary = self.recorder.window_start + self.recorder.interval_seconds
            wait = next_boundary - now
            if self._buffer:
                wait = min(wait, self._next_send_at - now)
            self._wake.wait(max(0.0, min(wait, 1.0)))
        self._final_flush()

    def tick(self) -> None:
        """Close the window if its end has passed, then send if a send is due."""
        now = self._clock()
        if now >= self.recorder.window_start + self.recorder.interval_seconds:
            self.close_window(now)
        if self._buffer and now >= self._next_send_at:
            self._send_buffered(now)

    def close_window(self, now: float | None = None) -> int:
        """Close the recorder's open window into a buffered batch; returns its points."""
        snapshot = self.recorder.swap(self._clock() if now is None else now)
        points = self.naming.points(snapshot)
        if points:
            self._enqueue(_Batch(snapshot.start, self._encode(points), len(points)))
        return len(points)

    def _encode(self, points: list[Point]) -> bytes:
        build = self._sender.build_message
        return b"".join(build(name, value, ts) for name, value, ts in points)

    def _enqueue(self, batch: _Batch) -> None:
        with self._lock:
            self._buffer.append(batch)
            self._buffered_points += batch.points
            while len(self._buffer) > 1 and (
                    len(self._buffer) > self._max_batches
                    or self._buffered_points > self.config.max_buffered_points):
                dropped = self._buffer.popleft()
                self._buffered_points -= dropped.points
                self.dropped_points += dropped.points
                self._metrics.dropped.inc(dropped.points)
            self._metrics.buffered.set(self._buffered_points)

    def _send_buffered(self, now: float) -> bool:
        """Send buffered batches oldest first, several per connection; False on failure.

        A failed send keeps everything buffered; a retry may repeat lines the collector
        already got, which is harmless (same name, value and timestamp).
        """
        while True:
            with self._lock:
                if not self._buffer:
                    self._backoff = 0.0
                    return True
                group: list[_Batch] = []
                size = 0
                for batch in self._buffer:
                    if group and size + len(batch.payload) > _MAX_SEND_BYTES:
                        break
                    group.append(batch)
                    size += len(batch.payload)
            try:
                self._send_payload(b"".join(b.payload for b in group))
            except OSError as exc:
                self._metrics.send_errors.inc()
                self._backoff = min(self.config.backoff_max_seconds,
                                    max(self.config.backoff_initial_seconds, self._backoff * 2))
                self._next_send_at = now + self._backoff
                log.warning("collector unreachable; points buffered",
                            extra={"error": str(exc), "retry_in_seconds": self._backoff,
                                   "buffered_points": self._buffered_points})
                return False
            sent = 0
            with self._lock:
                for batch in group:
                    if self._buffer and self._buffer[0] is batch:
                        self._buffer.popleft()
                        self._buffered_points -= batch.points
                        sent += batch.points
                self._metrics.buffered.set(self._buffered_points)
            self.sent_points += sent
            self._metrics.sent.inc(sent)

    def _send_payload(self, payload: bytes) -> None:
        if self.config.protocol == "tcp":
            self._sender.send_message(payload)  # create_connection: IPv4 and IPv6 alike
            return
        limit = self.config.udp_datagram_bytes
        chunks: list[bytes] = []
        chunk: list[bytes] = []
        size = 0
        for line in payload.splitlines(keepends=True):
            if chunk and size + len(line) > limit:
                chunks.append(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            chunks.append(b"".join(chunk))
        self._send_datagrams(chunks)

    def _send_datagrams(self, datagrams: list[bytes]) -> None:
        """Send over UDP to the collector's address, IPv4 or IPv6 (graphyte's UDP socket
        is IPv4 only). The name is resolved on every send, as graphyte does."""
        family, kind, proto, _, address = socket.getaddrinfo(
            self.config.host, self.config.port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, kind, proto) as sock:
            for datagram in datagrams:
                sock.sendto(datagram, address)

    def _final_flush(self) -> None:
        self.close_window()
        if self._buffer:
            self._next_send_at = 0.0
            if not self._send_buffered(self._clock()):
                log.warning("points lost at shutdown: collector unreachable",
                            extra={"points": self._buffered_points})
