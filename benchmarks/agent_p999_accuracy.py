"""P999 accuracy: tidemark's log-bucket histogram vs a 1,024-call reservoir (motan-go).

For heavy-tailed latency distributions, each trial is one reporting window of N calls.
The exact P999 is the nearest-rank value of the raw latencies (k = ceil(0.999 * N)).
Compared estimates:

- ``sketch``: tidemark's histogram (``agent.buckets``: 1 % relative accuracy);
- ``reservoir``: a uniform sample of at most 1,024 calls (Algorithm R, which is what
  go-metrics' UniformSample in motan-go keeps), with go-metrics' percentile formula
  (position ``p * (n + 1)``, linear interpolation; at n = 1,024 and p = 0.999 that is the
  sample maximum).

Reports the median, p95 and max of ``|estimate - exact| / exact`` over the trials. The
sketch is computed with numpy from the same bucket mapping; the first trial of every
distribution is cross-checked against ``agent.sketch.LogHistogram`` (must be equal).

Usage: .venv/bin/python benchmarks/agent_p999_accuracy.py [--calls 10000] [--trials 200]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from agent.buckets import INV_LOG_GAMMA, MIN_INDEX, MIN_TRACKED_MS, quantile_from_counts  # noqa: E402
from agent.sketch import LogHistogram  # noqa: E402

Q = 0.999
RESERVOIR = 1024

Generator = Callable[[np.random.Generator, int], np.ndarray]

DISTRIBUTIONS: dict[str, Generator] = {
    "lognormal(20ms, sigma 1)": lambda r, n: r.lognormal(math.log(20), 1.0, n),
    "pareto(alpha 1.5) * 10ms": lambda r, n: (r.pareto(1.5, n) + 1) * 10,
    "pareto(alpha 1.1) * 10ms": lambda r, n: (r.pareto(1.1, n) + 1) * 10,
    "weibull(shape 0.5) * 20ms": lambda r, n: r.weibull(0.5, n) * 20,
    "lognormal + 1% GC pauses 200-800ms": lambda r, n: np.where(
        r.random(n) < 0.01, r.uniform(200, 800, n), r.lognormal(math.log(15), 0.4, n)),
}


def exact_p999(values: np.ndarray) -> float:
    ordered = np.sort(values)
    return float(ordered[max(1, math.ceil(Q * len(ordered) - 1e-9)) - 1])


def sketch_p999(values: np.ndarray) -> float:
    index = np.where(values > MIN_TRACKED_MS,
                     np.ceil(np.log(np.maximum(values, MIN_TRACKED_MS)) * INV_LOG_GAMMA),
                     MIN_INDEX).astype(np.int64)
    buckets, counts = np.unique(index, return_counts=True)
    value = quantile_from_counts(dict(zip(buckets.tolist(), counts.tolist(), strict=True)), Q)
    assert value is not None
    return min(value, float(values.max()))  # the agent clamps to the exact max


def reservoir_p999(values: np.ndarray, rng: np.random.Generator) -> float:
    sample = values if len(values) <= RESERVOIR else rng.choice(values, RESERVOIR,
                                                                 replace=False)
    ordered = np.sort(sample)
    pos = Q * (len(ordered) + 1)
    if pos < 1:
        return float(ordered[0])
    if pos >= len(ordered):
        return float(ordered[-1])
    lower, upper = ordered[int(pos) - 1], ordered[int(pos)]
    return float(lower + (pos - math.floor(pos)) * (upper - lower))


def summary(errors: list[float]) -> dict[str, float]:
    arr = np.array(errors)
    return {"median": round(float(np.median(arr)), 4),
            "p95": round(float(np.percentile(arr, 95)), 4),
            "max": round(float(arr.max()), 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000, help="calls per window")
    parser.add_argument("--trials", type=int, default=200, help="windows per distribution")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    out: dict[str, object] = {}
    for name, draw in DISTRIBUTIONS.items():
        sketch_err: list[float] = []
        reservoir_err: list[float] = []
        for trial in range(args.trials):
            values = draw(rng, args.calls)
            exact = exact_p999(values)
            ours = sketch_p999(values)
            if trial == 0:
                hist = LogHistogram()
                for v in values.tolist():
                    hist.add(v)
                check = hist.quantile(Q)
                assert check is not None and abs(check - ours) <= 1e-9 * ours, (check, ours)
            sketch_err.append(abs(ours - exact) / exact)
            reservoir_err.append(abs(reservoir_p999(values, rng) - exact) / exact)
        out[name] = {"sketch": summary(sketch_err), "reservoir_1024": summary(reservoir_err)}
    print(json.dumps({"calls_per_window": args.calls, "trials": args.trials,
                      "relative_error_of_p999": out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
