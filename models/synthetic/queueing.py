"""M/M/c queueing model of one service node: latency quantiles and true capacity.

A node runs ``servers`` identical workers, each serving exponentially distributed requests
with mean ``service_time_ms``, fed by Poisson arrivals of ``load_qps``. Erlang C gives the
chance that a request waits; the response time is the wait plus its own service, whose
distribution has a closed form, so any latency quantile is exact up to the bisection
tolerance. The synthetic traffic generator uses it for latency that rises near saturation,
and the capacity-curve tests use it as ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["MMcNode", "erlang_c"]

_BISECTION_STEPS = 64


def erlang_c(servers: int, offered_load: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Probability that an arrival waits in M/M/c with ``offered_load`` = arrival/service rate.

    Computed with the numerically stable Erlang B recursion; 1.0 where the load is at or
    above ``servers`` (the queue grows without bound).
    """
    if int(servers) != servers or servers < 1:
        raise ValueError(f"servers must be a positive integer, got {servers!r}")
    a = np.asarray(offered_load, dtype=np.float64)
    if np.any(a < 0) or np.any(np.isnan(a)):
        raise ValueError("offered_load must be non-negative and not NaN")
    blocking = np.ones_like(a)
    for k in range(1, int(servers) + 1):
        blocking = a * blocking / (k + a * blocking)
    with np.errstate(divide="ignore", invalid="ignore"):
        wait = servers * blocking / (servers - a * (1.0 - blocking))
    return np.where(a >= servers, 1.0, np.clip(wait, 0.0, 1.0))


@dataclass(frozen=True)
class MMcNode:
    """One node modelled as an M/M/c queue.

    Attributes:
        servers: workers serving requests in parallel (c).
        service_time_ms: mean service time of one request (1/mu), in milliseconds.
    """

    servers: int = 8
    service_time_ms: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.servers, bool) or int(self.servers) != self.servers or self.servers < 1:
            raise ValueError(f"servers must be a positive integer, got {self.servers!r}")
        if not (math.isfinite(self.service_time_ms) and self.service_time_ms > 0):
            raise ValueError(
                f"service_time_ms must be a positive finite number, got {self.service_time_ms!r}"
            )

    @property
    def service_rate_per_second(self) -> float:
        """Requests one worker completes per second (mu)."""
        return 1000.0 / self.service_time_ms

    @property
    def saturation_qps(self) -> float:
        """Load at which the queue becomes unstable (c * mu); latency is unbounded there."""
        return self.servers * self.service_rate_per_second

    def wait_probability(self, load_qps: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Erlang C: share of requests that queue at ``load_qps``."""
        load = _check_load(load_qps)
        return erlang_c(self.servers, load / self.service_rate_per_second)

    def latency_survival(
        self, latency_ms: npt.ArrayLike, load_qps: npt.ArrayLike
    ) -> npt.NDArray[np.float64]:
        """P(response time > ``latency_ms``) at ``load_qps`` (broadcast together)."""
        load = _check_load(load_qps)
        return self._survival(latency_ms, load, self.wait_probability(load))

    def _survival(
        self,
        latency_ms: npt.ArrayLike,
        load: npt.NDArray[np.float64],
        waits: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]:
        t = np.asarray(latency_ms, dtype=np.float64) / 1000.0
        mu = self.service_rate_per_second
        theta = self.saturation_qps - load  # rate of the exponential wait, given a wait
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            gap = mu - theta
            near = np.abs(gap) < 1e-9 * mu
            safe_gap = np.where(near, 1.0, gap)
            both = np.where(
                near,
                (1.0 + mu * t) * np.exp(-mu * t),
                (mu * np.exp(-theta * t) - theta * np.exp(-mu * t)) / safe_gap,
            )
            survival = (1.0 - waits) * np.exp(-mu * t) + waits * both
        survival = np.where(theta <= 0, 1.0, survival)
        return np.clip(survival, 0.0, 1.0)

    def latency_quantile_ms(
        self, load_qps: npt.ArrayLike, quantile: float = 0.99
    ) -> npt.NDArray[np.float64]:
        """The ``quantile`` of response time in ms at each load; inf at or above saturation."""
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
        load = _check_load(load_qps)
        mu = self.service_rate_per_second
        theta = np.maximum(self.saturation_qps - load, 0.0)
        stable = theta > 0
        # Upper bracket: the sum of two exponentials exceeds t with prob <= (1 + r t) e^{-r t}
        # for r = min(mu, theta); 50/r seconds is far beyond any quantile below 1 - 1e-15.
        rate = np.where(stable, np.minimum(mu, np.where(stable, theta, 1.0)), 1.0)
        low = np.zeros_like(load)
        high = 50.0 / rate * 1000.0 * max(1.0, -math.log10(1.0 - quantile))
        target = 1.0 - quantile
        waits = self.wait_probability(load)
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (low + high)
            above = self._survival(mid, load, waits) > target
            low = np.where(above, mid, low)
            high = np.where(above, high, mid)
        return np.where(stable, 0.5 * (low + high), np.inf)

    def capacity_qps(self, latency_objective_ms: float, quantile: float = 0.99) -> float:
        """Largest load whose latency ``quantile`` stays within ``latency_objective_ms``.

        Exact up to bisection tolerance; 0.0 when even an idle node misses the objective.
        """
        if not (math.isfinite(latency_objective_ms) and latency_objective_ms > 0):
            raise ValueError(
                f"latency_objective_ms must be a positive finite number, "
                f"got {latency_objective_ms!r}"
            )
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
        # The quantile keeps the objective exactly when P(latency > objective) <= 1 - quantile,
        # and that tail share grows with the load: bisect on it.
        target = 1.0 - quantile
        if self.latency_survival(latency_objective_ms, 0.0)[()] > target:
            return 0.0
        low, high = 0.0, self.saturation_qps
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (low + high)
            if self.latency_survival(latency_objective_ms, mid)[()] <= target:
                low = mid
            else:
                high = mid
        return low


def _check_load(load_qps: npt.ArrayLike) -> npt.NDArray[np.float64]:
    load = np.asarray(load_qps, dtype=np.float64)
    if np.any(np.isnan(load)) or np.any(load < 0):
        raise ValueError("load_qps must be non-negative and not NaN")
    return load
