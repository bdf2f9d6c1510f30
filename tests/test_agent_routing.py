"""Routing pieces without sockets: effective weights, the balancers, the circuit breaker."""

from __future__ import annotations

import ast
import random
from collections import Counter
from pathlib import Path

import pytest

from agent.balancer import (
    Endpoint,
    LeastActiveBalancer,
    RandomBalancer,
    RoundRobinBalancer,
    effective_endpoints,
    make_balancer,
)
from agent.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from registry.model import Node, ServiceConfig, Snapshot


def snapshot(nodes: list[Node], **config: object) -> Snapshot:
    return Snapshot("svc", tuple(nodes), ServiceConfig(**config), 1)  # type: ignore[arg-type]


def node(node_id: str, idc: str = "bj", weight: int = 10, status: str = "up") -> Node:
    return Node(id=node_id, address=f"10.0.0.{len(node_id)}:80", idc=idc, weight=weight,
                status=status)


def shares(endpoints: tuple[Endpoint, ...]) -> dict[str, float]:
    total = sum(e.weight for e in endpoints)
    return {e.id: round(e.weight / total, 6) for e in endpoints}


def test_node_weights_and_overrides_and_draining_nodes() -> None:
    eps = effective_endpoints(snapshot(
        [node("a", weight=10), node("b", weight=30), node("c", status="draining")],
        node_weights={"a": 30}))
    assert shares(eps) == {"a": 0.5, "b": 0.5}


def test_idc_weights_split_traffic_then_node_weights_split_each_idc() -> None:
    eps = effective_endpoints(snapshot(
        [node("a", "bj", 10), node("b", "bj", 30), node("c", "sh", 5), node("d", "gz", 10)],
        idc_weights={"bj": 60, "sh": 40}))
    assert shares(eps) == {"a": 0.15, "b": 0.45, "c": 0.4}  # gz is not listed: no traffic


def test_idc_weights_naming_no_present_idc_fall_back_to_every_node() -> None:
    eps = effective_endpoints(snapshot([node("a", "bj"), node("b", "sh")],
                                       idc_weights={"gz": 100}))
    assert shares(eps) == {"a": 0.5, "b": 0.5}


ENDPOINTS = (Endpoint("a", "x:1", "bj", 1.0), Endpoint("b", "x:2", "bj", 3.0))


def test_random_balancer_follows_weights_and_honours_exclusions() -> None:
    balancer = RandomBalancer(random.Random(7))
    picks = Counter(balancer.pick(ENDPOINTS).id for _ in range(8000))  # type: ignore[union-attr]
    assert 0.22 < picks["a"] / 8000 < 0.28
    assert balancer.pick(ENDPOINTS, {"b"}).id == "a"  # type: ignore[union-attr]
    assert balancer.pick(ENDPOINTS, {"a", "b"}) is None


def test_round_robin_is_exact_and_spread() -> None:
    balancer = RoundRobinBalancer()
    picks = [balancer.pick(ENDPOINTS).id for _ in range(8)]  # type: ignore[union-attr]
    assert picks.count("a") == 2 and picks.count("b") == 6
    assert "aa" not in "".join(picks)


def test_least_active_prefers_fewest_in_flight_per_weight() -> None:
    active = {"a": 0, "b": 5}
    balancer = LeastActiveBalancer(active, random.Random(1))
    assert balancer.pick(ENDPOINTS).id == "a"  # type: ignore[union-attr]  # 1/1 < 6/3
    active.update(a=3, b=2)
    assert balancer.pick(ENDPOINTS).id == "b"  # type: ignore[union-attr]  # 3/3 < 4/1
    with pytest.raises(ValueError, match="unknown load balancer"):
        make_balancer("fastest", active)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_on_error_ratio_with_enough_calls_then_probes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(window_seconds=10, min_requests=4, error_ratio=0.5,
                             open_seconds=5, clock=clock)
    for ok in (False, False, True):
        assert breaker.allow()
        breaker.on_result(ok)
    assert breaker.state == CLOSED  # 3 calls: below min_requests
    breaker.on_result(False)
    assert breaker.state == OPEN and not breaker.allow()
    clock.now += 5
    assert breaker.allow() and breaker.state == HALF_OPEN
    assert not breaker.allow()  # one probe at a time
    breaker.on_result(False)
    assert breaker.state == OPEN
    clock.now += 5
    assert breaker.allow()
    breaker.release()  # the probe was cancelled: another may go
    assert breaker.allow()
    breaker.on_result(True)
    assert breaker.state == CLOSED and breaker.opened_count == 2


def test_breaker_forgets_errors_older_than_the_window() -> None:
    clock = Clock()
    breaker = CircuitBreaker(window_seconds=10, min_requests=4, error_ratio=0.5, clock=clock)
    for _ in range(3):
        breaker.on_result(False)
    clock.now += 11
    for _ in range(3):
        breaker.on_result(True)
    breaker.on_result(False)
    assert breaker.state == CLOSED  # 1 error in 4 within the window


def test_breaker_opens_on_a_success_that_completes_the_minimum() -> None:
    clock = Clock()
    breaker = CircuitBreaker(window_seconds=10, min_requests=4, error_ratio=0.5, clock=clock)
    for _ in range(3):
        breaker.on_result(False)
    breaker.on_result(True)  # 4 calls, 3 failed: 75 % >= 50 %
    assert breaker.state == OPEN


def test_breaker_with_a_window_under_a_second_keeps_counting() -> None:
    clock = Clock()
    breaker = CircuitBreaker(window_seconds=0.5, min_requests=2, error_ratio=0.5, clock=clock)
    for step in range(6):
        clock.now = 100.0 + step * 0.3
        breaker.on_result(True)
    assert breaker.state == CLOSED
    breaker.on_result(False)
    breaker.on_result(False)
    assert breaker.state == OPEN


def test_bucket_constants_module_imports_only_the_standard_library() -> None:
    """collector.render.functions.histogram imports agent.buckets: keep it dependency-free."""
    import agent

    # The source, not agent.buckets.__file__: that may be its compiled form (agent/native.py).
    tree = ast.parse((Path(agent.__file__).parent / "buckets.py").read_text())
    imported = {alias.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for alias in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "math", "collections", "typing"}


def test_an_attempt_copies_every_field_of_the_call_but_node_and_error() -> None:
    """Call.for_node lists the fields it copies (it is on the per-attempt path): a field
    added to Call and left out of that list would silently fall back to its default."""
    import inspect

    from agent.call import Call

    call = Call(service="user", method="POST", path_qs="/x?y=1", headers={"A": "b"},
                body=b"payload", caller="web", node=Endpoint("old", "10.0.0.1:80", "bj", 10),
                error="timeout", skip_metrics=True, attempts=2, backup_sent=True,
                started=123.5)
    node = Endpoint("new", "10.0.0.2:80", "sh", 10)
    attempt = call.for_node(node)
    fields = list(inspect.signature(Call).parameters)
    for name in fields:
        expected = {"node": node, "error": None}.get(name, getattr(call, name))
        assert getattr(attempt, name) == expected, name


def test_replies_are_equal_by_value_and_repeated_headers_count() -> None:
    from multidict import CIMultiDict

    from agent.call import Reply

    one_cookie = Reply(200, CIMultiDict([("Set-Cookie", "a=1")]), b"x")
    assert one_cookie == Reply(200, {"Set-Cookie": "a=1"}, b"x")
    assert one_cookie != Reply(200, CIMultiDict([("Set-Cookie", "a=1"),
                                                 ("Set-Cookie", "b=2")]), b"x")
    assert one_cookie != Reply(201, {"Set-Cookie": "a=1"}, b"x")
