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

from agent.buckets import GAMMA, RELATIVE_ACCURACY, bucket_index, bucket_value
from agent.middleware import ASGIMiddleware, WSGIMiddleware, aiohttp_middleware
from agent.naming import MetricNaming, sanitize
from agent.recorder import ERROR_CLASSES, Recorder, SeriesKey, WindowSnapshot
from agent.reporter import Reporter, ReporterConfig
from agent.sketch import LogHistogram

__all__ = [
    "GAMMA", "RELATIVE_ACCURACY", "bucket_index", "bucket_value", "LogHistogram",
    "ERROR_CLASSES", "Recorder", "SeriesKey", "WindowSnapshot", "MetricNaming", "sanitize",
    "Reporter", "ReporterConfig", "aiohttp_middleware", "ASGIMiddleware", "WSGIMiddleware",
]
