"""Pure ingest pieces: path rules, line framing, pickle frames, statsd aggregation, intake."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from collector.config import CollectorConfig
from collector.ingest.intake import Intake
from collector.ingest.paths import check_path
from collector.ingest.pickle_frames import ForbiddenPickle, FrameDecoder, decode_payload
from collector.ingest.plaintext import LineSplitter
from collector.ingest.statsd import StatsdAggregator, StatsdError, looks_like_statsd
from collector.selfmetrics import CollectorMetrics


@pytest.mark.parametrize("path", ["a", "a.b.c", "svc.idc-1.10_1_2_3_8080.latency.p999",
                                  "ünïcode.ok", "a:b.c=d"])
def test_good_paths(path: str) -> None:
    assert check_path(path) is None


@pytest.mark.parametrize("path, fragment", [
    ("", "empty"), (".a", "empty path segment"), ("a.", "empty path segment"),
    ("a..b", "empty path segment"), ("/etc/passwd", "'/'"), ("a/../../b", "'/'"),
    ("a\\b", "'\\\\'"), ("a\x00b", "'\\x00'"), ("a\x1bb", "'\\x1b'"), ("a b", "' '"),
    ("a.*", "'*'"), ("a;tag=1", "';'"), ("x" * 1025, "longer than"),
    ("a." + "y" * 201, "segment longer"),
])
def test_bad_paths_say_why(path: str, fragment: str) -> None:
    problem = check_path(path)
    assert problem is not None and fragment in problem


def test_line_splitter_joins_chunks_and_skips_long_lines_to_their_newline() -> None:
    splitter = LineSplitter(max_line_bytes=16)
    lines, skipped = splitter.feed(b"a 1 1\nb 2")
    assert lines == [b"a 1 1"] and skipped == 0
    lines, skipped = splitter.feed(b" 2\n" + b"x" * 40)
    assert lines == [b"b 2 2"] and skipped == 1
    lines, skipped = splitter.feed(b"still the long line")
    assert lines == [] and skipped == 0
    lines, skipped = splitter.feed(b"end\nc 3 3\n" + b"y" * 20 + b"\nd 4 4")
    assert lines == [b"c 3 3"] and skipped == 1
    assert splitter.finish() == [b"d 4 4"]
    assert splitter.finish() == []


def _frame(obj: object, protocol: int = 2) -> bytes:
    payload = pickle.dumps(obj, protocol=protocol)
    return struct.pack("!L", len(payload)) + payload


def test_frame_decoder_handles_split_frames_and_skips_oversized_ones() -> None:
    decoder = FrameDecoder(max_frame_bytes=200)
    good = _frame([("a.b", (1, 2.0))])
    big = _frame([("a.b", (i, float(i))) for i in range(100)])
    stream = good + big + good
    payloads: list[bytes] = []
    oversized = 0
    for i in range(0, len(stream), 7):  # dribble 7 bytes at a time
        got, over = decoder.feed(stream[i:i + 7])
        payloads += got
        oversized += over
    assert oversized == 1
    assert [decode_payload(p) for p in payloads] == [[("a.b", (1, 2.0))]] * 2
    assert decoder.buffered_bytes == 0


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_restricted_unpickler_refuses_globals_and_runs_nothing(tmp_path: Path,
                                                               protocol: int) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps([("a", (1, 1.0)), _Exploit(marker)], protocol=protocol)
    with pytest.raises(ForbiddenPickle, match="builtins|io"):
        decode_payload(payload)
    assert not marker.exists()


def test_malformed_pickles_are_unpickling_errors() -> None:
    with pytest.raises(pickle.UnpicklingError):
        decode_payload(b"\x80\x02]q\x00(")  # truncated
    with pytest.raises(pickle.UnpicklingError, match="expected a list"):
        decode_payload(pickle.dumps({"a": 1}))


def test_statsd_mapping() -> None:
    agg = StatsdAggregator()
    for line in ["svc.calls:1|c", "svc.calls:2|c|@0.5", "svc.rt:10|ms", "svc.rt:30|ms",
                 "svc.rt:20|ms", "svc.conn:5|g", "svc.conn:+2|g", "svc.p999:12.5|kv",
                 "svc.p999:13.5|kv"]:
        agg.add_line(line)
    points = dict(agg.flush())
    assert points["svc.calls"] == 5.0  # 1 + 2 / 0.5
    assert points["svc.rt.count"] == 3 and points["svc.rt.mean"] == 20.0
    assert points["svc.rt.min"] == 10 and points["svc.rt.max"] == 30
    assert points["svc.rt.p50"] == 20 and points["svc.rt.p99"] == 30
    assert points["svc.conn"] == 7.0 and points["svc.p999"] == 13.5
    again = dict(agg.flush())
    assert again == {"svc.conn": 7.0}  # gauges persist; counters, timers and kvs restart


@pytest.mark.parametrize("line", ["nocolon|c", "a:1", "a:x|c", "a:1|zz", "a:1|c|0.5",
                                  "a:1|c|@2", "a:nan|g", ":1|c"])
def test_statsd_rejects_bad_lines(line: str) -> None:
    with pytest.raises(StatsdError):
        StatsdAggregator().add_line(line)


def test_statsd_detection() -> None:
    assert looks_like_statsd(b"a.b:1|c")
    assert not looks_like_statsd(b"a.b 1 1700000000")


class _RecordingSink:
    def __init__(self) -> None:
        self.points: list[tuple[str, int, float]] = []

    def append(self, points: list[tuple[str, int, float]]) -> None:
        self.points.extend(points)

    def max_retention_seconds(self, path: str) -> int:
        return 86400


def _rejected(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value("tidemark_collector_points_rejected_total",
                                      {"reason": reason})
    return value or 0.0


def test_intake_accepts_good_points_and_counts_each_rejection(tmp_path: Path) -> None:
    now = 1_700_000_000.0
    registry = CollectorRegistry()
    sink = _RecordingSink()
    config = CollectorConfig(data_dir=tmp_path)
    intake = Intake(sink, CollectorMetrics(registry), config, clock=lambda: now)
    lines = [
        b"a.b 1.5 1700000000", b"a.b 2 1699999990.7", b"", b"too few 1 2 3", b"a.c 1",
        b"a.d x 1700000000", b"a.e nan 1700000000", b"a.e inf 1700000000",
        b"a.f 1 soon", b"a.g 1 1800000000", b"a.h 1 1600000000", b"a..i 1 1700000000",
        b"\xff\xfe 1 1700000000", b"../etc 1 1700000000", b"a.j -3e2 1700000000",
        b"a.now 4 -1", b"a.now 5 -1.0",
    ]
    intake.plaintext_lines(lines, "plaintext_tcp")
    assert sink.points == [("a.b", 1700000000, 1.5), ("a.b", 1699999990, 2.0),
                           ("a.j", 1700000000, -300.0), ("a.now", 1700000000, 4.0),
                           ("a.now", 1700000000, 5.0)]
    for reason in ["field_count", "missing_timestamp", "bad_value", "bad_timestamp",
                   "future_timestamp", "too_old", "invalid_utf8"]:
        assert _rejected(registry, reason) == 1, reason
    assert _rejected(registry, "non_finite") == 2
    assert _rejected(registry, "bad_path") == 2
    assert registry.get_sample_value("tidemark_collector_points_accepted_total",
                                     {"protocol": "plaintext_tcp"}) == 5
    assert not list(tmp_path.iterdir())  # validation alone never touches the disk


def test_intake_cardinality_guard_limits_new_metrics_per_minute(tmp_path: Path) -> None:
    clock = [1_700_000_000.0]
    registry = CollectorRegistry()
    sink = _RecordingSink()
    config = CollectorConfig(data_dir=tmp_path, max_new_metrics_per_minute=3)
    intake = Intake(sink, CollectorMetrics(registry), config, clock=lambda: clock[0])
    intake.plaintext_lines([f"m.{i} 1 1700000000".encode() for i in range(5)], "plaintext_tcp")
    assert [p[0] for p in sink.points] == ["m.0", "m.1", "m.2"]
    assert _rejected(registry, "cardinality") == 2
    intake.plaintext_lines([b"m.0 2 1700000000"], "plaintext_tcp")  # known metrics still flow
    assert sink.points[-1] == ("m.0", 1700000000, 2.0)
    clock[0] += 61
    intake.plaintext_lines([b"m.4 1 1700000060"], "plaintext_tcp")
    assert sink.points[-1][0] == "m.4"


def test_intake_pickle_items_are_checked_one_by_one(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    sink = _RecordingSink()
    intake = Intake(sink, CollectorMetrics(registry), CollectorConfig(data_dir=tmp_path),
                    clock=lambda: 1_700_000_000.0)
    intake.datapoints([("a.b", (1700000000, 1)), ("a.c",), (5, (1700000000, 1)),
                       ("a.d", (1700000000, "2.5"))], "pickle")
    assert sink.points == [("a.b", 1700000000, 1.0), ("a.d", 1700000000, 2.5)]
    assert _rejected(registry, "field_count") == 1 and _rejected(registry, "bad_path") == 1
