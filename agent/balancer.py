"""Choosing a node: effective weights from the registry, and three load balancers.

Effective weight of a node: its registry weight (or the service's ``node_weights``
override), scaled so that each IDC gets its share of traffic from the service's
``idc_weights`` (when set). Balancers pick among those endpoints:

- ``random``: weighted random;
- ``round_robin``: smooth weighted round robin (nginx's), deterministic;
- ``least_active``: fewest in-flight calls per unit of weight, ties broken at random.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from registry.model import Snapshot

__all__ = ["Endpoint", "effective_endpoints", "Balancer", "RandomBalancer",
           "RoundRobinBalancer", "LeastActiveBalancer", "make_balancer", "BALANCERS"]


@dataclass(frozen=True)
class Endpoint:
    """A node to send calls to, with its effective weight (> 0)."""

    id: str
    address: str  # host:port
    idc: str
    weight: float


def effective_endpoints(snapshot: Snapshot) -> tuple[Endpoint, ...]:
    """The nodes of ``snapshot`` that take traffic, with IDC and node weights applied.

    Draining nodes are skipped. With ``idc_weights``, IDCs that are not listed (or have a
    weight but no node) get no traffic, unless no listed IDC has a node: then every node
    is used by its node weight alone, so a bad weight table never blackholes a service.
    """
    config = snapshot.config
    nodes = [n for n in snapshot.nodes if n.status == "up"]
    weights = {n.id: float(config.node_weights.get(n.id, n.weight)) for n in nodes}
    idc_weights = {idc: w for idc, w in config.idc_weights.items() if w > 0}
    present = {n.idc for n in nodes} & set(idc_weights)
    if not idc_weights or not present:
        return tuple(Endpoint(n.id, n.address, n.idc, weights[n.id]) for n in nodes)
    total_idc = sum(idc_weights[idc] for idc in present)
    per_idc_total: dict[str, float] = {}
    for n in nodes:
        if n.idc in present:
            per_idc_total[n.idc] = per_idc_total.get(n.idc, 0.0) + weights[n.id]
    return tuple(
        Endpoint(n.id, n.address, n.idc, max(1e-6, round(
            1000.0 * idc_weights[n.idc] / total_idc * weights[n.id] / per_idc_total[n.idc], 6)))
        for n in nodes if n.idc in present)


class Balancer(Protocol):
    """Picks one endpoint not in ``exclude``, or None when none is left."""

    def pick(self, endpoints: Sequence[Endpoint], exclude: Collection[str] = ()
             ) -> Endpoint | None: ...


class RandomBalancer:
    """Weighted random choice."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, endpoints: Sequence[Endpoint], exclude: Collection[str] = ()
             ) -> Endpoint | None:
        candidates = [e for e in endpoints if e.id not in exclude]
        if not candidates:
            return None
        return self._rng.choices(candidates, weights=[e.weight for e in candidates])[0]


class RoundRobinBalancer:
    """Smooth weighted round robin: over time each node gets its share, evenly spread."""

    def __init__(self) -> None:
        self._current: dict[str, float] = {}

    def pick(self, endpoints: Sequence[Endpoint], exclude: Collection[str] = ()
             ) -> Endpoint | None:
        candidates = [e for e in endpoints if e.id not in exclude]
        if not candidates:
            return None
        if len(self._current) > 4 * len(endpoints) + 64:
            live = {e.id for e in endpoints}
            self._current = {k: v for k, v in self._current.items() if k in live}
        total = 0.0
        best: Endpoint | None = None
        best_value = 0.0
        for e in candidates:
            value = self._current.get(e.id, 0.0) + e.weight
            self._current[e.id] = value
            total += e.weight
            if best is None or value > best_value:
                best, best_value = e, value
        assert best is not None
        self._current[best.id] -= total
        return best


class LeastActiveBalancer:
    """Fewest in-flight calls per unit of weight; ``active`` is kept by the caller."""

    def __init__(self, active: Mapping[str, int], rng: random.Random | None = None) -> None:
        self._active = active
        self._rng = rng or random.Random()

    def pick(self, endpoints: Sequence[Endpoint], exclude: Collection[str] = ()
             ) -> Endpoint | None:
        best: list[Endpoint] = []
        best_load = 0.0
        for e in endpoints:
            if e.id in exclude:
                continue
            load = (self._active.get(e.id, 0) + 1) / e.weight
            if not best or load < best_load:
                best, best_load = [e], load
            elif load == best_load:
                best.append(e)
        return self._rng.choice(best) if best else None


BALANCERS = ("random", "round_robin", "least_active")


def make_balancer(name: str, active: Mapping[str, int]) -> Balancer:
    """A new balancer by configuration name."""
    if name == "random":
        return RandomBalancer()
    if name == "round_robin":
        return RoundRobinBalancer()
    if name == "least_active":
        return LeastActiveBalancer(active)
    raise ValueError(f"unknown load balancer {name!r}; use one of {', '.join(BALANCERS)}")
