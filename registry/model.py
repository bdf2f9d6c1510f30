"""Registry records: nodes, service configuration, commands and snapshots, with validation.

Every ``from_dict`` rejects unknown fields and bad values with a :class:`ValueError` whose
message names the field, so the HTTP server can turn it into a 400 as it is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "NAME_PATTERN",
    "MAX_NAME_LENGTH",
    "MIN_WEIGHT",
    "MAX_WEIGHT",
    "DEFAULT_WEIGHT",
    "NODE_STATUSES",
    "COMMAND_KINDS",
    "Node",
    "Degrade",
    "ServiceConfig",
    "Command",
    "Snapshot",
    "check_name",
    "check_weight",
    "check_prefix",
]

MAX_NAME_LENGTH = 128
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
MIN_WEIGHT, MAX_WEIGHT, DEFAULT_WEIGHT = 1, 500, 10
NODE_STATUSES = ("up", "draining")
COMMAND_KINDS = ("degrade", "restore", "idc_weights", "node_weights", "switches", "revert")
MAX_LABELS = 32
MAX_TEXT = 1024


def check_name(value: object, what: str) -> str:
    """A service, node, IDC or switch name: ``[A-Za-z0-9_.-]``, 1-128 characters."""
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected a string, got {type(value).__name__}")
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError(
            f"{what}: {value[:40]!r} must be 1-{MAX_NAME_LENGTH} characters of [A-Za-z0-9_.-]"
        )
    if value in (".", ".."):
        raise ValueError(f"{what}: {value!r} is not a usable name")
    return value


def check_prefix(value: object, what: str = "prefix") -> str:
    """A service-name prefix for prefix watches: like a name but may be empty."""
    if value == "":
        return ""
    return check_name(value, what)


def check_weight(value: object, what: str) -> int:
    """An integer weight in ``[1, 500]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what}: expected an integer, got {value!r}")
    if not MIN_WEIGHT <= value <= MAX_WEIGHT:
        raise ValueError(f"{what}: {value} is outside {MIN_WEIGHT}-{MAX_WEIGHT}")
    return value


def _check_text(value: object, what: str, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{what}: longer than {MAX_TEXT} characters")
    if not allow_empty and not value.strip():
        raise ValueError(f"{what}: must not be empty")
    return value


def _check_time(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what}: expected a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what}: {value!r} is not a valid time")
    return float(value)


def _check_fields(data: object, allowed: set[str], what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what}: expected an object, got {type(data).__name__}")
    if not allowed.issuperset(data):
        raise ValueError(f"{what}: unknown field {sorted(set(data) - allowed)[0]!r}")
    return data


def _check_address(value: object) -> str:
    text = _check_text(value, "address", allow_empty=False)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address: {text[:60]!r} must be HOST:PORT")
    if any(c.isspace() or c in "/\\" for c in host):
        raise ValueError(f"address: {text[:60]!r} has a bad host")
    return text


@dataclass(frozen=True)
class Node:
    """One instance of a service as registered by itself or its platform."""

    id: str
    address: str
    idc: str = "default"
    weight: int = DEFAULT_WEIGHT
    status: str = "up"
    labels: Mapping[str, str] = field(default_factory=dict)
    registered_at: float = 0.0

    def __post_init__(self) -> None:
        check_name(self.id, "id")
        _check_address(self.address)
        check_name(self.idc, "idc")
        check_weight(self.weight, "weight")
        if self.status not in NODE_STATUSES:
            raise ValueError(f"status: {self.status!r} must be one of {', '.join(NODE_STATUSES)}")
        if not isinstance(self.labels, Mapping):
            raise ValueError("labels: expected an object")
        if len(self.labels) > MAX_LABELS:
            raise ValueError(f"labels: more than {MAX_LABELS} labels")
        for key, value in self.labels.items():
            check_name(key, "labels key")
            _check_text(value, f"labels.{key}")
        _check_time(self.registered_at, "registered_at")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"id": self.id, "address": self.address, "idc": self.idc, "weight": self.weight,
                "status": self.status, "labels": dict(self.labels),
                "registered_at": self.registered_at}

    @classmethod
    def from_dict(cls, data: object) -> Node:
        """Parse and validate; unknown fields are rejected."""
        d = _check_fields(data, {"id", "address", "idc", "weight", "status", "labels",
                                 "registered_at"}, "node")
        if "id" not in d or "address" not in d:
            raise ValueError(f"node: missing field {'id' if 'id' not in d else 'address'!r}")
        kwargs: dict[str, Any] = {k: (dict(v) if k == "labels" and isinstance(v, Mapping) else v)
                                  for k, v in d.items()}
        return cls(**kwargs)


