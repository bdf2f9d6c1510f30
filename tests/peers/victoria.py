"""Debian's VictoriaMetrics single-node server with its Graphite plaintext listener."""

from __future__ import annotations

import contextlib
import functools
import json
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.peers.process import (
    PeerFailed,
    PeerProcess,
    find_binary,
    free_port,
    http_get,
    process_tree_cpu_seconds,
    tcp_open,
)

__all__ = ["VictoriaMetrics", "victoria_metrics"]

START_ATTEMPTS = 3


@dataclass(frozen=True)
class VictoriaMetrics:
    """A running victoria-metrics."""

    process: PeerProcess
    line_port: int
    http_port: int

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str, params: Mapping[str, object] | list[tuple[str, str]]) -> bytes:
        """GET path?params; raises PeerFailed on a non-200 answer."""
        query = urllib.parse.urlencode(params, doseq=True)
        status, body = http_get(f"{self.base_url}{path}?{query}", timeout_seconds=120)
        if status != 200:
            raise PeerFailed(f"victoria-metrics {path}?{query} answered {status}: {body[:300]!r}")
        return body

    def export_counts(self, match: str, start: int, end: int) -> dict[str, int]:
        """Number of stored samples per metric name matching a PromQL series selector."""
        body = self.get("/api/v1/export", {"match[]": match, "start": start, "end": end})
        counts: dict[str, int] = {}
        for line in body.splitlines():
            if line.strip():
                record = json.loads(line)
                name = record["metric"]["__name__"]
                counts[name] = counts.get(name, 0) + len(record["values"])
        return counts

    def force_flush(self) -> None:
        """Make every point received so far searchable now (not within a second or so).

        A query that finds no series makes victoria-metrics cache that answer for several
        seconds, so callers that know their data has arrived flush before the first query.
        """
        self.get("/internal/force_flush", {})

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by victoria-metrics."""
        return process_tree_cpu_seconds(self.process.pid)


@contextlib.contextmanager
def victoria_metrics(
    root: Path, *, ready_timeout_seconds: float = 60.0
) -> Iterator[VictoriaMetrics]:
    """Run victoria-metrics with its data under ``root``; stop it on exit."""
    binary = find_binary("victoria-metrics")
    last_error: Exception | None = None
    for _attempt in range(START_ATTEMPTS):
        line, http = free_port(), free_port()
        process = PeerProcess(
            "victoria-metrics",
            [
                binary,
                f"-graphiteListenAddr=127.0.0.1:{line}",
                f"-httpListenAddr=127.0.0.1:{http}",
                f"-storageDataPath={root / 'vmdata'}",
                "-retentionPeriod=100y",
                "-search.latencyOffset=0s",
                "-loggerLevel=WARN",
                "-search.disableCache",
            ],
            log_path=root / "victoria-metrics.log",
            cwd=root,
        )
        process.start()
        try:
            process.wait_ready(
                functools.partial(_listening, line, http),
                timeout_seconds=ready_timeout_seconds,
                what=f"victoria-metrics on {line}/{http}",
            )
        except PeerFailed as exc:
            last_error = exc
            continue
        try:
            yield VictoriaMetrics(process, line, http)
        finally:
            process.stop(timeout_seconds=30)
        return
    raise PeerFailed(f"victoria-metrics did not start in {START_ATTEMPTS} attempts: {last_error}")


def _listening(line_port: int, http_port: int) -> bool:
    return tcp_open(line_port) and _ready(http_port)


def _ready(port: int) -> bool:
    try:
        status, _ = http_get(f"http://127.0.0.1:{port}/health", timeout_seconds=5)
    except OSError:
        return False
    return status == 200
