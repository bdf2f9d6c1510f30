"""Evaluates parsed targets into series, fetching through a :class:`SeriesSource`.

Everything here blocks (the source does I/O); the views run :func:`evaluate_targets` in
an executor thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo
from typing import Any

from collector.render.context import RequestContext, SeriesBudget
from collector.render.errors import InputParameterError, NormalizeEmptyResult
from collector.render.functions import REGISTRY, validate_params
from collector.render.grammar import Call, Const, Node, PathExpr
from collector.render.series import TimeSeries
from collector.series import SeriesSource

__all__ = ["evaluate_targets", "evaluate_target", "fetch_data"]


def fetch_data(ctx: RequestContext, pattern: str) -> list[TimeSeries]:
    """Series of every leaf matching ``pattern`` in the context's range, sorted by name."""
    try:
        nodes = ctx.source.find(pattern)
    except ValueError as exc:  # the storage refuses unsafe or malformed patterns
        raise InputParameterError(f"invalid path expression {pattern!r}: {exc}") from exc
    leaves = [node for node in nodes if node.is_leaf]
    ctx.budget.take(len(leaves))
    by_name: dict[str, TimeSeries] = {}
    for node in leaves:
        fetched = ctx.source.fetch(node.path, ctx.start, ctx.end, ctx.now)
        if fetched is None or node.path in by_name:
            continue
        by_name[node.path] = TimeSeries(
            node.path, fetched.start, fetched.end, fetched.step, fetched.values,
            x_files_factor=ctx.x_files_factor, path_expression=pattern)
    return [by_name[name] for name in sorted(by_name)]


def _evaluate(ctx: RequestContext, node: Node) -> Any:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, PathExpr):
        return fetch_data(ctx, node.path)
    assert isinstance(node, Call)
    spec = REGISTRY.get(node.name)
    if spec is None:
        raise InputParameterError(f"Received request for unknown function: {node.name}")
    args = [_evaluate(ctx, arg) for arg in node.args]
    kwargs = {name: _evaluate(ctx, arg) for name, arg in node.kwargs}
    args, kwargs = validate_params(node.name, spec.params, args, kwargs)
    call_ctx = ctx.shifted()
    call_ctx.args = node.args
    try:
        return spec.func(call_ctx, *args, **kwargs)
    except NormalizeEmptyResult:
        return []


def evaluate_target(ctx: RequestContext, node: Node) -> list[TimeSeries]:
    """The series one target expression yields (graphite's ``evaluateTarget``)."""
    result = _evaluate(ctx, node)
    if isinstance(result, TimeSeries):
        return [result]
    if isinstance(result, list):
        return list(result)
    if result is None:
        return []
    raise InputParameterError(f"target evaluates to a {type(result).__name__}, not series")


def evaluate_targets(source: SeriesSource, targets: Sequence[Node], *, start: int, end: int,
                     now: int, tz: tzinfo, x_files_factor: float = 0.0,
                     max_series: int = 10_000) -> list[TimeSeries]:
    """All series of ``targets`` in order, fetching at most ``max_series`` series in total."""
    ctx = RequestContext(start=start, end=end, now=now, tz=tz, source=source,
                         budget=SeriesBudget(max_series), evaluate=evaluate_target,
                         x_files_factor=x_files_factor)
    out: list[TimeSeries] = []
    for node in targets:
        out.extend(evaluate_target(ctx, node))
    return out
