"""etcd v3 backend (``etcd://HOST:PORT[,HOST:PORT...]``) through aetcd.

Key layout under the root (default ``/tidemark/registry/``)::

    services/<service>/nodes/<node-id>   node record (JSON, with "ttl_seconds"), on a lease
    services/<service>/config            {"flat": {flat_key: value}, "next_id": N}
    history/<service>/<id, 12 digits>    one command (JSON); the last 100 are kept

History sits outside the service prefix so watchers are not sent it on every command.
A node's key lives on its own lease (TTL = the node's TTL), kept alive by heartbeats, so a
node whose process dies vanishes when the lease runs out. A command rewrites ``config``, adds
its history key (and rewrites commands a revert touched, drops the ones past 100) in one
transaction guarded by ``config``'s mod revision as the client last saw it; a lost race
returns the current config in the same round trip and is retried.
A watch reads the service prefix at one revision, then opens its own stream on etcd's Watch
service from the next revision; all events of a transaction share one revision and arrive in
one watch response, which is applied whole before snapshots are emitted, so they are never
torn. Commands and watches use etcd's gRPC stubs and messages (``aetcd.rpc``) on aetcd's
channel directly; the other calls go through aetcd's client methods.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aetcd
import aetcd.exceptions
import aetcd.utils
from aetcd import rpc
from grpc.aio import EOF as _EOF
from prometheus_client import CollectorRegistry

from registry.client import BaseClient
from registry.commands import MAX_HISTORY, apply_command, flat_to_config
from registry.errors import Conflict, NotFound, RegistryError, RegistryUnavailable
from registry.model import Command, Node, ServiceConfig, Snapshot, check_name

__all__ = ["EtcdRegistryClient", "parse_etcd_url", "DEFAULT_ROOT"]

log = logging.getLogger("registry.etcd")

DEFAULT_ROOT = "/tidemark/registry/"
_MAX_CAS_ATTEMPTS = 50
_UNREACHABLE = (TimeoutError, OSError, aetcd.exceptions.ConnectionFailedError,
                aetcd.exceptions.ConnectionTimeoutError, aetcd.exceptions.InternalError)
# The same failures as gRPC status codes, for the calls made on etcd's stubs directly.
_UNREACHABLE_CODES = frozenset({rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.DEADLINE_EXCEEDED,
                                rpc.StatusCode.INTERNAL})
_PUT = rpc.Event.EventType.PUT
_CMP_EQUAL, _CMP_MOD = rpc.Compare.EQUAL, rpc.Compare.MOD
_encode = json.JSONEncoder(separators=(",", ":")).encode


def parse_etcd_url(url: str) -> list[tuple[str, int]]:
    """``etcd://h1:p1,h2:p2`` -> ``[("h1", p1), ("h2", p2)]``."""
    if not url.startswith("etcd://"):
        raise ValueError(f"registry URL {url!r} must start with etcd://")
    endpoints = []
    for part in url[len("etcd://"):].rstrip("/").split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"registry URL {url!r}: endpoint {part!r} must be HOST:PORT")
        endpoints.append((host, int(port)))
    return endpoints


_EMPTY_CONFIG = flat_to_config({}, 0)
# Decoded configs shared by every client of this process: each of a process's watchers of a
# service receives the same stored value, so it is parsed once. Records are immutable.
_CONFIG_MEMO: dict[tuple[bytes, int], ServiceConfig] = {}
_CONFIG_MEMO_MAX = 1024
_PRUNE_EVERY = 16  # history keys beyond the last MAX_HISTORY are deleted every 16th command
_PRUNE_SPAN = 4 * _PRUNE_EVERY  # ... from ids this far below the oldest kept one


def _decode_config(value: bytes, mod_revision: int) -> ServiceConfig:
    key = (value, mod_revision)
    config = _CONFIG_MEMO.get(key)
    if config is None:
        if len(_CONFIG_MEMO) >= _CONFIG_MEMO_MAX:
            _CONFIG_MEMO.clear()
        config = _CONFIG_MEMO[key] = flat_to_config(json.loads(value)["flat"], mod_revision)
    return config


