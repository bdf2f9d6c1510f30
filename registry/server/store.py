"""The embedded registry's state: in memory for reads, in SQLite (WAL) for durability.

One global revision orders every change; each service remembers the revision of its last
change, which is what long-poll watches compare against. Config, history, nodes and the
revision counter are written in one SQLite transaction per change, so a crash never leaves
half a command. Node heartbeats only touch memory; after a restart every stored node gets
one TTL to heartbeat again before it expires.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from registry.commands import apply_command, flat_to_config
from registry.model import Command, Node, Snapshot, check_name

__all__ = ["RegistryStore", "MAX_NODES_PER_SERVICE", "MAX_SERVICES"]

MAX_NODES_PER_SERVICE = 10_000
MAX_SERVICES = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS services (
    name TEXT PRIMARY KEY, flat TEXT NOT NULL, history TEXT NOT NULL,
    config_revision INTEGER NOT NULL, revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    service TEXT NOT NULL, id TEXT NOT NULL, record TEXT NOT NULL, ttl REAL NOT NULL,
    PRIMARY KEY (service, id));
"""


@dataclass
class _Service:
    flat: dict[str, Any] = field(default_factory=dict)
    history: list[Command] = field(default_factory=list)
    config_revision: int = 0
    revision: int = 0
    nodes: dict[str, Node] = field(default_factory=dict)
    ttl: dict[str, float] = field(default_factory=dict)
    deadline: dict[str, float] = field(default_factory=dict)


