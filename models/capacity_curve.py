"""Capacity curve: the largest per-node load that keeps a latency objective.

:class:`CapacityCurve` learns a monotone load-to-latency curve from per-node observations
(load in qps, latency as p99 or p999 in ms, one pair per reporting interval) and returns the
load where the curve reaches the objective, with a block-bootstrap uncertainty range.

How it works:

1. Observations are cut into equal-count load bins; each bin gives its median load and the
   ``quantile`` of its latencies (0.5: the typical reported p99 at that load).
2. An isotonic (non-decreasing) regression through the bins is the measured curve. If it
   crosses the objective inside the observed load range, the crossing is the capacity.
3. Otherwise a queueing-shaped curve ``a + b / (1 - load / s) ** k`` (saturation load ``s``
   and sharpness ``k`` found by grid search; ``a`` and ``b`` by weighted least squares on
   the bins) is extrapolated to the objective, provided the measured curve has already
   risen ``min_rise`` of the way from its light-load latency to the objective and the whole
   uncertainty range lies within ``max_extrapolation`` times the highest observed load.
   Otherwise the data never came near saturation: the status says so and the configured
   capacity is returned instead of a blind extrapolation.
4. The uncertainty range repeats steps 1-3 on moving-block bootstrap resamples of the time
   series (blocks keep the autocorrelation of neighbouring intervals).

Statuses (``status_``):

``measured``
    the data reach the objective, or come close enough to extrapolate.
``not_near_saturation``
    the latency never rose enough; ``capacity_`` is ``configured_capacity`` (or, without one,
    the highest load observed to keep the objective, a safe lower bound).
``objective_violated``
    even the lightest observed loads miss the objective; ``capacity_`` is 0.0 and
    ``capacity_upper_`` the lightest observed load. Treat it as an alarm, not a capacity.
``insufficient_data``
    too few valid observations, or a load that barely varies; ``capacity_`` falls back as for
    ``not_near_saturation`` (NaN when there is nothing to fall back on).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.isotonic import isotonic_regression
from sklearn.utils.validation import check_is_fitted

__all__ = ["CapacityCurve", "CapacityEstimate", "CapacityStatus"]

CapacityStatus = Literal[
    "measured", "not_near_saturation", "objective_violated", "insufficient_data"
]

# Saturation candidates for the queueing-shaped curve, as multiples of the highest bin load.
_SATURATION_GRID = 1.0 + np.geomspace(1e-3, 50.0, 240)
_EXPONENTS = np.array([1.0, 1.5, 2.0, 3.0])
# Share of the extrapolated distance added to each side of an extrapolated range.
_EXTRAPOLATION_MARGIN = 0.5
# Latencies reported as +inf (timeouts, overload) count as this many objectives.
_INF_LATENCY_OBJECTIVES = 10.0


@dataclass(frozen=True)
class CapacityEstimate:
    """The result of :meth:`CapacityCurve.fit`, as one record.

    Attributes:
        capacity: the per-node load to plan with (same unit as the load given to ``fit``).
        lower: lower end of the uncertainty range.
        upper: upper end of the uncertainty range (inf when the data cannot bound it).
        status: one of :data:`CapacityStatus`.
        reason: one readable sentence explaining the status.
        latency_objective_ms: the objective the capacity keeps.
        max_observed_load: the highest load among the valid observations.
        n_observations: valid (load, latency) pairs used.
        n_dropped: pairs dropped because the load or latency was NaN.
    """

    capacity: float
    lower: float
    upper: float
    status: CapacityStatus
    reason: str
    latency_objective_ms: float
    max_observed_load: float
    n_observations: int
    n_dropped: int

    @property
    def saturated(self) -> bool:
        """True when the capacity was measured from the data (not a fallback)."""
        return self.status == "measured"


@dataclass(frozen=True)
class _Curve:
    """Binned curve of one (re)sample: bin loads, isotonic latencies, queueing fit."""

    loads: npt.NDArray[np.float64]
    latencies: npt.NDArray[np.float64]
    offset: float  # a
    scale: float  # b
    saturation: float  # s
    exponent: float  # k

    def queueing(self, load: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        with np.errstate(divide="ignore", invalid="ignore"):
            value = self.offset + self.scale / (1.0 - load / self.saturation) ** self.exponent
        return np.where(load < self.saturation, value, np.inf)


class CapacityCurve(BaseEstimator):  # type: ignore[misc]
    """Learn the largest per-node load that keeps a latency objective.

    Parameters:
        latency_objective_ms: the latency the node must keep (compared with the latency
            series given to ``fit``, e.g. its p99), in milliseconds.
        quantile: which quantile of the reported latencies at one load must keep the
            objective: 0.5 (default) plans for the typical interval, 0.9 for nine in ten.
        configured_capacity: the capacity to fall back on when the data cannot measure it.
        coverage: probability that the uncertainty range covers the true capacity.
        max_extrapolation: how far beyond the highest observed load the queueing-shaped curve
            may be extrapolated (a ratio >= 1); beyond it the data are "not near saturation".
        min_rise: share of the way from light-load latency to the objective the measured
            curve must have risen before extrapolating (0 to 1); less is "not near saturation".
        n_bins: load bins (fewer when there are fewer than 10 observations per bin).
        n_bootstrap: bootstrap resamples for the uncertainty range (0 turns it off).
        block_size: observations per bootstrap block (e.g. 60 one-minute intervals).
        min_observations: fewer valid observations than this give ``insufficient_data``.
        random_state: seed of the bootstrap.

    Attributes (after ``fit``): ``estimate_`` (:class:`CapacityEstimate`), ``capacity_``,
    ``capacity_lower_``, ``capacity_upper_``, ``status_``, ``reason_``, ``saturated_``,
    ``curve_loads_`` and ``curve_latencies_ms_`` (the isotonic curve's knots; empty when no
    curve could be fitted) and ``queueing_params_`` (``offset_ms``, ``scale_ms``,
    ``saturation_load`` and ``exponent`` of the queueing-shaped curve, or empty).
    """

    def __init__(
        self,
        *,
        latency_objective_ms: float = 100.0,
        quantile: float = 0.5,
        configured_capacity: float | None = None,
        coverage: float = 0.9,
        max_extrapolation: float = 1.25,
        min_rise: float = 0.2,
        n_bins: int = 40,
        n_bootstrap: int = 200,
        block_size: int = 60,
        min_observations: int = 30,
        random_state: int | None = 0,
    ) -> None:
        self.latency_objective_ms = latency_objective_ms
        self.quantile = quantile
        self.configured_capacity = configured_capacity
        self.coverage = coverage
        self.max_extrapolation = max_extrapolation
        self.min_rise = min_rise
        self.n_bins = n_bins
        self.n_bootstrap = n_bootstrap
        self.block_size = block_size
        self.min_observations = min_observations
        self.random_state = random_state

    # ------------------------------------------------------------------ fit

    def fit(
        self, load: npt.ArrayLike | pd.Series, latency: npt.ArrayLike | pd.Series
    ) -> CapacityCurve:
        """Learn the curve from per-interval ``load`` and ``latency`` (ms), in time order.

        Series with a DatetimeIndex are aligned on their index and sorted by time. Pairs with
        a NaN are dropped; +inf latency (timeouts) counts as far above the objective.
        Returns ``self``.
        """
        self._check_params()
        x, y, dropped = _clean_pairs(load, latency)
        objective = float(self.latency_objective_ms)
        y = np.where(np.isinf(y), max(_INF_LATENCY_OBJECTIVES * objective, _finite_max(y)), y)
        n = x.size
        self.curve_loads_ = np.empty(0)
        self.curve_latencies_ms_ = np.empty(0)
        self.queueing_params_: dict[str, float] = {}
        max_load = float(x.max()) if n else math.nan

        if n < self.min_observations:
            return self._finish(
                "insufficient_data",
                f"only {n} valid observations (min_observations={self.min_observations})",
                x,
                y,
                dropped,
            )
        if (
            float(x.max() - x.min()) <= 1e-9 * max(abs(float(x.max())), 1e-300)
            or np.unique(x).size < 3
        ):
            return self._finish(
                "insufficient_data",
                f"load barely varies ({float(x.min()):.6g} to {max_load:.6g}), "
                "so no curve can be fitted",
                x,
                y,
                dropped,
            )

        curve = self._curve(x, y)
        self.curve_loads_ = curve.loads
        self.curve_latencies_ms_ = curve.latencies
        self.queueing_params_ = {
            "offset_ms": curve.offset,
            "scale_ms": curve.scale,
            "saturation_load": curve.saturation,
            "exponent": curve.exponent,
        }
        self._curve_ = curve
        point, how = self._capacity_from_curve(curve)
        if how == "violated":
            return self._finish(
                "objective_violated",
                f"latency already exceeds the {objective:g} ms objective at the lightest "
                f"observed loads (around {curve.loads[0]:.6g})",
                x,
                y,
                dropped,
                lower=0.0,
                upper=float(x.min()),
                capacity=0.0,
            )

        base = float(curve.latencies[0])
        rise = (float(curve.latencies[-1]) - base) / (objective - base) if objective > base else 1.0
        if how == "extrapolated" and rise < self.min_rise:
            return self._finish(
                "not_near_saturation",
                f"latency kept the {objective:g} ms objective up to the highest observed load "
                f"({max_load:.6g}) and rose only {100.0 * rise:.0f}% of the way from "
                f"{base:.4g} ms towards it (min_rise={self.min_rise:g})",
                x,
                y,
                dropped,
                lower=max_load,
                upper=math.inf,
            )
        lower, upper = self._bootstrap(x, y, point)
        if how == "extrapolated" and math.isfinite(point):
            # The curve's shape beyond the data is an assumption: widen the range by a share
            # of the extrapolated distance on each side.
            margin = _EXTRAPOLATION_MARGIN * (point - float(curve.loads[-1]))
            lower, upper = min(lower, point - margin), max(upper, point + margin)
        if math.isfinite(point):
            # The curve is only known at its knots: the range is at least half the spacing
            # of the knots around the crossing (or of the last two) on each side.
            above = np.flatnonzero(curve.latencies > objective)
            i = int(above[0]) if above.size else curve.loads.size - 1
            half_gap = 0.5 * float(curve.loads[i] - curve.loads[i - 1])
            lower, upper = min(lower, point - half_gap), max(upper, point + half_gap)
        reach = max_load * float(self.max_extrapolation)
        if how == "crossed":
            return self._finish(
                "measured",
                f"latency reaches the {objective:g} ms objective at {point:.6g} within the "
                f"observed loads (up to {max_load:.6g})",
                x,
                y,
                dropped,
                lower=lower,
                upper=upper,
                capacity=point,
            )
        if math.isfinite(point) and upper <= reach:
            return self._finish(
                "measured",
                f"extrapolated {100.0 * (point / float(curve.loads[-1]) - 1.0):.1f}% beyond the "
                f"heaviest load bin ({float(curve.loads[-1]):.6g}) along a queueing-shaped curve",
                x,
                y,
                dropped,
                lower=lower,
                upper=upper,
                capacity=point,
            )
        return self._finish(
            "not_near_saturation",
            f"latency kept the {objective:g} ms objective up to the highest observed load "
            f"({max_load:.6g}); the uncertainty range reaches {upper:.6g}, beyond "
            f"max_extrapolation={self.max_extrapolation:g}x of it",
            x,
            y,
            dropped,
            lower=max_load,
            upper=math.inf,
        )

    def _check_params(self) -> None:
        def positive_finite(name: str, value: object) -> None:
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not (math.isfinite(float(value)) and float(value) > 0)
            ):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")

        def integer(name: str, value: object, minimum: int) -> None:
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Integral)
                or int(value) < minimum
            ):
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

        positive_finite("latency_objective_ms", self.latency_objective_ms)
        if (
            isinstance(self.min_rise, bool)
            or not isinstance(self.min_rise, numbers.Real)
            or not (0.0 <= float(self.min_rise) < 1.0)
        ):
            raise ValueError(f"min_rise must be a number in [0, 1), got {self.min_rise!r}")
        for name in ("quantile", "coverage"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not 0.0 < float(value) < 1.0
            ):
                raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
        if self.configured_capacity is not None:
            positive_finite("configured_capacity", self.configured_capacity)
        positive_finite("max_extrapolation", self.max_extrapolation)
        if self.max_extrapolation < 1.0:
            raise ValueError(f"max_extrapolation must be >= 1, got {self.max_extrapolation!r}")
        integer("n_bins", self.n_bins, 3)
        integer("n_bootstrap", self.n_bootstrap, 0)
        integer("block_size", self.block_size, 1)
        integer("min_observations", self.min_observations, 3)

    # ----------------------------------------------------------- the curve

    def _curve(self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> _Curve:
        """Bin, take the latency quantile per bin, fit isotonic and queueing-shaped curves."""
        n = x.size
        n_bins = max(3, min(int(self.n_bins), n // 10))
        order = np.argsort(x, kind="stable")
        xs, ys = x[order], y[order]
        bin_id = (np.arange(n) * n_bins) // n
        starts = np.searchsorted(bin_id, np.arange(n_bins))
        counts = np.diff(np.append(starts, n))
        loads = _grouped_quantile(xs, bin_id, starts, counts, 0.5)
        lat = _grouped_quantile(ys, bin_id, starts, counts, float(self.quantile))
        fitted = isotonic_regression(lat, sample_weight=counts.astype(np.float64), increasing=True)
        params = _fit_queueing(loads, fitted, counts.astype(np.float64))
        return _Curve(np.asarray(loads), np.asarray(fitted), *params)

    def _capacity_from_curve(self, curve: _Curve) -> tuple[float, str]:
        """(capacity, how) with how in {"crossed", "extrapolated", "violated"}."""
        objective = float(self.latency_objective_ms)
        above = np.flatnonzero(curve.latencies > objective)
        if above.size:
            i = int(above[0])
            if i == 0:
                return 0.0, "violated"
            x0, x1 = curve.loads[i - 1], curve.loads[i]
            y0, y1 = curve.latencies[i - 1], curve.latencies[i]
            # Interpolate 1/latency, which is linear in load for a queueing-shaped curve,
            # so the estimate does not undershoot where the curve turns steep.
            frac = (1.0 / y0 - 1.0 / objective) / (1.0 / y0 - 1.0 / y1) if y0 > 0 else 1.0
            return float(x0 + frac * (x1 - x0)), "crossed"
        top = float(curve.loads[-1])
        if curve.scale <= 0 or objective <= curve.offset:
            return math.inf, "extrapolated"
        ratio = (curve.scale / (objective - curve.offset)) ** (1.0 / curve.exponent)
        crossing = curve.saturation * (1.0 - ratio)
        return max(crossing, top), "extrapolated"

    def _bootstrap(
        self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], point: float
    ) -> tuple[float, float]:
        """Coverage range of the capacity over moving-block bootstrap resamples."""
        if self.n_bootstrap == 0:
            return point, point
        rng = np.random.default_rng(self.random_state)
        n = x.size
        block = min(int(self.block_size), n)
        n_blocks = -(-n // block)
        estimates = np.empty(int(self.n_bootstrap))
        for r in range(estimates.size):
            starts = rng.integers(0, n - block + 1, size=n_blocks)
            idx = (starts[:, None] + np.arange(block)[None, :]).ravel()[:n]
            xr, yr = x[idx], y[idx]
            if np.unique(xr).size < 3:
                estimates[r] = math.inf
                continue
            estimates[r] = self._capacity_from_curve(self._curve(xr, yr))[0]
        tail = (1.0 - float(self.coverage)) / 2.0
        finite = estimates[np.isfinite(estimates)]
        if finite.size < estimates.size * (1.0 - tail):
            # inf - inf would spoil interpolation: take the order statistic.
            return float(np.sort(estimates)[int(tail * (estimates.size - 1))]), math.inf
        # Resampling shifts the estimates (it thins out the rare peak intervals), so use the
        # bootstrap for the spread only and centre the range on the full-data estimate.
        low, mid, high = np.quantile(finite, [tail, 0.5, 1.0 - tail])
        return max(0.0, float(point - (mid - low))), float(point + (high - mid))

    def _finish(
        self,
        status: CapacityStatus,
        reason: str,
        x: npt.NDArray[np.float64],
        y: npt.NDArray[np.float64],
        dropped: int,
        *,
        lower: float = math.nan,
        upper: float = math.nan,
        capacity: float | None = None,
    ) -> CapacityCurve:
        objective = float(self.latency_objective_ms)
        if capacity is None:  # a fallback, not a measurement
            if self.configured_capacity is not None:
                capacity = float(self.configured_capacity)
                reason += f"; using the configured capacity {capacity:.6g}"
            else:
                kept = x[y <= objective]
                capacity = float(kept.max()) if kept.size else math.nan
                reason += (
                    "; no configured capacity, so using the highest load observed to keep the "
                    f"objective ({capacity:.6g})"
                    if kept.size
                    else "; nothing to fall back on"
                )
        self.estimate_ = CapacityEstimate(
            capacity=float(capacity),
            lower=float(lower),
            upper=float(upper),
            status=status,
            reason=reason,
            latency_objective_ms=objective,
            max_observed_load=float(x.max()) if x.size else math.nan,
            n_observations=int(x.size),
            n_dropped=int(dropped),
        )
        self.capacity_ = self.estimate_.capacity
        self.capacity_lower_ = self.estimate_.lower
        self.capacity_upper_ = self.estimate_.upper
        self.status_: CapacityStatus = status
        self.reason_ = self.estimate_.reason
        self.saturated_ = self.estimate_.saturated
        return self

    # ------------------------------------------------------------- predict

    def predict_latency(
        self, load: npt.ArrayLike | pd.Series
    ) -> npt.NDArray[np.float64] | pd.Series:
        """Latency (ms) the curve expects at ``load``; a Series keeps its index.

        Inside the observed range this is the isotonic curve; beyond it, the queueing-shaped
        curve continued from the last knot (inf at or past its saturation load); below it, the
        lightest bin's latency.
        """
        check_is_fitted(self, "estimate_")
        if self.curve_loads_.size == 0:
            raise ValueError(f"no latency curve was fitted: {self.reason_}")
        values = np.asarray(load, dtype=np.float64)
        if np.any(np.isnan(values)) or np.any(values < 0):
            raise ValueError("load must be non-negative and not NaN")
        knots_x, knots_y = self.curve_loads_, self.curve_latencies_ms_
        inside = np.interp(values, knots_x, knots_y)
        top = knots_x[-1]
        curve = self._curve_
        beyond = (
            knots_y[-1] + curve.queueing(np.maximum(values, top)) - curve.queueing(np.array(top))
        )
        result = np.where(values > top, beyond, inside)
        if isinstance(load, pd.Series):
            return pd.Series(result, index=load.index, name="latency_ms")
        return result


# ---------------------------------------------------------------- helpers


def _clean_pairs(
    load: npt.ArrayLike | pd.Series, latency: npt.ArrayLike | pd.Series
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], int]:
    """Validate, align and time-order the inputs; drop pairs with a NaN."""
    if isinstance(load, pd.Series) and isinstance(latency, pd.Series):
        if not load.index.equals(latency.index):
            if not (load.index.is_unique and latency.index.is_unique):
                raise ValueError(
                    "load and latency have different indexes with duplicates; align them first"
                )
            load, latency = load.align(latency, join="inner")
        if isinstance(load.index, pd.DatetimeIndex) and not load.index.is_monotonic_increasing:
            order = np.argsort(load.index.asi8, kind="stable")
            load, latency = load.iloc[order], latency.iloc[order]
    x = _as_float_vector(load, "load")
    y = _as_float_vector(latency, "latency")
    if x.size != y.size:
        raise ValueError(f"load and latency must have the same length, got {x.size} and {y.size}")
    if np.isinf(x).any():
        raise ValueError("load must be finite (found inf)")
    if np.isneginf(y).any():
        raise ValueError("latency must not be -inf")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if (x < 0).any():
        raise ValueError(f"load must be non-negative (found {int((x < 0).sum())} negative values)")
    if (y < 0).any():
        raise ValueError(
            f"latency must be non-negative (found {int((y < 0).sum())} negative values)"
        )
    return x, y, int((~keep).sum())


def _as_float_vector(values: npt.ArrayLike | pd.Series, name: str) -> npt.NDArray[np.float64]:
    if isinstance(values, str | bytes) or np.isscalar(values):
        raise TypeError(f"{name} must be a 1-D array-like of numbers, got {type(values).__name__}")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must contain only numbers: {exc}") from exc
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array


def _finite_max(values: npt.NDArray[np.float64]) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else 0.0


def _grouped_quantile(
    values: npt.NDArray[np.float64],
    group: npt.NDArray[np.int64],
    starts: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int64],
    q: float,
) -> npt.NDArray[np.float64]:
    """The ``q`` quantile (linear interpolation) of ``values`` within contiguous groups."""
    ordered = values[np.lexsort((values, group))]
    position = starts + q * (counts - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, starts + counts - 1)
    frac = position - below
    return ordered[below] * (1.0 - frac) + ordered[above] * frac


def _fit_queueing(
    loads: npt.NDArray[np.float64],
    latencies: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
) -> tuple[float, float, float, float]:
    """Fit ``latency = a + b / (1 - load / s) ** k`` with b >= 0 by relative least squares.

    ``s`` and ``k`` are searched on a grid (``s`` above the highest load); for each candidate
    ``a`` and ``b`` have a closed form (weighted least squares, weights
    ``count / latency**2``). Returns ``(a, b, s, k)``.
    """
    w = weights / np.maximum(latencies, 1e-12) ** 2
    top = loads[-1] if loads[-1] > 0 else 1.0
    s = np.repeat(top * _SATURATION_GRID, _EXPONENTS.size)
    k = np.tile(_EXPONENTS, _SATURATION_GRID.size)
    z = (1.0 / (1.0 - loads[None, :] / s[:, None])) ** k[:, None]  # (grid, bins)
    sw = w.sum()
    mean_z = (w * z).sum(axis=1) / sw
    mean_y = (w * latencies).sum() / sw
    dz = z - mean_z[:, None]
    var_z = (w * dz * dz).sum(axis=1)
    cov = (w * dz * (latencies - mean_y)[None, :]).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(var_z > 0, cov / var_z, 0.0)
    b = np.maximum(b, 0.0)
    a = mean_y - b * mean_z
    resid = latencies[None, :] - a[:, None] - b[:, None] * z
    loss = (w * resid * resid).sum(axis=1)
    best = int(np.argmin(loss))
    return float(a[best]), float(b[best]), float(s[best]), float(k[best])
