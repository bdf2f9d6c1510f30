"""Detectors by name, for the CLIs and the benchmark (``DEFAULT_DETECTOR`` is our best)."""

from __future__ import annotations

from collections.abc import Callable

from models.anomaly.base import BaseDetector
from models.anomaly.changepoint import CusumDetector
from models.anomaly.ensemble import EnsembleDetector
from models.anomaly.esd import SeasonalHybridESD
from models.anomaly.iforest import IsolationForestDetector
from models.anomaly.reference import WindowedGaussianDetector
from models.anomaly.residual import SeasonalResidualDetector

__all__ = ["DETECTORS", "DEFAULT_DETECTOR", "make_detector"]

DETECTORS: dict[str, Callable[[], BaseDetector]] = {
    "ensemble": EnsembleDetector,
    "residual": SeasonalResidualDetector,
    "esd": SeasonalHybridESD,
    "iforest": IsolationForestDetector,
    "cusum": CusumDetector,
    "windowed-gaussian": WindowedGaussianDetector,
}

DEFAULT_DETECTOR = "ensemble"


def make_detector(name: str) -> BaseDetector:
    """A new detector with its default parameters; ValueError names the known ones."""
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r} (known: {', '.join(DETECTORS)})") from None
    return factory()
