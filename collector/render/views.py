"""aiohttp handlers of the read API: /render, /metrics/find, /metrics/index.json, /functions."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, tzinfo
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from collector.render.attime import epoch_seconds, get_timezone, parse_at_time
from collector.render.consolidate import apply_max_data_points
from collector.render.errors import InputParameterError, LimitExceeded
from collector.render.evaluator import evaluate_targets
from collector.render.formats import render_csv, render_json, render_raw
from collector.render.functions import REGISTRY, function_info
from collector.render.grammar import Node, ParseError, parse_target
from collector.selfmetrics import CollectorMetrics
from collector.series import MetricNode, SeriesSource

__all__ = ["add_render_routes", "MAX_TARGETS", "MAX_INDEX_NODES"]

log = logging.getLogger(__name__)

MAX_TARGETS = 100
MAX_INDEX_NODES = 1_000_000
MAX_INDEX_DEPTH = 64
_FORM = "application/x-www-form-urlencoded"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=json.dumps({"error": message}),
                        content_type="application/json")


async def _params(request: web.Request, max_body_bytes: int) -> MultiDict[str]:
    """Query parameters followed by form-encoded POST parameters (graphite merges both)."""
    params: MultiDict[str] = MultiDict(request.query)
    if request.method != "POST":
        return params
    if request.content_length is not None and request.content_length > max_body_bytes:
        raise _HTTPError(413, f"request body larger than {max_body_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(65536):
        size += len(chunk)
        if size > max_body_bytes:
            raise _HTTPError(413, f"request body larger than {max_body_bytes} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        return params
    if request.content_type not in (_FORM, "application/octet-stream", ""):
        raise _HTTPError(415, f"POST body must be {_FORM}, not {request.content_type}")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise _HTTPError(400, "POST body is not valid UTF-8") from exc
    for key, value in pairs:
        params.add(key, value)
    return params


def _last(params: MultiDict[str] | MultiDictProxy[str], name: str,
          default: str | None = None) -> str | None:
    values = params.getall(name, [])
    return values[-1] if values else default


def _int_param(params: MultiDict[str], name: str, default: int) -> int:
    value = _last(params, name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise InputParameterError(f"Invalid int value {value!r} for param {name}") from exc


def _time_params(params: MultiDict[str], clock: Callable[[], float]) -> tuple[
        tzinfo, datetime, datetime, datetime]:
    tz = get_timezone(_last(params, "tz"))

    def parse(name: str, value: str, now: datetime | None) -> datetime:
        try:
            return parse_at_time(value, tz, now)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            raise InputParameterError(f"Invalid value {value!r} for param {name}: {exc}") from exc

    now_text = _last(params, "now")
    now = parse("now", now_text, None) if now_text is not None else datetime.fromtimestamp(
        clock(), tz)
    until_text = _last(params, "until")
    from_text = _last(params, "from")
    until = parse("until", until_text, now) if until_text is not None else now
    start = parse("from", from_text, now) if from_text is not None else parse("from", "-1d", now)
    return tz, now, min(start, until), max(start, until)


def _evaluate_request(source: SeriesSource, nodes: list[Node], start: int, end: int, now: int,
                      tz: tzinfo, xff: float, max_series: int, max_points: int | None,
                      fmt: str, no_nulls: bool, pretty: bool) -> str:
    data = evaluate_targets(source, nodes, start=start, end=end, now=now, tz=tz,
                            x_files_factor=xff, max_series=max_series)
    if fmt == "csv":
        return render_csv(data, tz)
    if fmt == "raw":
        return render_raw(data)
    if max_points is not None:
        apply_max_data_points(data, max_points)
    return render_json(data, no_null_points=no_nulls, pretty=pretty)


def _walk_index(source: SeriesSource) -> list[str]:
    leaves: set[str] = set()
    frontier = ["*"]
    seen = 0
    for _ in range(MAX_INDEX_DEPTH):
        if not frontier:
            break
        deeper: list[str] = []
        for pattern in frontier:
            for node in source.find(pattern):
                seen += 1
                if seen > MAX_INDEX_NODES:
                    raise LimitExceeded(f"metric tree has more than {MAX_INDEX_NODES} nodes")
                if node.is_leaf:
                    leaves.add(node.path)
                else:
                    deeper.append(node.path + ".*")
        frontier = deeper
    return sorted(leaves)


def _node_name(node: MetricNode) -> str:
    return node.path.rsplit(".", 1)[-1]


def _tree_json(nodes: list[MetricNode], base_path: str, wildcards: bool) -> list[dict[str, Any]]:
    branch = {"allowChildren": 1, "expandable": 1, "leaf": 0}
    leaf = {"allowChildren": 0, "expandable": 0, "leaf": 1}
    results: list[dict[str, Any]] = []
    if len(nodes) > 1 and wildcards:
        wildcard: dict[str, Any] = {"text": "*", "id": base_path + "*"}
        wildcard.update(branch if any(not n.is_leaf for n in nodes) else leaf)
        results.append(wildcard)
    found: set[str] = set()
    branches: list[dict[str, Any]] = []
    leaves: list[dict[str, Any]] = []
    for node in nodes:
        name = _node_name(node)
        if name in found:
            continue
        found.add(name)
        entry: dict[str, Any] = {"text": unquote_plus(name), "id": base_path + name}
        if node.is_leaf:
            entry.update(leaf)
            leaves.append(entry)
        else:
            entry.update(branch)
            branches.append(entry)
    return results + branches + leaves


_JSONP = re.compile(r"[A-Za-z_$][A-Za-z0-9_$.]{0,99}")


def _jsonp(params: MultiDict[str]) -> str | None:
    """The ``jsonp`` callback name, refused unless it is a plain (dotted) identifier."""
    name = _last(params, "jsonp")
    if name and _JSONP.fullmatch(name) is None:
        raise InputParameterError(f"jsonp must be a JavaScript identifier, not {name[:100]!r}")
    return name or None


def _json_body(data: Any, params: MultiDict[str], *, sort_keys: bool = False,
               infinity: bool = False) -> web.Response:
    pretty = bool(_last(params, "pretty"))
    text = json.dumps(data, indent=2 if pretty else None, sort_keys=sort_keys and pretty)
    if infinity:
        text = text.replace("Infinity,", "1e9999,")
    jsonp = _jsonp(params)
    if jsonp:
        return web.Response(text=f"{jsonp}({text})", content_type="text/javascript")
    return web.Response(text=text, content_type="application/json")


GRAPHITE_VERSION = "1.1.8"  # the graphite-web release whose API this one follows


def add_render_routes(app: web.Application, source: SeriesSource, metrics: CollectorMetrics, *,
                      max_series: int = 10_000, max_body_bytes: int = 1 << 20,
                      clock: Callable[[], float] = time.time) -> None:
    """Add GET and POST ``/render``, ``/metrics/find``, ``/metrics/index.json`` and
    ``/functions`` (plus ``/functions/{name}``) reading through ``source``."""
    if max_series < 1 or max_body_bytes < 1:
        raise ValueError("max_series and max_body_bytes must be positive")

    def instrument(endpoint: str, handler: Callable[[web.Request, MultiDict[str]],
                                                    Awaitable[web.Response]]) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            try:
                params = await _params(request, max_body_bytes)
                response = await handler(request, params)
            except _HTTPError as exc:
                response = _error(exc.status, str(exc))
            except (InputParameterError, ParseError) as exc:
                response = _error(400, str(exc))
            except web.HTTPException:
                raise
            except Exception:  # noqa: BLE001 - answer 500, keep serving
                log.exception("read API %s failed", endpoint)
                response = _error(500, f"internal error in {endpoint}")
            finally:
                metrics.render_seconds.labels(endpoint).observe(time.perf_counter() - started)
            if response.status >= 400:
                metrics.render_errors.labels(endpoint, str(response.status)).inc()
            return response
        return wrapped

    async def render(request: web.Request, params: MultiDict[str]) -> web.Response:
        targets = params.getall("target", []) or params.getall("target[]", [])
        targets = [t for t in targets if t.strip()]
        if len(targets) > MAX_TARGETS:
            raise LimitExceeded(f"at most {MAX_TARGETS} targets per request, got {len(targets)}")
        fmt = "json"
        if "rawData" in params:
            fmt = "raw"
        fmt = _last(params, "format", fmt) or fmt
        if fmt not in ("json", "csv", "raw"):
            raise InputParameterError(f"unsupported format {fmt!r}: use json, csv or raw")
        tz, now, start, end = _time_params(params, clock)
        start_s, end_s, now_s = epoch_seconds(start), epoch_seconds(end), epoch_seconds(now)
        if start_s == end_s:
            raise InputParameterError("Invalid empty time range")
        xff_text = _last(params, "xFilesFactor", "0") or "0"
        try:
            xff = float(xff_text)
        except ValueError as exc:
            raise InputParameterError(f"Invalid xFilesFactor {xff_text!r}") from exc
        max_points_text = _last(params, "maxDataPoints")
        max_points = int(max_points_text) if max_points_text and max_points_text.isdigit() else None
        if max_points == 0:
            raise InputParameterError("maxDataPoints must be at least 1")
        jsonp = _jsonp(params)
        nodes = [parse_target(t) for t in targets]
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(None, partial(
            _evaluate_request, source, nodes, start_s, end_s, now_s, tz, xff, max_series,
            max_points, fmt, "noNullPoints" in params, bool(_last(params, "pretty"))))
        if fmt == "csv":
            return web.Response(text=body, content_type="text/csv")
        if fmt == "raw":
            return web.Response(text=body, content_type="text/plain")
        if jsonp:
            return web.Response(text=f"{jsonp}({body})", content_type="text/javascript")
        return web.Response(text=body, content_type="application/json")

    async def find(request: web.Request, params: MultiDict[str]) -> web.Response:
        fmt = _last(params, "format", "treejson") or "treejson"
        leaves_only = _int_param(params, "leavesOnly", 0)
        wildcards = _int_param(params, "wildcards", 0)
        position = _int_param(params, "position", -1)
        automatic_variants = _int_param(params, "automatic_variants", 0)
        _time_params(params, clock)  # validated as graphite does, then unused
        query = _last(params, "query")
        if query is None:
            raise InputParameterError("Missing required parameter 'query'")
        if query == "":
            raise InputParameterError("Required parameter 'query' is empty")
        base_path = query.rsplit(".", 1)[0] + "." if "." in query else ""
        if fmt == "completer":
            query = query.replace("..", "*.")
            if not query.endswith("*"):
                query += "*"
            if automatic_variants:
                parts = query.split(".")
                parts = [f"{{{p}}}" if "," in p and "{" not in p else p for p in parts]
                query = ".".join(parts)
        if fmt not in ("treejson", "completer", "nodelist"):
            raise InputParameterError("Invalid value for 'format' parameter")
        loop = asyncio.get_running_loop()
        try:
            matches = await loop.run_in_executor(None, source.find, query)
        except ValueError as exc:
            raise InputParameterError(f"invalid query {query!r}: {exc}") from exc
        if leaves_only:
            matches = [m for m in matches if m.is_leaf]
        matches = sorted(matches, key=_node_name)
        content: Any
        if fmt == "treejson":
            content = _tree_json(matches, base_path, bool(wildcards))
        elif fmt == "nodelist":
            try:
                content = {"nodes": sorted({m.path.split(".")[position] for m in matches})}
            except IndexError as exc:
                raise InputParameterError(f"position {position} is past the end of a path") from exc
        else:
            results: list[dict[str, Any]] = []
            for node in matches:
                info = {"path": node.path + ("" if node.is_leaf else "."),
                        "name": _node_name(node), "is_leaf": str(int(node.is_leaf))}
                results.append(info)
            if len(results) > 1 and wildcards:
                results.append({"name": "*"})
            content = {"metrics": results}
        response = _json_body(content, params)
        response.headers["Pragma"] = "no-cache"
        response.headers["Cache-Control"] = "no-cache"
        return response

    async def index(request: web.Request, params: MultiDict[str]) -> web.Response:
        loop = asyncio.get_running_loop()
        paths = await loop.run_in_executor(None, _walk_index, source)
        return _json_body(paths, params)

    async def functions(request: web.Request, params: MultiDict[str]) -> web.Response:
        name = request.match_info.get("name")
        if name is not None:
            if _last(params, "type") == "pie" or name not in REGISTRY:
                return _error(404, f"Function not found: {name}")
            return _json_body(function_info(name, REGISTRY[name]), params, sort_keys=True,
                              infinity=True)
        result: dict[str, Any] = {}
        if _last(params, "type") != "pie":
            grouped = (_last(params, "grouped", "") or "").lower() in ("1", "true")
            group = _last(params, "group")
            for fname, spec in REGISTRY.items():
                if group is not None and group != spec.group:
                    continue
                info = function_info(fname, spec)
                if grouped:
                    result.setdefault(spec.group, {})[fname] = info
                else:
                    result[fname] = info
        return _json_body(result, params, sort_keys=True, infinity=True)

    async def version(request: web.Request) -> web.Response:
        # Grafana's Graphite data source asks this to choose its dialect (1.1: /functions).
        return web.Response(text=GRAPHITE_VERSION)

    routes = [
        ("/version", version),
        ("/render", instrument("render", render)),
        ("/metrics/find", instrument("find", find)),
        ("/metrics/index.json", instrument("index", index)),
        ("/functions", instrument("functions", functions)),
        ("/functions/{name}", instrument("functions", functions)),
    ]
    for path, handler in routes:
        app.router.add_route("GET", path, handler)
        app.router.add_route("POST", path, handler)
