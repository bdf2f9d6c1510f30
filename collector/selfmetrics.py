"""The collector's own Prometheus metrics, on an explicitly passed registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["CollectorMetrics", "REJECT_REASONS"]

# Every reason a point or frame may be rejected; each is a label value on points_rejected.
REJECT_REASONS = (
    "field_count", "missing_timestamp", "bad_value", "non_finite", "bad_timestamp",
    "future_timestamp",
    "too_old", "line_too_long", "bad_path", "invalid_utf8", "frame_too_large",
    "bad_pickle", "forbidden_pickle", "cardinality", "bad_statsd",
)


class CollectorMetrics:
    """Counters, gauges and histograms every collector component updates."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        ns = "tidemark_collector"
        self.points_received = Counter(
            f"{ns}_points_received", "Points received, by protocol", ["protocol"],
            registry=registry)
        self.points_accepted = Counter(
            f"{ns}_points_accepted", "Points written to the write-ahead log, by protocol",
            ["protocol"], registry=registry)
        self.points_rejected = Counter(
            f"{ns}_points_rejected", "Points or frames rejected, by reason", ["reason"],
            registry=registry)
        for reason in REJECT_REASONS:
            self.points_rejected.labels(reason)
        self.connections = Gauge(
            f"{ns}_connections", "Open client connections, by protocol", ["protocol"],
            registry=registry)
        self.connections_refused = Counter(
            f"{ns}_connections_refused", "Connections closed at once: over max_connections",
            registry=registry)
        self.reading_pauses = Counter(
            f"{ns}_reading_pauses", "Times every socket was paused by cache backpressure",
            registry=registry)
        self.reading_paused = Gauge(
            f"{ns}_reading_paused", "1 while sockets are paused by cache backpressure",
            registry=registry)
        self.cache_points = Gauge(
            f"{ns}_cache_points", "Points in the write cache, not yet in whisper",
            registry=registry)
        self.cache_metrics = Gauge(
            f"{ns}_cache_metrics", "Metrics with points in the write cache", registry=registry)
        self.wal_bytes = Gauge(
            f"{ns}_wal_bytes", "Bytes in write-ahead log segments on disk", registry=registry)
        self.wal_fsync_seconds = Histogram(
            f"{ns}_wal_fsync_seconds", "Duration of one write-ahead log fsync",
            registry=registry)
        self.wal_replayed_points = Counter(
            f"{ns}_wal_replayed_points", "Points recovered from the write-ahead log at start",
            registry=registry)
        self.flush_lag_seconds = Gauge(
            f"{ns}_flush_lag_seconds", "Age of the oldest point not yet written to whisper",
            registry=registry)
        self.files_created = Counter(
            f"{ns}_files_created", "Whisper files created", registry=registry)
        self.points_written = Counter(
            f"{ns}_points_written", "Points written to whisper files", registry=registry)
        self.whisper_updates = Counter(
            f"{ns}_whisper_updates", "Whisper update_many calls", registry=registry)
        self.write_errors = Counter(
            f"{ns}_write_errors", "Whisper writes that failed (points kept in the log)",
            registry=registry)
        self.render_seconds = Histogram(
            f"{ns}_render_seconds", "Duration of read API requests, by endpoint", ["endpoint"],
            registry=registry)
        self.render_errors = Counter(
            f"{ns}_render_errors", "Read API requests answered 4xx/5xx, by endpoint and status",
            ["endpoint", "status"], registry=registry)
