"""Render latency benchmark: tidemark collector vs graphite-web on the same data.

Loads 100 series x 1 day at 10 s (864,000 points, plaintext over 4 connections) into both
our collector and carbon-cache, waits until every point reads back, then times
/render?format=json for a sum over a 100-leaf glob and for the plain glob, alternating the
servers, and prints the median (and p90) of N runs and the ratio graphite-web / tidemark.

Usage: .venv/bin/python benchmarks/collector_render.py [--series 100] [--hours 24] [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
for entry in (str(REPO_ROOT), str(Path(__file__).resolve().parent)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from collector_ingest import AGGREGATION, STEP, Workload, _graphite_count, _send_all  # noqa: E402

from tests.peers.collector import tidemark_collector  # noqa: E402
from tests.peers.graphite import graphite_stack  # noqa: E402
from tests.peers.process import PeerFailed, http_get  # noqa: E402

SCHEMAS = "[default]\npattern = .*\nretentions = 10s:2d\n"  # 1 day of data fits
PREFIX = "bench"


@dataclass(frozen=True)
class Query:
    """One timed query."""

    name: str
    target: str


def _render_url(base_url: str, target: str, workload: Workload) -> str:
    query = urllib.parse.urlencode(
        {
            "target": target,
            "from": workload.first_timestamp - 1,
            "until": workload.last_timestamp,
            "format": "json",
        }
    )
    return f"{base_url}/render?{query}"


def _timed_get(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    status, body = http_get(url, timeout_seconds=300)
    elapsed = time.perf_counter() - started
    if status != 200:
        raise PeerFailed(f"{url} answered {status}: {body[:300]!r}")
    return elapsed, body


def _points_in(body: bytes) -> int:
    return sum(1 for s in json.loads(body) for v, _ in s["datapoints"] if v is not None)


def _wait_loaded(server: object, workload: Workload, timeout_seconds: float) -> None:
    """Wait until the server counts every point sent (counted server-side, small answers)."""
    deadline = time.monotonic() + timeout_seconds
    count = 0
    while time.monotonic() < deadline:
        count = sum(_graphite_count(server, workload, workload.groups).values())
        if count >= workload.total_points:
            return
        time.sleep(1.0)
    raise PeerFailed(f"only {count} of {workload.total_points} points read back")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100, help="series under the glob (<=100)")
    parser.add_argument("--hours", type=float, default=24.0, help="hours of 10 s points")
    parser.add_argument("--runs", type=int, default=15, help="timed runs per query and server")
    parser.add_argument("--connections", type=int, default=4, help="TCP connections to load")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for load")
    args = parser.parse_args(argv)
    if not 1 <= args.series <= 100:
        parser.error("--series must be between 1 and 100")
    if args.runs < 1 or args.hours <= 0:
        parser.error("--runs must be at least 1 and --hours positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every peer started below is stopped and cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    steps = int(args.hours * 3600) // STEP
    now = int(time.time()) // STEP * STEP
    workload = Workload(
        metrics=args.series,
        points_per_metric=steps,
        connections=args.connections,
        first_timestamp=now - (steps + 6) * STEP,
    )
    queries = [
        Query("sumSeries over the glob", f"sumSeries({PREFIX}.g000.*)"),
        Query("plain glob", f"{PREFIX}.g000.*"),
    ]
    print(
        f"loading {workload.total_points:,} points ({args.series} series x {steps} steps) ...",
        flush=True,
    )
    payloads = workload.payloads()
    timings: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="tidemark-render-bench-") as tmp:
        root = Path(tmp)
        with graphite_stack(root / "carbon", schemas=SCHEMAS, aggregation=AGGREGATION) as graphite:
            with tidemark_collector(
                root / "tidemark", schemas=SCHEMAS, aggregation=AGGREGATION
            ) as ours:
                servers: dict[str, str] = {
                    "graphite-web": graphite.base_url,
                    "tidemark": ours.base_url,
                }
                for name, port in (
                    ("graphite-web", graphite.line_port),
                    ("tidemark", ours.line_port),
                ):
                    started = time.monotonic()
                    _send_all(port, payloads)
                    _wait_loaded(
                        graphite if name == "graphite-web" else ours, workload, args.timeout
                    )
                    print(f"{name}: loaded in {time.monotonic() - started:.1f} s", flush=True)
                time.sleep(5)  # let carbon's writer drain its cache into whisper
                for query in queries:
                    bodies: dict[str, bytes] = {}
                    for name, base in servers.items():  # one untimed warm-up each
                        bodies[name] = _timed_get(_render_url(base, query.target, workload))[1]
                    if _points_in(bodies["tidemark"]) != _points_in(bodies["graphite-web"]):
                        raise PeerFailed(f"{query.name}: the servers disagree on the data")
                    for _run in range(args.runs):
                        for name, base in servers.items():
                            elapsed, _ = _timed_get(_render_url(base, query.target, workload))
                            timings.setdefault((query.name, name), []).append(elapsed)
    _print_table(queries, timings, args)
    return 0


def _print_table(
    queries: list[Query], timings: dict[tuple[str, str], list[float]], args: argparse.Namespace
) -> None:
    print()
    print(f"{args.series} series x {args.hours:g} h at 10 s, median of {args.runs} runs")
    print()
    print(
        "| query | graphite-web median ms (p90) | tidemark median ms (p90) "
        "| graphite-web / tidemark |"
    )
    print("| --- | ---: | ---: | ---: |")
    median: Callable[[list[float]], float] = statistics.median
    for query in queries:
        theirs = timings[(query.name, "graphite-web")]
        ours = timings[(query.name, "tidemark")]
        print(
            f"| {query.name} | {median(theirs) * 1000:.1f} ({_percentile(theirs, 0.9) * 1000:.1f}) "
            f"| {median(ours) * 1000:.1f} ({_percentile(ours, 0.9) * 1000:.1f}) "
            f"| {median(theirs) / median(ours):.2f}x |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
