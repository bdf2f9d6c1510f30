"""Registry records and the pure command logic (revert semantics, bounded history)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from registry.commands import MAX_HISTORY, apply_command, config_to_flat, flat_to_config
from registry.failstatic import FailStaticCache
from registry.model import Node, ServiceConfig, Snapshot, check_name


def _apply(flat: dict, history: list, kind: str, args: dict, who: str = "ops"):  # type: ignore[no-untyped-def]
    return apply_command(flat, history, service="svc", kind=kind, args=args, who=who, why="",
                         now=1000.0)


@pytest.mark.parametrize("name", ["", "a/b", "a b", "é", "x" * 129, "..", "."])
def test_bad_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="service"):
        check_name(name, "service")


def test_names_at_the_limit_are_accepted() -> None:
    assert check_name("A-z_0.9" + "x" * 121, "service")


def test_node_defaults() -> None:
    node = Node(id="n1", address="10.0.0.1:80")
    assert (node.idc, node.weight, node.status, dict(node.labels), node.registered_at) == (
        "default", 10, "up", {}, 0.0)
    for weight in (1, 500):
        assert Node(id="n1", address="h:1", weight=weight).weight == weight
    for weight in (0, 501):
        with pytest.raises(ValueError, match="weight"):
            Node(id="n1", address="h:1", weight=weight)


def test_node_round_trip_and_unknown_fields() -> None:
    node = Node(id="n1", address="[::1]:80", idc="bj", weight=500, status="draining",
                labels={"zone": "a"}, registered_at=12.5)
    assert Node.from_dict(json.loads(json.dumps(node.to_dict()))) == node
    with pytest.raises(ValueError, match="unknown field 'port'"):
        Node.from_dict({**node.to_dict(), "port": 1})
    with pytest.raises(ValueError, match="weight"):
        Node.from_dict({**node.to_dict(), "weight": True})


def test_revert_in_the_middle_hands_old_value_to_later_command() -> None:
    flat, history, first = _apply({}, [], "switches", {"switches": {"a": True}})
    flat, history, second = _apply(flat, history, "switches", {"switches": {"a": False}})
    flat, history, _ = _apply(flat, history, "revert", {"command": first.id})
    assert flat == {"switch/a": False}
    flat, history, _ = _apply(flat, history, "revert", {"command": second.id})
    assert flat == {}, "the value from before the first command comes back"
    with pytest.raises(ValueError, match="is a revert"):
        _apply(flat, history, "revert", {"command": history[-1].id})


def test_history_is_bounded_and_ids_keep_growing() -> None:
    flat: dict = {}
    history: list = []
    for i in range(MAX_HISTORY + 5):
        flat, history, command = _apply(flat, history, "idc_weights",
                                        {"weights": {"bj": i % 500 + 1}})
    assert len(history) == MAX_HISTORY
    assert history[-1].id == MAX_HISTORY + 5
    with pytest.raises(ValueError, match="not in the history"):
        _apply(flat, history, "revert", {"command": 1})


def test_flat_config_round_trip() -> None:
    flat, _, _ = _apply({}, [], "degrade", {"reason": "overload", "fallback_status": 429})
    flat.update({"idc_weight/bj": 7, "node_weight/n1": 3, "switch/x": True})
    config = flat_to_config(flat, revision=9)
    assert config.degraded is not None and config.degraded.fallback_status == 429
    assert (config.idc_weights, config.node_weights, config.switches) == (
        {"bj": 7}, {"n1": 3}, {"x": True})
    assert config_to_flat(config) == flat
    assert ServiceConfig.from_dict(config.to_dict()) == config


def test_fail_static_cache_replaces_atomically(tmp_path: Path) -> None:
    clock = [100.0]
    metrics = CollectorRegistry()
    cache = FailStaticCache(tmp_path, metrics, clock=lambda: clock[0])
    snapshot = Snapshot(service="svc", nodes=(Node(id="n1", address="h:1"),),
                        config=ServiceConfig(switches={"a": True}, revision=3), revision=4)
    cache.save(snapshot)
    assert os.listdir(tmp_path) == ["svc.json"], "no temporary file is left behind"
    cache.mark_lost("svc", serving_cache=True)
    clock[0] = 130.0
    assert metrics.get_sample_value("tidemark_registry_snapshot_age_seconds",
                                    {"service": "svc"}) == 30.0
    loaded = FailStaticCache(tmp_path).load("svc")
    assert loaded is not None and loaded.from_cache
    assert loaded.nodes == snapshot.nodes and loaded.config == snapshot.config
    (tmp_path / "broken.json").write_text("{not json")
    assert cache.load("broken") is None
    with pytest.raises(ValueError, match="service"):
        cache.load("../etc/passwd")