@dataclass
class _ServiceState:
    nodes: dict[str, Node] = field(default_factory=dict)
    config: ServiceConfig = _EMPTY_CONFIG
    _sorted_nodes: tuple[Node, ...] | None = None  # nodes by id, until the next node change

    def node_changed(self) -> None:
        self._sorted_nodes = None

    def snapshot(self, service: str, revision: int) -> Snapshot:
        if self._sorted_nodes is None:
            self._sorted_nodes = tuple(sorted(self.nodes.values(), key=lambda n: n.id))
        return Snapshot(service=service, nodes=self._sorted_nodes, config=self.config,
                        revision=revision)


@dataclass
class _Seen:
    """The last config this client read or wrote, for compare-and-swap (history only if a
    revert needed it)."""

    flat: dict[str, Any]
    next_id: int
    config_mod: int
    history: list[Command] | None


class _EndpointDown(Exception):
    """The etcd endpoint in use did not answer (``cause`` says how): try another."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class EtcdRegistryClient(BaseClient):
    """The registry on etcd v3: leases for TTLs, transactions for commands, watches."""

    def __init__(self, url: str, *, root: str = DEFAULT_ROOT,
                 cache_dir: Path | str | None = None, metrics: CollectorRegistry | None = None,
                 timeout_seconds: float = 5.0) -> None:
        super().__init__(cache_dir=cache_dir, metrics=metrics)
        self._endpoints = parse_etcd_url(url)
        if not root.startswith("/") or not root.endswith("/"):
            raise ValueError("root: must start and end with '/'")
        self._root = root
        self._services_base = f"{root}services/".encode()
        self._timeout = timeout_seconds
        self._index = 0
        self._client: aetcd.Client | None = None
        self._lock = asyncio.Lock()
        self._seen: dict[str, _Seen] = {}
        self._keys: dict[str, tuple[bytes, bytes]] = {}

    # --- connection ----------------------------------------------------------------------
    async def _etcd(self) -> aetcd.Client:
        client = self._client
        if client is not None:
            return client
        async with self._lock:
            if self._client is None:
                host, port = self._endpoints[self._index % len(self._endpoints)]
                client = aetcd.Client(host=host, port=port, timeout=math.ceil(self._timeout))
                try:
                    await client.connect()
                except Exception as exc:  # noqa: BLE001
                    await client.close()
                    self._index += 1
                    raise RegistryUnavailable(f"etcd {host}:{port}: {exc}") from exc
                self._client = client
            return self._client

    async def _failed(self, client: aetcd.Client, exc: BaseException) -> RegistryUnavailable:
        """Drop a client that failed; the next call tries the next endpoint."""
        async with self._lock:
            if self._client is client and client is not None:
                self._client = None
                self._index += 1
                try:
                    await client.close()
                except Exception:  # noqa: BLE001
                    pass
        return RegistryUnavailable(f"etcd: {type(exc).__name__}: {exc}")

    async def _on_any_endpoint(self, run: Callable[[aetcd.Client], Awaitable[Any]]) -> Any:
        """``run(client)``; when it raises :class:`_EndpointDown`, drop that connection and
        try each other endpoint once."""
        error: RegistryUnavailable | None = None
        for _ in range(len(self._endpoints)):
            client = self._client  # the connection in use, else open one
            if client is None:
                try:
                    client = await self._etcd()
                except RegistryUnavailable as exc:
                    error = exc
                    continue
            try:
                return await run(client)
            except _EndpointDown as down:
                error = await self._failed(client, down.cause)
                error.__cause__ = down.cause
        assert error is not None
        raise error

    async def _call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """Run one aetcd call; on a connection failure try each other endpoint once."""
        async def run(client: aetcd.Client) -> Any:
            try:
                return await getattr(client, op)(*args, **kwargs)
            except aetcd.exceptions.InvalidArgumentError as exc:
                raise ValueError(f"etcd rejected {op}: {exc}") from exc
            except _UNREACHABLE as exc:
                raise _EndpointDown(exc) from exc
            except aetcd.exceptions.ClientError as exc:
                if "not found" in str(exc):  # e.g. "requested lease not found"
                    raise NotFound(f"etcd {op}: {exc}") from exc
                raise RegistryError(f"etcd {op}: {exc}") from exc
        return await self._on_any_endpoint(run)

    async def _kv(self, method: str, request: Any) -> Any:
        """One call on etcd's KV service with a request built here (``Txn``), skipping
        aetcd's wrappers; fails over like :meth:`_call`."""
        async def run(client: aetcd.Client) -> Any:
            try:
                return await getattr(client.kvstub, method)(request, timeout=self._timeout,
                                                            metadata=client.metadata)
            except rpc.AioRpcError as exc:
                code = exc.code()
                if code in _UNREACHABLE_CODES:
                    raise _EndpointDown(exc) from exc
                if code == rpc.StatusCode.INVALID_ARGUMENT:
                    raise ValueError(f"etcd rejected {method}: {exc.details()}") from exc
                raise RegistryError(f"etcd {method}: {code.name}: {exc.details()}") from exc
        return await self._on_any_endpoint(run)

    async def start(self) -> None:
        """Connect to the first endpoint that answers."""
        await self._etcd()

    async def stop(self) -> None:
        """Revoke registrations, close watches and the connection; safe to call twice."""
        await super().stop()
        async with self._lock:
            client, self._client = self._client, None
        if client is not None:
            await client.close()

    # --- keys ----------------------------------------------------------------------------
    def _service_prefix(self, service: str) -> str:
        return f"{self._root}services/{service}/"

    def _history_prefix(self, service: str) -> bytes:
        return f"{self._root}history/{service}/".encode()

    def _parse_key(self, key: bytes) -> tuple[str, str] | None:
        base = self._services_base
        if not key.startswith(base):
            return None
        service, _, rest = key[len(base):].partition(b"/")
        return service.decode(), rest.decode()

    @staticmethod
    def _apply(state: _ServiceState, rest: str, value: bytes | None, mod_revision: int) -> None:
        if rest.startswith("nodes/"):
            node_id = rest[len("nodes/"):]
            if value is None:
                state.nodes.pop(node_id, None)
            else:
                record = json.loads(value)
                record.pop("ttl_seconds", None)
                state.nodes[node_id] = Node.from_dict(record)
            state.node_changed()
        elif rest == "config":
            state.config = (_decode_config(value, mod_revision) if value is not None
                            else _EMPTY_CONFIG)

    # --- nodes ---------------------------------------------------------------------------
    async def _register_once(self, service: str, node: Node, ttl_seconds: float,
                             handle: Any = None) -> Any:
        key = f"{self._service_prefix(service)}nodes/{node.id}".encode()
        value = json.dumps({**node.to_dict(), "ttl_seconds": ttl_seconds}).encode()
        if handle is not None:  # an update: keep the node's lease
            try:
                await self._call("put", key, value, lease=handle)
                return handle
            except NotFound:
                pass  # the lease is gone: take a new one
        lease = await self._call("lease", max(2, math.ceil(ttl_seconds)))
        await self._call("put", key, value, lease=lease.id)
        return lease.id

    async def _heartbeat(self, service: str, node: Node, handle: Any) -> None:
        reply = await self._call("refresh_lease", handle)
        if reply is None or reply.TTL <= 0:
            raise NotFound(f"lease of node {node.id!r} expired")

    async def _deregister_handle(self, service: str, node_id: str, handle: Any) -> None:
        if handle is not None:
            try:
                await self._call("revoke_lease", handle)
                return
            except NotFound:
                pass  # lease already gone; delete the key below
        deleted = await self._call("delete", f"{self._service_prefix(service)}nodes/{node_id}"
                                   .encode())
        if deleted is None and handle is None:
            raise NotFound(f"node {node_id!r} is not registered in {service!r}")

    # --- reads ---------------------------------------------------------------------------
    async def _read(self, key_prefix: str) -> tuple[dict[str, _ServiceState], int]:
        result = await self._call("get_prefix", key_prefix.encode())
        revision = int(result.header.revision) if result.header is not None else 0
        states: dict[str, _ServiceState] = {}
        for kv in result:
            parsed = self._parse_key(kv.key)
            if parsed is None:
                continue
            service, rest = parsed
            self._apply(states.setdefault(service, _ServiceState()), rest, kv.value,
                        kv.mod_revision)
        return states, revision

    async def _fetch_snapshot(self, service: str) -> Snapshot:
        states, revision = await self._read(self._service_prefix(service))
        return states.get(service, _ServiceState()).snapshot(service, revision)

    async def services(self) -> list[str]:
        """Every service with nodes or configuration."""
        states, _ = await self._read(f"{self._root}services/")
        return sorted(states)

    async def history(self, service: str) -> list[Command]:
        """Recent commands of ``service``, oldest first."""
        check_name(service, "service")
        result = await self._call("get_prefix", self._history_prefix(service))
        commands = sorted((Command.from_dict(json.loads(kv.value)) for kv in result),
                          key=lambda c: c.id)
        return commands[-MAX_HISTORY:]

    # --- commands ------------------------------------------------------------------------
    async def command(self, service: str, kind: str, args: Mapping[str, Any], *,
                      who: str, why: str = "") -> Command:
        """Validate and apply a command in one compare-and-swap transaction."""
        check_name(service, "service")
        if not isinstance(kind, str):
            raise ValueError("kind: expected a string")
        config_key, history_prefix = self._command_keys(service)
        seen = self._seen.get(service)
        fresh = False
        for _ in range(_MAX_CAS_ATTEMPTS):
            if seen is None or (kind == "revert" and seen.history is None):
                seen = await self._read_config(service, with_history=kind == "revert")
                fresh = True
            try:
                new_flat, new_history, command = apply_command(
                    seen.flat, seen.history or [], service=service, kind=kind, args=args,
                    who=who, why=why, now=time.time(), next_id=seen.next_id)
            except ValueError:
                if fresh:
                    raise
                seen = None  # judged on a cached copy: look again before saying no
                continue
            # One round trip: every command rewrites config, so comparing its mod revision
            # with our copy's orders all writers; a loser gets the current config back.
            # The request is etcd's TxnRequest, filled in place and sent on the KV stub:
            # aetcd's transaction() builds the same message through a layer of op
            # objects, and constructing nested messages from keyword arguments copies
            # each one, both of which cost more than the rest of a command's client-side
            # work (which runs before the write reaches etcd, so it adds to propagation).
            request = rpc.TxnRequest()
            compare = request.compare.add()
            compare.key = config_key
            compare.result = _CMP_EQUAL
            compare.target = _CMP_MOD
            compare.mod_revision = seen.config_mod
            put = request.success.add().request_put
            put.key = config_key
            put.value = _encode({"flat": new_flat, "next_id": command.id + 1}).encode()
            before = {c.id: c for c in seen.history or ()}
            for item in new_history:
                if before.get(item.id) != item:  # the new command, or one a revert touched
                    put = request.success.add().request_put
                    put.key = _history_key(history_prefix, item.id)
                    put.value = _encode(item.to_dict()).encode()
            # Older history keys are pruned every _PRUNE_EVERY commands, not in every
            # transaction (readers take the last MAX_HISTORY), which keeps a command's
            # transaction to its two puts most of the time. Ids are consecutive, so each
            # prune only has to cover the ids that fell out since the previous one; the
            # range is a few periods wide (not from id 0) because etcd walks every key
            # ever written in a deleted range until it compacts, and that grew without end.
            oldest_kept = command.id - MAX_HISTORY + 1
            if oldest_kept > 1 and command.id % _PRUNE_EVERY == 0:
                delete = request.success.add().request_delete_range
                delete.key = _history_key(history_prefix, max(0, oldest_kept - _PRUNE_SPAN))
                delete.range_end = _history_key(history_prefix, oldest_kept)
            request.failure.add().request_range.key = config_key
            reply = await self._kv("Txn", request)
            if reply.succeeded:
                self._remember(service, _Seen(
                    new_flat, command.id + 1, int(reply.header.revision),
                    new_history if seen.history is not None else None))
                return command
            seen = self._seen_from(reply.responses[0].response_range.kvs, None)
            fresh = True
            self._remember(service, seen)
        raise Conflict(f"{service}: too many concurrent writers; try again")

    def _command_keys(self, service: str) -> tuple[bytes, bytes]:
        """``config`` key and history prefix of a (checked) service name, memoised."""
        keys = self._keys.get(service)
        if keys is None:
            if len(self._keys) > 1000:
                self._keys.clear()
            keys = self._keys[service] = (f"{self._service_prefix(service)}config".encode(),
                                          self._history_prefix(service))
        return keys

    def _remember(self, service: str, seen: _Seen) -> None:
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[service] = seen

    @staticmethod
    def _seen_from(config: Any, history: Any) -> _Seen:
        """The CAS copy from txn range results (sequences of etcd KeyValues)."""
        stored = json.loads(config[0].value) if config else {}
        commands = None
        if history is not None:
            commands = sorted((Command.from_dict(json.loads(kv.value)) for kv in history),
                              key=lambda c: c.id)[-MAX_HISTORY:]
        return _Seen(flat=stored.get("flat", {}), next_id=int(stored.get("next_id", 1)),
                     config_mod=int(config[0].mod_revision) if config else 0,
                     history=commands)

    async def _read_config(self, service: str, *, with_history: bool) -> _Seen:
        config_key, prefix = self._command_keys(service)
        ops = [rpc.RequestOp(request_range=rpc.RangeRequest(key=config_key))]
        if with_history:
            ops.append(rpc.RequestOp(request_range=rpc.RangeRequest(
                key=prefix, range_end=aetcd.utils.prefix_range_end(prefix))))
        # One read transaction, so config and history come from the same revision.
        reply = await self._kv("Txn", rpc.TxnRequest(success=ops))
        return self._seen_from(reply.responses[0].response_range.kvs,
                               reply.responses[1].response_range.kvs if with_history else None)

    # --- watch ---------------------------------------------------------------------------
    async def _follow(self, *, service: str | None, prefix: str | None,
                      emit: Callable[[Snapshot], None]) -> None:
        key_prefix = (self._service_prefix(service) if service is not None
                      else f"{self._root}services/{prefix or ''}")
        states, revision = await self._read(key_prefix)
        if service is not None:
            states.setdefault(service, _ServiceState())
        for name in sorted(states):
            emit(states[name].snapshot(name, revision))
        client = await self._etcd()
        prefix_key = key_prefix.encode()
        # The watch is our own stream on etcd's Watch service: each response is applied
        # whole, then a snapshot per changed service is emitted from this same task. All
        # events of a transaction share one revision and etcd never splits a revision over
        # responses (we do not ask for fragments), so a torn snapshot is never emitted, and
        # there is no queue, callback or extra task between the stream and the consumer.
        call = rpc.WatchStub(client.channel).Watch(metadata=client.metadata)
        try:
            async def create() -> Any:
                await call.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                    key=prefix_key, range_end=aetcd.utils.prefix_range_end(prefix_key),
                    start_revision=revision + 1)))
                return await call.read()

            # Bounded: a write on a stream whose channel is closed before it started never
            # returns (gRPC waits for metadata that will not be sent).
            created = await asyncio.wait_for(create(), self._timeout)
            if not _watch_ok(created) or not created.created:
                raise RegistryUnavailable(f"etcd watch not created: {_watch_why(created)}")
            parse, apply = self._parse_key, self._apply
            keys: dict[bytes, tuple[str, str]] = {}  # parsed keys (the same few recur)
            while True:
                response = await call.read()
                if response is _EOF or response.canceled or response.compact_revision:
                    raise RegistryUnavailable(f"etcd watch ended: {_watch_why(response)}")
                dirty: dict[str, int] = {}
                for event in response.events:
                    kv = event.kv
                    key = kv.key
                    parsed = keys.get(key)
                    if parsed is None:
                        parsed = parse(key)
                        if parsed is None:
                            continue
                        if len(keys) < 4096:
                            keys[key] = parsed
                    name, rest = parsed
                    state = states.get(name)
                    if state is None:
                        state = states[name] = _ServiceState()
                    revision = kv.mod_revision  # events come in revision order
                    apply(state, rest, kv.value if event.type == _PUT else None, revision)
                    dirty[name] = revision
                for name in sorted(dirty) if len(dirty) > 1 else dirty:
                    emit(states[name].snapshot(name, dirty[name]))
        except rpc.AioRpcError as exc:
            if exc.code() in _UNREACHABLE_CODES:
                raise await self._failed(client, exc) from exc
            raise RegistryUnavailable(f"etcd watch: {exc.code().name}: {exc.details()}") from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the watch is being closed
            # gRPC cancels a stream whose channel was closed (another call on this client
            # failed and dropped it): reconnect rather than end the watch.
            raise RegistryUnavailable("etcd watch stream was cancelled") from None
        finally:
            call.cancel()


def _history_key(history_prefix: bytes, command_id: int) -> bytes:
    """The key of one command under a service's history prefix (ids sort as digits)."""
    return b"%s%012d" % (history_prefix, command_id)


def _watch_ok(response: Any) -> bool:
    """A watch response that can be applied: not the end of the stream, not a cancel, not
    a compaction past our revision."""
    return (response is not _EOF and not response.canceled
            and not response.compact_revision)


def _watch_why(response: Any) -> str:
    if response is _EOF:
        return "stream closed by etcd"
    if response.compact_revision:
        return f"revision compacted below {response.compact_revision}"
    return response.cancel_reason or "cancelled by etcd"
