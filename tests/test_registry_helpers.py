"""Helpers shared by the registry tests (no tests here): backends that can restart, polling."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from registry.client import BaseClient, Watch, open_registry
from registry.model import Snapshot
from registry.server.app import RegistryServer, RegistryServerConfig
from tests.peers.etcd import EtcdPeer, shared_etcd

TOKEN = "s3cret-token"


@dataclass
class Backend:
    """A running registry of one kind, plus clients that get closed at the end."""

    kind: str
    url: str
    token: str | None
    data_dir: Path
    server: RegistryServer | None = None
    etcd: EtcdPeer | None = None
    clients: list[BaseClient] = field(default_factory=list)

    def client(self, **kwargs: Any) -> BaseClient:
        """A new client (stopped by the fixture)."""
        client = open_registry(self.url, token=self.token, **kwargs)
        self.clients.append(client)
        return client

    async def stop_registry(self) -> None:
        """Take the registry away (embedded: stop the server; etcd: kill -9)."""
        if self.server is not None:
            await self.server.stop()
        elif self.etcd is not None:
            await asyncio.to_thread(self.etcd.kill)

    async def start_registry(self) -> None:
        """Bring it back on the same port with the same data."""
        if self.kind == "embedded":
            port = int(self.url.rsplit(":", 1)[1])
            self.server = RegistryServer(
                RegistryServerConfig(data_dir=self.data_dir, http_port=port), token=self.token)
            await self.server.start()
        elif self.etcd is not None:
            await asyncio.to_thread(self.etcd.start)

    async def restart(self) -> None:
        """Stop and start again."""
        await self.stop_registry()
        await self.start_registry()

    async def close(self) -> None:
        """Stop every client, then the embedded server."""
        for client in self.clients:
            await client.stop()
        if self.server is not None:
            await self.server.stop()
        if self.etcd is not None and (self.etcd.process is None
                                      or self.etcd.process.poll() is not None):
            await asyncio.to_thread(self.etcd.start)


async def make_backend(kind: str, tmp_path: Path) -> Backend:
    """Start a registry of ``kind`` ("embedded" or "etcd")."""
    if kind == "embedded":
        server = RegistryServer(
            RegistryServerConfig(data_dir=tmp_path / "registry", http_port=0), token=TOKEN)
        await server.start()
        return Backend(kind, f"http://127.0.0.1:{server.port}", TOKEN, tmp_path / "registry",
                       server=server)
    peer = await asyncio.to_thread(shared_etcd)
    if peer is None:
        pytest.skip("etcd is not installed (make test installs etcd-server when run as root)")
    return Backend(kind, peer.url, None, tmp_path, etcd=peer)


def unique(name: str) -> str:
    """A service name no other test uses (the etcd keyspace is shared by the session)."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def wait_until(predicate: Callable[[], Any], timeout_seconds: float = 15.0,
                     interval_seconds: float = 0.05) -> None:
    """Poll an (async or sync) predicate until it holds; fail after the bounded wait."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_seconds} s")
        await asyncio.sleep(interval_seconds)


async def next_matching(watch: Watch, predicate: Callable[[Snapshot], bool],
                        timeout_seconds: float = 15.0,
                        seen: list[Snapshot] | None = None) -> Snapshot:
    """Read snapshots from ``watch`` until one matches; records them all in ``seen``."""
    async def read() -> Snapshot:
        async for snapshot in watch:
            if seen is not None:
                seen.append(snapshot)
            if predicate(snapshot):
                return snapshot
        raise AssertionError("watch ended")

    return await asyncio.wait_for(read(), timeout_seconds)
