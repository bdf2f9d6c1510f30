"""`tidemark detect`: score any ``timestamp,value[,value...]`` CSV for anomalies, causally.

Writes the same rows with ``anomaly_score`` in [0, 1] (each point scored from that point and
earlier ones only, as in live use) and ``is_anomaly`` (1 while the alert policy is firing),
plus ``anomaly_explanation`` with ``--explain``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from models.anomaly import DEFAULT_DETECTOR, DETECTORS, AlertPolicy, AlertPolicyConfig, Explanation
from models.anomaly import make_detector as _make_detector
from tidemark.errors import UsageError

__all__ = ["configure_parser", "run", "read_series_csv", "read_feedback_csv"]

_OUTPUT_COLUMNS = ("anomaly_score", "is_anomaly", "anomaly_explanation")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``detect`` options."""
    parser.add_argument(
        "--input", required=True, type=Path, help="CSV with a timestamp column and value column(s)"
    )
    parser.add_argument(
        "--output", required=True, type=Path, help="CSV to write (input rows + scores)"
    )
    parser.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        help=f"one of {', '.join(DETECTORS)} (default: {DEFAULT_DETECTOR})",
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="alert trigger score (default: policy's)"
    )
    parser.add_argument(
        "--resolve-threshold", type=float, default=None, help="score below which an alert resolves"
    )
    parser.add_argument(
        "--min-duration", type=int, default=None, help="points above threshold before alerting"
    )
    parser.add_argument("--explain", action="store_true", help="add an anomaly_explanation column")
    parser.add_argument(
        "--feedback",
        type=Path,
        default=None,
        help="CSV of timestamp,label (false_positive or missed): tunes the alert threshold "
        "around those times of day and week before alerting",
    )


