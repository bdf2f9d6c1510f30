"""The function table: each render function with its parameter spec.

The spec validates arguments before a call (graphite's ``validateParams``) and is what
``/functions`` describes to Grafana.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from collector.render.attime import parse_time_offset
from collector.render.errors import InputParameterError
from collector.render.functions.safe import AGG_FUNC_ALIASES, AGG_FUNCS
from collector.render.series import TimeSeries

MAX_WINDOW_POINTS = 1_000_000

__all__ = ["MAX_WINDOW_POINTS", "ParamType", "Param", "FunctionSpec", "REGISTRY", "register",
           "validate_params", "function_info", "T", "agg_func_names"]


def _boolean(value: Any) -> bool:
    if isinstance(value, str):
        if value.lower() == "true":
            return True
        if value.lower() == "false":
            return False
        raise ValueError(f"Invalid boolean value: {value!r}")
    if type(value) in (int, float):
        if value == 0:
            return False
        if value == 1:
            return True
        raise ValueError(f"Invalid boolean value: {value!r}")
    return bool(value)


def _float(value: Any) -> float:
    if isinstance(value, list) or value is None:
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def _integer(value: Any) -> int:
    if type(value) is float or isinstance(value, list) or value is None:
        raise ValueError(f"Not a valid integer value: {value!r}")
    return int(value)


def _int_or_inf(value: Any) -> int | float:
    try:
        return _integer(value)
    except (TypeError, ValueError):
        pass
    try:
        if float(value) == math.inf:
            return math.inf
    except (TypeError, ValueError, OverflowError):
        pass
    raise ValueError(f"Not a valid integer nor float value: {value!r}")


def _interval(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"Invalid interval value: {value!r}")
    try:
        parse_time_offset(value)
    except (IndexError, KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"Invalid interval value: {value!r}: {exc}") from exc
    return value


def _int_or_interval(value: Any) -> Any:
    if isinstance(value, str):
        return _interval(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or not 0 <= value <= MAX_WINDOW_POINTS:
            raise ValueError(f"window of points must be 0..{MAX_WINDOW_POINTS}: {value!r}")
        return value
    raise ValueError(f"not an integer nor an interval: {value!r}")


def _series_list(value: Any) -> list[TimeSeries]:
    if not isinstance(value, list) or not all(isinstance(s, TimeSeries) for s in value):
        raise ValueError(f"not a series list: {value!r}")
    return value


def _node_or_tag(value: Any) -> Any:
    if isinstance(value, (list, bool)) or value is None:
        raise ValueError(f"not a node index nor a tag: {value!r}")
    return value


def _string(value: Any) -> Any:
    if isinstance(value, list):
        raise ValueError("a series list where a string was expected")
    return value


@dataclass(frozen=True)
class ParamType:
    """A parameter type: its /functions name and how a value is checked and converted."""

    name: str
    validator: Callable[[Any], Any] | None = None

    def convert(self, value: Any) -> Any:
        return value if self.validator is None else self.validator(value)


class T:
    """The parameter types graphite-web declares, by their /functions names."""

    boolean = ParamType("boolean", _boolean)
    float = ParamType("float", _float)
    integer = ParamType("integer", _integer)
    interval = ParamType("interval", _interval)
    int_or_interval = ParamType("intOrInterval", _int_or_interval)
    int_or_inf = ParamType("intOrInf", _int_or_inf)
    node = ParamType("node", _integer)
    node_or_tag = ParamType("nodeOrTag", _node_or_tag)
    series_list = ParamType("seriesList", _series_list)
    string = ParamType("string", _string)
    any = ParamType("any")
    agg_func = ParamType("aggFunc", _string)
    agg_or_series_func = ParamType("aggOrSeriesFunc", _string)


def agg_func_names() -> list[str]:
    """Names valid where graphite takes an aggregation function."""
    return list(AGG_FUNCS) + list(AGG_FUNC_ALIASES)


@dataclass(frozen=True)
class Param:
    """One declared parameter of a render function."""

    name: str
    type: ParamType
    required: bool = False
    default: Any = None
    multiple: bool = False
    options: tuple[Any, ...] = ()
    suggestions: tuple[Any, ...] = ()

    def all_options(self) -> list[Any]:
        options = set(self.options)
        if self.type is T.agg_func:
            options.update(agg_func_names())
        elif self.type is T.agg_or_series_func:
            options.update(agg_func_names())
            options.update(name for name, spec in REGISTRY.items() if spec.aggregator)
            options.update(f"{name}Series" for name in agg_func_names())
        return sorted(options, key=str)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type.name}
        if self.required:
            out["required"] = True
        if self.default is not None:
            out["default"] = self.default
        if self.multiple:
            out["multiple"] = True
        options = self.all_options()
        if options:
            out["options"] = options
        if self.suggestions:
            out["suggestions"] = list(self.suggestions)
        return out

    def validate(self, value: Any, func: str) -> Any:
        if value is None and self.default is not None:
            return self.default  # graphite passes None on and fails later; use the default
        if value is None and not self.required and not self.multiple:
            return value
        options = self.all_options()
        deprecated = (self.type is T.agg_func and isinstance(value, str)
                      and value.endswith("Series") and value[:-6] in options)
        if options and value not in options and not deprecated:
            raise InputParameterError(
                f'Invalid option specified for function "{func}" parameter "{self.name}": '
                f"{value!r}")
        try:
            return self.type.convert(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InputParameterError(
                f'Invalid "{self.type.name}" value specified for function "{func}" '
                f'parameter "{self.name}": {_short(value)}') from exc


def _short(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)} series"
    return repr(value)


@dataclass(frozen=True)
class FunctionSpec:
    """A registered render function."""

    name: str
    func: Callable[..., Any]
    group: str
    params: tuple[Param, ...]
    aggregator: bool = False
    description: str = ""
    signature: str = field(default="")


REGISTRY: dict[str, FunctionSpec] = {}


def _signature(func: Callable[..., Any]) -> str:
    sig = inspect.signature(func)
    params = [p.replace(annotation=inspect.Parameter.empty)
              for p in list(sig.parameters.values())[1:]]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def register(names: str | tuple[str, ...], group: str, params: list[Param],
             aggregator: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding a function under each of ``names`` (the first is the main name)."""
    all_names = (names,) if isinstance(names, str) else names

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        doc = inspect.getdoc(func) or ""
        sig = _signature(func)
        for name in all_names:
            REGISTRY[name] = FunctionSpec(name, func, group, tuple(params), aggregator, doc,
                                          name + sig)
        return func

    return decorate