@dataclass(frozen=True)
class Degrade:
    """A service-level degrade: callers get ``fallback_status`` instead of calling it."""

    reason: str
    who: str
    at: float
    fallback_status: int = 503

    def __post_init__(self) -> None:
        _check_text(self.reason, "reason", allow_empty=False)
        _check_text(self.who, "who", allow_empty=False)
        _check_time(self.at, "at")
        if (isinstance(self.fallback_status, bool) or not isinstance(self.fallback_status, int)
                or not 200 <= self.fallback_status <= 599):
            raise ValueError(f"fallback_status: {self.fallback_status!r} must be 200-599")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"reason": self.reason, "who": self.who, "at": self.at,
                "fallback_status": self.fallback_status}

    @classmethod
    def from_dict(cls, data: object) -> Degrade:
        """Parse and validate."""
        d = _check_fields(data, {"reason", "who", "at", "fallback_status"}, "degraded")
        for name in ("reason", "who", "at"):
            if name not in d:
                raise ValueError(f"degraded: missing field {name!r}")
        return cls(**d)


@dataclass(frozen=True)
class ServiceConfig:
    """What the governance centre decided for a service; ``revision`` orders versions."""

    degraded: Degrade | None = None
    idc_weights: Mapping[str, int] = field(default_factory=dict)
    node_weights: Mapping[str, int] = field(default_factory=dict)
    switches: Mapping[str, bool] = field(default_factory=dict)
    revision: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"degraded": self.degraded.to_dict() if self.degraded else None,
                "idc_weights": dict(self.idc_weights), "node_weights": dict(self.node_weights),
                "switches": dict(self.switches), "revision": self.revision}

    @classmethod
    def from_dict(cls, data: object) -> ServiceConfig:
        """Parse a stored or received config."""
        d = _check_fields(data, {"degraded", "idc_weights", "node_weights", "switches",
                                 "revision"}, "config")
        degraded = d.get("degraded")
        return cls(
            degraded=Degrade.from_dict(degraded) if degraded is not None else None,
            idc_weights={check_name(k, "idc"): check_weight(v, f"idc_weights.{k}")
                         for k, v in dict(d.get("idc_weights") or {}).items()},
            node_weights={check_name(k, "node"): check_weight(v, f"node_weights.{k}")
                          for k, v in dict(d.get("node_weights") or {}).items()},
            switches={check_name(k, "switch"): bool(v)
                      for k, v in dict(d.get("switches") or {}).items()},
            revision=int(d.get("revision", 0)),
        )


@dataclass(frozen=True)
class Command:
    """One operator command, kept in a short history.

    ``changes`` maps flat config keys (``degraded``, ``idc_weight/IDC``, ``node_weight/ID``,
    ``switch/NAME``) to new values (``None`` deletes); ``previous`` holds what they replaced,
    so removing the command (a ``revert``) puts those values back.
    """

    id: int
    service: str
    kind: str
    who: str
    why: str
    at: float
    changes: Mapping[str, Any]
    previous: Mapping[str, Any]
    reverted_by: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"id": self.id, "service": self.service, "kind": self.kind, "who": self.who,
                "why": self.why, "at": self.at, "changes": dict(self.changes),
                "previous": dict(self.previous), "reverted_by": self.reverted_by}

    @classmethod
    def from_dict(cls, data: object) -> Command:
        """Parse a stored or received command."""
        d = _check_fields(data, {"id", "service", "kind", "who", "why", "at", "changes",
                                 "previous", "reverted_by"}, "command")
        return cls(id=int(d["id"]), service=str(d["service"]), kind=str(d["kind"]),
                   who=str(d["who"]), why=str(d["why"]), at=float(d["at"]),
                   changes=dict(d["changes"]), previous=dict(d["previous"]),
                   reverted_by=d.get("reverted_by"))


@dataclass(frozen=True)
class Snapshot:
    """Everything a watcher needs about one service, at one revision.

    ``revision`` only grows for a given service. ``from_cache`` is true when it was
    served from the fail-static cache because the registry could not be reached.
    """

    service: str
    nodes: tuple[Node, ...]
    config: ServiceConfig
    revision: int
    from_cache: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"service": self.service, "nodes": [n.to_dict() for n in self.nodes],
                "config": self.config.to_dict(), "revision": self.revision,
                "from_cache": self.from_cache}

    @classmethod
    def from_dict(cls, data: object) -> Snapshot:
        """Parse a received or cached snapshot."""
        d = _check_fields(data, {"service", "nodes", "config", "revision", "from_cache"},
                          "snapshot")
        return cls(service=check_name(d["service"], "service"),
                   nodes=tuple(sorted((Node.from_dict(n) for n in d["nodes"]),
                                      key=lambda n: n.id)),
                   config=ServiceConfig.from_dict(d["config"]), revision=int(d["revision"]),
                   from_cache=bool(d.get("from_cache", False)))
