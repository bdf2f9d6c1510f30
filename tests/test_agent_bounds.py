"""The sidecar's per-name state stays bounded when names churn: services in the path,
callers in X-Tidemark-Caller, nodes in the registry. Real registry, upstreams and agents
on loopback; each wait is a bounded poll, never a timing assertion."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from agent.service import AgentService
from registry.model import Node
from tests.conftest import free_port
from tests.test_agent_http import raw_client, read_response
from tests.test_agent_support import Mesh


async def runtime(mesh: Mesh, agent: AgentService) -> dict[str, Any]:
    return json.loads((await mesh.get(agent, "/runtime"))[2])  # type: ignore[no-any-return]


async def metric(mesh: Mesh, agent: AgentService, name: str, **labels: str) -> float | None:
    """The value of one series on the agent's /metrics, None when it is absent."""
    text = (await mesh.get(agent, "/metrics"))[2].decode()
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name + (f"{{{selector}}}" if labels else "")) + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


async def poll(mesh: Mesh, agent: AgentService, done: Callable[[dict[str, Any]], bool],
               call: str | None = None, tries: int = 200) -> dict[str, Any]:
    """/runtime until ``done`` holds (calling ``call`` meanwhile, to keep it in use)."""
    state: dict[str, Any] = {}
    for _ in range(tries):
        if call is not None:
            await mesh.get(agent, call)
        state = await runtime(mesh, agent)
        if done(state):
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached: {state.get('services', state)!r}"[:2000])


async def test_names_nobody_calls_do_not_lock_out_a_real_service(mesh: Mesh) -> None:
    """Every watch slot taken by a name called once (a browser's /favicon.ico, typos): a
    service that exists still gets routed to, and the stray names are unwatched."""
    await mesh.server_agent("orders", await mesh.upstream("a"))
    client = await mesh.client_agent("web", max_services=3, service_idle_seconds=0.4,
                                     first_snapshot_wait_seconds=0.5)
    for name in ("favicon.ico", "robots.txt", "ordres"):
        assert (await mesh.get(client, f"/{name}/x"))[0] == 503  # no node
    statuses = []
    for _ in range(100):
        statuses.append((await mesh.get(client, "/orders/list"))[0])
        if statuses[-1] == 200:
            break
        await asyncio.sleep(0.05)
    assert statuses[-1] == 200, statuses
    state = await poll(mesh, client, lambda s: set(s["services"]) == {"orders"},
                       call="/orders/list")
    assert state["bounded_state"]["services"] == 1
    evicted = await metric(mesh, client, "tidemark_agent_expired_total", what="service_evicted")
    idle = await metric(mesh, client, "tidemark_agent_expired_total", what="service_idle")
    assert evicted is not None and idle is not None and evicted + idle == 3


async def test_a_service_nobody_calls_any_more_loses_its_watch_breakers_and_series(
        mesh: Mesh) -> None:
    down = Node(id="g1", address=f"127.0.0.1:{free_port()}", idc="default")  # refuses
    await mesh.admin.register("gone", down, ttl_seconds=30)
    client = await mesh.client_agent("web", service_idle_seconds=0.4, max_attempts=1)
    await mesh.wait_nodes(client, "gone", 1)
    assert (await mesh.get(client, "/gone/x"))[0] == 502
    assert await metric(mesh, client, "tidemark_agent_upstream_errors_total",
                        service="gone", error="connection") == 1
    state = await runtime(mesh, client)
    assert state["services"]["gone"]["nodes"][0]["breaker"] == "closed"
    assert await metric(mesh, client, "tidemark_registry_snapshot_age_seconds",
                        service="gone") == 0.0  # live
    state = await poll(mesh, client, lambda s: not s["services"])
    assert state["bounded_state"]["breakers"] == 0
    assert await metric(mesh, client, "tidemark_agent_upstream_errors_total",
                        service="gone", error="connection") is None
    assert await metric(mesh, client, "tidemark_agent_expired_total",
                        what="service_idle") == 1
    # Nor does the registry client keep its fail-static gauges, which would read "live".
    assert await metric(mesh, client, "tidemark_registry_snapshot_age_seconds",
                        service="gone") is None
    # Called again, it is watched again.
    assert (await mesh.get(client, "/gone/x"))[0] == 502
    assert set((await runtime(mesh, client))["services"]) == {"gone"}


async def test_breakers_of_nodes_that_left_are_dropped(mesh: Mesh) -> None:
    """Nodes churn (new ids on every deploy): the breakers of the ones gone are dropped,
    those of the nodes still there kept."""
    a = await mesh.upstream("a")
    client = await mesh.client_agent("web", service_idle_seconds=2.0)  # churn stays watched
    assert client.directory is not None
    registrations = []
    for i in range(5):
        node = Node(id=f"c{i}", address=f"127.0.0.1:{a.port}", idc="default")
        registrations.append(await mesh.admin.register("churn", node, ttl_seconds=30))
        for _ in range(250):
            view = await client.directory.view("churn")
            if view is not None and f"c{i}" in {e.id for e in view.endpoints}:
                break
            await asyncio.sleep(0.02)
        if i:
            await registrations[i - 1].stop()  # the previous one leaves
            await mesh.wait_nodes(client, "churn", 1)
        assert (await mesh.get(client, "/churn/x"))[0] == 200
    state = await poll(mesh, client, lambda s: s["bounded_state"]["breakers"] == 1,
                       call="/churn/x")
    assert [n["breaker"] for n in state["services"]["churn"]["nodes"]] == ["closed"]
    assert await metric(mesh, client, "tidemark_agent_expired_total", what="breaker") == 4


