"""Our own `tidemark collector` as a subprocess on free loopback ports.

Uses the CLI contract: ``tidemark collector --data-dir DIR --host 127.0.0.1 --plaintext-port P
--udp-port U --pickle-port Q --http-port H --config FILE``; the carbon-format
storage-schemas.conf and storage-aggregation.conf sit beside FILE; /healthz answers 200 once
every listener is up; SIGTERM flushes and exits 0.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.peers.graphite import DEFAULT_AGGREGATION, DEFAULT_SCHEMAS
from tests.peers.process import (
    HttpPeer,
    PeerFailed,
    PeerProcess,
    PeerUnavailable,
    free_port,
    http_get,
)

__all__ = ["TidemarkCollector", "collector_available", "tidemark_collector"]

START_ATTEMPTS = 3


def collector_available() -> bool:
    """True when this installation has the `tidemark collector` command."""
    try:
        return importlib.util.find_spec("collector.cli") is not None
    except ModuleNotFoundError:
        return False


@dataclass(frozen=True)
class TidemarkCollector(HttpPeer):
    """A running tidemark collector."""

    process: PeerProcess
    line_port: int
    http_port: int
    data_dir: Path
    pickle_port: int
    udp_port: int  # plaintext (and statsd-style) over UDP

    peer_name = "tidemark"


@contextlib.contextmanager
def tidemark_collector(
    root: Path,
    *,
    schemas: str = DEFAULT_SCHEMAS,
    aggregation: str = DEFAULT_AGGREGATION,
    config_toml: str = "",
    ready_timeout_seconds: float = 60.0,
    expect_clean_exit: bool = True,
) -> Iterator[TidemarkCollector]:
    """Start the collector with its data and config under ``root``; SIGTERM it on exit.

    With ``expect_clean_exit`` a non-zero exit status on SIGTERM raises PeerFailed.
    """
    if not collector_available():
        raise PeerUnavailable("the `tidemark collector` command is not in this installation yet")
    conf_dir = root / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "storage-schemas.conf").write_text(schemas)
    (conf_dir / "storage-aggregation.conf").write_text(aggregation)
    config = conf_dir / "collector.toml"
    config.write_text(config_toml)
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for _attempt in range(START_ATTEMPTS):
        line, http, pickle = free_port(), free_port(), free_port()
        udp = free_port(socket.SOCK_DGRAM)
        process = PeerProcess(
            "tidemark collector",
            [
                sys.executable,
                "-m",
                "tidemark",
                "collector",
                "--data-dir",
                str(data_dir),
                "--host",
                "127.0.0.1",
                "--plaintext-port",
                str(line),
                "--udp-port",
                str(udp),
                "--pickle-port",
                str(pickle),
                "--http-port",
                str(http),
                "--config",
                str(config),
            ],
            log_path=root / "collector.log",
            cwd=root,
        )
        process.start()
        try:
            process.wait_ready(
                functools.partial(_healthy, http),
                timeout_seconds=ready_timeout_seconds,
                what=f"tidemark collector /healthz on port {http}",
            )
        except PeerFailed as exc:
            last_error = exc
            continue
        collector = TidemarkCollector(process, line, http, data_dir, pickle, udp)
        try:
            yield collector
        finally:
            status = process.stop(timeout_seconds=60)
        if expect_clean_exit and status not in (0, None):
            raise PeerFailed(
                f"tidemark collector exited {status} on SIGTERM:\n{process.log_tail()}"
            )
        return
    raise PeerFailed(f"tidemark collector did not start in {START_ATTEMPTS} attempts: {last_error}")


def _healthy(port: int) -> bool:
    try:
        status, _ = http_get(f"http://127.0.0.1:{port}/healthz", timeout_seconds=5)
    except OSError:
        return False
    return status == 200
