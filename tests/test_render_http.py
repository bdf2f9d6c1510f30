"""The read API over real HTTP on 127.0.0.1 (aiohttp TestServer) with an in-memory source."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from collector.render import add_render_routes
from collector.selfmetrics import CollectorMetrics
from tests.test_render_support import MemorySource

NOW = 1_000_000_200  # a multiple of 60: 1000000200


def _source() -> MemorySource:
    base = NOW - 3600
    return MemorySource({
        "web.h1.qps": (base, 60, [float(i) for i in range(61)]),
        "web.h2.qps": (base, 60, [10.0] * 61),
        "web.h1.p999": (base, 60, [0.5] * 61),
        "db.a": (base, 60, [1.0] * 61),
    })


@pytest.fixture
async def setup() -> AsyncIterator[tuple[TestClient, CollectorMetrics, MemorySource]]:
    app = web.Application()
    metrics = CollectorMetrics(CollectorRegistry())
    source = _source()
    add_render_routes(app, source, metrics, max_series=50, max_body_bytes=4096,
                      clock=lambda: float(NOW))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client, metrics, source
    finally:
        await client.close()


def _count(metrics: CollectorMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_render_json(setup: tuple[TestClient, CollectorMetrics, MemorySource]) -> None:
    client, metrics, _ = setup
    resp = await client.get("/render", params={"target": "web.h1.qps", "from": "-5min",
                                                "format": "json"})
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body = await resp.json()
    # from = NOW-300 -> first point at NOW-240; values count up from 0 at NOW-3600
    assert body == [{"target": "web.h1.qps", "tags": {"name": "web.h1.qps"},
                     "datapoints": [[float(56 + i), NOW - 240 + 60 * i] for i in range(5)]}]
    assert _count(metrics, "tidemark_collector_render_seconds_count", endpoint="render") == 1


async def test_render_several_targets_and_functions(setup) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = setup
    resp = await client.get("/render?target=sumSeries(web.*.qps)&target=alias(db.a,%22x%22)"
                            f"&from={NOW - 120}&until={NOW}&format=json")
    body = await resp.json()
    assert [s["target"] for s in body] == ["sumSeries(web.*.qps)", "x"]
    # points at NOW-60 and NOW: web.h1 59, 60 plus web.h2 10
    assert [p[0] for p in body[0]["datapoints"]] == [69.0, 70.0]


async def test_render_post_form(setup) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = setup
    resp = await client.post("/render", data={"target": "scale(web.h2.qps, 2)",
                                              "from": "-2min", "format": "json"})
    assert resp.status == 200
    body = await resp.json()
    assert body[0]["target"] == "scale(web.h2.qps,2)"
    assert [p[0] for p in body[0]["datapoints"]] == [20.0, 20.0]


async def test_render_max_data_points_and_no_nulls(setup) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = setup
    resp = await client.get("/render", params={
        "target": "web.h2.qps", "from": "-1h", "format": "json", "maxDataPoints": "10"})
    points = (await resp.json())[0]["datapoints"]
    assert len(points) <= 11 and all(v == 10.0 for v, _ in points if v is not None)
    assert points[1][1] - points[0][1] == 360  # 60 points / 10 -> 6 values per point
    resp = await client.get("/render", params={
        "target": "web.h2.qps", "from": "-3h", "format": "json", "noNullPoints": "1"})
    points = (await resp.json())[0]["datapoints"]
    assert points and all(v is not None for v, _ in points)


async def test_render_jsonp(setup) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = setup
    resp = await client.get("/render", params={"target": "db.a", "from": "-1min",
                                                "jsonp": "cb.render_1"})
    assert resp.content_type == "text/javascript"
    assert await resp.text() == (
        f'cb.render_1([{{"target": "db.a", "tags": {{"name": "db.a"}}, '
        f'"datapoints": [[1.0, {NOW}]]}}])')
    resp = await client.get("/render", params={"target": "db.a", "jsonp": "alert(1)//"})
    assert resp.status == 400 and "jsonp" in await resp.text()


async def test_render_csv_and_raw(setup) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = setup
    resp = await client.get("/render", params={"target": "db.a", "from": "-1min",
                                                "format": "csv"})
    assert resp.content_type == "text/csv"
    assert await resp.text() == "db.a,2001-09-09 01:50:00,1.0\r\n"
    resp = await client.get("/render", params={"target": "db.a", "from": "-1min",
                                                "format": "raw"})
    assert await resp.text() == f"db.a,{NOW},{NOW + 60},60|1.0\n"


@pytest.mark.parametrize("query,fragment", [
    ({"target": "sumSeries(web.*.qps"}, "position 19"),
    ({"target": "nosuch(db.a)"}, "unknown function: nosuch"),
    ({"target": "scale(db.a, 'two')"}, 'Invalid \\"float\\" value'),
    ({"target": "summarize(db.a, 'eon')"}, "Invalid \\\"interval\\\" value"),
    ({"target": "db.a", "from": "-1fortnight"}, "param from"),
    ({"target": "db.a", "from": "now", "until": "now"}, "empty time range"),
    ({"target": "db.a", "format": "png"}, "unsupported format"),
    ({"target": "db.a", "xFilesFactor": "lots"}, "xFilesFactor"),
])
async def test_render_bad_requests(setup, query, fragment) -> None:  # type: ignore[no-untyped-def]
    client, metrics, _ = setup
    resp = await client.get("/render", params=query)
    assert resp.status == 400
    assert fragment in await resp.text()
    assert _count(metrics, "tidemark_collector_render_errors_total", endpoint="render",
                  status="400") == 1


async def test_render_limits(setup) -> None:  # type: ignore[no-untyped-def]
    client, metrics, _ = setup
    resp = await client.get("/render?" + "&".join(["target=db.a"] * 101))
    assert resp.status == 400 and "at most 100 targets" in await resp.text()
    resp = await client.post("/render", data={"target": "db.a", "pad": "x" * 5000})
    assert resp.status == 413
    assert _count(metrics, "tidemark_collector_render_errors_total", endpoint="render",
                  status="413") == 1

    async def chunked():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"target=db.a&pad=" + b"x" * 1000 + b"&"
    resp = await client.post("/render", data=chunked(),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 413
    many = "&".join(["target=web.*.*"] * 20)  # 3 series each, over max_series=50
    resp = await client.get(f"/render?{many}&from=-5min")
    assert resp.status == 400 and "max_series=50" in await resp.text()


async def test_find_treejson_and_completer(setup) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = setup
    resp = await client.get("/metrics/find", params={"query": "web.h1.*"})
    assert await resp.json() == [
        {"text": "p999", "id": "web.h1.p999", "allowChildren": 0, "expandable": 0, "leaf": 1},
        {"text": "qps", "id": "web.h1.qps", "allowChildren": 0, "expandable": 0, "leaf": 1},
    ]
    resp = await client.get("/metrics/find", params={"query": "*"})
    assert await resp.json() == [
        {"text": "db", "id": "db", "allowChildren": 1, "expandable": 1, "leaf": 0},
        {"text": "web", "id": "web", "allowChildren": 1, "expandable": 1, "leaf": 0},
    ]
    resp = await client.post("/metrics/find", data={"query": "web.h", "format": "completer"})
    assert await resp.json() == {"metrics": [
        {"path": "web.h1.", "name": "h1", "is_leaf": "0"},
        {"path": "web.h2.", "name": "h2", "is_leaf": "0"},
    ]}
    resp = await client.get("/metrics/find")
    assert resp.status == 400 and "query" in await resp.text()
    resp = await client.get("/metrics/find", params={"query": "*", "format": "pickle"})
    assert resp.status == 400


async def test_storage_refusing_a_pattern_is_a_bad_request(setup) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = setup
    resp = await client.get("/render", params={"target": "sumSeries(a/b.c)"})
    assert resp.status == 400 and "invalid path expression 'a/b.c'" in await resp.text()
    resp = await client.get("/metrics/find", params={"query": "a/b"})
    assert resp.status == 400 and "invalid query" in await resp.text()


async def test_index_json(setup) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = setup
    resp = await client.get("/metrics/index.json")
    assert await resp.json() == ["db.a", "web.h1.p999", "web.h1.qps", "web.h2.qps"]


async def test_functions(setup) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = setup
    resp = await client.get("/functions")
    body = await resp.json()
    for name in ("sumSeries", "sum", "avg", "movingAverage", "summarize", "groupByNode",
                 "asPercent", "aliasByNode", "countSeries", "consolidateBy"):
        assert name in body
    assert body["scale"]["params"] == [
        {"name": "seriesList", "type": "seriesList", "required": True},
        {"name": "factor", "type": "float", "required": True},
    ]
    assert body["scale"]["function"] == "scale(seriesList, factor)"
    assert body["scale"]["group"] == "Transform"
    keep = body["keepLastValue"]["params"][1]
    assert keep["default"] == float("inf")
    resp = await client.get("/functions", params={"group": "Alias", "pretty": "1"})
    text = await resp.text()
    assert "\n  " in text
    assert set(await resp.json()) == {"alias", "aliasByNode", "aliasByMetric", "aliasSub"}
    resp = await client.get("/functions/summarize")
    assert (await resp.json())["params"][2]["default"] == "sum"
    resp = await client.get("/functions/nope")
    assert resp.status == 404


async def test_does_not_claim_metrics_path(setup) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = setup
    resp = await client.get("/metrics")
    assert resp.status == 404


async def test_version_answers_the_graphite_release_we_follow(
        setup: tuple[TestClient, CollectorMetrics, MemorySource]) -> None:
    client, _, _ = setup
    resp = await client.get("/version")
    assert resp.status == 200
    assert (await resp.text()) == "1.1.8"
