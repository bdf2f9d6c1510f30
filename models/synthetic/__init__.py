"""Synthetic traffic with labels, and the M/M/c queueing model behind its latency.

``generate_traffic`` is used by tests, benchmarks and the demo; ``MMcNode`` gives exact
latency quantiles and the true capacity of a simulated node.
"""

from __future__ import annotations

from models.synthetic.queueing import MMcNode, erlang_c
from models.synthetic.traffic import (
    ANOMALY_KINDS,
    FlashCrowd,
    LevelShift,
    Outage,
    SyntheticTraffic,
    TrafficEvent,
    generate_traffic,
    random_events,
)

__all__ = [
    "ANOMALY_KINDS",
    "FlashCrowd",
    "LevelShift",
    "MMcNode",
    "Outage",
    "SyntheticTraffic",
    "TrafficEvent",
    "erlang_c",
    "generate_traffic",
    "random_events",
]
