"""A real etcd (Debian ``etcd-server``) on a free loopback port, for tests and benchmarks.

One instance per test session is enough: :func:`shared_etcd` starts it lazily and stops it
at interpreter exit. Tests that need a fresh keyspace use a unique root prefix instead.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

__all__ = ["EtcdPeer", "etcd_binary", "shared_etcd"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def etcd_binary() -> str | None:
    """Path of the etcd server binary, or None if it is not installed."""
    return shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)


class EtcdPeer:
    """One etcd member with its own data directory; can be killed and started again."""

    def __init__(self, binary: str, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.binary = binary
        self.data_dir = data_dir
        # extra environment variables for the etcd process (e.g. Go's GOGC); None = inherit
        self.env = env
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log = data_dir / "etcd.log"

    @property
    def url(self) -> str:
        """The registry URL of this member."""
        return f"etcd://127.0.0.1:{self.client_port}"

    def start(self, timeout_seconds: float = 30.0) -> None:
        """Start etcd and wait until ``/health`` answers."""
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = open(self._log, "ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--name",
                "tidemark-test",
                "--data-dir",
                str(self.data_dir / "data"),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"tidemark-test={peer}",
                "--log-level",
                "warn",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=None if self.env is None else {**os.environ, **self.env},
        )
        log.close()
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd exited: {self._log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{client}/health", timeout=1) as response:
                    if b'"health":"true"' in response.read():
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"etcd did not become healthy: {self._log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL the member (its data directory stays)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        """SIGTERM and wait; safe to call twice."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


_shared: EtcdPeer | None = None


def shared_etcd() -> EtcdPeer | None:
    """The session's etcd, started on first use; None if etcd is not installed."""
    global _shared
    if _shared is None:
        binary = etcd_binary()
        if binary is None:
            return None
        directory = Path(tempfile.mkdtemp(prefix="tidemark-etcd-"))
        peer = EtcdPeer(binary, directory)
        peer.start()
        _shared = peer

        def _cleanup() -> None:
            peer.stop()
            shutil.rmtree(directory, ignore_errors=True)

        atexit.register(_cleanup)
    elif _shared.process is None or _shared.process.poll() is not None:
        _shared.start()
    return _shared
