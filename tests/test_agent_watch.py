"""A registry watch of the agent that dies is started again: calls keep routing by the last
view meanwhile, and the agent obeys the registry again afterwards. Real registry, upstreams
and agents on loopback; each wait is a bounded poll, never a timing assertion."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from registry.client import Watch
from registry.http_backend import HttpRegistryClient
from registry.model import Node, Snapshot
from tests.test_agent_bounds import metric, runtime
from tests.test_agent_support import Mesh


class _WatchRaisingOnce(Watch):
    """A real watch that, after its first snapshot, raises once ``fail`` is set."""

    def __init__(self, client: HttpRegistryClient, service: str, fail: asyncio.Event) -> None:
        super().__init__(client, service=service)
        self._fail = fail
        self._gave_first = False

    async def __anext__(self) -> Snapshot:
        if self._gave_first:
            await self._fail.wait()
            raise RuntimeError("the watch broke (raised by the test)")
        self._gave_first = True
        return await super().__anext__()


class RegistryClientWhoseWatchRaisesOnce(HttpRegistryClient):
    """The real client of the embedded registry, except for its first watch of ``service``.

    A test double of the client object, because a real registry cannot make a watch end
    with an error: the client reconnects after any failure of the registry and serves its
    fail-static copy meanwhile. What fails here is what the agent must survive anyway: a
    bug anywhere under the watch (the client, the snapshot's parsing, the view's build).
    """

    def __init__(self, url: str, service: str, fail: asyncio.Event, cache_dir: Path) -> None:
        super().__init__(url, cache_dir=cache_dir)
        self._failing = service
        self._fail = fail
        self.watches = 0

    def watch(self, service: str, *, initial_wait_seconds: float = 1.0) -> Watch:
        if service == self._failing:
            self.watches += 1
            if self.watches == 1:
                return _WatchRaisingOnce(self, service, self._fail)
        return super().watch(service, initial_wait_seconds=initial_wait_seconds)


@pytest.mark.parametrize("side", ["client", "server"])
async def test_a_watch_that_died_is_watched_again_and_the_registry_obeyed(
        mesh: Mesh, tmp_path: Path, side: str) -> None:
    """The watch of ``orders`` raises: calls still route by its last view, a new watch
    starts (counted), and a degrade issued after the failure reaches the calls."""
    fail = asyncio.Event()
    client_of_registry = RegistryClientWhoseWatchRaisesOnce(
        mesh.registry_url, "orders", fail, tmp_path / "cache")
    await client_of_registry.start()
    try:
        a = await mesh.upstream("a")
        if side == "client":  # the node is the upstream itself: only this agent degrades
            await mesh.admin.register("orders", Node(id="a", address=f"127.0.0.1:{a.port}",
                                                     idc="default"), ttl_seconds=30)
            agent = await mesh.client_agent("web", registry_client=client_of_registry)
            await mesh.wait_nodes(agent, "orders", 1)
            path = "/orders/list"
        else:
            agent = await mesh.server_agent("orders", a, registry_client=client_of_registry)
            path = "/list"
        assert (await mesh.get(agent, path))[0] == 200
        assert client_of_registry.watches == 1

        fail.set()  # the watch raises; the registry changes after that
        await mesh.admin.degrade("orders", reason="peak load", who="ops")
        statuses = []
        for _ in range(250):  # restarted after 0.5 s; up to 5 s
            status, headers, body = await mesh.get(agent, path)
            statuses.append(status)
            if status == 503:  # the degrade arrived; any other answer before it is a fault
                break
            await asyncio.sleep(0.02)
        assert set(statuses[:-1]) <= {200}, statuses  # the last view served meanwhile
        assert statuses[-1] == 503, statuses
        assert headers["X-Tidemark-Degraded"] == "peak load"
        assert "degraded" in json.loads(body)["error"]

        assert client_of_registry.watches == 2
        assert await metric(mesh, agent, "tidemark_agent_watch_restarts_total",
                            service="orders") == 1
        state = await runtime(mesh, agent)
        assert state["services"]["orders"]["degraded"]["reason"] == "peak load"
    finally:
        await mesh.close()  # the agents first: they use the client
        await client_of_registry.stop()
