"""Anomaly detectors (outlier-detector contract, causal, streaming) and the alert policy."""

from __future__ import annotations

from models.anomaly.base import BaseDetector, ScoredPoint
from models.anomaly.catalog import DEFAULT_DETECTOR, DETECTORS, make_detector
from models.anomaly.changepoint import CusumDetector
from models.anomaly.ensemble import EnsembleDetector
from models.anomaly.esd import SeasonalHybridESD
from models.anomaly.iforest import IsolationForestDetector
from models.anomaly.policy import Alert, AlertPolicy, AlertPolicyConfig, Explanation
from models.anomaly.reference import WindowedGaussianDetector
from models.anomaly.residual import SeasonalResidualDetector

__all__ = [
    "BaseDetector",
    "ScoredPoint",
    "SeasonalResidualDetector",
    "SeasonalHybridESD",
    "IsolationForestDetector",
    "CusumDetector",
    "EnsembleDetector",
    "WindowedGaussianDetector",
    "DETECTORS",
    "DEFAULT_DETECTOR",
    "make_detector",
    "Alert",
    "AlertPolicy",
    "AlertPolicyConfig",
    "Explanation",
]
