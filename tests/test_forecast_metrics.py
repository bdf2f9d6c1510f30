"""M4 metric functions against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.forecast.m4 import (
    classical_multiplicative_indices,
    coverage,
    m4_frame_to_series,
    mase,
    msis,
    naive2_forecast,
    owa,
    seasonality_test,
    smape,
)


def test_smape_by_hand() -> None:
    # |100-110|·200/(210) = 9.5238..., |50-40|·200/90 = 22.222...
    expected = (2000 / 210 + 2000 / 90) / 2
    assert smape([100, 50], [110, 40]) == pytest.approx(expected)
    assert smape([0, 10], [0, 10]) == 0.0


def test_mase_by_hand() -> None:
    insample = [1, 2, 3, 5, 4, 6]  # seasonal differences at m=2: 2, 3, 1, 1 -> mean 1.75
    assert mase([10, 12], [11, 10], insample, season=2) == pytest.approx(1.5 / 1.75)
    # m=1: differences 1, 1, 2, 1, 2 -> mean 1.4
    assert mase([7], [6], insample, season=1) == pytest.approx(1 / 1.4)


def test_msis_and_coverage_by_hand() -> None:
    insample = [1, 2, 3, 5, 4, 6]  # scale 1.75 at m=2
    actual = [10, 20, 30]
    lower = [8, 21, 25]
    upper = [12, 22, 29]
    # widths 4, 1, 4; penalties 0, 40·(21-20)=40, 40·(30-29)=40 at alpha=0.05
    expected = ((4 + 0) + (1 + 40) + (4 + 40)) / 3 / 1.75
    assert msis(actual, lower, upper, insample, season=2, alpha=0.05) == pytest.approx(expected)
    assert coverage(actual, lower, upper) == pytest.approx(1 / 3)


def test_owa_is_the_mean_of_ratios() -> None:
    assert owa(10.0, 1.0, 20.0, 2.0) == pytest.approx(0.5)
    assert owa(15.0, 0.5, 10.0, 1.0) == pytest.approx((1.5 + 0.5) / 2)


def test_seasonality_test_finds_a_clear_cycle_and_not_noise() -> None:
    steps = np.arange(24 * 20)
    seasonal = 100 + 30 * np.sin(2 * np.pi * steps / 24)
    noise = np.random.default_rng(3).normal(100, 1, steps.size)
    assert seasonality_test(seasonal, 24)
    assert not seasonality_test(noise, 24)


def test_classical_decomposition_recovers_multiplicative_indices() -> None:
    pattern = np.array([0.5, 1.0, 1.5, 1.0])
    values = 10.0 * np.tile(pattern, 6)
    indices = classical_multiplicative_indices(values, 4)
    assert indices == pytest.approx(pattern)
    assert indices.mean() == pytest.approx(1.0)


def test_naive2_reseasonalises_the_last_adjusted_value() -> None:
    steps = np.arange(24 * 10)
    pattern = 1 + 0.5 * np.sin(2 * np.pi * steps / 24)
    values = 200.0 * pattern
    forecast = naive2_forecast(values, 48, 24)
    expected = 200.0 * (1 + 0.5 * np.sin(2 * np.pi * np.arange(steps.size, steps.size + 48) / 24))
    assert forecast == pytest.approx(expected, rel=1e-6)
    flat = np.random.default_rng(1).normal(50, 1, 240)
    assert naive2_forecast(flat, 5, 24) == pytest.approx(np.full(5, flat[-1]))


def test_bad_metric_input_is_refused_with_a_message() -> None:
    with pytest.raises(ValueError, match="forecast has 1 values"):
        smape([1, 2], [1])
    with pytest.raises(ValueError, match="constant"):
        mase([1], [1], [5, 5, 5, 5], season=1)
    with pytest.raises(ValueError, match="alpha"):
        msis([1], [0], [2], [1, 2, 3], season=1, alpha=1.5)
    with pytest.raises(ValueError, match="needs more than season"):
        mase([1], [1], [1, 2], season=24)


def test_m4_frame_to_series_drops_padding_and_gives_hourly_index() -> None:
    frame = pd.DataFrame(
        {"V1": ["H1", "H2"], "V2": [1.0, 4.0], "V3": [2.0, 5.0], "V4": [3.0, math.nan]}
    )
    series = m4_frame_to_series(frame)
    assert list(series) == ["H1", "H2"]
    assert series["H1"].tolist() == [1.0, 2.0, 3.0]
    assert series["H2"].tolist() == [4.0, 5.0]
    assert series["H2"].index.freqstr == "h"
    with pytest.raises(ValueError, match="V1"):
        m4_frame_to_series(frame.drop(columns="V1"))
