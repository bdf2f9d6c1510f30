"""Synthetic, labelled service-mesh traffic for tests, benchmarks and the demo.

:func:`generate_traffic` builds one pool's metrics at a fixed frequency:

* demand = ``base_qps`` x daily cycle (peak at ``peak_hour``) x weekend factor x linear trend
  x holidays x level shifts x flash crowds x log-normal noise;
* outages drop a share of the traffic and raise the error rate by that share;
* the pool's ``nodes`` share the traffic evenly, and each node is an M/M/c queue
  (:class:`~models.synthetic.queueing.MMcNode`), so p99 latency rises near saturation;
  past saturation the node serves at most its saturation load, the excess fails and the
  latency sits at ``timeout_ms``.

Everything random comes from one ``numpy.random.Generator`` seeded by ``seed``: the same
arguments give the same frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.synthetic.queueing import MMcNode

__all__ = [
    "ANOMALY_KINDS",
    "FlashCrowd",
    "LevelShift",
    "Outage",
    "SyntheticTraffic",
    "TrafficEvent",
    "generate_traffic",
    "random_events",
]

TimeLike: TypeAlias = str | pd.Timestamp
DurationLike: TypeAlias = str | pd.Timedelta

# Event kinds that are anomalies, highest labelling priority first (overlaps get the first).
ANOMALY_KINDS: tuple[str, ...] = ("outage", "flash_crowd", "level_shift")
_FLASH_RISE_SHARE = 0.2  # a flash crowd peaks after this share of its duration


@dataclass(frozen=True)
class FlashCrowd:
    """A surge: demand climbs to ``peak_factor`` x normal over the first fifth of
    ``duration``, then falls back linearly by its end. Labelled ``flash_crowd``."""

    start: TimeLike
    duration: DurationLike = "30min"
    peak_factor: float = 3.0


@dataclass(frozen=True)
class Outage:
    """For ``duration``, a share ``drop_share`` of the traffic fails: qps falls by that share
    and the error rate rises by it. Labelled ``outage``."""

    start: TimeLike
    duration: DurationLike = "15min"
    drop_share: float = 0.8


@dataclass(frozen=True)
class LevelShift:
    """From ``start`` on, demand is multiplied by ``factor`` for good; the first
    ``label_duration`` after the change is labelled ``level_shift``."""

    start: TimeLike
    factor: float = 1.5
    label_duration: DurationLike = "1h"


TrafficEvent: TypeAlias = FlashCrowd | Outage | LevelShift


@dataclass(frozen=True)
class SyntheticTraffic:
    """What :func:`generate_traffic` returns.

    Attributes:
        frame: one row per interval, indexed by a DatetimeIndex named ``timestamp``, with
            columns ``demand_qps`` (offered), ``qps`` (served by the pool), ``qps_per_node``,
            ``utilisation`` (per-node load / saturation load), ``latency_p99_ms``,
            ``latency_p999_ms`` (both per node, capped at ``timeout_ms``),
            ``error_rate``, ``success_rate``, ``is_holiday``, ``is_anomaly`` and
            ``anomaly_kind`` (one of :data:`ANOMALY_KINDS` or ``"none"``).
        events: one row per event overlapping the frame, sorted by start, with columns
            ``kind`` (an anomaly kind or ``"holiday"``), ``start``, ``end`` (exclusive; the
            labelled window), ``magnitude`` (peak_factor, drop_share, factor or
            holiday_factor) and ``is_anomaly``.
        node: the queueing model of one node.
        nodes: number of nodes sharing the traffic.
    """

    frame: pd.DataFrame
    events: pd.DataFrame
    node: MMcNode
    nodes: int


def generate_traffic(
    start: TimeLike = "2026-01-05",
    periods: int = 7 * 1440,
    freq: str = "1min",
    *,
    base_qps: float = 3000.0,
    daily_amplitude: float = 0.5,
    peak_hour: float = 20.0,
    weekend_factor: float = 0.8,
    trend_per_day: float = 0.0,
    holidays: Sequence[TimeLike] = (),
    holiday_factor: float = 0.7,
    events: Sequence[TrafficEvent] = (),
    nodes: int = 10,
    node: MMcNode | None = None,
    qps_noise: float = 0.03,
    latency_noise: float = 0.05,
    base_error_rate: float = 0.001,
    timeout_ms: float = 1000.0,
    seed: int | None = 0,
) -> SyntheticTraffic:
    """Generate one pool's labelled traffic; see the module docstring for the model.

    Args:
        start: first timestamp (a naive or tz-aware timestamp; hours are local to it).
        periods: number of intervals.
        freq: interval length as a pandas frequency ("1min", "10s", "1h").
        base_qps: mean weekday pool demand before trend and events.
        daily_amplitude: daily swing as a share of the mean, in [0, 1).
        peak_hour: hour of day (0-24, fractional) of the daily peak.
        weekend_factor: demand multiplier on Saturdays and Sundays.
        trend_per_day: linear growth per day as a share of ``base_qps``.
        holidays: dates whose whole day is multiplied by ``holiday_factor``.
        events: flash crowds, outages and level shifts.
        nodes: nodes sharing the pool's traffic evenly.
        node: queueing model of one node (default ``MMcNode()``: 8 workers, 10 ms).
        qps_noise: sigma of the log-normal noise on demand.
        latency_noise: sigma of the log-normal noise on p99 latency.
        base_error_rate: error rate outside outages and overload.
        timeout_ms: latency cap; requests past saturation fail.
        seed: seed of the random generator.
    """
    node = MMcNode() if node is None else node
    _validate(locals())
    try:
        index = pd.date_range(
            start=pd.Timestamp(start), periods=periods, freq=freq, name="timestamp"
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad start {start!r} or freq {freq!r}: {exc}") from exc
    rng = np.random.default_rng(seed)
    n = len(index)
    end = index[-1] + index.freq if n else index[0]

    hours = _hour_of_day(index)
    days = (index - index[0]) / pd.Timedelta(days=1)
    demand = base_qps * (1.0 + daily_amplitude * np.cos(2.0 * np.pi * (hours - peak_hour) / 24.0))
    demand = demand * np.where(index.day_of_week >= 5, weekend_factor, 1.0)
    trend = 1.0 + trend_per_day * np.asarray(days, dtype=np.float64)
    if np.any(trend <= 0):
        raise ValueError(f"trend_per_day={trend_per_day!r} drives demand to zero within the frame")
    demand = demand * trend

    rows: list[dict[str, object]] = []
    holiday_days = sorted({pd.Timestamp(h).normalize() for h in holidays})
    local_days = index.normalize() if index.tz is None else index.tz_localize(None).normalize()
    is_holiday = np.zeros(n, dtype=bool)
    for day in holiday_days:
        day_naive = day.tz_localize(None) if day.tz is not None else day
        on = np.asarray(local_days == day_naive)
        if on.any():
            is_holiday |= on
            rows.append(
                _event_row(
                    "holiday",
                    index[on][0].normalize(),
                    index[on][0].normalize() + pd.Timedelta(days=1),
                    holiday_factor,
                )
            )
    demand = demand * np.where(is_holiday, holiday_factor, 1.0)

    drop = np.zeros(n)
    label = np.full(n, len(ANOMALY_KINDS), dtype=np.int64)  # index into ANOMALY_KINDS; len = none
    for event in events:
        ev_start = _timestamp_like(event.start, index, "event start")
        if isinstance(event, LevelShift):
            ev_end = ev_start + pd.Timedelta(event.label_duration)
            demand = demand * np.where(index >= ev_start, event.factor, 1.0)
            magnitude = event.factor
        else:
            ev_end = ev_start + pd.Timedelta(event.duration)
            inside = np.asarray((index >= ev_start) & (index < ev_end))
            if isinstance(event, FlashCrowd):
                demand = demand * (
                    1.0 + (event.peak_factor - 1.0) * _flash_profile(index, ev_start, ev_end)
                )
                magnitude = event.peak_factor
            else:
                drop = np.where(inside, np.maximum(drop, event.drop_share), drop)
                magnitude = event.drop_share
        kind = _KIND[type(event)]
        window = np.asarray((index >= ev_start) & (index < ev_end))
        label = np.where(window, np.minimum(label, ANOMALY_KINDS.index(kind)), label)
        if ev_start < end and ev_end > index[0]:
            rows.append(_event_row(kind, ev_start, ev_end, magnitude))

    demand = demand * np.exp(rng.normal(0.0, qps_noise, n)) if qps_noise > 0 else demand
    offered_per_node = demand * (1.0 - drop) / nodes
    served_per_node = np.minimum(offered_per_node, node.saturation_qps)
    overload_share = np.where(
        offered_per_node > 0, 1.0 - served_per_node / np.maximum(offered_per_node, 1e-300), 0.0
    )
    stable_load = np.minimum(served_per_node, node.saturation_qps * (1.0 - 1e-9))
    latency = node.latency_quantile_ms(stable_load, 0.99)
    latency_p999 = node.latency_quantile_ms(stable_load, 0.999)
    if latency_noise > 0:
        noise = np.exp(rng.normal(0.0, latency_noise, n))  # shared, so p999 >= p99 holds
        latency, latency_p999 = latency * noise, latency_p999 * noise
    latency = np.minimum(latency, timeout_ms)
    latency_p999 = np.minimum(latency_p999, timeout_ms)
    error_rate = 1.0 - (1.0 - base_error_rate) * (1.0 - drop) * (1.0 - overload_share)

    kinds = np.array([*ANOMALY_KINDS, "none"], dtype=object)
    frame = pd.DataFrame(
        {
            "demand_qps": demand,
            "qps": served_per_node * nodes,
            "qps_per_node": served_per_node,
            "utilisation": served_per_node / node.saturation_qps,
            "latency_p99_ms": latency,
            "latency_p999_ms": latency_p999,
            "error_rate": error_rate,
            "success_rate": 1.0 - error_rate,
            "is_holiday": is_holiday,
            "is_anomaly": label < len(ANOMALY_KINDS),
            "anomaly_kind": pd.Series(kinds[label], index=index, dtype="string"),
        },
        index=index,
    )
    events_frame = pd.DataFrame(rows, columns=["kind", "start", "end", "magnitude", "is_anomaly"])
    events_frame = events_frame.sort_values("start", kind="stable").reset_index(drop=True)
    return SyntheticTraffic(frame=frame, events=events_frame, node=node, nodes=int(nodes))


_KIND: dict[type, str] = {FlashCrowd: "flash_crowd", Outage: "outage", LevelShift: "level_shift"}


def random_events(
    start: TimeLike,
    end: TimeLike,
    *,
    per_day: float = 1.0,
    kinds: Sequence[str] = ANOMALY_KINDS,
    seed: int | None = 0,
) -> list[TrafficEvent]:
    """Anomalies at random, non-overlapping times in [start, end), for ``events=``.

    About ``per_day`` events a day (Poisson), each of a kind drawn evenly from ``kinds``:
    flash crowds of 2-4x lasting 10-60 min, outages dropping 50-100% for 5-30 min, and level
    shifts of 0.6-0.8x or 1.25-1.6x labelled for an hour. Deterministic for a seed.
    """
    first, last = pd.Timestamp(start), pd.Timestamp(end)
    if not last > first:
        raise ValueError(f"end {end!r} must be after start {start!r}")
    if (
        isinstance(per_day, bool)
        or not isinstance(per_day, int | float)
        or not (math.isfinite(per_day) and per_day >= 0)
    ):
        raise ValueError(f"per_day must be a non-negative number, got {per_day!r}")
    unknown = sorted(set(kinds) - set(ANOMALY_KINDS))
    if unknown or not kinds or isinstance(kinds, str):
        raise ValueError(f"kinds must be a non-empty sequence of {ANOMALY_KINDS}, got {kinds!r}")
    rng = np.random.default_rng(seed)
    span_minutes = int((last - first) / pd.Timedelta(minutes=1))
    count = int(rng.poisson(per_day * span_minutes / 1440.0))
    offsets = np.sort(rng.integers(0, max(span_minutes - 60, 1), size=count))
    events: list[TrafficEvent] = []
    busy_until = first
    for offset in offsets:
        at = first + pd.Timedelta(minutes=int(offset))
        kind = str(kinds[int(rng.integers(len(kinds)))])
        if kind == "flash_crowd":
            length = pd.Timedelta(minutes=int(rng.integers(10, 61)))
            event: TrafficEvent = FlashCrowd(at, length, float(rng.uniform(2.0, 4.0)))
        elif kind == "outage":
            length = pd.Timedelta(minutes=int(rng.integers(5, 31)))
            event = Outage(at, length, float(rng.uniform(0.5, 1.0)))
        else:
            length = pd.Timedelta(hours=1)
            factor = rng.uniform(0.6, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, 1.6)
            event = LevelShift(at, float(factor), length)
        if at < busy_until or at + length > last:
            continue  # keep events apart so every label has one cause
        events.append(event)
        busy_until = at + length + pd.Timedelta(minutes=30)
    return events


def _event_row(
    kind: str, start: pd.Timestamp, end: pd.Timestamp, magnitude: float
) -> dict[str, object]:
    return {
        "kind": kind,
        "start": start,
        "end": end,
        "magnitude": float(magnitude),
        "is_anomaly": kind in ANOMALY_KINDS,
    }


def _hour_of_day(index: pd.DatetimeIndex) -> npt.NDArray[np.float64]:
    return np.asarray(index.hour + index.minute / 60.0 + index.second / 3600.0, dtype=np.float64)


def _flash_profile(
    index: pd.DatetimeIndex, start: pd.Timestamp, end: pd.Timestamp
) -> npt.NDArray[np.float64]:
    """0 outside [start, end); rises linearly to 1 at the peak, then falls to 0 at the end."""
    span = (end - start) / pd.Timedelta(seconds=1)
    t = np.asarray((index - start) / pd.Timedelta(seconds=1), dtype=np.float64) / span
    rise = np.clip(t / _FLASH_RISE_SHARE, 0.0, 1.0)
    fall = np.clip((1.0 - t) / (1.0 - _FLASH_RISE_SHARE), 0.0, 1.0)
    return np.where((t >= 0) & (t < 1), np.minimum(rise, fall), 0.0)


def _timestamp_like(value: TimeLike, index: pd.DatetimeIndex, what: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad {what} {value!r}: {exc}") from exc
    if index.tz is not None and stamp.tz is None:
        stamp = stamp.tz_localize(index.tz)
    elif index.tz is None and stamp.tz is not None:
        raise ValueError(f"{what} {value!r} is tz-aware but start is naive")
    return stamp


def _validate(args: dict[str, object]) -> None:
    """Check every argument of generate_traffic; raise ValueError/TypeError naming it."""

    def number(
        name: str,
        low: float,
        high: float = math.inf,
        *,
        low_open: bool = False,
        high_open: bool = False,
    ) -> None:
        value = args[name]
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        v = float(value)
        ok = (
            math.isfinite(v)
            and (v > low if low_open else v >= low)
            and (v < high if high_open else v <= high)
        )
        if not ok:
            lo = "(" if low_open else "["
            hi = ")" if high_open or high == math.inf else "]"
            raise ValueError(f"{name} must be in {lo}{low:g}, {high:g}{hi}, got {value!r}")

    periods = args["periods"]
    if isinstance(periods, bool) or not isinstance(periods, int | np.integer) or periods < 1:
        raise ValueError(f"periods must be a positive integer, got {periods!r}")
    nodes = args["nodes"]
    if isinstance(nodes, bool) or not isinstance(nodes, int | np.integer) or nodes < 1:
        raise ValueError(f"nodes must be a positive integer, got {nodes!r}")
    number("base_qps", 0.0, low_open=True)
    number("daily_amplitude", 0.0, 1.0, high_open=True)
    number("peak_hour", 0.0, 24.0, high_open=True)
    number("weekend_factor", 0.0, low_open=True)
    number("trend_per_day", -1.0)
    number("holiday_factor", 0.0, low_open=True)
    number("qps_noise", 0.0)
    number("latency_noise", 0.0)
    number("base_error_rate", 0.0, 1.0, high_open=True)
    number("timeout_ms", 0.0, low_open=True)
    if not isinstance(args["node"], MMcNode):
        raise TypeError(f"node must be an MMcNode, got {type(args['node']).__name__}")
    if isinstance(args["holidays"], str | pd.Timestamp):
        raise TypeError("holidays must be a sequence of dates, not a single date")
    events = args["events"]
    if isinstance(events, FlashCrowd | Outage | LevelShift):
        raise TypeError("events must be a sequence of events, not a single event")
    for event in events:  # type: ignore[attr-defined]
        if not isinstance(event, FlashCrowd | Outage | LevelShift):
            raise TypeError(
                f"events must be FlashCrowd, Outage or LevelShift, got {type(event).__name__}"
            )
        for name in ("duration", "label_duration"):
            if hasattr(event, name):
                try:
                    length = pd.Timedelta(getattr(event, name))
                except (TypeError, ValueError) as exc:
                    raise ValueError(
                        f"bad {type(event).__name__}.{name} {getattr(event, name)!r}: {exc}"
                    ) from exc
                if pd.isna(length) or length <= pd.Timedelta(0):
                    raise ValueError(
                        f"{type(event).__name__}.{name} must be positive, "
                        f"got {getattr(event, name)!r}"
                    )
        magnitude_checks = {
            FlashCrowd: ("peak_factor", lambda v: v > 0, "> 0"),
            Outage: ("drop_share", lambda v: 0 < v <= 1, "in (0, 1]"),
            LevelShift: ("factor", lambda v: v > 0, "> 0"),
        }
        field, check, text = magnitude_checks[type(event)]
        value = getattr(event, field)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not check(value)
        ):
            raise ValueError(f"{type(event).__name__}.{field} must be {text}, got {value!r}")
