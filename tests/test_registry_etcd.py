"""etcd-specific behaviour: endpoint lists and fail-over, against the session's real etcd."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from registry.client import open_registry
from registry.errors import RegistryUnavailable
from registry.etcd_backend import parse_etcd_url
from registry.model import Node
from tests.peers.process import free_port
from tests.test_registry_helpers import make_backend, next_matching, unique


@pytest.mark.parametrize("url", ["etcd://", "etcd://host", "etcd://h:0", "etcd://h:1,",
                                 "etcd://h:x", "http://h:1"])
def test_bad_etcd_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValueError, match="registry URL"):
        parse_etcd_url(url)


def _raw_client(url: str) -> Any:
    """An aetcd client on the same etcd, without our layer (to act behind its back)."""
    import aetcd

    host, port = url[len("etcd://"):].split(":")
    return aetcd.Client(host=host, port=int(port), timeout=5)


def test_endpoint_list_is_parsed() -> None:
    assert parse_etcd_url("etcd://10.0.0.1:2379,etcd-2:2380") == [
        ("10.0.0.1", 2379), ("etcd-2", 2380)]


async def test_client_fails_over_to_the_next_endpoint(tmp_path: Path) -> None:
    backend = await make_backend("etcd", tmp_path)
    live = backend.url[len("etcd://"):]
    dead = f"127.0.0.1:{free_port()}"
    service = unique("failover")
    client = open_registry(f"etcd://{dead},{live}")
    try:
        registration = await client.register(service, Node(id="n1", address="10.0.0.9:80"),
                                             ttl_seconds=5)
        async with client.watch(service) as watch:
            snapshot = await next_matching(watch, lambda s: len(s.nodes) == 1)
            assert snapshot.nodes[0].address == "10.0.0.9:80"
        await registration.stop()
    finally:
        await client.stop()
        await backend.close()
    only_dead = open_registry(f"etcd://{dead}")
    try:
        with pytest.raises(RegistryUnavailable):
            await only_dead.snapshot(service)
    finally:
        await only_dead.stop()


async def test_lost_lease_is_replaced_by_the_next_heartbeat(tmp_path: Path) -> None:
    backend = await make_backend("etcd", tmp_path)
    raw = _raw_client(backend.url)
    service = unique("lease")
    client = backend.client()
    try:
        registration = await client.register(service, Node(id="n1", address="10.0.0.9:80"),
                                             ttl_seconds=3)
        async with client.watch(service) as watch:
            await next_matching(watch, lambda s: len(s.nodes) == 1)
            # Someone revokes the lease behind the owner's back: the node vanishes ...
            lost = registration._handle
            await raw.revoke_lease(lost)
            await next_matching(watch, lambda s: s.nodes == ())
            # ... and the owner's next heartbeat finds the lease gone and registers again.
            back = await next_matching(watch, lambda s: len(s.nodes) == 1)
            assert back.nodes[0].address == "10.0.0.9:80"
        # The watch can see the new node before the heartbeat task stores its new lease.
        deadline = asyncio.get_running_loop().time() + 10
        while registration._handle == lost and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert registration._handle != lost
        await raw.revoke_lease(registration._handle)
        node = await registration.update(status="draining")
        assert [n.status for n in (await client.snapshot(service)).nodes] == [node.status]
        await registration.stop()
        assert (await client.snapshot(service)).nodes == ()
    finally:
        await raw.close()
        await backend.close()


async def test_watch_reconnects_when_another_call_drops_the_connection(tmp_path: Path) -> None:
    # A failed call drops the client's connection; gRPC then cancels the watch stream on it,
    # which must read as a lost connection (reconnect), not as the watch being closed.
    backend = await make_backend("etcd", tmp_path)
    service = unique("dropped")
    client = backend.client()
    try:
        await client.set_switches(service, {"a": True}, who="test")
        async with client.watch(service) as watch:
            await next_matching(watch, lambda s: s.config.switches == {"a": True})
            await client.set_switches(service, {"b": True}, who="test")  # the stream is up
            await next_matching(watch, lambda s: s.config.switches.get("b") is True)
            await client._failed(client._client, OSError("test: connection dropped"))  # type: ignore[attr-defined]
            await client.set_switches(service, {"a": False}, who="test")
            after = await next_matching(watch, lambda s: s.config.switches.get("a") is False)
            assert after.revision > 0
            assert watch.reconnects >= 1
    finally:
        await backend.close()


async def test_update_racing_a_re_registration_keeps_the_node_on_the_live_lease(
        tmp_path: Path) -> None:
    # The lease is lost; the heartbeat registers again (new lease) while an update, still
    # holding the old lease, runs: both must not each take a lease. The node must end on
    # the lease the registration refreshes, with the updated record.
    backend = await make_backend("etcd", tmp_path)
    raw = _raw_client(backend.url)
    service = unique("race")
    client = backend.client()
    try:
        # TTL 30 s: the background heartbeat (every 10 s) stays out of the way.
        registration = await client.register(service, Node(id="n1", address="10.0.0.9:80"),
                                             ttl_seconds=30)
        original = client._register_once  # type: ignore[attr-defined]
        reregistered, proceed = asyncio.Event(), asyncio.Event()

        async def paused_register(service: str, node: Node, ttl: float,
                                  handle: object = None) -> object:
            result = await original(service, node, ttl, handle)
            if handle is None:  # the heartbeat's re-registration: hold it before it returns
                reregistered.set()
                await proceed.wait()
            return result

        client._register_once = paused_register  # type: ignore[attr-defined]
        await raw.revoke_lease(registration._handle)
        beat = asyncio.create_task(registration._beat_once())
        await asyncio.wait_for(reregistered.wait(), 10)
        update = asyncio.create_task(registration.update(status="draining"))
        await asyncio.wait({update}, timeout=1.0)  # unserialised, it would finish here
        proceed.set()
        await asyncio.wait_for(asyncio.gather(beat, update), 10)

        stored = await raw.get(f"/tidemark/registry/services/{service}/nodes/n1".encode())
        assert stored is not None
        assert stored.lease == registration._handle
        assert (await raw.refresh_lease(registration._handle)).TTL > 0
        assert [n.status for n in (await client.snapshot(service)).nodes] == ["draining"]
        await registration.stop()
        assert (await client.snapshot(service)).nodes == ()
    finally:
        await raw.close()
        await backend.close()


async def test_history_keys_past_the_last_100_are_pruned(tmp_path: Path) -> None:
    from registry.commands import MAX_HISTORY
    from registry.etcd_backend import _PRUNE_EVERY

    backend = await make_backend("etcd", tmp_path)
    raw = _raw_client(backend.url)
    service = unique("prune")
    client = backend.client()
    try:
        count = MAX_HISTORY + 3 * _PRUNE_EVERY + 5
        for i in range(count):
            await client.set_idc_weights(service, {"bj": i % 500 + 1}, who="test")
        ids = sorted(int(kv.key.rsplit(b"/", 1)[1]) for kv in await raw.get_prefix(
            f"/tidemark/registry/history/{service}/".encode()))
        last_prune = count - count % _PRUNE_EVERY
        assert ids == list(range(last_prune - MAX_HISTORY + 1, count + 1))
        assert [c.id for c in await client.history(service)] == list(
            range(count - MAX_HISTORY + 1, count + 1))
    finally:
        await raw.close()
        await backend.close()