class RegistryStore:
    """All registry state. Not thread-safe: used from the server's event loop only."""

    def __init__(self, path: Path | str, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._path = Path(path)
        self._clock = clock
        self._wall = wall_clock
        self._db: sqlite3.Connection | None = None
        self._services: dict[str, _Service] = {}
        self.revision = 0
        self._encoded: dict[str, tuple[bytes, int]] = {}
        self.on_change: Callable[[str], None] = lambda service: None

    def open(self) -> None:
        """Open (creating) the database and load everything into memory."""
        self._db = sqlite3.connect(self._path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key='revision'").fetchone()
        self.revision = int(row[0]) if row else 0
        now = self._clock()
        for name, flat, history, config_rev, rev in self._db.execute(
                "SELECT name, flat, history, config_revision, revision FROM services"):
            self._services[name] = _Service(
                flat=json.loads(flat), history=[Command.from_dict(c) for c in json.loads(history)],
                config_revision=config_rev, revision=rev)
        for service, node_id, record, ttl in self._db.execute(
                "SELECT service, id, record, ttl FROM nodes"):
            state = self._services.setdefault(service, _Service())
            state.nodes[node_id] = Node.from_dict(json.loads(record))
            state.ttl[node_id] = ttl
            state.deadline[node_id] = now + ttl

    def close(self) -> None:
        """Close the database; safe to call twice."""
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- reads ---------------------------------------------------------------------------
    def services(self) -> list[str]:
        """Every service that has nodes or configuration."""
        return sorted(self._services)

    def service_revision(self, service: str) -> int:
        """Revision of the service's last change (0 if it never changed)."""
        state = self._services.get(service)
        return state.revision if state else 0

    def snapshot_json(self, service: str) -> tuple[bytes, int]:
        """The snapshot as JSON bytes (one line, ending in a newline) and its revision,
        built once per revision.

        A write wakes every long poll and watch stream on the service; they all share this
        one encoding (a stream sends it as one line as it is).
        """
        revision = self.service_revision(service)
        cached = self._encoded.get(service)
        if cached is not None and cached[1] == revision:
            return cached
        body = json.dumps(self.snapshot(service).to_dict(), separators=(",", ":")).encode()
        body += b"\n"
        if len(self._encoded) > 4096:
            self._encoded.clear()
        self._encoded[service] = (body, revision)
        return body, revision

    def snapshot(self, service: str) -> Snapshot:
        """The service's nodes and config at its current revision."""
        state = self._services.get(service) or _Service()
        return Snapshot(service=service,
                        nodes=tuple(sorted(state.nodes.values(), key=lambda n: n.id)),
                        config=flat_to_config(state.flat, state.config_revision),
                        revision=state.revision)

    def changed_since(self, prefix: str, index: int) -> list[Snapshot]:
        """Snapshots of services starting with ``prefix`` changed after revision ``index``."""
        return [self.snapshot(name) for name, state in sorted(self._services.items())
                if name.startswith(prefix) and state.revision > index]

    def history(self, service: str) -> list[Command]:
        """The service's recent commands, oldest first."""
        state = self._services.get(service)
        return list(state.history) if state else []

    # --- writes --------------------------------------------------------------------------
    def _state_for_write(self, service: str) -> _Service:
        check_name(service, "service")
        if service not in self._services and len(self._services) >= MAX_SERVICES:
            raise ValueError(f"service: more than {MAX_SERVICES} services")
        return self._services.get(service) or _Service()

    def _commit(self, service: str, state: _Service, *, config: bool = False,
                node_upsert: tuple[Node, float] | None = None,
                node_delete: list[str] | None = None) -> int:
        assert self._db is not None, "store is not open"
        revision = self.revision + 1
        new_config_rev = revision if config else state.config_revision
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('revision', ?)",
                       (str(revision),))
            db.execute(
                "INSERT OR REPLACE INTO services (name, flat, history, config_revision, revision)"
                " VALUES (?, ?, ?, ?, ?)",
                (service, json.dumps(state.flat),
                 json.dumps([c.to_dict() for c in state.history]), new_config_rev, revision))
            if node_upsert is not None:
                node, ttl = node_upsert
                db.execute("INSERT OR REPLACE INTO nodes (service, id, record, ttl)"
                           " VALUES (?, ?, ?, ?)",
                           (service, node.id, json.dumps(node.to_dict()), ttl))
            for node_id in node_delete or ():
                db.execute("DELETE FROM nodes WHERE service=? AND id=?", (service, node_id))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.revision = revision
        state.revision = revision
        state.config_revision = new_config_rev
        self._services[service] = state
        return revision

    def register(self, service: str, node: Node, ttl_seconds: float) -> int:
        """Add or replace a node; returns the new revision.

        A record without ``registered_at`` (0) keeps the stored node's, or gets the current
        wall-clock time when the node is new.
        """
        base = self._state_for_write(service)
        if not node.registered_at:
            stored = base.nodes.get(node.id)
            node = replace(node, registered_at=stored.registered_at if stored else self._wall())
        if node.id not in base.nodes and len(base.nodes) >= MAX_NODES_PER_SERVICE:
            raise ValueError(f"node: more than {MAX_NODES_PER_SERVICE} nodes in {service}")
        state = _Service(flat=base.flat, history=base.history,
                         config_revision=base.config_revision, revision=base.revision,
                         nodes={**base.nodes, node.id: node},
                         ttl={**base.ttl, node.id: ttl_seconds},
                         deadline={**base.deadline, node.id: self._clock() + ttl_seconds})
        if base.nodes.get(node.id) == node and base.ttl.get(node.id) == ttl_seconds:
            base.deadline[node.id] = state.deadline[node.id]  # nothing changed but liveness
            return base.revision
        revision = self._commit(service, state, node_upsert=(node, ttl_seconds))
        self.on_change(service)
        return revision

    def heartbeat(self, service: str, node_id: str) -> bool:
        """Push the node's deadline one TTL ahead; False if the node is unknown."""
        state = self._services.get(service)
        if state is None or node_id not in state.nodes:
            return False
        state.deadline[node_id] = self._clock() + state.ttl[node_id]
        return True

    def deregister(self, service: str, node_id: str) -> bool:
        """Remove a node now; False if it was not there."""
        return self._remove_nodes(service, [node_id]) > 0

    def _remove_nodes(self, service: str, node_ids: list[str]) -> int:
        base = self._services.get(service)
        if base is None:
            return 0
        gone = [n for n in node_ids if n in base.nodes]
        if not gone:
            return 0
        state = _Service(flat=base.flat, history=base.history,
                         config_revision=base.config_revision, revision=base.revision,
                         nodes={k: v for k, v in base.nodes.items() if k not in gone},
                         ttl={k: v for k, v in base.ttl.items() if k not in gone},
                         deadline={k: v for k, v in base.deadline.items() if k not in gone})
        self._commit(service, state, node_delete=gone)
        self.on_change(service)
        return len(gone)

    def expire(self) -> int:
        """Remove every node whose deadline passed; returns how many."""
        now = self._clock()
        removed = 0
        for name, state in list(self._services.items()):
            dead = [n for n, deadline in state.deadline.items() if deadline <= now]
            if dead:
                removed += self._remove_nodes(name, dead)
        return removed

    def command(self, service: str, kind: str, args: Mapping[str, Any], *, who: str,
                why: str) -> Command:
        """Validate and apply an operator command atomically; returns the stored command."""
        base = self._state_for_write(service)
        flat, history, command = apply_command(base.flat, base.history, service=service,
                                               kind=kind, args=args, who=who, why=why,
                                               now=self._wall())
        state = _Service(flat=flat, history=history, config_revision=base.config_revision,
                         revision=base.revision, nodes=base.nodes, ttl=base.ttl,
                         deadline=base.deadline)
        self._commit(service, state, config=True)
        self.on_change(service)
        return command
