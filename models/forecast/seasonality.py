"""Seasonal periods inferred from a series' sampling frequency.

Service traffic repeats every day and every week, so the periods are the number of samples
in a day and in a week, when the sampling interval divides them evenly.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

__all__ = ["infer_seasons", "validate_seasons"]

_DAY = pd.Timedelta(days=1)
_WEEK = pd.Timedelta(days=7)


def infer_seasons(freq: str | pd.DateOffset | pd.Timedelta) -> tuple[int, ...]:
    """Seasonal periods (samples per day, samples per week) for a sampling frequency.

    Hourly gives ``(24, 168)``, 5-minute ``(288, 2016)``, daily ``(7,)``; weekly and
    coarser, or intervals that do not divide a day, give ``()``.
    """
    try:
        step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        # Calendar frequencies (months, quarters, years) have no fixed length.
        offset = pd.tseries.frequencies.to_offset(freq)  # type: ignore[arg-type]
        name = offset.rule_code.upper()
        if name.startswith(("M", "BM", "SM")):
            return (12,)
        if name.startswith(("Q", "BQ")):
            return (4,)
        return ()
    if step <= pd.Timedelta(0):
        raise ValueError(f"sampling interval must be positive, got {freq!r}")
    seasons: list[int] = []
    if step < _DAY and _DAY % step == pd.Timedelta(0):
        seasons.append(int(_DAY // step))
    if step < _WEEK and _WEEK % step == pd.Timedelta(0):
        seasons.append(int(_WEEK // step))
    return tuple(seasons)


def validate_seasons(seasons: Iterable[int] | int | None) -> tuple[int, ...] | None:
    """Check user-given periods: integers >= 2, returned sorted and unique (None passes)."""
    if seasons is None:
        return None
    if isinstance(seasons, int):
        seasons = (seasons,)
    checked: list[int] = []
    for period in seasons:
        if isinstance(period, bool) or not isinstance(period, int):
            raise TypeError(f"seasonal periods must be integers, got {period!r}")
        if period < 2:
            raise ValueError(f"seasonal periods must be >= 2, got {period}")
        checked.append(period)
    return tuple(sorted(set(checked)))
