"""NAB scoring on hand-made cases, and against NAB's published windowedGaussian score."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from models.anomaly import WindowedGaussianDetector
from models.nab import (
    NAB_PROFILES,
    CostProfile,
    FileScores,
    event_metrics,
    probationary_length,
    scaled_sigmoid,
    score_corpus,
    sweep_points,
    windows_from_json,
)

STANDARD = NAB_PROFILES["standard"]


def make_file(n: int = 1000, windows=((600, 699),), hits=(), name: str = "f.csv") -> FileScores:
    index = pd.date_range("2024-01-01", periods=n, freq="5min")
    scores = np.zeros(n)
    for i in hits:
        scores[i] = 1.0
    return FileScores(name, index, scores, tuple((index[a], index[b]) for a, b in windows))


def test_sigmoid_and_probation_follow_nab() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert scaled_sigmoid(3.5) == -1.0
    assert probationary_length(1000) == 150
    assert probationary_length(20000) == 750


def test_perfect_detector_scores_100_and_null_scores_0() -> None:
    files = [
        make_file(hits=(600,)),
        make_file(windows=((300, 349), (800, 899)), hits=(300, 800), name="g.csv"),
    ]
    for profile in NAB_PROFILES.values():
        assert score_corpus(files, profile).normalized_score == pytest.approx(100.0)
    never = [make_file(), make_file(windows=((300, 349), (800, 899)), name="g.csv")]
    for profile in NAB_PROFILES.values():
        result = score_corpus(never, profile)
        assert result.normalized_score == 0.0
        assert result.raw_score == result.null_score == -profile.fn_weight * 3


def test_earlier_detection_scores_more_and_only_first_counts() -> None:
    early = score_corpus([make_file(hits=(620,))], STANDARD).normalized_score
    late = score_corpus([make_file(hits=(690,))], STANDARD).normalized_score
    assert 0 < late < early < 100
    # a second detection in the same window changes nothing
    both = score_corpus([make_file(hits=(620, 690))], STANDARD).normalized_score
    assert both == pytest.approx(early)


def test_false_positives_cost_fp_weight_and_probation_is_ignored() -> None:
    base = score_corpus([make_file(hits=(600,))], STANDARD, threshold=0.5)
    with_fp = score_corpus([make_file(hits=(600, 400))], STANDARD, threshold=0.5)
    assert with_fp.raw_score == pytest.approx(base.raw_score - STANDARD.fp_weight)
    assert with_fp.false_positives == 1
    in_probation = score_corpus([make_file(hits=(600, 100))], STANDARD, threshold=0.5)
    assert in_probation.raw_score == pytest.approx(base.raw_score)
    # just after a window the false positive costs less than far away from it
    near = score_corpus([make_file(hits=(600, 705))], STANDARD, threshold=0.5)
    assert base.raw_score - STANDARD.fp_weight < near.raw_score < base.raw_score
    low_fp = CostProfile("x", 1.0, 0.22, 1.0)
    assert score_corpus(
        [make_file(hits=(600, 400))], low_fp, threshold=0.5
    ).raw_score == pytest.approx(base.raw_score - 0.22)


def test_threshold_is_optimised_over_all_files() -> None:
    index = pd.date_range("2024-01-01", periods=1000, freq="5min")
    scores = np.full(1000, 0.1)
    scores[650] = 0.8  # in the window
    scores[400] = 0.9  # a false positive scoring higher
    f = FileScores("f.csv", index, scores, ((index[600], index[699]),))
    result = score_corpus([f], STANDARD)
    assert result.threshold == pytest.approx(0.8)  # the FP costs 0.11 < the window's reward
    assert result.true_positives == 1 and result.false_positives == 1
    strict = CostProfile("strict", 1.0, 5.0, 1.0)
    assert score_corpus([f], strict).threshold > 0.9  # here firing at all does not pay


def test_event_metrics_count_events_not_points() -> None:
    f = make_file(windows=((300, 349), (800, 899)), hits=(310, 311, 312, 500, 501, 700))
    m = event_metrics([f], 0.5)
    assert (m.detected_windows, m.total_windows, m.false_alarms) == (1, 2, 2)
    assert m.precision == pytest.approx(1 / 3) and m.recall == pytest.approx(0.5)
    assert m.f1 == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))


def test_bad_inputs() -> None:
    index = pd.date_range("2024-01-01", periods=3, freq="5min")
    with pytest.raises(ValueError, match="timestamps"):
        FileScores("f", index, np.zeros(2), ())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sweep_points(FileScores("f", index, np.array([0.0, 2.0, 0.0]), ()), STANDARD)
    with pytest.raises(ValueError, match="ends before"):
        windows_from_json([["2024-01-02", "2024-01-01"]])
    with pytest.raises(ValueError, match="fpWeight"):
        CostProfile.from_mapping("p", {"CostMatrix": {"tpWeight": 1, "fnWeight": 1}})


@pytest.mark.slow
def test_windowed_gaussian_reproduces_nab_published_score(shared_data) -> None:
    """NAB publishes 50.9 for windowedGaussian on this split (standard profile)."""
    root = shared_data / "nab-dev"
    windows = json.loads((root / "labels" / "combined_windows.json").read_text())
    files, null = [], []
    for name, entries in sorted(windows.items()):
        frame = pd.read_csv(root / "data" / name)
        series = pd.Series(
            frame["value"].to_numpy(float),
            index=pd.DatetimeIndex(pd.to_datetime(frame["timestamp"])),
        )
        scores = WindowedGaussianDetector().fit_anomaly_score(series)
        files.append(FileScores(name, series.index, scores, windows_from_json(entries)))
        null.append(
            FileScores(name, series.index, np.zeros(len(series)), windows_from_json(entries))
        )
    score = score_corpus(files, STANDARD).normalized_score
    assert 50.0 <= score <= 52.0
    assert score_corpus(null, STANDARD).normalized_score == 0.0