def read_series_csv(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a ``timestamp,value...`` CSV; returns (the raw rows, numeric values indexed by time).

    Raises UsageError naming the problem (missing file, no timestamp column, no value
    column, unparseable timestamps or values, time going backwards).
    """
    if not path.is_file():
        raise UsageError(f"input file {str(path)!r} does not exist")
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if "timestamp" not in raw.columns:
        raise UsageError(
            f"{path}: no 'timestamp' column (found: {', '.join(map(str, raw.columns)) or 'none'})"
        )
    value_columns = [c for c in raw.columns if c != "timestamp" and c not in _OUTPUT_COLUMNS]
    if not value_columns:
        raise UsageError(f"{path}: no value column besides 'timestamp'")
    if raw.empty:
        raise UsageError(f"{path}: no data rows")
    stamps = raw["timestamp"]
    try:
        if pd.api.types.is_numeric_dtype(stamps):
            index = pd.DatetimeIndex(pd.to_datetime(stamps, unit="s"))
        else:
            index = pd.DatetimeIndex(pd.to_datetime(stamps, format="mixed"))
    except (ValueError, TypeError, OverflowError) as exc:
        raise UsageError(f"{path}: bad timestamp ({str(exc).splitlines()[0]})") from None
    if index.hasnans:
        raise UsageError(f"{path}: empty timestamp in row {int(np.argmax(index.isna())) + 2}")
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    backwards = np.flatnonzero(np.diff(index.asi8) < 0)
    if len(backwards):
        raise UsageError(
            f"{path}: timestamps go backwards at row {int(backwards[0]) + 3}; sort by time"
        )
    values = pd.DataFrame(index=index)
    for column in value_columns:
        converted = pd.to_numeric(raw[column], errors="coerce")
        bad = converted.isna() & raw[column].notna()
        if bad.any():
            row = int(np.argmax(bad.to_numpy())) + 2
            cell = raw[column].iloc[row - 2]
            raise UsageError(f"{path}: column {column!r} row {row}: {cell!r} is not a number")
        values[str(column)] = converted.to_numpy(dtype=float)
    if np.isinf(values.to_numpy()).any():
        raise UsageError(f"{path}: infinite value")
    return raw, values


_FEEDBACK_LABELS = ("false_positive", "missed")


def read_feedback_csv(path: Path) -> list[tuple[pd.Timestamp, str]]:
    """Read ``timestamp,label`` feedback rows (label ``false_positive`` or ``missed``)."""
    if not path.is_file():
        raise UsageError(f"feedback file {str(path)!r} does not exist")
    try:
        raw = pd.read_csv(path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if not {"timestamp", "label"} <= set(raw.columns):
        raise UsageError(f"{path}: needs 'timestamp' and 'label' columns")
    rows = []
    for i, (stamp, label) in enumerate(zip(raw["timestamp"], raw["label"], strict=True)):
        if label not in _FEEDBACK_LABELS:
            raise UsageError(
                f"{path}: row {i + 2}: label must be one of {', '.join(_FEEDBACK_LABELS)}"
            )
        try:
            ts = pd.Timestamp(stamp)
        except (ValueError, TypeError):
            raise UsageError(f"{path}: row {i + 2}: bad timestamp {stamp!r}") from None
        if ts is pd.NaT:
            raise UsageError(f"{path}: row {i + 2}: empty timestamp")
        rows.append((ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo else ts, str(label)))
    return rows


def run(args: argparse.Namespace) -> int:
    """Score the input and write the output."""
    if args.detector not in DETECTORS:
        raise UsageError(f"unknown detector {args.detector!r} (known: {', '.join(DETECTORS)})")
    output: Path = args.output
    if output.exists() and output.resolve() == Path(args.input).resolve():
        raise UsageError("--output must differ from --input")
    if not output.parent.resolve().is_dir():
        raise UsageError(f"output directory {str(output.parent)!r} does not exist")
    raw, values = read_series_csv(args.input)
    feedback = read_feedback_csv(args.feedback) if args.feedback is not None else []
    defaults = AlertPolicyConfig()
    try:
        trigger = defaults.trigger_threshold if args.threshold is None else args.threshold
        resolve = args.resolve_threshold
        if resolve is None:
            resolve = min(defaults.resolve_threshold, trigger)
        config = AlertPolicyConfig(
            trigger_threshold=trigger,
            resolve_threshold=resolve,
            min_duration_points=defaults.min_duration_points
            if args.min_duration is None
            else args.min_duration,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    detector = _make_detector(args.detector)
    scored = detector.fit_explained(values)
    scores = np.clip(scored["anomaly_score"].to_numpy(), 0.0, 1.0)
    columns = list(values.columns)
    signals = [columns[j] for j in scored["signal"].to_numpy()]
    observed = values.to_numpy()[np.arange(len(values)), scored["signal"].to_numpy()]
    policy = AlertPolicy(config)
    series = str(args.input.name)
    for ts, label in feedback:
        if label == "false_positive":
            policy.mark_false_positive(series, ts)
        else:
            policy.mark_missed(series, ts)
    firing = policy.evaluate(
        series, values.index, scores, signals, scored["expected"].to_numpy(), observed
    )
    out = raw.drop(columns=[c for c in _OUTPUT_COLUMNS if c in raw.columns])
    out["anomaly_score"] = np.round(scores, 12)
    out["is_anomaly"] = firing.astype(int)
    if args.explain:
        out["anomaly_explanation"] = [
            Explanation(s, e, o, sc).text() if f else ""
            for s, e, o, sc, f in zip(
                signals, scored["expected"], observed, scores, firing, strict=True
            )
        ]
    try:
        out.to_csv(output, index=False)
    except OSError as exc:
        raise UsageError(f"cannot write {str(output)!r}: {exc.strerror}") from None
    print(
        f"{len(out)} rows scored with {args.detector}; {len(policy.alerts)} alert(s), "
        f"{int(firing.sum())} anomalous row(s) -> {output}",
        file=sys.stderr,
    )
    return 0
