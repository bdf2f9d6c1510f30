"""NAB scoring (Numenta Anomaly Benchmark v1.1), as pure functions over arrays.

Reproduces NAB's ``sweeper.py`` / ``scorer.py`` / ``runner.normalize``:

* the first ``min(floor(0.15 * n), 0.15 * 5000)`` points of each file are probationary and
  ignored;
* a detection inside an anomaly window earns ``tp_weight * sigmoid_score(position) /
  sigmoid_score(-1)`` where ``position`` runs from -1 at the window's left edge to ~0 at its
  right edge (earlier is better); only the best (= first) detection of a window counts;
* a detection outside every window costs ``fp_weight * sigmoid_score(position)`` (between
  -1 and 0), ``position`` measured past the right edge of the preceding window, so a late
  detection just after a window costs little;
* a window with no detection costs ``fn_weight``;
* the threshold (a point is a detection when ``score >= threshold``) is optimised per
  detector and profile over all files together;
* normalised score = ``100 * (raw - null) / (perfect - null)``: the null detector (never
  fires) scores 0 and a perfect one (fires at each window's left edge) 100.

Also :func:`event_metrics`: precision, recall and F1 counted per event (a window with at
least one detection is a hit; a run of consecutive detections outside windows is one false
alarm).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = [
    "CostProfile",
    "NAB_PROFILES",
    "FileScores",
    "SweepPoints",
    "NabResult",
    "EventMetrics",
    "probationary_length",
    "scaled_sigmoid",
    "sweep_points",
    "optimize_threshold",
    "score_corpus",
    "event_metrics",
    "windows_from_json",
]

_PROBATION = -2
_OUTSIDE = -1


@dataclass(frozen=True)
class CostProfile:
    """One NAB cost profile (the ``CostMatrix`` of ``profiles.json``)."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float
    tn_weight: float = 1.0

    @classmethod
    def from_mapping(cls, name: str, mapping: Mapping[str, object]) -> CostProfile:
        """Build from a ``profiles.json`` entry (``{"CostMatrix": {...}}`` or the matrix)."""
        matrix = mapping.get("CostMatrix", mapping)
        if not isinstance(matrix, Mapping):
            raise ValueError(f"profile {name!r}: CostMatrix must be a mapping")
        try:
            return cls(
                name=name,
                tp_weight=float(matrix["tpWeight"]),  # type: ignore[arg-type]
                fp_weight=float(matrix["fpWeight"]),  # type: ignore[arg-type]
                fn_weight=float(matrix["fnWeight"]),  # type: ignore[arg-type]
                tn_weight=float(matrix.get("tnWeight", 1.0)),  # type: ignore[arg-type]
            )
        except KeyError as exc:
            raise ValueError(f"profile {name!r}: missing {exc.args[0]}") from None


NAB_PROFILES: dict[str, CostProfile] = {
    "standard": CostProfile("standard", 1.0, 0.11, 1.0),
    "reward_low_FP_rate": CostProfile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    "reward_low_FN_rate": CostProfile("reward_low_FN_rate", 1.0, 0.11, 2.0),
}


def probationary_length(n_rows: int, percent: float = 0.15) -> int:
    """Number of leading points NAB ignores: ``min(floor(percent * n), percent * 5000)``."""
    return int(min(math.floor(percent * n_rows), percent * 5000))


def scaled_sigmoid(position: float) -> float:
    """NAB's ``2 * sigmoid(-5 * x) - 1`` (and -1 beyond 3 window widths past a window)."""
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


@dataclass(frozen=True)
class FileScores:
    """One labelled file: timestamps, detector scores in [0, 1] and anomaly windows."""

    name: str
    timestamps: pd.DatetimeIndex
    scores: np.ndarray
    windows: tuple[tuple[pd.Timestamp, pd.Timestamp], ...]

    def __post_init__(self) -> None:
        if len(self.timestamps) != len(self.scores):
            raise ValueError(
                f"{self.name}: {len(self.timestamps)} timestamps but {len(self.scores)} scores"
            )


@dataclass(frozen=True)
class SweepPoints:
    """Per-point NAB sweep scores of one file (``window`` = window index, -1 outside, -2
    probationary)."""

    name: str
    anomaly_scores: np.ndarray
    sweep_scores: np.ndarray
    window: np.ndarray
    n_windows: int


