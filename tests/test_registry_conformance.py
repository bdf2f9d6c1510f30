"""One conformance suite for both registry backends: the embedded registry and real etcd."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from registry.client import open_registry
from registry.errors import RegistryUnavailable
from registry.model import Node, Snapshot
from tests.test_registry_helpers import Backend, make_backend, next_matching, unique, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["embedded", "etcd"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    backend = await make_backend(request.param, tmp_path)
    try:
        yield backend
    finally:
        await backend.close()


def _node(node_id: str, port: int = 8080, **kwargs: object) -> Node:
    return Node(id=node_id, address=f"10.0.0.1:{port}", **kwargs)  # type: ignore[arg-type]


async def test_register_snapshot_deregister(backend: Backend) -> None:
    client = backend.client()
    service = unique("orders")
    node = _node("n1", idc="bj", weight=25, labels={"zone": "a"})
    registration = await client.register(service, node, ttl_seconds=5)
    snapshot = await client.snapshot(service)
    assert [n.id for n in snapshot.nodes] == ["n1"]
    stored = snapshot.nodes[0]
    assert (stored.address, stored.idc, stored.weight, stored.labels, stored.status) == (
        "10.0.0.1:8080", "bj", 25, {"zone": "a"}, "up")
    assert stored.registered_at > 0
    assert service in await client.services()
    await registration.stop()
    assert (await client.snapshot(service)).nodes == ()


async def test_watch_gives_current_snapshot_then_changes(backend: Backend) -> None:
    client = backend.client()
    service = unique("users")
    await client.set_switches(service, {"cache": True}, who="test")
    async with client.watch(service) as watch:
        first = await next_matching(watch, lambda s: True)
        assert first.config.switches == {"cache": True}
        assert not first.from_cache
        registration = await client.register(service, _node("a"), ttl_seconds=5)
        seen = await next_matching(watch, lambda s: [n.id for n in s.nodes] == ["a"])
        assert seen.revision > first.revision
        await registration.stop()
        gone = await next_matching(watch, lambda s: s.nodes == ())
        assert gone.revision > seen.revision


def _registryctl(backend: Backend, tmp_path: Path, *args: str) -> list[str]:
    # `python -m registry.ctl` is `tidemark registryctl` without importing every other
    # command (test_registry_server.py runs the console script itself).
    command = [sys.executable, "-m", "registry.ctl", "--registry", backend.url]
    if backend.token:
        token_file = tmp_path / "token"
        token_file.write_text(backend.token + "\n")
        command += ["--token-file", str(token_file)]
    return command + list(args)


def _start_owner(backend: Backend, tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(tmp_path / "owner.log", "ab") as log:
        return subprocess.Popen(_registryctl(backend, tmp_path, *args), stdout=subprocess.PIPE,
                                stderr=log, stdin=subprocess.DEVNULL, cwd=REPO_ROOT)


async def _wait_registered(owner: subprocess.Popen[bytes], tmp_path: Path) -> None:
    assert owner.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(owner.stdout.readline), 30)
    assert b'"registered"' in line, (tmp_path / "owner.log").read_text()[-2000:]


def _reap(owner: subprocess.Popen[bytes]) -> None:
    if owner.poll() is None:
        owner.kill()
    owner.wait(10)
    if owner.stdout is not None:
        owner.stdout.close()


async def test_node_of_killed_owner_expires_after_ttl(backend: Backend, tmp_path: Path) -> None:
    client = backend.client()
    service = unique("payments")
    ttl = 2.0
    owner = _start_owner(backend, tmp_path, "register", service, "127.0.0.1:9100",
                         "--ttl", str(ttl))
    try:
        await _wait_registered(owner, tmp_path)

        async def present() -> bool:
            return [n.id for n in (await client.snapshot(service)).nodes] == ["127.0.0.1_9100"]

        await wait_until(present)
        # Still there after more than one TTL: the owner's heartbeats keep it alive.
        await asyncio.sleep(ttl * 1.5)
        assert await present()
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        # Shortly after the last heartbeat the node is still there ...
        assert await present()

        # ... and it is gone within a bounded wait once the TTL ran out.
        async def gone() -> bool:
            return (await client.snapshot(service)).nodes == ()

        await wait_until(gone, timeout_seconds=ttl + 15)
    finally:
        _reap(owner)


async def test_registryctl_register_deregisters_on_sigterm(backend: Backend,
                                                             tmp_path: Path) -> None:
    client = backend.client()
    service = unique("search")
    owner = _start_owner(backend, tmp_path, "register", service, "127.0.0.1:9200",
                         "--ttl", "30", "--idc", "sh", "--weight", "40")
    try:
        await _wait_registered(owner, tmp_path)
        snapshot = await client.snapshot(service)
        assert [(n.idc, n.weight) for n in snapshot.nodes] == [("sh", 40)]
        owner.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(owner.wait, 20) == 0
        # Deregistered on clean shutdown: gone at once, long before its 30 s TTL.
        assert (await client.snapshot(service)).nodes == ()
    finally:
        _reap(owner)


async def test_rapid_changes_reach_watchers_untorn_and_in_order(backend: Backend) -> None:
    writer = backend.client()
    service = unique("feed")
    watchers = [backend.client() for _ in range(3)]
    watches = [c.watch(service) for c in watchers]
    seen: list[list[Snapshot]] = [[] for _ in watches]
    for watch, log in zip(watches, seen, strict=True):
        await next_matching(watch, lambda s: True, seen=log)
    count = 120
    for i in range(1, count + 1):
        # One command touching two keys: a torn snapshot would show them differing.
        await writer.set_idc_weights(service, {"bj": i, "sh": i}, who="test")
    for watch, log in zip(watches, seen, strict=True):
        final = await next_matching(watch, lambda s: s.config.idc_weights.get("bj") == count,
                                    seen=log)
        assert final.config.idc_weights == {"bj": count, "sh": count}
        revisions = [s.revision for s in log]
        assert revisions == sorted(set(revisions)), "revisions must strictly increase"
        values = [s.config.idc_weights.get("bj", 0) for s in log]
        assert values == sorted(values), "no snapshot may go back in time"
        for snapshot in log:
            weights = snapshot.config.idc_weights
            assert weights.get("bj") == weights.get("sh"), f"torn snapshot {weights}"
        await watch.aclose()


async def test_slow_watcher_gets_latest_snapshot(backend: Backend) -> None:
    client = backend.client()
    service = unique("slow")
    async with client.watch(service) as watch:
        first = await next_matching(watch, lambda s: True)
        for i in range(1, 31):
            await client.set_switches(service, {f"s{i}": True}, who="test")
        # The consumer did not read while 30 writes happened: it is handed the newest state
        # after at most a few snapshots, not 30 stale ones.
        seen: list[Snapshot] = []
        await next_matching(watch, lambda s: len(s.config.switches) == 30, seen=seen)
        assert len(seen) < 30
        assert all(s.revision > first.revision for s in seen)


async def test_watchers_survive_registry_restart(backend: Backend,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="registry.client")
    client = backend.client()
    service = unique("restart")
    registration = await client.register(service, _node("r1"), ttl_seconds=3)
    await client.degrade(service, reason="load shedding", who="test")
    watcher = backend.client()
    async with watcher.watch(service) as watch:
        before = await next_matching(watch, lambda s: s.config.degraded is not None
                                     and len(s.nodes) == 1)
        await backend.restart()
        await client.set_switches(service, {"after_restart": True}, who="test")
        after = await next_matching(
            watch, lambda s: s.config.switches.get("after_restart") is True, timeout_seconds=30)
        assert after.revision > before.revision
        assert after.config.degraded is not None and after.config.degraded.reason == (
            "load shedding")
        assert watch.reconnects >= 1, "the watch must notice and say it reconnected"
        assert watch.connected
    said = [(r.levelname, r.getMessage()) for r in caplog.records
            if r.name == "registry.client" and getattr(r, "service", None) == service]
    assert ("WARNING", "registry watch lost; reconnecting") in said
    assert said.index(("WARNING", "registry watch lost; reconnecting")) < said.index(
        ("INFO", "registry watch reconnected"))
    # The registered node heartbeats through the restart (or registers again): it is
    # there more than one TTL after the restart.
    await asyncio.sleep(3 * 1.5)

    async def present() -> bool:
        return [n.id for n in (await client.snapshot(service)).nodes] == ["r1"]

    await wait_until(present, timeout_seconds=15)
    history = await client.history(service)
    assert [c.kind for c in history] == ["degrade", "switches"]
    await registration.stop()


async def test_concurrent_writers_lose_nothing(backend: Backend) -> None:
    service = unique("busy")
    writers = [backend.client() for _ in range(4)]

    async def write(index: int) -> None:
        for j in range(12):
            await writers[index].set_switches(service, {f"w{index}-{j}": True},
                                              who=f"writer{index}")

    await asyncio.gather(*(write(i) for i in range(4)))
    snapshot = await writers[0].snapshot(service)
    assert len(snapshot.config.switches) == 48
    history = await writers[0].history(service)
    assert len(history) == 48
    assert sorted(c.id for c in history) == list(range(1, 49))


async def test_revert_restores_replaced_values(backend: Backend) -> None:
    client = backend.client()
    service = unique("switcher")
    first = await client.set_switches(service, {"a": True}, who="alice", why="try a")
    second = await client.set_switches(service, {"a": False, "b": True}, who="bob")
    await client.set_idc_weights(service, {"bj": 70, "sh": 30}, who="carol")
    # Reverting the first while the second still governs "a" leaves "a" alone ...
    await client.revert(service, first.id, who="dave")
    config = (await client.snapshot(service)).config
    assert config.switches == {"a": False, "b": True}
    # ... and reverting the second then restores the value from before the first.
    await client.revert(service, second.id, who="dave")
    config = (await client.snapshot(service)).config
    assert config.switches == {}
    assert config.idc_weights == {"bj": 70, "sh": 30}
    degrade = await client.degrade(service, reason="overload", who="erin", fallback_status=429)
    degraded = (await client.snapshot(service)).config.degraded
    assert degraded is not None and (degraded.reason, degraded.who, degraded.fallback_status) == (
        "overload", "erin", 429)
    await client.restore(service, who="erin", why="recovered")
    assert (await client.snapshot(service)).config.degraded is None
    history = await client.history(service)
    assert [(c.kind, c.who) for c in history] == [
        ("switches", "alice"), ("switches", "bob"), ("idc_weights", "carol"),
        ("revert", "dave"), ("revert", "dave"), ("degrade", "erin"), ("restore", "erin")]
    assert history[0].why == "try a" and history[0].reverted_by == history[3].id
    assert degrade.previous == {"degraded": None}
    with pytest.raises(ValueError, match="already reverted"):
        await client.revert(service, first.id, who="dave")


async def test_node_weight_overrides_and_removing_keys(backend: Backend) -> None:
    client = backend.client()
    service = unique("override")
    await client.register(service, _node("n1"), ttl_seconds=5)
    set_ = await client.set_node_weights(service, {"n1": 200, "n2": 1}, who="ops", why="hot")
    snapshot = await client.snapshot(service)
    assert snapshot.nodes[0].weight == 10, "the registered weight is left as it was"
    assert snapshot.config.node_weights == {"n1": 200, "n2": 1}
    assert snapshot.config.revision > 0
    await client.set_node_weights(service, {"n2": None}, who="ops")
    await client.set_switches(service, {"a": True, "b": False}, who="ops")
    await client.set_switches(service, {"a": None}, who="ops")
    config = (await client.snapshot(service)).config
    assert (config.node_weights, config.switches) == ({"n1": 200}, {"b": False})
    await client.revert(service, set_.id, who="ops")
    assert (await client.snapshot(service)).config.node_weights == {}
    with pytest.raises(ValueError, match=r"weights\.n1"):
        await client.set_node_weights(service, {"n1": 501}, who="ops")
    assert [c.kind for c in await client.history(service)] == [
        "node_weights", "node_weights", "switches", "switches", "revert"]


async def test_prefix_watch_sees_every_matching_service(backend: Backend) -> None:
    client = backend.client()
    prefix = unique("pfx") + "-"
    await client.set_switches(prefix + "a", {"x": True}, who="test")
    await client.set_switches(unique("other"), {"x": True}, who="test")
    async with client.watch_prefix(prefix) as watch:
        latest: dict[str, Snapshot] = {}

        def record(snapshot: Snapshot) -> bool:
            assert snapshot.service.startswith(prefix)
            latest[snapshot.service] = snapshot
            return prefix + "a" in latest and prefix + "b" in latest

        await asyncio.sleep(0)
        await client.register(prefix + "b", _node("b1"), ttl_seconds=5)
        await next_matching(watch, record)
        assert latest[prefix + "a"].config.switches == {"x": True}


async def test_bad_input_is_rejected_and_nothing_half_written(backend: Backend) -> None:
    client = backend.client()
    service = unique("strict")
    with pytest.raises(ValueError, match="service"):
        await client.set_switches("bad/name", {"a": True}, who="test")
    with pytest.raises(ValueError, match="service"):
        await client.snapshot("x" * 129)
    with pytest.raises(ValueError, match=r"weights\.bj"):
        await client.set_idc_weights(service, {"sh": 10, "bj": 501}, who="test")
    with pytest.raises(ValueError, match="idc"):
        await client.set_idc_weights(service, {"bad idc": 10}, who="test")
    with pytest.raises(ValueError, match="kind"):
        await client.command(service, "explode", {}, who="test")
    with pytest.raises(ValueError, match="unknown field 'color'"):
        await client.command(service, "degrade", {"reason": "x", "color": "red"}, who="test")
    with pytest.raises(ValueError, match="ttl_seconds"):
        await client.register(service, _node("n1"), ttl_seconds=0)
    with pytest.raises(ValueError, match="weight"):
        _node("n1", weight=0)
    with pytest.raises(ValueError, match="address"):
        Node(id="n1", address="no-port")
    snapshot = await client.snapshot(service)
    assert snapshot.config.idc_weights == {} and snapshot.nodes == ()
    assert await client.history(service) == []


async def test_fail_static_serves_last_snapshot_when_registry_is_down(
        backend: Backend, tmp_path: Path) -> None:
    service = unique("static")
    cache_dir = tmp_path / "cache"
    metrics = CollectorRegistry()
    client = backend.client(cache_dir=cache_dir, metrics=metrics)
    await client.register(service, _node("s1"), ttl_seconds=30)
    await client.set_idc_weights(service, {"bj": 80}, who="test")
    live = await client.snapshot(service)
    assert not live.from_cache and (cache_dir / f"{service}.json").exists()
    assert metrics.get_sample_value("tidemark_registry_snapshot_age_seconds",
                                    {"service": service}) == 0.0
    watch = client.watch(service)
    await next_matching(watch, lambda s: s.config.idc_weights == {"bj": 80})
    await backend.stop_registry()
    try:
        # A running watch that loses the registry keeps what it had; the age starts to grow.
        def aged() -> bool:
            age = metrics.get_sample_value("tidemark_registry_snapshot_age_seconds",
                                           {"service": service})
            return age is not None and age > 0

        await wait_until(aged)
        # ... and says it serves a snapshot the registry no longer vouches for.
        assert metrics.get_sample_value("tidemark_registry_serving_from_cache",
                                        {"service": service}) == 1.0
        await watch.aclose()
        # A new process (a fresh client on the same cache) starts while the registry is down.
        metrics2 = CollectorRegistry()
        fresh = backend.client(cache_dir=cache_dir, metrics=metrics2)
        cached = await fresh.snapshot(service)
        assert cached.from_cache
        assert cached.config.idc_weights == {"bj": 80}
        assert [n.id for n in cached.nodes] == ["s1"]
        async with fresh.watch(service, initial_wait_seconds=0.2) as watch:
            served = await next_matching(watch, lambda s: True)
            assert served.from_cache and served.config.idc_weights == {"bj": 80}
            assert metrics2.get_sample_value("tidemark_registry_serving_from_cache",
                                             {"service": service}) == 1.0
            age = metrics2.get_sample_value("tidemark_registry_snapshot_age_seconds",
                                            {"service": service})
            assert age is not None and age > 0
        nocache = backend.client()
        with pytest.raises(RegistryUnavailable):
            await nocache.snapshot(service)
    finally:
        await backend.start_registry()
    # Back live: a watch that hears from the registry again clears the flag and the age.
    async with client.watch(service) as watch:
        await next_matching(watch, lambda s: not s.from_cache, timeout_seconds=30)
        assert metrics.get_sample_value("tidemark_registry_serving_from_cache",
                                        {"service": service}) == 0.0
        assert metrics.get_sample_value("tidemark_registry_snapshot_age_seconds",
                                        {"service": service}) == 0.0
    # The last watch of the service closed: its gauges go (the file stays).
    assert metrics.get_sample_value("tidemark_registry_snapshot_age_seconds",
                                    {"service": service}) is None
    assert (cache_dir / f"{service}.json").exists()


async def test_fail_static_serves_at_start_while_the_registry_does_not_answer(
        backend: Backend, tmp_path: Path) -> None:
    # The registry's port accepts connections but never answers (a hung registry): a
    # process starting now serves the cached snapshot after `initial_wait_seconds`.
    service = unique("hung")
    cache_dir = tmp_path / "cache"
    filler = backend.client(cache_dir=cache_dir)
    await filler.set_switches(service, {"safe_mode": True}, who="test")
    await filler.snapshot(service)
    connections: list[asyncio.StreamWriter] = []

    async def accept_and_stay_silent(reader: asyncio.StreamReader,
                                     writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await reader.read()

    silent = await asyncio.start_server(accept_and_stay_silent, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    scheme = "http" if backend.kind == "embedded" else "etcd"
    metrics = CollectorRegistry()
    client = open_registry(f"{scheme}://127.0.0.1:{port}", cache_dir=cache_dir,
                           metrics=metrics)
    try:
        async with client.watch(service, initial_wait_seconds=0.2) as watch:
            served = await next_matching(watch, lambda s: True)
            assert metrics.get_sample_value("tidemark_registry_serving_from_cache",
                                            {"service": service}) == 1.0
        assert served.from_cache and served.config.switches == {"safe_mode": True}
        assert connections, "the client must have been waiting for the silent registry"
    finally:
        await client.stop()
        for writer in connections:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_history_is_bounded_and_writers_with_stale_copies_agree(backend: Backend) -> None:
    alice, bob = backend.client(), backend.client()
    service = unique("history")
    for i in range(1, 104):
        await alice.set_idc_weights(service, {"bj": i}, who="alice")
    # Bob has never seen the service; Alice's copy becomes stale after Bob writes.
    by_bob = await bob.set_switches(service, {"x": True}, who="bob")
    await alice.revert(service, by_bob.id, who="alice")
    history = await bob.history(service)
    assert len(history) == 100
    assert [c.id for c in history] == list(range(6, 106))
    assert history[-1].kind == "revert" and history[-2].reverted_by == history[-1].id
    config = (await bob.snapshot(service)).config
    assert config.switches == {} and config.idc_weights == {"bj": 103}
    with pytest.raises(ValueError, match="not in the history"):
        await bob.revert(service, 1, who="bob")


async def test_registryctl_operates_both_backends(backend: Backend, tmp_path: Path) -> None:
    service = unique("ctl")

    async def ctl(*args: str) -> subprocess.CompletedProcess[bytes]:
        return await asyncio.to_thread(
            subprocess.run, _registryctl(backend, tmp_path, "--who", "ops", *args),
            capture_output=True, cwd=REPO_ROOT, timeout=60)

    watcher = _start_owner(backend, tmp_path, "watch", service)
    try:
        assert watcher.stdout is not None
        first = json.loads(await asyncio.wait_for(asyncio.to_thread(watcher.stdout.readline), 30))
        assert first["service"] == service and first["nodes"] == []
        done = await ctl("switch", service, "cache=on", "retry=off")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["changes"] == {"switch/cache": True, "switch/retry": False}
        while True:
            line = json.loads(await asyncio.wait_for(asyncio.to_thread(watcher.stdout.readline),
                                                     30))
            if line["config"]["switches"]:
                break
        assert line["config"]["switches"] == {"cache": True, "retry": False}
        assert line["revision"] > first["revision"]
        watcher.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(watcher.wait, 20) == 0
    finally:
        _reap(watcher)
    done = await ctl("degrade", service, "--reason", "overload", "--fallback-status", "429")
    assert done.returncode == 0, done.stderr
    config = json.loads((await ctl("config", service)).stdout)
    assert config["degraded"]["fallback_status"] == 429 and config["degraded"]["who"] == "ops"
    assert (await ctl("restore", service)).returncode == 0
    done = await ctl("weights", service, "bj=70", "sh=30")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["changes"] == {"idc_weight/bj": 70, "idc_weight/sh": 30}
    config = json.loads((await ctl("config", service)).stdout)
    assert config["idc_weights"] == {"bj": 70, "sh": 30} and config["degraded"] is None
    history = json.loads((await ctl("history", service)).stdout)
    assert [c["kind"] for c in history] == ["switches", "degrade", "restore", "idc_weights"]
    assert all(c["who"] == "ops" and c["at"] > 0 for c in history)
    bad = await ctl("switch", service, "cache=maybe")
    assert bad.returncode == 2 and b"on or off" in bad.stderr
    bad = await ctl("weights", service, "b d=3")
    assert bad.returncode == 2 and b"idc" in bad.stderr
    assert json.loads((await ctl("nodes", service)).stdout) == []


async def test_registration_update_drains_a_node(backend: Backend) -> None:
    client = backend.client()
    service = unique("drain")
    registration = await client.register(service, _node("d1", weight=30), ttl_seconds=3)
    async with client.watch(service) as watch:
        await next_matching(watch, lambda s: [n.status for n in s.nodes] == ["up"])
        node = await registration.update(status="draining", weight=5)
        assert (node.status, node.weight) == ("draining", 5)
        seen = await next_matching(watch, lambda s: [n.status for n in s.nodes] == ["draining"])
        assert seen.nodes[0].weight == 5 and seen.nodes[0].registered_at == node.registered_at
    with pytest.raises(ValueError, match="status"):
        await registration.update(status="sleeping")
    # Heartbeats keep the updated record alive past its TTL.
    await asyncio.sleep(3 * 1.5)
    assert [n.status for n in (await client.snapshot(service)).nodes] == ["draining"]
    await registration.stop()
    assert (await client.snapshot(service)).nodes == ()
