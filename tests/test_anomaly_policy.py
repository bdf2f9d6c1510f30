"""Alert policy: minimum duration, hysteresis, deduplication, explanations, feedback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.anomaly import AlertPolicy, AlertPolicyConfig, Explanation


def feed(
    policy: AlertPolicy, scores: list[float], series: str = "s", start: str = "2024-01-01 00:00"
):
    index = pd.date_range(start, periods=len(scores), freq="1min")
    n = len(scores)
    return policy.evaluate(
        series, index, np.asarray(scores), ["qps"] * n, np.full(n, 10.0), np.arange(n, dtype=float)
    )


def test_min_duration_requires_consecutive_points() -> None:
    policy = AlertPolicy(
        AlertPolicyConfig(trigger_threshold=0.9, resolve_threshold=0.5, min_duration_points=3)
    )
    firing = feed(policy, [0.95, 0.95, 0.1, 0.95, 0.95, 0.95, 0.95, 0.1])
    assert firing.tolist() == [False, False, False, False, False, True, True, False]
    assert len(policy.alerts) == 1
    assert policy.alerts[0].start == pd.Timestamp("2024-01-01 00:05")


def test_hysteresis_keeps_firing_until_below_resolve_threshold() -> None:
    policy = AlertPolicy(
        AlertPolicyConfig(trigger_threshold=0.9, resolve_threshold=0.6, dedup_seconds=0)
    )
    firing = feed(policy, [0.95, 0.8, 0.7, 0.61, 0.59, 0.8, 0.85])
    # 0.8 after resolving is below the trigger: no new alert
    assert firing.tolist() == [True, True, True, True, False, False, False]
    (alert,) = policy.alerts
    assert alert.end == pd.Timestamp("2024-01-01 00:04")


def test_deduplication_reopens_recent_alert() -> None:
    config = AlertPolicyConfig(trigger_threshold=0.9, resolve_threshold=0.5, dedup_seconds=600)
    policy = AlertPolicy(config)
    # fires, resolves, fires again 2 minutes later -> the same alert re-opened
    firing = feed(policy, [0.95, 0.1, 0.1, 0.97, 0.1] + [0.1] * 20 + [0.99, 0.1])
    assert firing.sum() == 3
    assert len(policy.alerts) == 2  # the third firing is 22 minutes later: a new alert
    first, second = policy.alerts
    assert first.reopened == 1
    assert first.peak.score == pytest.approx(0.97)
    assert second.start == pd.Timestamp("2024-01-01 00:25")
    # other series are independent
    feed(policy, [0.95], series="other")
    assert len(policy.alerts) == 3


def test_explanation_says_signal_expected_observed_and_rarity() -> None:
    policy = AlertPolicy(AlertPolicyConfig(trigger_threshold=0.9, resolve_threshold=0.5))
    ts = pd.Timestamp("2024-01-01")
    policy.observe("svc", ts, 0.999, Explanation("latency_ms", 20.0, 95.0, 0.999))
    (alert,) = policy.alerts
    text = alert.peak.text()
    assert "latency_ms" in text and "95" in text and "20" in text and "1 in 1,000" in text


def test_false_positive_feedback_raises_threshold_around_that_time() -> None:
    policy = AlertPolicy(AlertPolicyConfig(trigger_threshold=0.99))
    noon_monday = pd.Timestamp("2024-01-01 12:30")  # a Monday
    before = policy.threshold("svc", noon_monday)
    policy.mark_false_positive("svc", noon_monday)
    after = policy.threshold("svc", noon_monday)
    assert after > before
    # same hour next week: same slot; same hour on Tuesday and 11:xx Monday: raised less
    assert policy.threshold("svc", noon_monday + pd.Timedelta(days=7)) == after
    tuesday = policy.threshold("svc", noon_monday + pd.Timedelta(days=1))
    assert before < tuesday < after
    assert before < policy.threshold("svc", noon_monday - pd.Timedelta(hours=1)) < after
    # unrelated time and other series unchanged
    assert policy.threshold("svc", noon_monday + pd.Timedelta(hours=6)) == before
    assert policy.threshold("other", noon_monday) == before
    # the point that fired before now does not
    score = (before + after) / 2
    assert (
        policy.observe(
            "svc", noon_monday + pd.Timedelta(days=7), score, Explanation("v", 1, 2, score)
        )
        is False
    )
    assert policy.observe("other", noon_monday, score, Explanation("v", 1, 2, score)) is True


def test_missed_incident_feedback_lowers_threshold() -> None:
    policy = AlertPolicy(AlertPolicyConfig(trigger_threshold=0.99))
    ts = pd.Timestamp("2024-01-03 03:10")
    before = policy.threshold("svc", ts)
    policy.mark_missed("svc", ts)
    assert policy.threshold("svc", ts) < before
    score = policy.threshold("svc", ts) + 1e-6
    assert score < before
    assert policy.observe("svc", ts, score, Explanation("v", 1, 2, score)) is True


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="resolve_threshold"):
        AlertPolicyConfig(trigger_threshold=0.9, resolve_threshold=0.95)
    with pytest.raises(ValueError, match="min_duration_points"):
        AlertPolicyConfig(min_duration_points=0)
    with pytest.raises(ValueError, match="trigger_threshold"):
        AlertPolicyConfig(trigger_threshold=1.5)
    with pytest.raises(ValueError, match="equal lengths"):
        AlertPolicy().evaluate(
            "s", pd.date_range("2024-01-01", periods=2, freq="1min"), [0.1], ["v"], [1.0], [1.0]
        )