def _window_bounds(
    timestamps: pd.DatetimeIndex, windows: Sequence[tuple[pd.Timestamp, pd.Timestamp]]
) -> list[tuple[int, int]]:
    """Index ranges [left, right] (inclusive) of each window that holds data points."""
    bounds = []
    values = timestamps.values
    for start, end in windows:
        left = int(np.searchsorted(values, np.datetime64(pd.Timestamp(start)), side="left"))
        right = int(np.searchsorted(values, np.datetime64(pd.Timestamp(end)), side="right")) - 1
        if left <= right:
            bounds.append((left, right))
    return bounds


def sweep_points(
    file: FileScores, profile: CostProfile, probation_percent: float = 0.15
) -> SweepPoints:
    """Score every point of ``file`` as if it were a detection (NAB's ``calcSweepScore``)."""
    n = len(file.timestamps)
    scores = np.asarray(file.scores, dtype=float)
    if n and (np.nanmin(scores) < 0.0 or np.nanmax(scores) > 1.0):
        raise ValueError(f"{file.name}: anomaly scores must lie in [0, 1]")
    bounds = _window_bounds(file.timestamps, file.windows)
    window = np.full(n, _OUTSIDE, dtype=np.int64)
    sweep = np.empty(n, dtype=float)
    max_tp = scaled_sigmoid(-1.0)
    prev_right: int | None = None
    prev_width = 0.0
    cursor = 0
    for w_index, (left, right) in enumerate(bounds + [(n, n)]):
        # points between the previous window (or the start) and this window: false positives
        for i in range(cursor, min(left, n)):
            if prev_right is None:
                unweighted = -1.0
            else:
                unweighted = (
                    scaled_sigmoid(abs(prev_right - i) / (prev_width - 1.0))
                    if prev_width > 1
                    else -1.0
                )
            sweep[i] = unweighted * profile.fp_weight
        if left >= n:
            break
        width = float(right - left + 1)
        for i in range(left, right + 1):
            position = -(right - i + 1) / width
            sweep[i] = scaled_sigmoid(position) * profile.tp_weight / max_tp
            window[i] = w_index
        prev_right, prev_width, cursor = right, width, right + 1
    probation = probationary_length(n, probation_percent)
    window[:probation] = _PROBATION
    return SweepPoints(file.name, np.nan_to_num(scores, nan=0.0), sweep, window, len(bounds))


@dataclass(frozen=True)
class NabResult:
    """Outcome of scoring a corpus under one profile."""

    profile: str
    threshold: float
    raw_score: float
    null_score: float
    perfect_score: float
    normalized_score: float
    per_file: dict[str, float] = field(default_factory=dict)
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0


