"""Fleet speed: 1,000 series of 14 days at 5-minute resolution, fit + predict with intervals.

Synthetic service traffic (daily double peak, weekend dip, multiplicative noise, some
trends and level shifts), made here with a fixed seed. Each series' last day (288 points)
is held out; the models forecast it from the 13 days before, and the accuracy (sMAPE,
MASE with m = 288, 95% coverage, MSIS) is printed beside the seconds. Run from the root:

    .venv/bin/python benchmarks/forecast_fleet.py [--series 1000] [--days 14]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from models.forecast import AutoForecaster, ForecastWarning, SeasonalNaiveForecaster
from models.forecast.m4 import coverage, mase, msis, smape

STEPS_PER_DAY = 288
HORIZON = STEPS_PER_DAY


def synthetic_fleet(
    n_series: int, days: int, seed: int = 0, start: str = "2024-03-08"
) -> dict[str, pd.Series]:
    """Request rates of ``n_series`` services, 5-minute samples, ``days`` days."""
    rng = np.random.default_rng(seed)
    # Starts on a Friday: with 14 days the held-out last day and the two calibration days
    # before it are Tuesday to Thursday (see docs/benchmarks.md for a weekend holdout).
    index = pd.date_range(start, periods=days * STEPS_PER_DAY, freq="5min")
    hour = np.asarray(index.hour + index.minute / 60.0)
    weekend = np.asarray(index.day_of_week >= 5)
    position = np.arange(index.size)
    fleet: dict[str, pd.Series] = {}
    for k in range(n_series):
        level = rng.lognormal(5, 1.2)
        morning, evening = rng.uniform(9, 12), rng.uniform(19, 22)
        shape = (
            0.35
            + 0.6 * np.exp(-0.5 * ((hour - morning) / 2.0) ** 2)
            + 0.8 * np.exp(-0.5 * ((hour - evening) / 1.5) ** 2)
        )
        shape = shape * np.where(weekend, rng.uniform(0.6, 1.2), 1.0)
        trend = 1 + rng.normal(0, 0.02) * position / STEPS_PER_DAY
        values = level * shape * trend
        if rng.random() < 0.1:  # a deployment moved this service's traffic
            values[rng.integers(index.size // 3, index.size - 2 * STEPS_PER_DAY) :] *= rng.uniform(
                0.6, 1.6
            )
        noise = rng.normal(1, rng.uniform(0.03, 0.12), index.size)
        fleet[f"svc{k:04d}"] = pd.Series(np.maximum(values * noise, 0.0), index=index)
    return fleet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--start", default="2024-03-08", help="first day (default a Friday)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.series < 1 or args.days < 3:
        parser.error("need at least 1 series and 3 days")
    fleet = synthetic_fleet(args.series, args.days, start=args.start)
    history = {name: y.iloc[:-HORIZON] for name, y in fleet.items()}
    actual = {name: y.iloc[-HORIZON:].to_numpy() for name, y in fleet.items()}
    results: dict[str, dict[str, float]] = {}
    last_day = fleet[next(iter(fleet))].index[-1].day_name()
    print(f"{args.series} series x {args.days} days at 5 min; horizon {HORIZON} ({last_day})")
    print("| model | seconds | sMAPE | MASE | MSIS (95%) | coverage |")
    print("| --- | --- | --- | --- | --- | --- |")
    runs = {
        "snaive": lambda: {
            n: SeasonalNaiveForecaster().fit(y).predict(HORIZON) for n, y in history.items()
        },
        "auto (fit_many)": lambda: (
            AutoForecaster(backtest_horizon=HORIZON).fit_many(history).predict_many(HORIZON)
        ),
    }
    for label, run in runs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ForecastWarning)
            start = time.perf_counter()
            forecasts = run()
            seconds = time.perf_counter() - start
        s, m, ms, cov = [], [], [], []
        for name, frame in forecasts.items():
            insample = history[name].to_numpy()
            s.append(smape(actual[name], frame["mean"]))
            m.append(mase(actual[name], frame["mean"], insample, STEPS_PER_DAY))
            ms.append(msis(actual[name], frame["lower"], frame["upper"], insample, STEPS_PER_DAY))
            cov.append(coverage(actual[name], frame["lower"], frame["upper"]))
        figures = {
            "seconds": seconds,
            "smape": float(np.mean(s)),
            "mase": float(np.mean(m)),
            "msis": float(np.mean(ms)),
            "coverage": float(np.mean(cov)),
        }
        results[label] = figures
        print(
            f"| {label} | {seconds:.1f} | {figures['smape']:.3f} | {figures['mase']:.3f} "
            f"| {figures['msis']:.2f} | {figures['coverage']:.3f} |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
