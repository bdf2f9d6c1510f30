"""Pure models: pandas/numpy in, results out. No sockets, no files, no configuration reading.

Forecasters follow the scikit-learn estimator contract and return forecasts indexed by
future timestamps; anomaly detectors follow the outlier-detector contract
(``score_samples``, ``decision_function``, ``predict``).
"""

from __future__ import annotations

__all__: list[str] = []

# anomaly detection (models/anomaly, models/nab.py)
from models.anomaly import (  # noqa: E402
    AlertPolicy,
    AlertPolicyConfig,
    CusumDetector,
    EnsembleDetector,
    IsolationForestDetector,
    SeasonalHybridESD,
    SeasonalResidualDetector,
    WindowedGaussianDetector,
)

__all__ += [
    "AlertPolicy",
    "AlertPolicyConfig",
    "CusumDetector",
    "EnsembleDetector",
    "IsolationForestDetector",
    "SeasonalHybridESD",
    "SeasonalResidualDetector",
    "WindowedGaussianDetector",
]

# capacity curve and synthetic traffic (models/capacity_curve.py, models/synthetic)
from models.capacity_curve import CapacityCurve, CapacityEstimate  # noqa: E402
from models.synthetic import (  # noqa: E402
    FlashCrowd,
    LevelShift,
    MMcNode,
    Outage,
    SyntheticTraffic,
    generate_traffic,
    random_events,
)

__all__ += [
    "CapacityCurve",
    "CapacityEstimate",
    "FlashCrowd",
    "LevelShift",
    "MMcNode",
    "Outage",
    "SyntheticTraffic",
    "generate_traffic",
    "random_events",
]

# forecasting (models/forecast)
from models.forecast import (  # noqa: E402
    AutoForecaster,
    ETSForecaster,
    ForecastWarning,
    GlobalGBMForecaster,
    HoltWintersForecaster,
    MSTLForecaster,
    SeasonalNaiveForecaster,
)

__all__ += [
    "AutoForecaster",
    "ETSForecaster",
    "ForecastWarning",
    "GlobalGBMForecaster",
    "HoltWintersForecaster",
    "MSTLForecaster",
    "SeasonalNaiveForecaster",
]