def _threshold_sweep(
    points: Sequence[SweepPoints], fn_weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """Raw corpus score for every candidate threshold (descending), incl. 'never fires'."""
    keys: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    sweeps: list[np.ndarray] = []
    offset = 0
    for p in points:
        scorable = p.window != _PROBATION
        w = p.window[scorable]
        keys.append(np.where(w >= 0, w + offset, -1))
        scores.append(p.anomaly_scores[scorable])
        sweeps.append(p.sweep_scores[scorable])
        offset += p.n_windows
    key = np.concatenate(keys) if keys else np.empty(0, dtype=np.int64)
    score = np.concatenate(scores) if scores else np.empty(0)
    sweep = np.concatenate(sweeps) if sweeps else np.empty(0)
    order = np.argsort(-score, kind="stable")
    key, score, sweep = key[order], score[order], sweep[order]
    window_value: dict[int, float] = {int(k): -fn_weight for k in np.unique(key[key >= 0])}
    total = sum(window_value.values())
    thresholds = [1.1]
    totals = [total]
    fp_total = 0.0
    n = len(score)
    i = 0
    while i < n:
        current = score[i]
        while i < n and score[i] == current:
            k = int(key[i])
            if k < 0:
                fp_total += sweep[i]
                total += sweep[i]
            elif sweep[i] > window_value[k]:
                total += sweep[i] - window_value[k]
                window_value[k] = sweep[i]
            i += 1
        thresholds.append(float(current))
        totals.append(total)
    return np.asarray(thresholds), np.asarray(totals)


def optimize_threshold(points: Sequence[SweepPoints], profile: CostProfile) -> tuple[float, float]:
    """The threshold with the best raw score over all files together, and that score."""
    thresholds, totals = _threshold_sweep(points, profile.fn_weight)
    best = int(np.argmax(totals))  # first (highest threshold) among ties, as NAB's sort
    return float(thresholds[best]), float(totals[best])


def _file_score(p: SweepPoints, threshold: float, fn_weight: float) -> tuple[float, int, int, int]:
    scorable = p.window != _PROBATION
    detected = scorable & (p.anomaly_scores >= threshold)
    outside = detected & (p.window == _OUTSIDE)
    score = float(p.sweep_scores[outside].sum())
    tp = fn = 0
    for k in np.unique(p.window[scorable & (p.window >= 0)]):
        hits = detected & (p.window == k)
        if hits.any():
            score += float(p.sweep_scores[hits].max())
            tp += 1
        else:
            score -= fn_weight
            fn += 1
    return score, tp, int(outside.sum()), fn


def score_corpus(
    files: Sequence[FileScores],
    profile: CostProfile,
    probation_percent: float = 0.15,
    threshold: float | None = None,
) -> NabResult:
    """Optimise the threshold (unless given) and return the normalised NAB score."""
    points = [sweep_points(f, profile, probation_percent) for f in files]
    if threshold is None:
        threshold, _ = optimize_threshold(points, profile)
    per_file: dict[str, float] = {}
    raw = 0.0
    tp = fp = fn = 0
    null = 0.0
    for p in points:
        s, t, f, m = _file_score(p, threshold, profile.fn_weight)
        per_file[p.name] = s
        raw += s
        tp, fp, fn = tp + t, fp + f, fn + m
        null -= profile.fn_weight * len(np.unique(p.window[p.window >= 0]))
    perfect = profile.tp_weight * sum(len(f.windows) for f in files)
    denom = perfect - null
    normalized = 100.0 * (raw - null) / denom if denom > 0 else 0.0
    return NabResult(
        profile.name, float(threshold), raw, null, perfect, normalized, per_file, tp, fp, fn
    )


@dataclass(frozen=True)
class EventMetrics:
    """Precision, recall and F1 counted per event."""

    threshold: float
    detected_windows: int
    total_windows: int
    false_alarms: int
    precision: float
    recall: float
    f1: float


def event_metrics(
    files: Sequence[FileScores], threshold: float, probation_percent: float = 0.15
) -> EventMetrics:
    """Per-event precision/recall/F1 at ``threshold``, probationary points ignored.

    A window with at least one detection is a true positive, a window with none a false
    negative, and each run of consecutive detections outside every window one false alarm.
    """
    profile = NAB_PROFILES["standard"]
    hit = total = alarms = 0
    for f in files:
        p = sweep_points(f, profile, probation_percent)
        scorable = p.window != _PROBATION
        detected = scorable & (p.anomaly_scores >= threshold)
        for k in np.unique(p.window[scorable & (p.window >= 0)]):
            total += 1
            hit += int((detected & (p.window == k)).any())
        outside = (detected & (p.window == _OUTSIDE)).astype(np.int8)
        alarms += int(np.sum(np.diff(np.concatenate([[0], outside])) == 1))
    precision = hit / (hit + alarms) if hit + alarms else 0.0
    recall = hit / total if total else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return EventMetrics(threshold, hit, total, alarms, precision, recall, f1)


def windows_from_json(
    entries: Sequence[Sequence[str]],
) -> tuple[tuple[pd.Timestamp, pd.Timestamp], ...]:
    """Parse one file's entry of NAB's ``combined_windows.json``."""
    out = []
    for entry in entries:
        if len(entry) != 2:
            raise ValueError(f"a window needs [start, end], got {entry!r}")
        start, end = pd.Timestamp(entry[0]), pd.Timestamp(entry[1])
        if end < start:
            raise ValueError(f"window ends before it starts: {entry!r}")
        out.append((start, end))
    return tuple(out)
