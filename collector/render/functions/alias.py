"""Functions renaming series: alias, aliasByNode, aliasByMetric, aliasSub, substr."""

from __future__ import annotations

import re
from typing import Any

from collector.render.context import RequestContext
from collector.render.errors import InputParameterError
from collector.render.functions.common import agg_key
from collector.render.functions.registry import Param, T, register
from collector.render.series import TimeSeries

__all__: list[str] = []

SeriesList = list[TimeSeries]
_SERIES = Param("seriesList", T.series_list, required=True)


@register("alias", "Alias", [_SERIES, Param("newName", T.string, required=True)])
def alias(ctx: RequestContext, seriesList: SeriesList, newName: str) -> SeriesList:
    """Names every series ``newName``."""
    for series in seriesList:
        series.name = newName
    return seriesList


@register("aliasByNode", "Alias", [
    _SERIES, Param("nodes", T.node_or_tag, required=True, multiple=True)])
def aliasByNode(ctx: RequestContext, seriesList: SeriesList, *nodes: Any) -> SeriesList:
    """Names each series by the given nodes (0-based, negative from the end) or tags."""
    for series in seriesList:
        series.name = agg_key(series, nodes)
    return seriesList


@register("substr", "Special", [
    _SERIES, Param("start", T.node, default=0), Param("stop", T.node, default=0)])
def substr(ctx: RequestContext, seriesList: SeriesList, start: int = 0,
           stop: int = 0) -> SeriesList:
    """Names each series by nodes ``start`` to ``stop`` of its metric path."""
    for series in seriesList:
        name = str(series.name)
        left = name.rfind("(") + 1
        right = name.find(")")
        if right < 0:
            right = len(name) + 1
        clean = name[left:right:]
        if int(stop) == 0:
            series.name = ".".join(clean.split(".")[int(start)::])
        else:
            series.name = ".".join(clean.split(".")[int(start):int(stop):])
        series.name = re.sub(",.*$", "", series.name)
    return seriesList


@register("aliasByMetric", "Alias", [_SERIES])
def aliasByMetric(ctx: RequestContext, seriesList: SeriesList) -> SeriesList:
    """Names each series by the last node of its metric path."""
    return substr(ctx, seriesList, -1, 0)


@register("aliasSub", "Alias", [
    _SERIES, Param("search", T.string, required=True), Param("replace", T.string, required=True)])
def aliasSub(ctx: RequestContext, seriesList: SeriesList, search: str,
             replace: str) -> SeriesList:
    """Renames series by a regular-expression substitution (``\\1`` for groups)."""
    try:
        pattern = re.compile(str(search))
        for series in seriesList:
            series.name = pattern.sub(str(replace), str(series.name))
    except (re.error, IndexError) as exc:
        raise InputParameterError(f"aliasSub: bad search or replace expression: {exc}") from exc
    return seriesList
