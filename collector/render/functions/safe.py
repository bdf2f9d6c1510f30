"""None-tolerant arithmetic and the aggregation functions (graphite's safe.py/aggfuncs.py)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import reduce
from typing import Any

from collector.render.errors import InputParameterError

__all__ = [
    "safe_sum", "safe_diff", "safe_len", "safe_div", "safe_mul", "safe_subtract", "safe_avg",
    "safe_avg_zero", "safe_median", "safe_std_dev", "safe_last", "safe_min", "safe_max",
    "safe_abs", "AGG_FUNCS", "AGG_FUNC_ALIASES", "get_agg_func", "Values",
]

Values = Sequence[Any]


def _present(values: Values) -> list[Any]:
    return [v for v in values if v is not None]


def safe_sum(values: Values) -> Any:
    present = _present(values)
    return sum(present) if present else None


def safe_diff(values: Values) -> Any:
    present = _present(values)
    if not present:
        return None
    return sum([present[0]] + [x * -1 for x in present[1:]])


def safe_len(values: Values) -> int:
    return len(_present(values))


def safe_div(a: Any, b: Any) -> Any:
    if a is None or b in (0, None):
        return None
    return a / b


def safe_mul(*factors: Any) -> Any:
    if None in factors:
        return None
    return reduce(lambda x, y: x * y, [float(x) for x in factors])


def safe_subtract(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    return float(a) - float(b)


def safe_avg(values: Values) -> Any:
    present = _present(values)
    return sum(present) / len(present) if present else None


def safe_avg_zero(values: Values) -> Any:
    if values:
        return sum(0 if v is None else v for v in values) / len(values)
    return None


def safe_median(values: Values) -> Any:
    present = sorted(_present(values))
    if not present:
        return None
    mid = len(present) // 2
    if len(present) % 2 == 0:
        return float(present[mid - 1] + present[mid]) / 2
    return present[mid]


def safe_std_dev(values: Values) -> Any:
    total, count = safe_sum(values), safe_len(values)
    avg = safe_div(total, count)
    if avg is None:
        return None
    acc = 0
    for val in _present(values):
        acc = acc + (val - avg) * (val - avg)
    return math.sqrt(acc / count)


def safe_last(values: Values) -> Any:
    for v in reversed(values):
        if v is not None:
            return v
    return None


def safe_min(values: Values, default: Any = None) -> Any:
    present = _present(values)
    return min(present) if present else default


def safe_max(values: Values, default: Any = None) -> Any:
    present = _present(values)
    return max(present) if present else default


def safe_abs(value: Any) -> Any:
    return None if value is None else abs(value)


AGG_FUNCS: dict[str, Callable[[Values], Any]] = {
    "average": safe_avg,
    "avg_zero": safe_avg_zero,
    "median": safe_median,
    "sum": safe_sum,
    "min": safe_min,
    "max": safe_max,
    "diff": safe_diff,
    "stddev": safe_std_dev,
    "count": safe_len,
    "range": lambda row: safe_subtract(safe_max(row), safe_min(row)),
    "multiply": lambda row: safe_mul(*row),
    "last": safe_last,
}

AGG_FUNC_ALIASES: dict[str, Callable[[Values], Any]] = {
    "rangeOf": AGG_FUNCS["range"],
    "avg": AGG_FUNCS["average"],
    "total": AGG_FUNCS["sum"],
    "current": AGG_FUNCS["last"],
}


def get_agg_func(name: str, raw_name: str | None = None) -> Callable[[Values], Any]:
    """The aggregation called ``name``; 400 naming it when unknown."""
    if name in AGG_FUNCS:
        return AGG_FUNCS[name]
    if name in AGG_FUNC_ALIASES:
        return AGG_FUNC_ALIASES[name]
    raise InputParameterError(f"Unsupported aggregation function: {raw_name or name}")
