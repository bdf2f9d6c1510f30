"""NAB development split: every detector of ours plus NAB's windowedGaussian and the null
detector, scored with our NAB scorer (standard / reward_low_FP_rate / reward_low_FN_rate),
with per-event precision/recall/F1 and the seconds spent.

    .venv/bin/python benchmarks/anomaly_nab.py [--data-dir ../shared/data/nab-dev] [--jobs 2]

Members are scored twice: as they are (their own defaults) and with the ensemble's
post-processing (the same suppression after an alarm), so that the ensemble is compared
with each member on equal terms. NAB's published numbers for this split (standard profile,
NAB's own scorer): ARTime 80.4, CAD OSE 77.2, Numenta HTM 72.8, earthgecko Skyline 65.4,
Twitter ADVec 56.7, windowedGaussian 50.9, Etsy Skyline 36.8, null 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from capacity.eval_cli import evaluate_detector, load_labelled_corpus, load_profiles  # noqa: E402
from models.anomaly import EnsembleDetector, make_detector  # noqa: E402
from models.anomaly.base import BaseDetector  # noqa: E402
from models.anomaly.ensemble import default_members  # noqa: E402


class NullDetector(BaseDetector):
    """Never fires (NAB's null baseline): every score is 0."""

    def __init__(self, *, threshold: float = 0.5) -> None:
        self.threshold = threshold

    def _new_state(self, n_features: int):  # type: ignore[no-untyped-def]
        return _NullState(n_features)


class _NullState:
    def __init__(self, n: int) -> None:
        import numpy as np

        self.expected = np.full(n, float("nan"))
        self.signal = 0

    def step(self, t: float, x) -> float:  # type: ignore[no-untyped-def]
        return 0.0


def _member(name: str, suppressed: bool) -> BaseDetector:
    """An ensemble member alone, optionally with the ensemble's suppression."""
    detector = (
        dict(default_members())[name] if name in dict(default_members()) else make_detector(name)
    )
    if suppressed:
        ens = EnsembleDetector()
        detector.set_params(hold_seconds=ens.hold_seconds, alarm_level=ens.alarm_level)
    return detector


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "nab-dev"
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", action="append", help="run only these labels")
    args = parser.parse_args()
    files = load_labelled_corpus(args.data_dir)
    profiles = load_profiles(args.data_dir, None)
    specs: list[tuple[str, object]] = [
        ("null", NullDetector),
        ("windowed-gaussian (NAB)", functools.partial(make_detector, "windowed-gaussian")),
        ("ensemble (default)", EnsembleDetector),
    ]
    for name in ("residual", "cusum", "esd", "iforest"):
        specs.append((name, functools.partial(_member, name, False)))
        specs.append((f"{name} + suppression", functools.partial(_member, name, True)))
    print(f"{len(files)} files, {sum(len(f.windows) for f in files)} windows, jobs={args.jobs}")
    names = [p.name for p in profiles]
    print(
        "| detector | "
        + " | ".join(names)
        + " | threshold (std) | TP/FP/FN (std) | precision | recall | F1 | CPU s | wall s |"
    )
    print("|---" * (len(names) + 8) + "|")
    for label, factory in specs:
        if args.only and label not in args.only:
            continue
        started = time.perf_counter()
        report = evaluate_detector(factory, files, profiles, args.jobs)  # type: ignore[arg-type]
        wall = time.perf_counter() - started
        report = dataclasses.replace(report, detector=label)
        tp, fp, fn = report.counts["standard"]
        cells = " | ".join(f"{report.scores[n]:.1f}" for n in names)
        print(
            f"| {label} | {cells} | {report.thresholds['standard']:.6f} | {tp}/{fp}/{fn} | "
            f"{report.precision:.3f} | {report.recall:.3f} | {report.f1:.3f} | "
            f"{report.cpu_seconds:.1f} | {wall:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
