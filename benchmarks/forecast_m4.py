"""M4 hourly evaluation of the forecasters: accuracy (sMAPE, MASE, OWA vs Naive2), 95%
intervals (MSIS, coverage) and seconds for fit + predict of all 414 series.

The last 48 points of each training series are the holdout (the competition's horizon);
models see only the points before it. Run from the repository root:

    .venv/bin/python benchmarks/forecast_m4.py                 # naive2, snaive, gbm, auto
    .venv/bin/python benchmarks/forecast_m4.py --models auto hw mstl --limit 100

Prints one markdown table row per model (paste into docs/benchmarks.md) and, with --json,
writes the figures to a file.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from models.forecast import (
    AutoForecaster,
    ForecastWarning,
    GlobalGBMForecaster,
    HoltWintersForecaster,
    MSTLForecaster,
    SeasonalNaiveForecaster,
)
from models.forecast.m4 import (
    M4_HOURLY_HORIZON,
    M4_HOURLY_SEASON,
    coverage,
    m4_frame_to_series,
    mase,
    msis,
    naive2_forecast,
    owa,
    smape,
)

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/m4/Hourly-train.csv"
H = M4_HOURLY_HORIZON
M = M4_HOURLY_SEASON
# M4 has synthetic timestamps, so calendar features would only add noise.
GBM_PARAMS = {"calendar": False}

Forecasts = dict[str, pd.DataFrame]


def per_series(factory: Callable[[], object]) -> Callable[[dict[str, pd.Series]], Forecasts]:
    def run(history: dict[str, pd.Series]) -> Forecasts:
        return {name: factory().fit(y).predict(H) for name, y in history.items()}  # type: ignore[attr-defined]

    return run


def naive2(history: dict[str, pd.Series]) -> Forecasts:
    out = {}
    for name, y in history.items():
        mean = naive2_forecast(y.to_numpy(), H, M)
        index = pd.date_range(y.index[-1], periods=H + 1, freq=y.index.freq)[1:]
        out[name] = pd.DataFrame({"mean": mean, "lower": np.nan, "upper": np.nan}, index=index)
    return out


def gbm(history: dict[str, pd.Series]) -> Forecasts:
    return GlobalGBMForecaster(**GBM_PARAMS).fit_many(history).predict_many(H)


def auto(history: dict[str, pd.Series]) -> Forecasts:
    return AutoForecaster(gbm_params=GBM_PARAMS).fit_many(history).predict_many(H)


MODELS: dict[str, Callable[[dict[str, pd.Series]], Forecasts]] = {
    "naive2": naive2,
    "snaive": per_series(SeasonalNaiveForecaster),
    "gbm": gbm,
    "auto": auto,
    "hw": per_series(lambda: HoltWintersForecaster(initialization_method="heuristic")),
    "mstl": per_series(MSTLForecaster),
}


def evaluate(
    forecasts: Forecasts, history: dict[str, pd.Series], actual: dict[str, np.ndarray]
) -> dict[str, float]:
    s, m, ms, cov = [], [], [], []
    for name, frame in forecasts.items():
        insample = history[name].to_numpy()
        s.append(smape(actual[name], frame["mean"]))
        m.append(mase(actual[name], frame["mean"], insample, M))
        if frame["lower"].notna().all():
            ms.append(msis(actual[name], frame["lower"], frame["upper"], insample, M))
            cov.append(coverage(actual[name], frame["lower"], frame["upper"]))
    return {
        "smape": float(np.mean(s)),
        "mase": float(np.mean(m)),
        "msis": float(np.mean(ms)) if ms else float("nan"),
        "coverage": float(np.mean(cov)) if cov else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", nargs="+", default=["naive2", "snaive", "gbm", "auto"])
    parser.add_argument("--limit", type=int, default=None, help="first N series only")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    if not args.data.exists():
        parser.error(f"{args.data} is not present")
    series = m4_frame_to_series(pd.read_csv(args.data, nrows=args.limit))
    history = {name: y.iloc[:-H] for name, y in series.items()}
    actual = {name: y.iloc[-H:].to_numpy() for name, y in series.items()}
    reference = evaluate(naive2(history), history, actual)
    results: dict[str, dict[str, float]] = {}
    print(f"{len(series)} series, horizon {H}, season {M}")
    print("| model | sMAPE | MASE | OWA | MSIS (95%) | coverage | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model in args.models:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ForecastWarning)
            start = time.perf_counter()
            forecasts = MODELS[model](history)
            seconds = time.perf_counter() - start
        figures = evaluate(forecasts, history, actual)
        figures["owa"] = owa(
            figures["smape"], figures["mase"], reference["smape"], reference["mase"]
        )
        figures["seconds"] = seconds
        results[model] = figures
        print(
            f"| {model} | {figures['smape']:.3f} | {figures['mase']:.3f} | {figures['owa']:.3f} "
            f"| {figures['msis']:.2f} | {figures['coverage']:.3f} | {seconds:.1f} |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"n_series": len(series), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