async def test_callers_beyond_max_callers_are_reported_as_other(mesh: Mesh) -> None:
    """Arbitrary X-Tidemark-Caller values must not make arbitrarily many metric paths."""
    await mesh.server_agent("orders", await mesh.upstream("a"))
    client = await mesh.client_agent("web", max_callers=2, service_idle_seconds=0.4)
    await mesh.wait_nodes(client, "orders", 1)
    for caller in ("c1", "c2", "c3", "c4", "c1"):
        status, _, _ = await mesh.get(client, "/orders/x", headers={"X-Tidemark-Caller": caller})
        assert status == 200  # the call goes whatever the caller
    assert await metric(mesh, client, "tidemark_agent_other_caller_calls_total") == 2
    # Callers not seen for service_idle_seconds are forgotten: a new one gets its name.
    await poll(mesh, client, lambda s: s["bounded_state"]["callers"] == 0)
    assert await metric(mesh, client, "tidemark_agent_expired_total", what="caller") == 2
    assert (await mesh.get(client, "/orders/x", headers={"X-Tidemark-Caller": "c5"}))[0] == 200
    await mesh.close()  # flushes the open windows

    def total(caller: str) -> int:
        return sum(int(v) for v, _ in mesh.lines.values(
            f"tidemark.client.{caller}.orders.default.requests"))

    assert [total(c) for c in ("c1", "c2", "_other", "c5")] == [2, 1, 2, 1]
    assert total("c3") == total("c4") == 0


async def test_a_caller_reaching_the_agent_by_a_host_name_routes_by_the_path(
        mesh: Mesh) -> None:
    """Host: node-7.internal:PORT names the agent (its own port), not a service: such
    callers must not each take a watch slot for a service that does not exist."""
    await mesh.server_agent("orders", await mesh.upstream("a"))
    client = await mesh.client_agent("web")
    await mesh.wait_nodes(client, "orders", 1)
    status, _, body = await mesh.get(client, "/orders/list",
                                     headers={"Host": f"node-7.internal:{client.port}"})
    assert status == 200 and json.loads(body)["path"] == "/list"
    status, _, body = await mesh.get(client, "/list", headers={"Host": "orders"})
    assert status == 200 and json.loads(body)["path"] == "/list"  # Host routing stays
    assert set((await runtime(mesh, client))["services"]) == {"orders"}


@pytest.mark.both_loops  # the daemon's default loop is uvloop
async def test_large_pipelined_requests_pause_reading_and_are_all_answered_in_order(
        mesh: Mesh) -> None:
    """A caller pipelines twelve bodies of almost max_body_bytes in front of an upstream
    that holds the first call: the agent stops reading once the requests it has not
    answered hold more than max_body_bytes + max_header_bytes (two of them), instead of
    taking in all twelve, and answers every one, intact and in order."""
    release = asyncio.Event()

    async def held_digest(request: web.Request) -> web.Response:
        body = await request.read()
        await release.wait()
        return web.json_response({"path": request.raw_path, "size": len(body),
                                  "sha256": hashlib.sha256(body).hexdigest()})

    upstream = await mesh.upstream("held", held_digest)
    agent = await mesh.server_agent("orders", upstream, request_timeout_seconds=30)
    count, size = 12, 1024 * 1024 - 65536  # under aiohttp's 1 MiB limit at the upstream
    limit = agent.config.max_body_bytes + agent.config.max_header_bytes
    bodies = [random.Random(i).randbytes(size) for i in range(count)]
    assert agent.port is not None
    async with raw_client(agent.port) as (reader, writer):
        writer.write(b"".join(
            f"POST /{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode() + body
            for i, body in enumerate(bodies)))
        sending = asyncio.ensure_future(writer.drain())  # done once the kernel took it all

        # Until the agent paused reading, or (without the bound) took in all twelve.
        inbound: dict[str, int] = {}
        for _ in range(250):
            inbound = (await runtime(mesh, agent))["inbound"]
            if inbound["read_pauses_for_bytes"] \
                    or inbound["unanswered_request_bytes"] >= count * size:
                break
            await asyncio.sleep(0.02)
        release.set()  # before any assertion: a failure must not leave the call held
        assert 2 * size <= inbound["unanswered_request_bytes"] <= 2 * limit, inbound
        assert inbound["read_pauses_for_bytes"] >= 1, inbound
        assert inbound["reading_paused"] == 1, inbound
        assert inbound["max_unanswered_request_bytes"] == limit
        assert len(upstream.calls) <= 1  # the agent holds the others (the first may
        # still be on its way to the upstream)

        for i in range(count):
            resp = await read_response(reader)
            assert resp.status == 200, resp
            assert json.loads(resp.body) == {
                "path": f"/{i}", "size": size,
                "sha256": hashlib.sha256(bodies[i]).hexdigest()}
        await asyncio.wait_for(sending, 5.0)
        writer.write(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")  # the connection goes on
        assert json.loads((await read_response(reader)).body)["path"] == "/after"

    inbound = (await runtime(mesh, agent))["inbound"]
    assert inbound["largest_unanswered_request_bytes"] <= 2 * limit, inbound
    assert inbound["reading_paused"] == 0
    assert inbound["unanswered_request_bytes"] < 1024  # the /runtime request itself
    assert upstream.calls == [f"/{i}" for i in range(count)] + ["/after"]
