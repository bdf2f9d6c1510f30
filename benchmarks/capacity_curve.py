"""CapacityCurve accuracy and speed on simulated M/M/c nodes whose true capacity is known.

For every (servers, service time, objective, peak share, latency noise, seed) it generates a
weekday of one node's one-minute traffic with models.synthetic.generate_traffic, fits
CapacityCurve on (qps_per_node, latency_p99_ms) and compares the estimate with the exact
capacity from MMcNode.capacity_qps. Prints one Markdown table per peak share and the fit
times. Pure CPU; no peers.

    .venv/bin/python benchmarks/capacity_curve.py [--seeds 4] [--bootstrap 200]
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.capacity_curve import CapacityCurve  # noqa: E402
from models.synthetic import MMcNode, generate_traffic  # noqa: E402

SERVERS = (1, 4, 16, 64)
# The service time only rescales load and latency (objectives are set relative to an idle
# node's p99), so one value suffices; seeds give the variety.
SERVICE_TIMES_MS = (10.0,)
OBJECTIVE_OVER_IDLE = (1.5, 2.5, 4.0)  # objective as a multiple of an idle node's p99
PEAK_SHARES = (1.08, 0.95, 0.85, 0.5)  # daily peak as a share of the true capacity
NOISES = (0.05, 0.15)


def run(seeds: int, n_bootstrap: int) -> int:
    rows: list[dict[str, float | str | bool]] = []
    for servers, service_ms, over, peak, noise, seed in itertools.product(
        SERVERS, SERVICE_TIMES_MS, OBJECTIVE_OVER_IDLE, PEAK_SHARES, NOISES, range(seeds)
    ):
        node = MMcNode(servers=servers, service_time_ms=service_ms)
        objective = over * float(node.latency_quantile_ms(0.0)[()])
        truth = node.capacity_qps(objective)
        frame = generate_traffic(
            "2026-03-03",
            1440,
            "1min",
            base_qps=peak * truth / 1.5,
            daily_amplitude=0.5,
            nodes=1,
            node=node,
            latency_noise=noise,
            seed=seed,
        ).frame
        model = CapacityCurve(latency_objective_ms=objective, n_bootstrap=n_bootstrap)
        began = time.perf_counter()
        model.fit(frame["qps_per_node"], frame["latency_p99_ms"])
        seconds = time.perf_counter() - began
        rows.append(
            {
                "peak": peak,
                "noise": noise,
                "status": model.status_,
                "error": model.capacity_ / truth - 1.0,
                "covered": model.capacity_lower_ <= truth <= model.capacity_upper_,
                "width": (model.capacity_upper_ - model.capacity_lower_) / truth,
                "seconds": seconds,
            }
        )

    print(f"{len(rows)} simulated nodes, {seeds} seed(s) each, n_bootstrap={n_bootstrap}\n")
    print(
        "| peak / true capacity | latency noise | nodes | measured | median abs error "
        "| p90 abs error | worst error | truth in 90% range | median range width |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for peak, noise in itertools.product(PEAK_SHARES, NOISES):
        group = [r for r in rows if r["peak"] == peak and r["noise"] == noise]
        measured = [r for r in group if r["status"] == "measured"]
        if measured:
            errors = np.array([float(r["error"]) for r in measured])
            widths = [float(r["width"]) for r in measured]
            worst = errors[np.argmax(np.abs(errors))]
            covered = sum(bool(r["covered"]) for r in measured)
            cells = (
                f"{np.median(np.abs(errors)):.1%} | {np.quantile(np.abs(errors), 0.9):.1%} "
                f"| {worst:+.1%} | {covered}/{len(measured)} | {statistics.median(widths):.1%}"
            )
        else:
            cells = "- | - | - | - | -"
        print(f"| {peak:g} | {noise:g} | {len(group)} | {len(measured)} | {cells} |")

    times = sorted(float(r["seconds"]) for r in rows)
    p95 = times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)]
    print(
        f"\nfit seconds per node-day (1440 points): median {statistics.median(times):.3f}, "
        f"p95 {p95:.3f}, max {times[-1]:.3f}"
    )
    week = generate_traffic("2026-03-02", 7 * 1440, "1min", nodes=1, base_qps=500.0).frame
    began = time.perf_counter()
    CapacityCurve(n_bootstrap=n_bootstrap).fit(week["qps_per_node"], week["latency_p99_ms"])
    print(f"fit seconds for one node-week (10080 points): {time.perf_counter() - began:.3f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="seeds per setting (default 4)")
    parser.add_argument("--bootstrap", type=int, default=200, help="n_bootstrap (default 200)")
    args = parser.parse_args()
    return run(args.seeds, args.bootstrap)


if __name__ == "__main__":
    raise SystemExit(main())
