"""The render functions, registered by name in :data:`REGISTRY` when this package loads."""

from __future__ import annotations

from collector.render.functions import alias, combine, filter, histogram, transform  # noqa: F401
from collector.render.functions.registry import (
    REGISTRY,
    FunctionSpec,
    Param,
    ParamType,
    function_info,
    validate_params,
)

__all__ = ["REGISTRY", "FunctionSpec", "Param", "ParamType", "function_info", "validate_params"]