def validate_params(func: str, params: tuple[Param, ...], args: list[Any],
                    kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Check and convert arguments against ``params`` exactly as graphite-web 1.1 does."""
    if len(args) + len(kwargs) > len(params):
        if not params or not params[-1].multiple:
            raise InputParameterError(f'Too many parameters specified for function "{func}"')
        args_params, kwargs_params = list(params), []
    else:
        args_params, kwargs_params = list(params[:len(args)]), list(params[len(args):])
    valid_args = []
    for i, arg in enumerate(args):
        param = args_params[i] if i < len(args_params) else args_params[-1]
        valid_args.append(param.validate(arg, func))
    valid_kwargs: dict[str, Any] = {}
    for param in kwargs_params:
        value = kwargs.get(param.name)
        if value is None:
            if param.required:
                raise InputParameterError(
                    f'Missing required parameter "{param.name}" for function "{func}"')
            continue
        valid_kwargs[param.name] = param.validate(value, func)
    unexpected = [key for key in kwargs if key not in valid_kwargs]
    if unexpected:
        raise InputParameterError(
            f'Unexpected key word arguments for function "{func}": {", ".join(unexpected)}')
    return valid_args, valid_kwargs


def function_info(name: str, spec: FunctionSpec) -> dict[str, Any]:
    """The JSON graphite's /functions gives for one function."""
    return {
        "name": name,
        "function": spec.signature,
        "description": spec.description,
        "module": spec.func.__module__,
        "group": spec.group,
        "params": [p.to_json() for p in spec.params],
    }
