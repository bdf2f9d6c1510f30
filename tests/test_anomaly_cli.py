"""`tidemark detect` and `tidemark eval anomaly` end to end, as subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TIDEMARK = Path(sys.executable).parent / "tidemark"


def tidemark(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TIDEMARK), *args], capture_output=True, text=True, timeout=120)


def write_series(
    path: Path, n: int = 2016, spike_at: int | None = 1800, extra: bool = False
) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    index = pd.date_range("2024-03-01", periods=n, freq="5min")
    value = 100 + 20 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 1, n)
    if spike_at is not None:
        value[spike_at] += 25
    frame = pd.DataFrame({"timestamp": index.strftime("%Y-%m-%d %H:%M:%S"), "value": value})
    if extra:
        frame["latency_ms"] = 20 + rng.normal(0, 1, n)
    frame.to_csv(path, index=False)
    return frame


@pytest.mark.parametrize("detector", [None, "esd"])
def test_detect_writes_scores_and_alerts(tmp_path: Path, detector: str | None) -> None:
    source = tmp_path / "in.csv"
    frame = write_series(source)
    out = tmp_path / "out.csv"
    args = ["detect", "--input", str(source), "--output", str(out)]
    if detector:
        args += ["--detector", detector]
    proc = tidemark(*args)
    assert proc.returncode == 0, proc.stderr
    result = pd.read_csv(out)
    assert list(result.columns) == ["timestamp", "value", "anomaly_score", "is_anomaly"]
    assert len(result) == len(frame)
    assert result["timestamp"].tolist() == frame["timestamp"].tolist()
    np.testing.assert_allclose(result["value"], frame["value"])
    assert result["anomaly_score"].between(0, 1).all()
    assert set(result["is_anomaly"].unique()) <= {0, 1}
    assert result["is_anomaly"].iloc[1800] == 1
    # after two days of warm-up (the seasonal pattern is learned), alerts are rare
    assert result["is_anomaly"].iloc[576:].mean() < 0.01


def test_detect_is_causal_and_explains(tmp_path: Path) -> None:
    full, prefix = tmp_path / "full.csv", tmp_path / "prefix.csv"
    frame = write_series(full, extra=True)
    frame.iloc[:1000].to_csv(prefix, index=False)
    out_full, out_prefix = tmp_path / "a.csv", tmp_path / "b.csv"
    assert (
        tidemark("detect", "--input", str(full), "--output", str(out_full), "--explain").returncode
        == 0
    )
    assert (
        tidemark(
            "detect", "--input", str(prefix), "--output", str(out_prefix), "--explain"
        ).returncode
        == 0
    )
    a, b = pd.read_csv(out_full), pd.read_csv(out_prefix)
    assert list(a.columns) == [
        "timestamp",
        "value",
        "latency_ms",
        "anomaly_score",
        "is_anomaly",
        "anomaly_explanation",
    ]
    np.testing.assert_allclose(a["anomaly_score"].iloc[:1000], b["anomaly_score"], atol=1e-9)
    explanation = a["anomaly_explanation"].iloc[1800]
    assert explanation.startswith("value: observed") and "expected" in explanation


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("time,value\n2024-01-01,1\n", "no 'timestamp' column"),
        ("timestamp\n2024-01-01\n", "no value column"),
        ("timestamp,value\n", "no data rows"),
        ("timestamp,value\n2024-01-01,abc\n", "'abc' is not a number"),
        ("timestamp,value\nyesterday-ish,1\n", "bad timestamp"),
        ("timestamp,value\n2024-01-02,1\n2024-01-01,2\n", "backwards"),
    ],
)
def test_detect_bad_input_exits_2_with_one_line(tmp_path: Path, content: str, message: str) -> None:
    source = tmp_path / "bad.csv"
    source.write_text(content)
    proc = tidemark("detect", "--input", str(source), "--output", str(tmp_path / "out.csv"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "out.csv").exists()


def test_detect_usage_errors(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    write_series(source, n=50, spike_at=None)
    for args, message in [
        (
            ["--input", str(tmp_path / "missing.csv"), "--output", str(tmp_path / "o.csv")],
            "does not exist",
        ),
        (
            ["--input", str(source), "--output", str(tmp_path / "o.csv"), "--detector", "magic"],
            "unknown detector",
        ),
        (["--input", str(source), "--output", str(tmp_path / "no" / "o.csv")], "output directory"),
        (
            ["--input", str(source), "--output", str(tmp_path / "o.csv"), "--threshold", "1.5"],
            "trigger_threshold",
        ),
    ]:
        proc = tidemark("detect", *args)
        assert (
            proc.returncode == 2
            and message in proc.stderr
            and len(proc.stderr.strip().splitlines()) == 1
        )


def make_corpus(root: Path) -> None:
    """A tiny NAB-layout corpus: one file with a spike inside its window, one without."""
    (root / "data" / "g").mkdir(parents=True)
    (root / "labels").mkdir()
    write_series(root / "data" / "g" / "spiky.csv", n=2016, spike_at=1700)
    write_series(root / "data" / "g" / "clean.csv", n=2016, spike_at=None)
    index = pd.date_range("2024-03-01", periods=2016, freq="5min")
    windows = {
        "g/spiky.csv": [[str(index[1650]), str(index[1750])]],
        "g/clean.csv": [],
        "g/absent.csv": [],
    }
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))


def test_eval_anomaly_scores_a_corpus(tmp_path: Path) -> None:
    make_corpus(tmp_path)
    report = tmp_path / "report.json"
    proc = tidemark(
        "eval",
        "anomaly",
        "--data-dir",
        str(tmp_path),
        "--detector",
        "residual",
        "--detector",
        "windowed-gaussian",
        "--json",
        str(report),
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 files, 1 windows" in proc.stdout
    rows = json.loads(report.read_text())
    assert [r["detector"] for r in rows] == ["residual", "windowed-gaussian"]
    residual = rows[0]
    assert set(residual["scores"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    # the spike sits in the middle of the window: found, and few false alarms
    assert 50 < residual["scores"]["standard"] <= 100
    assert residual["recall"] == 1.0


def test_eval_anomaly_usage_errors(tmp_path: Path) -> None:
    proc = tidemark("eval", "anomaly", "--data-dir", str(tmp_path))
    assert proc.returncode == 2 and "combined_windows.json" in proc.stderr
    make_corpus(tmp_path)
    (tmp_path / "labels" / "combined_windows.json").write_text(json.dumps({"../../etc/passwd": []}))
    proc = tidemark("eval", "anomaly", "--data-dir", str(tmp_path))
    assert proc.returncode == 2 and "outside" in proc.stderr
    proc = tidemark("eval", "anomaly", "--data-dir", str(tmp_path), "--detector", "magic")
    assert proc.returncode == 2 and "unknown detector" in proc.stderr
    proc = tidemark("eval")
    assert proc.returncode == 2 and "anomaly" in proc.stderr


def test_detect_feedback_tunes_alerts(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    write_series(source, spike_at=None)
    base_out = tmp_path / "base.csv"
    assert tidemark("detect", "--input", str(source), "--output", str(base_out)).returncode == 0
    base = pd.read_csv(base_out)
    alerting = np.flatnonzero(base["is_anomaly"].to_numpy() == 1)
    assert len(alerting) > 0  # at the NAB-tuned operating point clean data alerts ~daily
    false_alarm = int(alerting[0])
    quiet = base["anomaly_score"].where(base["is_anomaly"] == 0).iloc[600:]
    missed = int(quiet.idxmax())
    feedback = tmp_path / "feedback.csv"
    rows = [f"{base['timestamp'].iloc[false_alarm]},false_positive"] * 8
    rows += [f"{base['timestamp'].iloc[missed]},missed"] * 8
    feedback.write_text("timestamp,label\n" + "\n".join(rows) + "\n")
    tuned_out = tmp_path / "tuned.csv"
    args = [
        "detect",
        "--input",
        str(source),
        "--output",
        str(tuned_out),
        "--feedback",
        str(feedback),
    ]
    proc = tidemark(*args)
    assert proc.returncode == 0, proc.stderr
    tuned = pd.read_csv(tuned_out)
    np.testing.assert_allclose(tuned["anomaly_score"], base["anomaly_score"])  # scores unchanged
    assert tuned["is_anomaly"].iloc[false_alarm] == 0
    assert tuned["is_anomaly"].iloc[missed] == 1
    feedback.write_text("timestamp,label\n2024-03-01,maybe\n")
    proc = tidemark(*args)
    assert proc.returncode == 2 and "label must be one of" in proc.stderr
