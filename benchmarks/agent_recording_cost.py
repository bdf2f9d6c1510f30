"""Recording cost per call: tidemark's Recorder vs prometheus_client's Histogram.observe.

Same process, same run, interleaved repeats (the machine is shared and noisy: each figure
is the median of the repeats, in ns per call). Compared pairs:

- ``Recorder.record(service, ms)`` (key lookup, log bucket, counts, sum, max, error class)
  vs ``Histogram.observe(s)`` on an unlabelled histogram (prometheus' default buckets),
  and vs ``Histogram.labels(service, node).observe(s)`` (keyed like ours);
- ``with recorder.measure(service)`` vs ``with histogram.time()`` (timing included);
- ``LogHistogram.add(ms)`` alone.

Usage: .venv/bin/python benchmarks/agent_recording_cost.py [--calls 200000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from prometheus_client import CollectorRegistry, Histogram  # noqa: E402

from agent.recorder import Recorder  # noqa: E402
from agent.sketch import LogHistogram  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    registry = CollectorRegistry()
    plain = Histogram("bench_plain_seconds", "plain", registry=registry)
    labelled = Histogram("bench_labelled_seconds", "labelled", ["service", "node"],
                         registry=registry)
    child = labelled.labels("user", "10.0.0.1:80")
    recorder = Recorder(10, default_node="10.0.0.1:80")
    hist = LogHistogram()
    latencies_ms = [0.5 + (i * 7919 % 1000) * 0.37 for i in range(1000)]
    latencies_s = [v / 1000 for v in latencies_ms]

    def ours_record() -> None:
        record = recorder.record
        for v in latencies_ms:
            record("user", v)

    def ours_record_error() -> None:
        record = recorder.record
        for v in latencies_ms:
            record("user", v, "5xx")

    def prom_observe() -> None:
        observe = plain.observe
        for v in latencies_s:
            observe(v)

    def prom_child_observe() -> None:
        observe = child.observe
        for v in latencies_s:
            observe(v)

    def prom_labels_observe() -> None:
        for v in latencies_s:
            labelled.labels("user", "10.0.0.1:80").observe(v)

    def ours_measure() -> None:
        measure = recorder.measure
        for _ in latencies_ms:
            with measure("user"):
                pass

    def prom_time() -> None:
        time_ = plain.time
        for _ in latencies_ms:
            with time_():
                pass

    def sketch_add() -> None:
        add = hist.add
        for v in latencies_ms:
            add(v)

    cases = {
        "recorder.record": ours_record,
        "recorder.record (error)": ours_record_error,
        "prometheus Histogram.observe": prom_observe,
        "prometheus child.observe (labels resolved once)": prom_child_observe,
        "prometheus labels(svc,node).observe": prom_labels_observe,
        "with recorder.measure()": ours_measure,
        "with Histogram.time()": prom_time,
        "LogHistogram.add": sketch_add,
    }
    loops = max(1, args.calls // len(latencies_ms))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, func in cases.items():  # interleaved so noise hits every case alike
            seconds = timeit.timeit(func, number=loops)
            samples[name].append(seconds / (loops * len(latencies_ms)) * 1e9)
            recorder.swap()
    result = {name: round(statistics.median(v), 1) for name, v in samples.items()}
    ratios = {
        "record / observe": result["recorder.record"] / result["prometheus Histogram.observe"],
        "record / child.observe": (result["recorder.record"]
                                   / result["prometheus child.observe (labels resolved once)"]),
        "record / labels().observe": (result["recorder.record"]
                                      / result["prometheus labels(svc,node).observe"]),
        "measure / time": result["with recorder.measure()"] / result["with Histogram.time()"],
    }
    print(json.dumps({"ns_per_call_median": result,
                      "ratios": {k: round(v, 3) for k, v in ratios.items()},
                      "calls_per_case_per_repeat": loops * len(latencies_ms),
                      "repeats": args.repeats}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
