"""The sidecar agent: per-call recording, the metric naming contract, emission to the collector.

Measuring (usable in-process by any Python service)::

    recorder = Recorder(interval_seconds=10, default_node="10.1.2.3:8080")
    reporter = Reporter(recorder, ReporterConfig(host="collector", port=2003),
                        naming=MetricNaming(prefix="tidemark", idc="bj"))
    reporter.start()
    with recorder.measure("user-service"):
        ...
    reporter.stop()
"""

from agent.native import use_interpreted

use_interpreted()  # before the compiled modules are imported (see agent/native.py)

from agent.buckets import GAMMA, RELATIVE_ACCURACY, bucket_index, bucket_value  # noqa: E402
from agent.middleware import ASGIMiddleware, WSGIMiddleware, aiohttp_middleware  # noqa: E402
from agent.naming import MetricNaming, sanitize  # noqa: E402
from agent.recorder import ERROR_CLASSES, Recorder, SeriesKey, WindowSnapshot  # noqa: E402
from agent.reporter import Reporter, ReporterConfig  # noqa: E402
from agent.sketch import LogHistogram  # noqa: E402

__all__ = [
    "GAMMA", "RELATIVE_ACCURACY", "bucket_index", "bucket_value", "LogHistogram",
    "ERROR_CLASSES", "Recorder", "SeriesKey", "WindowSnapshot", "MetricNaming", "sanitize",
    "Reporter", "ReporterConfig", "aiohttp_middleware", "ASGIMiddleware", "WSGIMiddleware",
]
