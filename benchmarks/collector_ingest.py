"""Ingest benchmark: tidemark collector vs carbon-cache (+ graphite-web) vs VictoriaMetrics.

Sends the same points (Graphite plaintext over N TCP connections) to each server in turn,
started one after the other in this run, and measures for each:

- accepted-and-queryable throughput: points / seconds from the first byte sent until a
  read-back query confirms that every point is queryable (sample of last points first, then
  a server-side count of all points);
- points lost: sent minus points counted per metric at the end (every metric checked);
- the time of one more full count pass once everything is stored (the read-back cost alone);
- CPU seconds used by the server's process tree during the run (for carbon: carbon-cache
  plus graphite-web, which serves the read-back);
- ratios to carbon and to VictoriaMetrics.

VictoriaMetrics is asked to flush (/internal/force_flush) once after the last byte is sent:
otherwise a read-back query that arrives before its ~1 s buffering is over finds nothing, and
VM caches that empty answer for ~10 s, which would measure the cache rather than ingest.

Usage: .venv/bin/python benchmarks/collector_ingest.py [--points 1000000] [--metrics 10000]
       [--connections 4] [--only tidemark --only carbon --only vm]
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.peers.collector import tidemark_collector  # noqa: E402
from tests.peers.graphite import graphite_stack  # noqa: E402
from tests.peers.process import PeerFailed, PeerUnavailable  # noqa: E402
from tests.peers.victoria import VictoriaMetrics, victoria_metrics  # noqa: E402

STEP = 10
SCHEMAS = "[default]\npattern = .*\nretentions = 10s:1d\n"
AGGREGATION = "[default]\npattern = .*\nxFilesFactor = 0.5\naggregationMethod = average\n"
PREFIX = "bench"
GROUP_SIZE = 100  # metrics per tree node: bench.gNNN.mNNN
SERVERS = ("tidemark", "carbon", "vm")
COLLECTOR_TOML = "[collector]\nmax_new_metrics_per_minute = 0\n"


@dataclass(frozen=True)
class Workload:
    """Which points to send: ``metrics`` series with ``points_per_metric`` steps each."""

    metrics: int
    points_per_metric: int
    connections: int
    first_timestamp: int

    @property
    def total_points(self) -> int:
        """Points sent in all."""
        return self.metrics * self.points_per_metric

    @property
    def last_timestamp(self) -> int:
        """Timestamp of the last step."""
        return self.first_timestamp + (self.points_per_metric - 1) * STEP

    def name(self, index: int) -> str:
        """The path of metric ``index``."""
        return f"{PREFIX}.g{index // GROUP_SIZE:03d}.m{index % GROUP_SIZE:03d}"

    def group_points(self, group: str) -> int:
        """Points sent to the metrics under one group node."""
        first = int(group.rsplit(".g", 1)[1]) * GROUP_SIZE
        return (min(first + GROUP_SIZE, self.metrics) - first) * self.points_per_metric

    @property
    def groups(self) -> list[str]:
        """The group nodes, bench.gNNN."""
        count = math.ceil(self.metrics / GROUP_SIZE)
        return [f"{PREFIX}.g{g:03d}" for g in range(count)]

    def payloads(self, chunk_bytes: int = 256 * 1024) -> list[list[bytes]]:
        """Per connection, the plaintext in chunks; metric i goes on connection i % N.

        Lines go in time order, every metric at one step before the next step, like live
        traffic from many agents.
        """
        per_connection: list[list[bytes]] = []
        for conn in range(self.connections):
            names = [self.name(i) for i in range(conn, self.metrics, self.connections)]
            chunks: list[bytes] = []
            buffer: list[str] = []
            size = 0
            for k in range(self.points_per_metric):
                ts = self.first_timestamp + k * STEP
                for j, name in enumerate(names):
                    line = f"{name} {(k * 7 + j) % 1000 / 4} {ts}\n"
                    buffer.append(line)
                    size += len(line)
                    if size >= chunk_bytes:
                        chunks.append("".join(buffer).encode())
                        buffer.clear()
                        size = 0
            if buffer:
                chunks.append("".join(buffer).encode())
            per_connection.append(chunks)
        return per_connection


class Server(Protocol):
    """What the benchmark needs from each server."""

    @property
    def line_port(self) -> int: ...

    def cpu_seconds(self) -> float: ...


# ------------------------------------------------------------------ read-back per server kind


def _graphite_count(server: object, workload: Workload, groups: list[str]) -> dict[str, int]:
    """Points per group counted by the server: sumSeries(offset(scale(g.*, 0), 1)) summed."""
    get: Callable[..., bytes] = server.get  # type: ignore[attr-defined]
    counts: dict[str, int] = {}
    for start in range(0, len(groups), 10):
        chunk = groups[start : start + 10]
        query = [("target", f"alias(sumSeries(offset(scale({g}.*,0),1)),'{g}')") for g in chunk]
        query += _graphite_window(workload)
        for series in json.loads(get("/render", query)):
            counts[series["target"]] = int(sum(v for v, _ in series["datapoints"] if v))
    return counts


def _graphite_window(workload: Workload) -> list[tuple[str, str]]:
    return [
        ("from", str(workload.first_timestamp - 1)),
        ("until", str(workload.last_timestamp)),
        ("format", "json"),
    ]


def _graphite_per_metric(server: object, workload: Workload) -> dict[str, int]:
    get: Callable[..., bytes] = server.get  # type: ignore[attr-defined]
    counts: dict[str, int] = {}
    for group in workload.groups:
        body = get("/render", [("target", f"{group}.*"), *_graphite_window(workload)])
        for series in json.loads(body):
            counts[series["target"]] = sum(1 for v, _ in series["datapoints"] if v is not None)
    return counts


def _graphite_sample(server: object, workload: Workload, names: list[str]) -> bool:
    get: Callable[..., bytes] = server.get  # type: ignore[attr-defined]
    query = [("target", name) for name in names]
    query += [
        ("from", str(workload.last_timestamp - 1)),
        ("until", str(workload.last_timestamp)),
        ("format", "json"),
    ]
    found = json.loads(get("/render", query))
    have = {s["target"] for s in found if any(v is not None for v, _ in s["datapoints"])}
    return have == set(names)


def _vm_selector(prefix: str) -> str:
    return '{__name__=~"' + prefix.replace(".", "\\\\.") + '\\\\..+"}'


def _vm_query(vm: VictoriaMetrics, query: str, workload: Workload) -> list[dict[str, object]]:
    window = workload.last_timestamp - workload.first_timestamp + STEP
    body = vm.get(
        "/api/v1/query",
        {"query": query.replace("WINDOW", f"{window}s"), "time": workload.last_timestamp + 1},
    )
    return json.loads(body)["data"]["result"]  # type: ignore[no-any-return]


def _vm_count(vm: VictoriaMetrics, workload: Workload) -> int:
    result = _vm_query(vm, f"sum(count_over_time({_vm_selector(PREFIX)}[WINDOW]))", workload)
    return int(float(result[0]["value"][1])) if result else 0  # type: ignore[index]


def _vm_per_metric(vm: VictoriaMetrics, workload: Workload) -> dict[str, int]:
    return vm.export_counts(
        _vm_selector(PREFIX),
        workload.first_timestamp - 1,
        workload.last_timestamp + 1,
    )


def _vm_sample(vm: VictoriaMetrics, workload: Workload, names: list[str]) -> bool:
    """Every sampled metric has its last point (count_over_time drops names, so sum)."""
    selector = '{__name__=~"' + "|".join(n.replace(".", "\\\\.") for n in names) + '"}'
    body = vm.get(
        "/api/v1/query",
        {
            "query": f"sum(count_over_time({selector}[{STEP}s]))",
            "time": workload.last_timestamp + 1,
        },
    )
    result = json.loads(body)["data"]["result"]
    return bool(result) and int(float(result[0]["value"][1])) == len(names)


# ------------------------------------------------------------------ one run


@dataclass(frozen=True)
class Result:
    """What one server achieved."""

    server: str
    points: int
    send_seconds: float
    sample_seconds: float
    queryable_seconds: float
    lost: int
    cpu_seconds: float
    count_queries: int = 0  # count passes (graphite-style: over the groups still incomplete)
    last_count_seconds: float = 0.0
    settled_count_seconds: float = 0.0  # one full count pass after everything is stored
    note: str = ""

    @property
    def throughput(self) -> float:
        """Accepted-and-queryable points per second."""
        return self.points / self.queryable_seconds if self.queryable_seconds else 0.0


def _send_all(port: int, payloads: list[list[bytes]]) -> None:
    import socket

    errors: list[BaseException] = []

    def send(chunks: list[bytes]) -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=600) as sock:
                for chunk in chunks:
                    sock.sendall(chunk)
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(600)
                while sock.recv(65536):
                    pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(chunks,)) for chunks in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise PeerFailed(f"sending failed: {errors[0]!r}")


def run_one(
    server_name: str,
    manager: AbstractContextManager[Server],
    workload: Workload,
    payloads: list[list[bytes]],
    *,
    timeout_seconds: float,
) -> Result:
    """Start the server, send, wait until every point is queryable, count, stop."""
    sample_names = [workload.name(i) for i in range(workload.metrics - 1, -1, -97)][:40]
    with manager as server:
        if server_name == "vm":
            vm = server  # type: ignore[assignment]

            def total() -> int:
                return _vm_count(vm, workload)  # type: ignore[arg-type]

            def sample() -> bool:
                return _vm_sample(vm, workload, sample_names)  # type: ignore[arg-type]

            def per_metric() -> dict[str, int]:
                return _vm_per_metric(vm, workload)  # type: ignore[arg-type]

            def full_count() -> int:
                return _vm_count(vm, workload)  # type: ignore[arg-type]

        else:
            confirmed: dict[str, int] = {}

            def total() -> int:
                # Re-count only the groups not yet complete: a complete group stays complete.
                pending = [g for g in workload.groups if g not in confirmed]
                for group, count in _graphite_count(server, workload, pending).items():
                    if count >= workload.group_points(group):
                        confirmed[group] = count
                return sum(confirmed.values())

            def sample() -> bool:
                return _graphite_sample(server, workload, sample_names)

            def per_metric() -> dict[str, int]:
                return _graphite_per_metric(server, workload)

            def full_count() -> int:
                return sum(_graphite_count(server, workload, workload.groups).values())

        cpu_before = server.cpu_seconds()
        started = time.monotonic()
        _send_all(server.line_port, payloads)
        sent_at = time.monotonic() - started
        if server_name == "vm":
            # VM buffers ~1 s before points are searchable, and a query that finds nothing is
            # cached for ~10 s; flushing once avoids measuring that cache. (Favours VM by <1 s.)
            vm.force_flush()  # type: ignore[attr-defined]
        deadline = started + timeout_seconds
        while not sample() and time.monotonic() < deadline:
            time.sleep(0.2)
        sample_at = time.monotonic() - started
        counted = 0
        count_queries = 0
        last_count_seconds = 0.0
        while time.monotonic() < deadline:
            count_started = time.monotonic()
            counted = total()
            count_queries += 1
            last_count_seconds = time.monotonic() - count_started
            if counted >= workload.total_points:
                break
            time.sleep(0.5)
        queryable_at = time.monotonic() - started
        cpu_used = server.cpu_seconds() - cpu_before
        note = ""
        if counted < workload.total_points:
            note = f"timed out after {timeout_seconds:.0f} s with {counted} points queryable"
            queryable_at = 0.0
        settled_started = time.monotonic()
        full_count()
        settled_count_seconds = time.monotonic() - settled_started
        counts = per_metric()
        expected = workload.points_per_metric
        lost = sum(
            max(0, expected - counts.get(workload.name(i), 0)) for i in range(workload.metrics)
        )
    return Result(
        server_name,
        workload.total_points,
        sent_at,
        sample_at,
        queryable_at,
        lost,
        cpu_used,
        count_queries,
        last_count_seconds,
        settled_count_seconds,
        note,
    )


def _managers(root: Path) -> dict[str, Callable[[], AbstractContextManager[Server]]]:
    return {
        "tidemark": lambda: tidemark_collector(
            root / "tidemark", schemas=SCHEMAS, aggregation=AGGREGATION, config_toml=COLLECTOR_TOML
        ),
        "carbon": lambda: graphite_stack(root / "carbon", schemas=SCHEMAS, aggregation=AGGREGATION),
        "vm": lambda: victoria_metrics(root / "vm"),
    }


def _ratio(ours: float, theirs: float | None) -> str:
    if not ours or not theirs:
        return "-"
    return f"{ours / theirs:.2f}x"


def print_table(results: list[Result]) -> None:
    """The summary tables (markdown, ready for docs/benchmarks.md)."""
    by_name = {r.server: r for r in results}
    print()
    print(
        "| server | points | sent in s | last points visible s | all queryable s "
        "| count passes (last took s) | full count pass again s | lost | CPU s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        queryable = f"{r.queryable_seconds:.1f}" if r.queryable_seconds else f"- ({r.note})"
        print(
            f"| {r.server} | {r.points:,} | {r.send_seconds:.1f} | {r.sample_seconds:.1f} "
            f"| {queryable} | {r.count_queries} ({r.last_count_seconds:.1f}) "
            f"| {r.settled_count_seconds:.1f} | {r.lost:,} | {r.cpu_seconds:.1f} |"
        )
    print()
    print(
        "| server | accepted-and-queryable points/s | vs carbon | vs VM "
        "| accepted (sent) points/s | vs carbon | vs VM | CPU s vs carbon |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    carbon, vm = by_name.get("carbon"), by_name.get("vm")

    def rate(result: Result | None, accepted: bool = False) -> float | None:
        if result is None:
            return None
        if accepted:
            return result.points / result.send_seconds if result.send_seconds else None
        return result.throughput

    for r in results:
        throughput = f"{r.throughput:,.0f}" if r.throughput else "-"
        accepted = r.points / r.send_seconds if r.send_seconds else 0.0
        print(
            f"| {r.server} | {throughput} | {_ratio(r.throughput, rate(carbon))} "
            f"| {_ratio(r.throughput, rate(vm))} | {accepted:,.0f} "
            f"| {_ratio(accepted, rate(carbon, accepted=True))} "
            f"| {_ratio(accepted, rate(vm, accepted=True))} "
            f"| {_ratio(r.cpu_seconds, carbon.cpu_seconds if carbon else None)} |"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000, help="points in all")
    parser.add_argument("--metrics", type=int, default=10_000, help="distinct metrics")
    parser.add_argument("--connections", type=int, default=4, help="TCP connections")
    parser.add_argument(
        "--only",
        action="append",
        choices=SERVERS,
        help="run only this server (repeatable); default all three",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1200.0,
        help="seconds to wait for all points to be queryable per server",
    )
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    for name in ("points", "metrics", "connections"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.points < args.metrics:
        parser.error("--points must be at least --metrics")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every peer started below is stopped and cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    per_metric = args.points // args.metrics
    now = int(time.time()) // STEP * STEP
    workload = Workload(
        metrics=args.metrics,
        points_per_metric=per_metric,
        connections=args.connections,
        first_timestamp=now - (per_metric + 6) * STEP,
    )
    print(
        f"building {workload.total_points:,} points over {workload.metrics:,} metrics "
        f"on {workload.connections} connections ...",
        flush=True,
    )
    payloads = workload.payloads()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="tidemark-bench-") as tmp:
        managers = _managers(Path(tmp))
        for name in args.only or list(SERVERS):
            print(f"{name}: running ...", flush=True)
            try:
                result = run_one(
                    name, managers[name](), workload, payloads, timeout_seconds=args.timeout
                )
            except PeerUnavailable as exc:
                print(f"{name}: skipped: {exc}", flush=True)
                continue
            print(f"{name}: {result}", flush=True)
            results.append(result)
    print_table(results)
    if args.json:
        args.json.write_text(
            json.dumps([r.__dict__ | {"throughput": r.throughput} for r in results], indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
