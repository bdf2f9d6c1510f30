"""The sidecar pair on loopback: client agent -> server agents -> upstreams, with a real
registry, and metrics sent to a real plaintext listener."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from aiohttp import web

from agent.call import Call, Next, Reply
from agent.native import data_path
from agent.service import AgentService
from registry.model import Node
from tests.conftest import free_port
from tests.test_agent_support import Behaviour, Mesh, make_mesh
from tests.test_registry_helpers import wait_until


async def test_pair_routes_measures_and_reports(mesh: Mesh) -> None:
    a = await mesh.upstream("a")
    b = await mesh.upstream("b")
    sa = await mesh.server_agent("user", a)
    sb = await mesh.server_agent("user", b)
    client = await mesh.client_agent("web", load_balancer="round_robin", backup_requests=False)
    await mesh.wait_nodes(client, "user", 2)
    served = []
    for i in range(20):
        status, _, body = await mesh.get(client, f"/user/hello?i={i}", method="POST",
                                         data=b"payload")
        assert status == 200
        answer = json.loads(body)
        assert answer["path"] == f"/hello?i={i}" and answer["body"] == "payload"
        served.append(answer["node"])
    assert served.count("a") == 10 and served.count("b") == 10  # round robin, equal weights
    # Host-header routing reaches the same service.
    status, _, body = await mesh.get(client, "/x", headers={"Host": "user"})
    assert status == 200 and json.loads(body)["path"] == "/x"
    status, _, body = await mesh.get(client, "/runtime")
    runtime = json.loads(body)
    assert runtime["role"] == "client"
    assert runtime["data_path"] == data_path()  # compiled or not, as this process sees it
    access_on = logging.getLogger("tidemark.agent.access").isEnabledFor(logging.INFO)
    assert runtime["active_filters"] == [f for f in runtime["filters"]
                                         if f != "access_log" or access_on]
    assert {n["id"] for n in runtime["services"]["user"]["nodes"]} == {
        f"127.0.0.1-{a.port}", f"127.0.0.1-{b.port}"}
    status, _, body = await mesh.get(sa, "/runtime")
    assert json.loads(body)["registered"]["node"]["address"] == f"127.0.0.1:{sa.port}"
    for agent in (client, sa, sb):
        status, _, _ = await mesh.get(agent, "/healthz")
        assert status == 200
    await mesh.close()  # stops agents: the reporters flush their open windows
    total_server = sum(int(float(v)) for v, _ in mesh.lines.values(
        f"tidemark.user.default.127_0_0_1_{a.port}.requests")) + sum(
        int(float(v)) for v, _ in mesh.lines.values(
            f"tidemark.user.default.127_0_0_1_{b.port}.requests"))
    total_client = sum(int(float(v)) for v, _ in mesh.lines.values(
        "tidemark.client.web.user.default.requests"))
    assert total_server == 21 and total_client == 21
    assert mesh.lines.values("tidemark.client.web.user.default.latency.p999")


async def test_node_weights_and_idc_weights_from_the_registry_shape_traffic(mesh: Mesh) -> None:
    a = await mesh.upstream("a")
    b = await mesh.upstream("b")
    c = await mesh.upstream("c")
    await mesh.server_agent("user", a, idc="bj")
    await mesh.server_agent("user", b, idc="bj")
    await mesh.server_agent("user", c, idc="sh")
    client = await mesh.client_agent("web", load_balancer="round_robin", backup_requests=False)
    await mesh.wait_nodes(client, "user", 3)
    await mesh.admin.set_idc_weights("user", {"bj": 3, "sh": 1}, who="test")
    await mesh.admin.set_node_weights("user", {f"127.0.0.1-{b.port}": 20,
                                               f"127.0.0.1-{a.port}": 10}, who="test")
    assert client.directory is not None
    for _ in range(200):
        view = client.directory.current("user")
        if view is not None and view.snapshot.config.node_weights:
            break
        await asyncio.sleep(0.02)
    served = [json.loads((await mesh.get(client, "/user/"))[2])["node"] for _ in range(120)]
    # bj gets 3/4 of traffic, split 1:2 between a and b; sh gets 1/4.
    assert (served.count("a"), served.count("b"), served.count("c")) == (30, 60, 30)


async def test_degrade_answers_at_once_without_calling_and_restore_resumes(mesh: Mesh) -> None:
    a = await mesh.upstream("a")
    await mesh.server_agent("user", a)
    client = await mesh.client_agent("web")
    await mesh.wait_nodes(client, "user", 1)
    assert (await mesh.get(client, "/user/"))[0] == 200
    await mesh.admin.degrade("user", reason="peak load", who="ops")
    calls_before = len(a.calls)
    for _ in range(250):  # the watch delivers within milliseconds; give it up to 5 s
        status, headers, body = await mesh.get(client, "/user/")
        if status == 503:
            break
        calls_before = len(a.calls)
        await asyncio.sleep(0.02)
    assert status == 503
    assert headers["X-Tidemark-Degraded"] == "peak load"
    assert "degraded" in json.loads(body)["error"]
    for _ in range(5):
        assert (await mesh.get(client, "/user/"))[0] == 503
    assert len(a.calls) == calls_before  # not called at all
    await mesh.admin.restore("user", who="ops")
    for _ in range(250):
        status, _, _ = await mesh.get(client, "/user/")
        if status == 200:
            break
        await asyncio.sleep(0.02)
    assert status == 200 and len(a.calls) > calls_before


async def test_switches_reach_the_upstream_and_a_degrade_switch_degrades(mesh: Mesh) -> None:
    a = await mesh.upstream("a")
    await mesh.server_agent("user", a)
    client = await mesh.client_agent("web", degraded_body='{"items": []}', degraded_status=200)
    await mesh.wait_nodes(client, "user", 1)
    await mesh.admin.set_switches("user", {"new_feed": True}, who="ops")
    for _ in range(250):
        answer = json.loads((await mesh.get(client, "/user/"))[2])
        if answer.get("switches"):
            break
        await asyncio.sleep(0.02)
    assert answer["switches"] == "new_feed=on"
    await mesh.admin.set_switches("user", {"degraded": True}, who="ops")
    for _ in range(250):
        status, headers, body = await mesh.get(client, "/user/")
        if "X-Tidemark-Degraded" in headers:
            break
        await asyncio.sleep(0.02)
    assert (status, body) == (200, b'{"items": []}')  # the configured static fallback
    calls = len(a.calls)
    await mesh.admin.set_switches("user", {"degraded": None}, who="ops")  # removed
    for _ in range(250):
        status, headers, body = await mesh.get(client, "/user/")
        if "X-Tidemark-Degraded" not in headers:
            break
        await asyncio.sleep(0.02)
    assert status == 200 and json.loads(body)["node"] == "a" and len(a.calls) == calls + 1


async def test_failover_on_connection_errors_and_breaker_opens_on_5xx(mesh: Mesh) -> None:
    good = await mesh.upstream("good")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    bad = await mesh.upstream("bad", broken)
    await mesh.server_agent("user", good)
    await mesh.server_agent("user", bad)
    # A registered node that is not there at all (its agent died without deregistering).
    dead = await mesh.admin.register("user", Node(id="dead", address=f"127.0.0.1:{free_port()}"),
                                     ttl_seconds=60)
    client = await mesh.client_agent("web", load_balancer="round_robin",
                                     breaker_min_requests=4, breaker_open_seconds=60)
    await mesh.wait_nodes(client, "user", 3)
    statuses = [(await mesh.get(client, "/user/"))[0] for _ in range(30)]
    # Connection errors never reach the caller; the 5xx node is cut off by its breaker.
    assert statuses.count(500) == 4
    assert all(s in (200, 500) for s in statuses)
    runtime = json.loads((await mesh.get(client, "/runtime"))[2])
    breakers = {n["id"]: n["breaker"] for n in runtime["services"]["user"]["nodes"]}
    assert breakers[f"127.0.0.1-{bad.port}"] == "open"
    assert breakers["dead"] == "open"
    metrics = (await mesh.get(client, "/metrics"))[2].decode()
    assert 'tidemark_agent_failovers_total{service="user"}' in metrics
    await dead.stop()


async def _hedging_client(mesh: Mesh, flaky_handler: Behaviour) -> AgentService:
    """A round-robin client agent for "user" served by a node answering with
    ``flaky_handler`` and a steady one, hedging once it has 10 samples."""
    flaky = await mesh.upstream("flaky", flaky_handler)
    steady = await mesh.upstream("steady")
    await mesh.server_agent("user", flaky)
    await mesh.server_agent("user", steady)
    client = await mesh.client_agent("web", load_balancer="round_robin", backup_min_samples=10)
    await mesh.wait_nodes(client, "user", 2)
    return client


async def test_backup_requests_rescue_slow_calls_within_the_budget(mesh: Mesh) -> None:
    slow_calls = 0

    async def sometimes_slow(request: web.Request) -> web.Response:
        nonlocal slow_calls
        slow_calls += 1
        if slow_calls % 10 == 0:
            await asyncio.sleep(2.0)
        return web.json_response({"node": "flaky"})

    client = await _hedging_client(mesh, sometimes_slow)
    results = await asyncio.gather(*(mesh.get(client, "/user/") for _ in range(1)))
    for _ in range(100):
        results.append(await mesh.get(client, "/user/"))
    assert all(status == 200 for status, _, _ in results)
    metrics = (await mesh.get(client, "/metrics"))[2].decode()
    backups = next(float(line.split()[-1]) for line in metrics.splitlines()
                   if line.startswith('tidemark_agent_backup_requests_total{service="user"}'))
    assert 1 <= backups <= 0.15 * 101


async def test_active_limit_rejects_excess_with_429(mesh: Mesh) -> None:
    release = asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="done")

    a = await mesh.upstream("a", hold)
    await mesh.server_agent("user", a)
    client = await mesh.client_agent("web", max_active=2, backup_requests=False)
    await mesh.wait_nodes(client, "user", 1)
    held = [asyncio.ensure_future(mesh.get(client, "/user/")) for _ in range(2)]
    for _ in range(250):
        if len(a.calls) == 2:
            break
        await asyncio.sleep(0.02)
    status, _, body = await mesh.get(client, "/user/")
    assert status == 429 and "max_active=2" in json.loads(body)["error"]
    release.set()
    assert [r[0] for r in await asyncio.gather(*held)] == [200, 200]
    metrics = (await mesh.get(client, "/metrics"))[2].decode()
    assert 'tidemark_agent_rejected_total{service="user"} 1.0' in metrics


async def test_bad_input_and_faults_get_clear_errors(mesh: Mesh) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(text="late")

    slow_up = await mesh.upstream("slow", slow)
    slow_agent = await mesh.server_agent("slowsvc", slow_up, request_timeout_seconds=0.3)
    dead_upstream_port = free_port()
    downsvc = await mesh.agent(mesh.config(service="downsvc",
                                           upstream=f"http://127.0.0.1:{dead_upstream_port}"))
    client = await mesh.client_agent("web", max_body_bytes=1024, backup_requests=False)
    assert (await mesh.get(client, "/"))[0] == 400
    status, _, body = await mesh.get(client, "/bad%20name/x")
    assert status == 400 and "bad service name" in json.loads(body)["error"]
    status, _, body = await mesh.get(client, "/nosuchservice/x")
    assert status == 503 and "no available node" in json.loads(body)["error"]
    status, _, _ = await mesh.get(client, "/slowsvc/x", method="POST", data=b"x" * 5000)
    assert status == 413
    status, _, _ = await mesh.get(client, "/slowsvc/x", headers={"X-Big": "y" * 40000})
    assert status in (400, 431)
    status, _, _ = await mesh.get(client, "/web/x", headers={"X-Tidemark-Caller": "bad caller"})
    assert status == 400
    # Upstream slow: the server-side agent times out (504), the client passes it on.
    status, _, body = await mesh.get(client, "/slowsvc/x")
    assert status == 504 and "did not answer" in json.loads(body)["error"]
    # Upstream down: the server-side agent answers 502 naming the problem.
    status, _, body = await mesh.get(downsvc, "/x")
    assert status == 502 and "cannot connect" in json.loads(body)["error"]
    assert (await mesh.get(client, "/healthz"))[0] == 200  # nothing crashed
    metrics = (await mesh.get(client, "/metrics"))[2].decode()
    assert 'tidemark_agent_bad_requests_total{reason="route"} 2.0' in metrics
    assert 'tidemark_agent_bad_requests_total{reason="body_too_large"} 1.0' in metrics
    # Each agent counts the faults it saw, by class.
    metrics = (await mesh.get(slow_agent, "/metrics"))[2].decode()
    assert 'tidemark_agent_upstream_errors_total{error="timeout",service="slowsvc"} 1.0' \
        in metrics
    metrics = (await mesh.get(downsvc, "/metrics"))[2].decode()
    assert 'tidemark_agent_upstream_errors_total{error="connection",service="downsvc"} 1.0' \
        in metrics


async def test_registry_gone_keeps_serving_and_restart_uses_the_disk_snapshot(
        mesh: Mesh) -> None:
    a = await mesh.upstream("a")
    await mesh.server_agent("user", a)
    client = await mesh.client_agent("web")
    await mesh.wait_nodes(client, "user", 1)
    assert (await mesh.get(client, "/user/"))[0] == 200
    await mesh.registry.stop()
    for _ in range(5):
        assert (await mesh.get(client, "/user/"))[0] == 200

    async def says_serving_from_cache() -> bool:
        metrics = (await mesh.get(client, "/metrics"))[2].decode()
        return 'tidemark_registry_serving_from_cache{service="user"} 1.0' in metrics

    await wait_until(says_serving_from_cache)  # the running agent, not only a restarted one
    config = client.config
    await client.stop()
    mesh.agents.remove(client)
    restarted = await mesh.agent(config)  # same data_dir: the last snapshot is on disk
    status, _, body = await mesh.get(restarted, "/user/")
    assert status == 200 and json.loads(body)["node"] == "a"
    runtime = json.loads((await mesh.get(restarted, "/runtime"))[2])
    assert runtime["services"]["user"]["from_cache"] is True
    assert runtime["services"]["user"]["staleness_seconds"] > 0
    assert "error" in runtime["last_commands"]["user"]
    metrics = (await mesh.get(restarted, "/metrics"))[2].decode()
    assert 'tidemark_registry_serving_from_cache{service="user"} 1.0' in metrics
    age = next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(
        'tidemark_registry_snapshot_age_seconds{service="user"}'))
    assert age > 0  # staleness is a metric


async def test_collector_gone_does_not_affect_calls(tmp_path: Path) -> None:
    mesh = await make_mesh(tmp_path)
    try:
        mesh.lines.close()  # nobody listens on the graphite port any more
        a = await mesh.upstream("a")
        await mesh.server_agent("user", a)
        client = await mesh.client_agent("web")
        await mesh.wait_nodes(client, "user", 1)
        for _ in range(20):
            assert (await mesh.get(client, "/user/"))[0] == 200
        await asyncio.sleep(1.2)  # one interval: the reporter tries and buffers
        assert (await mesh.get(client, "/user/"))[0] == 200
        assert client.reporter.buffered_points > 0
    finally:
        await mesh.close()


class BrokenFilter:
    """A user filter with a bug."""

    name = "broken"

    def __init__(self, ctx: object) -> None:
        pass

    async def handle(self, call: Call, next_: Next) -> Reply:
        raise RuntimeError("bug in a filter")


class TagFilter:
    """A user filter loaded by import path: tags every answer."""

    name = "tag"

    def __init__(self, ctx: object) -> None:
        self.ctx = ctx

    async def handle(self, call: Call, next_: Next) -> Reply:
        reply = await next_(call)
        return Reply(reply.status, {**reply.headers, "X-Tagged": call.service}, reply.body)


async def test_user_filters_load_by_import_path_and_bad_ones_are_refused(mesh: Mesh) -> None:
    a = await mesh.upstream("a")
    await mesh.server_agent("user", a)
    client = await mesh.client_agent("web", filters=(
        "tests.test_agent_sidecar:TagFilter", "metrics", "failover"))
    await mesh.wait_nodes(client, "user", 1)
    status, headers, _ = await mesh.get(client, "/user/")
    assert status == 200 and headers["X-Tagged"] == "user"
    broken = await mesh.client_agent("web2", filters=("tests.test_agent_sidecar:BrokenFilter",))
    status, _, body = await mesh.get(broken, "/user/")
    assert status == 500 and json.loads(body)["error"] == "internal error in the agent"
    assert (await mesh.get(broken, "/healthz"))[0] == 200
    with pytest.raises(ValueError, match="cannot be loaded"):
        AgentService(mesh.config(service="x", filters=("nosuch.module:Filter",)))
    with pytest.raises(ValueError, match="neither built in"):
        AgentService(mesh.config(service="x", filters=("nosuch",)))
    with pytest.raises(ValueError, match="after failover"):
        mesh.config(service="x", filters=("circuit_breaker", "failover"))


async def test_server_agent_serves_while_registry_is_down_and_registers_when_back(
        mesh: Mesh) -> None:
    from registry.server.app import RegistryServer, RegistryServerConfig

    port = mesh.registry.port
    assert port is not None
    await mesh.registry.stop()
    a = await mesh.upstream("a")
    server = await mesh.server_agent("user", a)
    assert (await mesh.get(server, "/healthz"))[0] == 200
    status, _, body = await mesh.get(server, "/x")
    assert status == 200 and json.loads(body)["node"] == "a"
    mesh.registry = RegistryServer(RegistryServerConfig(
        data_dir=mesh.tmp / "registry", http_port=port))
    await mesh.registry.start()
    for _ in range(250):
        try:
            snapshot = await mesh.admin.snapshot("user")
        except Exception:  # noqa: BLE001 - the admin client may still be reconnecting
            snapshot = None
        if snapshot is not None and snapshot.nodes:
            break
        await asyncio.sleep(0.05)
    assert snapshot is not None
    assert [n.address for n in snapshot.nodes] == [f"127.0.0.1:{server.port}"]


async def test_runtime_shows_weights_switches_breakers_and_last_commands(mesh: Mesh) -> None:
    a = await mesh.upstream("a")
    await mesh.server_agent("user", a, idc="bj")
    client = await mesh.client_agent("web", backup_requests=False)
    await mesh.wait_nodes(client, "user", 1)
    node_id = f"127.0.0.1-{a.port}"
    await mesh.admin.set_idc_weights("user", {"bj": 3, "sh": 1}, who="ops", why="move")
    await mesh.admin.set_node_weights("user", {node_id: 25}, who="ops")
    await mesh.admin.set_switches("user", {"new_feed": True}, who="ops")
    assert (await mesh.get(client, "/user/"))[0] == 200  # the node gets a breaker
    for _ in range(250):
        runtime = json.loads((await mesh.get(client, "/runtime"))[2])
        user = runtime["services"]["user"]
        if user["switches"]:
            break
        await asyncio.sleep(0.02)
    assert user["idc_weights"] == {"bj": 3, "sh": 1}
    assert user["node_weights"] == {node_id: 25}
    assert user["switches"] == {"new_feed": True}
    (node,) = user["nodes"]
    assert (node["id"], node["idc"], node["breaker"], node["active"]) == (
        node_id, "bj", "closed", 0)
    assert node["effective_weight"] == 1000.0  # bj's whole share: sh has no node
    commands = runtime["last_commands"]["user"]
    assert [c["kind"] for c in commands] == ["idc_weights", "node_weights", "switches"]
    assert all(c["who"] == "ops" for c in commands) and commands[0]["why"] == "move"
    changes = [c["config"] for c in runtime["last_changes"] if c["service"] == "user"]
    assert changes[-1]["switches"] == {"new_feed": True}


async def test_a_removed_node_gets_no_more_calls(mesh: Mesh) -> None:
    a = await mesh.upstream("a")
    b = await mesh.upstream("b")
    sa = await mesh.server_agent("user", a)
    await mesh.server_agent("user", b)
    client = await mesh.client_agent("web", load_balancer="round_robin", backup_requests=False)
    await mesh.wait_nodes(client, "user", 2)
    await sa.stop()  # deregisters a's node
    mesh.agents.remove(sa)
    await mesh.wait_nodes(client, "user", 1)
    served = [json.loads((await mesh.get(client, "/user/"))[2])["node"] for _ in range(10)]
    assert served == ["b"] * 10
    metrics = (await mesh.get(client, "/metrics"))[2].decode()
    assert "tidemark_agent_failovers_total{" not in metrics  # a was never tried


async def test_server_agent_heartbeats_keep_its_node_and_stop_deregisters(mesh: Mesh) -> None:
    a = await mesh.upstream("a")
    server = await mesh.server_agent("user", a, heartbeat_ttl_seconds=1.0)
    for _ in range(250):
        if (await mesh.admin.snapshot("user")).nodes:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(3.0)  # three TTLs: only heartbeats keep the node registered
    assert [n.address for n in (await mesh.admin.snapshot("user")).nodes] == [
        f"127.0.0.1:{server.port}"]
    await server.stop()
    mesh.agents.remove(server)
    assert (await mesh.admin.snapshot("user")).nodes == ()


async def test_a_leaving_server_agent_answers_until_callers_know_it_left(mesh: Mesh) -> None:
    a = await mesh.upstream("a")
    leaving = await mesh.server_agent("user", a, deregister_grace_seconds=5.0)
    client = await mesh.client_agent("web")
    await mesh.wait_nodes(client, "user", 1)
    stopping = asyncio.create_task(leaving.stop())
    # The node is gone from the registry and from the caller's routing...
    await mesh.wait_nodes(client, "user", 0)
    assert (await mesh.admin.snapshot("user")).nodes == ()
    # ...and a call that a slower caller sends meanwhile is still answered, not refused.
    status, _, body = await mesh.get(leaving, "/late")
    assert status == 200 and json.loads(body)["node"] == "a"
    await stopping
    mesh.agents.remove(leaving)


async def test_backups_stay_within_the_budget_under_a_burst(mesh: Mesh) -> None:
    slow = asyncio.Event()

    async def turns_slow(request: web.Request) -> web.Response:
        if slow.is_set():
            await asyncio.sleep(0.5)
        return web.json_response({"node": "flaky"})

    client = await _hedging_client(mesh, turns_slow)
    for _ in range(20):  # a fast p90 to hedge after
        assert (await mesh.get(client, "/user/"))[0] == 200
    slow.set()
    # Half of these start at the now slow node and would all want a backup at once.
    results = await asyncio.gather(*(mesh.get(client, "/user/") for _ in range(40)))
    assert all(status == 200 for status, _, _ in results)
    metrics = (await mesh.get(client, "/metrics"))[2].decode()
    backups = next(float(line.split()[-1]) for line in metrics.splitlines()
                   if line.startswith('tidemark_agent_backup_requests_total{service="user"}'))
    assert 1 <= backups <= 0.15 * 60


async def test_access_log_writes_one_line_per_call(
        mesh: Mesh, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tidemark.agent.access")
    a = await mesh.upstream("a")
    await mesh.server_agent("user", a)
    client = await mesh.client_agent("web", filters=(
        "access_log", "metrics", "switcher", "active_limit", "failover", "circuit_breaker"))
    await mesh.wait_nodes(client, "user", 1)
    assert (await mesh.get(client, "/user/items?page=2", method="POST"))[0] == 200
    assert (await mesh.get(client, "/nosuchservice/"))[0] == 503
    lines = [r for r in caplog.records if r.name == "tidemark.agent.access"]
    assert [(r.service, r.method, r.path, r.status, r.error)  # type: ignore[attr-defined]
            for r in lines] == [("user", "POST", "/items?page=2", 200, None),
                                ("nosuchservice", "GET", "/", 503, "connection")]
    assert lines[0].node == f"127.0.0.1-{a.port}"  # type: ignore[attr-defined]
    assert lines[0].ms >= 0  # type: ignore[attr-defined]


class OrderA:
    """Appends its name to ``X-Order`` on the way out (the innermost filter writes first)."""

    name = "a"

    def __init__(self, ctx: object) -> None:
        pass

    async def handle(self, call: Call, next_: Next) -> Reply:
        reply = await next_(call)
        order = reply.headers.get("X-Order")
        return Reply(reply.status, {**reply.headers,
                                    "X-Order": f"{order},{self.name}" if order else self.name},
                     reply.body)


class OrderB(OrderA):
    name = "b"


async def test_filters_run_in_the_configured_order(mesh: Mesh) -> None:
    a = await mesh.upstream("a")
    await mesh.server_agent("user", a)
    here = "tests.test_agent_sidecar"
    ab = await mesh.client_agent("web", filters=(f"{here}:OrderA", f"{here}:OrderB",
                                                 "switcher", "failover"))
    ba = await mesh.client_agent("web", filters=(f"{here}:OrderB", "switcher",
                                                 f"{here}:OrderA", "failover"))
    await mesh.wait_nodes(ab, "user", 1)
    await mesh.wait_nodes(ba, "user", 1)
    assert (await mesh.get(ab, "/user/"))[1]["X-Order"] == "b,a"
    assert (await mesh.get(ba, "/user/"))[1]["X-Order"] == "a,b"
    await mesh.admin.degrade("user", reason="test", who="ops")
    for _ in range(250):
        status, headers, _ = await mesh.get(ba, "/user/")
        if status == 503:
            break
        await asyncio.sleep(0.02)
    # The switcher answers before the filters after it: only b (before it) saw the call.
    assert status == 503 and headers["X-Order"] == "b"


async def test_a_node_whose_service_is_down_behind_its_live_agent_is_failed_over(
        mesh: Mesh) -> None:
    """The server-side agent of a dead service answers 502 marked as never sent; the client
    agent moves on to another node, whatever the method, and counts the failover."""
    good = await mesh.upstream("good")
    good_agent = await mesh.server_agent("user", good)
    dead = await mesh.agent(mesh.config(service="user",
                                        upstream=f"http://127.0.0.1:{free_port()}"))
    client = await mesh.client_agent("web", load_balancer="round_robin", backup_requests=False,
                                     breaker_min_requests=1000)
    await mesh.wait_nodes(client, "user", 2)
    for i in range(10):
        status, headers, body = await mesh.get(client, f"/user/{i}", method="POST", data=b"x")
        assert status == 200 and json.loads(body)["node"] == "good"
        assert "X-Tidemark-Not-Sent" not in headers
    assert len(good.calls) == 10  # each call reached a service once
    metrics = (await mesh.get(client, "/metrics"))[2].decode()
    assert 'tidemark_agent_failovers_total{service="user"} 5.0' in metrics
    # Asked directly, the dead service's agent says the call never reached it.
    status, headers, _ = await mesh.get(dead, "/x", method="POST", data=b"x")
    assert status == 502 and headers["X-Tidemark-Not-Sent"] == "1"
    # With no other node left, the caller gets the client agent's own 502.
    await good_agent.stop()  # deregisters the good node
    mesh.agents.remove(good_agent)
    await mesh.wait_nodes(client, "user", 1)
    status, headers, body = await mesh.get(client, "/user/x")
    assert status == 502 and "cannot reach its service" in json.loads(body)["error"]
