"""Emission: the reporter sends aligned windows to a real plaintext TCP/UDP listener."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from agent.config import AgentConfig
from agent.naming import MetricNaming
from agent.recorder import Recorder
from agent.reporter import Reporter, ReporterConfig
from tests.conftest import free_port


class LineServer:
    """A Graphite plaintext receiver on 127.0.0.1 (or ``host``, e.g. ``::1``): records
    every line it gets."""

    def __init__(self, port: int = 0, udp: bool = False, host: str = "127.0.0.1") -> None:
        self.lines: list[str] = []
        self._closed = False
        self._got = threading.Condition()
        owner = self

        class TCPHandler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for raw in self.rfile:
                    owner._add(raw.decode().rstrip("\n"))

        class UDPHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                for line in self.request[0].decode().splitlines():
                    owner._add(line)

        base = socketserver.ThreadingUDPServer if udp else socketserver.ThreadingTCPServer
        server_cls = type("Server", (base,), {
            "allow_reuse_address": True, "daemon_threads": True,
            "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
        self.server = server_cls((host, port), UDPHandler if udp else TCPHandler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _add(self, line: str) -> None:
        with self._got:
            self.lines.append(line)
            self._got.notify_all()

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        with self._got:
            while not predicate(self.lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._got.wait(left)
            return True

    def values(self, suffix: str) -> list[tuple[float, int]]:
        out = []
        for line in list(self.lines):
            name, value, ts = line.split(" ")
            if name.endswith(suffix):
                out.append((float(value), int(ts)))
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def line_server() -> Iterator[LineServer]:
    server = LineServer()
    yield server
    server.close()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(port: int, clock: Clock, **config: object) -> tuple[Recorder, Reporter, CollectorRegistry]:
    registry = CollectorRegistry()
    recorder = Recorder(10, default_node="10.0.0.1:80", clock=clock)
    reporter = Reporter(recorder, ReporterConfig(port=port, timeout_seconds=2,
                                                 **config),  # type: ignore[arg-type]
                        naming=MetricNaming(idc="bj"), registry=registry, clock=clock)
    return recorder, reporter, registry


def test_each_window_is_one_batch_stamped_with_its_aligned_start(line_server: LineServer) -> None:
    clock = Clock(1_700_000_003.0)
    recorder, reporter, registry = make(line_server.port, clock)
    for _ in range(30):
        recorder.record("svc", 4.0)
    clock.now = 1_700_000_009.9
    reporter.tick()  # window not over: nothing sent
    assert line_server.lines == []
    clock.now = 1_700_000_010.2
    reporter.tick()
    for _ in range(10):
        recorder.record("svc", 4.0, error="5xx")
    clock.now = 1_700_000_020.0
    reporter.tick()
    assert line_server.wait_for(lambda lines: sum(1 for x in lines if ".requests " in x) >= 2)
    assert line_server.values("tidemark.svc.bj.10_0_0_1_80.requests") == [
        (30.0, 1_700_000_000), (10.0, 1_700_000_010)]
    assert line_server.values(".errors.5xx") == [(0.0, 1_700_000_000), (10.0, 1_700_000_010)]
    assert line_server.values(".qps") == [(3.0, 1_700_000_000), (1.0, 1_700_000_010)]
    assert registry.get_sample_value("tidemark_agent_points_sent_total") == len(line_server.lines)
    reporter.stop()


def test_points_wait_while_the_collector_is_down_and_arrive_after_it_returns() -> None:
    port = free_port()
    clock = Clock(1_000_000.0)
    recorder, reporter, registry = make(port, clock, backoff_initial_seconds=1.0)
    for window in range(3):
        recorder.record("svc", 5.0)
        clock.now = 1_000_000.0 + 10 * (window + 1)
        reporter.tick()
    assert reporter.buffered_windows == [1_000_000, 1_000_010, 1_000_020]
    assert (registry.get_sample_value("tidemark_agent_send_errors_total") or 0) >= 1
    server = LineServer(port)
    try:
        clock.now += 0.5  # still backing off: no attempt yet
        reporter.tick()
        assert reporter.buffered_points > 0
        clock.now += 30.0  # backoff over; an idle window closes too (zero counts)
        reporter.tick()
        assert reporter.buffered_points == 0
        assert server.wait_for(lambda lines: sum(1 for x in lines if ".requests " in x) == 4)
        assert server.values(".requests") == [
            (1.0, 1_000_000), (1.0, 1_000_010), (1.0, 1_000_020), (0.0, 1_000_030)]
        assert registry.get_sample_value("tidemark_agent_buffered_points") == 0
    finally:
        reporter.stop()
        server.close()


def test_a_full_buffer_drops_the_oldest_windows_and_counts_them() -> None:
    port = free_port()
    clock = Clock(2_000_000.0)
    recorder, reporter, registry = make(port, clock, buffer_seconds=20,
                                        backoff_initial_seconds=1000, backoff_max_seconds=1000)
    for window in range(5):
        recorder.record("svc", 5.0)
        clock.now = 2_000_000.0 + 10 * (window + 1)
        reporter.tick()
    assert reporter.buffered_windows == [2_000_030, 2_000_040]
    assert reporter.dropped_points > 0
    assert registry.get_sample_value("tidemark_agent_points_dropped_total") == \
        reporter.dropped_points
    server = LineServer(port)
    try:
        # The shutdown flush closes the open (idle: zero counts) window, which pushes out
        # one more old window, then sends what is left.
        reporter.stop()
        assert server.wait_for(lambda lines: sum(1 for x in lines if ".requests " in x) == 2)
        assert sorted(server.values(".requests"), key=lambda p: p[1]) == [
            (1.0, 2_000_040), (0.0, 2_000_050)]
    finally:
        server.close()


def test_the_default_buffer_keeps_ten_minutes_of_windows() -> None:
    port = free_port()  # nobody listens
    clock = Clock(4_000_000.0)
    recorder, reporter, registry = make(port, clock, backoff_initial_seconds=1e6,
                                        backoff_max_seconds=1e6)
    for window in range(61):  # 10 s windows: the 61st pushes out the first
        recorder.record("svc", 5.0)
        clock.now = 4_000_000.0 + 10 * (window + 1)
        reporter.tick()
    assert reporter.buffered_windows == [4_000_000 + 10 * w for w in range(1, 61)]
    per_window = reporter.buffered_points // 60
    assert reporter.dropped_points == per_window > 0
    assert registry.get_sample_value("tidemark_agent_points_dropped_total") == per_window
    reporter.stop()


def test_the_thread_sends_on_its_own_and_stop_flushes_the_open_window(
        line_server: LineServer) -> None:
    recorder = Recorder(1, default_node="n")
    reporter = Reporter(recorder, ReporterConfig(port=line_server.port),
                        registry=CollectorRegistry())
    reporter.start()
    try:
        recorder.record("svc", 2.0)
        # The thread closes the window at its boundary without any help from us.
        assert line_server.wait_for(lambda lines: any(".requests 1 " in x for x in lines))
        recorder.record("svc", 2.0)
        recorder.record("svc", 2.0)
    finally:
        reporter.stop()
        reporter.stop()  # idempotent
    assert line_server.wait_for(
        lambda lines: sum(int(x.split()[1]) for x in lines if ".requests " in x) == 3)
    stamps = [ts for _, ts in line_server.values(".requests")]
    assert len(stamps) == len(set(stamps))


def test_udp_emission_splits_into_datagrams() -> None:
    server = LineServer(udp=True)
    try:
        clock = Clock(3_000_000.0)
        recorder, reporter, _ = make(server.port, clock, protocol="udp", udp_datagram_bytes=512)
        for i in range(200):
            recorder.record("svc", 1.0 + i)  # many buckets -> many lines
        clock.now += 10
        reporter.tick()
        expected = reporter.sent_points
        assert expected > 20
        assert server.wait_for(lambda lines: len(lines) == expected)
        reporter.stop()
    finally:
        server.close()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_an_ipv6_collector_address_in_brackets_gets_the_points(protocol: str) -> None:
    server = LineServer(udp=protocol == "udp", host="::1")
    try:
        config = AgentConfig(service="web", registry="http://127.0.0.1:1",
                             graphite=f"[::1]:{server.port}", graphite_protocol=protocol)
        host, port = config.graphite_host_port
        clock = Clock(3_000_000.0)
        recorder = Recorder(10, default_node="10.0.0.1:80", clock=clock)
        reporter = Reporter(recorder, ReporterConfig(host=host, port=port, protocol=protocol,
                                                     timeout_seconds=2),
                            naming=MetricNaming(idc="bj"), clock=clock)
        recorder.record("svc", 3.0)
        clock.now += 10
        reporter.tick()
        assert reporter.sent_points > 0
        assert server.wait_for(lambda lines: len(lines) == reporter.sent_points)
        assert server.values("tidemark.svc.bj.10_0_0_1_80.requests") == [(1.0, 3_000_000)]
        reporter.stop()
    finally:
        server.close()


def test_calls_past_max_keys_are_counted_on_metrics(line_server: LineServer) -> None:
    clock = Clock(3_000_000.0)
    registry = CollectorRegistry()
    recorder = Recorder(10, clock=clock, max_keys=2)
    reporter = Reporter(recorder, ReporterConfig(port=line_server.port, timeout_seconds=2),
                        registry=registry, clock=clock)
    for caller in ("a", "b", "c", "d", "a"):
        recorder.record("svc", 1.0, caller=caller)
    assert registry.get_sample_value("tidemark_agent_unrecorded_calls_total") == 2
    reporter.stop()


def test_bad_reporter_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="protocol"):
        ReporterConfig(protocol="http")
    with pytest.raises(ValueError, match="port"):
        ReporterConfig(port=0)


def test_sending_never_blocks_recording_when_the_collector_hangs() -> None:
    """A listener that accepts but never reads cannot stall record(): it runs on a thread."""
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(1)
    try:
        recorder = Recorder(1, default_node="n")
        reporter = Reporter(recorder, ReporterConfig(port=hang.getsockname()[1],
                                                     timeout_seconds=1),
                            registry=CollectorRegistry())
        reporter.start()
        done = 0
        for _ in range(20_000):
            recorder.record("svc", 1.0)
            done += 1
        assert done == 20_000
        reporter.stop()
    finally:
        hang.close()
