"""The collector's configuration: one frozen object built by :func:`tidemark.config.load_config`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["CollectorConfig"]


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    """Every setting of ``tidemark collector``; file keys and ``TIDEMARK_COLLECTOR_*`` env match."""

    data_dir: Path
    host: str = "127.0.0.1"
    plaintext_port: int = 2003  # TCP, Graphite plaintext; 0 disables
    udp_port: int = 2003  # UDP, Graphite plaintext and motan-go statsd-style lines; 0 disables
    pickle_port: int = 2004  # TCP, carbon pickle protocol; 0 disables
    http_port: int = 8080  # render API, /healthz, /metrics; 0 disables
    # Directory holding storage-schemas.conf and storage-aggregation.conf (carbon format).
    # None: the directory of --config, falling back to the shipped defaults.
    schemas_dir: Path | None = None
    # Durability
    wal_fsync_interval_seconds: float = 0.2
    wal_segment_bytes: int = 64 * 1024 * 1024
    # Cache and writer
    cache_high_watermark_points: int = 5_000_000  # stop reading sockets above this
    cache_low_watermark_points: int = 4_000_000  # resume below this
    writer_max_updates_per_second: float = 0.0  # whisper file updates; 0 is unlimited
    # A metric's points are written once the oldest has waited this long (batching many
    # points per file update); sooner when the cache passes half the low watermark.
    writer_min_age_seconds: float = 10.0
    # On stop, how long to write the cache into whisper; the rest stays in the log for replay.
    drain_timeout_seconds: float = 60.0
    # Limits on protocol input
    max_connections: int = 1024
    idle_timeout_seconds: float = 300.0
    max_line_bytes: int = 4096
    max_pickle_frame_bytes: int = 1024 * 1024
    max_new_metrics_per_minute: int = 100_000  # cardinality guard; 0 is unlimited
    max_future_seconds: float = 600.0  # reject timestamps further ahead than this
    statsd_flush_interval_seconds: float = 10.0
    # Render API
    render_max_series: int = 10_000
    http_max_body_bytes: int = 1024 * 1024
    log_level: str = "info"

    def __post_init__(self) -> None:
        for name in ("plaintext_port", "udp_port", "pickle_port", "http_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ValueError(f"configuration key {name!r}: {port} is not a port (0-65535)")
        if not 0 < self.wal_fsync_interval_seconds <= 60:
            raise ValueError("configuration key 'wal_fsync_interval_seconds': must be in (0, 60]")
        if self.cache_low_watermark_points >= self.cache_high_watermark_points:
            raise ValueError(
                "configuration key 'cache_low_watermark_points': must be below "
                "cache_high_watermark_points"
            )
        for name in ("max_connections", "max_line_bytes", "max_pickle_frame_bytes",
                     "wal_segment_bytes", "render_max_series", "http_max_body_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"configuration key {name!r}: must be positive")
