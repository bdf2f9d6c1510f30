"""`tidemark eval anomaly`: score detectors on labelled CSVs the NAB way.

The data directory has NAB's layout: ``data/<group>/<file>.csv`` (``timestamp,value``) and
``labels/combined_windows.json`` (anomaly windows per file), optionally
``labels/profiles.json`` (cost profiles; NAB's three are built in). For every detector the
causal scores of each file are computed, the threshold is optimised per profile over all
files together, and the normalised NAB score (0 = never fires, 100 = perfect) is reported
with per-event precision, recall and F1 at the standard profile's threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from capacity.detect_cli import read_series_csv
from models.anomaly import DEFAULT_DETECTOR, DETECTORS, BaseDetector, make_detector
from models.nab import (
    NAB_PROFILES,
    CostProfile,
    FileScores,
    event_metrics,
    score_corpus,
    windows_from_json,
)
from tidemark.errors import UsageError

__all__ = [
    "configure_parser",
    "run",
    "LabelledFile",
    "load_labelled_corpus",
    "load_profiles",
    "score_files",
    "evaluate_detector",
    "DetectorReport",
]


@dataclass(frozen=True)
class LabelledFile:
    """A file of the corpus: its name (relative to ``data/``), path and windows."""

    name: str
    path: Path
    windows: tuple


def load_labelled_corpus(root: Path) -> list[LabelledFile]:
    """The files named in ``labels/combined_windows.json`` that exist under ``data/``."""
    labels = root / "labels" / "combined_windows.json"
    if not labels.is_file():
        raise UsageError(f"{str(labels)!r} does not exist (expected NAB layout: data/, labels/)")
    try:
        entries = json.loads(labels.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{labels}: not valid JSON ({exc})") from None
    if not isinstance(entries, dict):
        raise UsageError(f"{labels}: expected an object mapping file names to windows")
    data = (root / "data").resolve()
    files = []
    for name in sorted(entries):
        path = (data / name).resolve()
        if not path.is_relative_to(data):
            raise UsageError(f"{labels}: file name {name!r} points outside {data}")
        if not path.is_file():
            continue
        try:
            windows = windows_from_json(entries[name])
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{labels}: {name}: {exc}") from None
        files.append(LabelledFile(name, path, windows))
    if not files:
        raise UsageError(f"no labelled file of {labels} exists under {data}")
    return files


def load_profiles(root: Path, names: Sequence[str] | None) -> list[CostProfile]:
    """Profiles from ``labels/profiles.json`` (or NAB's built-in ones), filtered by name."""
    path = root / "labels" / "profiles.json"
    profiles = dict(NAB_PROFILES)
    if path.is_file():
        try:
            raw = json.loads(path.read_text())
            profiles = {k: CostProfile.from_mapping(k, v) for k, v in raw.items()}
        except (OSError, json.JSONDecodeError, ValueError, AttributeError) as exc:
            raise UsageError(f"{path}: bad profiles ({exc})") from None
    if not names:
        return list(profiles.values())
    unknown = [n for n in names if n not in profiles]
    if unknown:
        raise UsageError(f"unknown profile {unknown[0]!r} (known: {', '.join(profiles)})")
    return [profiles[n] for n in names]


DetectorSpec = str | Callable[[], BaseDetector]


def _score_one(task: tuple[DetectorSpec, LabelledFile]) -> tuple[FileScores, float]:
    spec, file = task
    _, values = read_series_csv(file.path)
    started = time.process_time()
    detector = make_detector(spec) if isinstance(spec, str) else spec()
    scores = detector.fit_anomaly_score(values)
    elapsed = time.process_time() - started
    return FileScores(file.name, values.index, np.clip(scores, 0.0, 1.0), file.windows), elapsed


def score_files(
    detector: DetectorSpec, files: Sequence[LabelledFile], jobs: int = 1
) -> tuple[list[FileScores], float]:
    """Causal scores of every file (``detector``: a name or a picklable factory); returns
    them with the CPU seconds spent scoring."""
    tasks = [(detector, f) for f in files]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(pool.map(_score_one, tasks))
    else:
        results = [_score_one(t) for t in tasks]
    return [r[0] for r in results], float(sum(r[1] for r in results))


@dataclass(frozen=True)
class DetectorReport:
    """NAB scores of one detector (per profile) and its per-event metrics."""

    detector: str
    scores: dict[str, float]
    thresholds: dict[str, float]
    counts: dict[str, tuple[int, int, int]]
    precision: float
    recall: float
    f1: float
    cpu_seconds: float


def evaluate_detector(
    detector: DetectorSpec,
    files: Sequence[LabelledFile],
    profiles: Sequence[CostProfile],
    jobs: int = 1,
) -> DetectorReport:
    """Score ``detector`` on ``files`` under each profile."""
    scored, cpu = score_files(detector, files, jobs)
    results = {p.name: score_corpus(scored, p) for p in profiles}
    ref = results.get("standard") or next(iter(results.values()))
    events = event_metrics(scored, ref.threshold)
    return DetectorReport(
        detector if isinstance(detector, str) else getattr(detector, "__name__", repr(detector)),
        {k: r.normalized_score for k, r in results.items()},
        {k: r.threshold for k, r in results.items()},
        {k: (r.true_positives, r.false_positives, r.false_negatives) for k, r in results.items()},
        events.precision,
        events.recall,
        events.f1,
        cpu,
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``eval`` and its ``anomaly`` target."""
    targets = parser.add_subparsers(dest="target", metavar="TARGET")
    anomaly = targets.add_parser(
        "anomaly", help="NAB score, precision, recall and F1 of anomaly detectors"
    )
    anomaly.add_argument(
        "--data-dir", required=True, type=Path, help="directory with data/ and labels/ (NAB layout)"
    )
    anomaly.add_argument(
        "--detector",
        action="append",
        help=f"detector to score (repeatable; default {DEFAULT_DETECTOR}; 'all' for every "
        f"one of {', '.join(DETECTORS)})",
    )
    anomaly.add_argument(
        "--profile", action="append", help="cost profile (repeatable; default: all)"
    )
    anomaly.add_argument(
        "--jobs", type=int, default=1, help="processes scoring files in parallel (default 1)"
    )
    anomaly.add_argument(
        "--json", type=Path, default=None, help="also write the results as JSON to this file"
    )


def run(args: argparse.Namespace) -> int:
    """Evaluate and print one line per detector."""
    if args.target != "anomaly":
        raise UsageError("say what to evaluate: tidemark eval anomaly --data-dir DIR")
    if args.jobs < 1 or args.jobs > (os.cpu_count() or 1) * 4:
        raise UsageError(f"--jobs must be between 1 and {(os.cpu_count() or 1) * 4}")
    names = args.detector or [DEFAULT_DETECTOR]
    if "all" in names:
        names = list(DETECTORS)
    for name in names:
        if name not in DETECTORS:
            raise UsageError(f"unknown detector {name!r} (known: {', '.join(DETECTORS)})")
    root: Path = args.data_dir
    if not root.is_dir():
        raise UsageError(f"data directory {str(root)!r} does not exist")
    files = load_labelled_corpus(root)
    profiles = load_profiles(root, args.profile)
    reports = []
    header = "detector".ljust(18) + "".join(p.name[:18].rjust(20) for p in profiles)
    print(f"{len(files)} files, {sum(len(f.windows) for f in files)} windows")
    print(header + "   precision  recall     F1   cpu_s")
    for name in names:
        report = evaluate_detector(name, files, profiles, args.jobs)
        reports.append(report)
        cells = "".join(f"{report.scores[p.name]:20.1f}" for p in profiles)
        print(
            f"{name:18s}{cells}   {report.precision:9.3f} {report.recall:7.3f} "
            f"{report.f1:6.3f} {report.cpu_seconds:7.1f}",
            flush=True,
        )
    if args.json is not None:
        try:
            args.json.write_text(json.dumps([asdict(r) for r in reports], indent=2))
        except OSError as exc:
            raise UsageError(f"cannot write {str(args.json)!r}: {exc.strerror}") from None
    sys.stdout.flush()
    return 0
