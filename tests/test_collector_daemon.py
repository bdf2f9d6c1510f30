"""`tidemark collector` as a real process on loopback: every protocol, bad input, limits,
graceful SIGTERM, and no loss of accepted points across kill -9."""

from __future__ import annotations

import os
import pickle
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import whisper

from tests.peers.process import PeerProcess, free_port, http_get, wait_until

SCHEMAS = "[default]\npattern = .*\nretentions = 10s:2d,1m:30d\n"


@dataclass
class Collector:
    process: PeerProcess
    data_dir: Path
    ports: dict[str, int]

    def url(self, path: str, **params: object) -> str:
        query = urllib.parse.urlencode(params, doseq=True)
        return f"http://127.0.0.1:{self.ports['http']}{path}" + (f"?{query}" if query else "")

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        status, body = http_get(self.url("/metrics"))
        assert status == 200
        wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in (labels or {}).items()) + "}"
                         if labels else "")
        for line in body.decode().splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0


def _config_dir(root: Path, toml: str) -> Path:
    conf = root / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "storage-schemas.conf").write_text(SCHEMAS)
    (conf / "collector.toml").write_text("[collector]\n" + toml)
    return conf / "collector.toml"


def start_collector(root: Path, toml: str = "", *, data_dir: Path | None = None,
                    udp: bool = True, pickle_port: bool = True) -> Collector:
    data_dir = data_dir or root / "data"
    config = _config_dir(root, toml)
    for _ in range(3):
        ports = {"plaintext": free_port(), "http": free_port(),
                 "udp": free_port(socket.SOCK_DGRAM) if udp else 0,
                 "pickle": free_port() if pickle_port else 0}
        process = PeerProcess("collector", [
            sys.executable, "-m", "tidemark", "collector", "--data-dir", str(data_dir),
            "--host", "127.0.0.1", "--plaintext-port", str(ports["plaintext"]),
            "--udp-port", str(ports["udp"]), "--pickle-port", str(ports["pickle"]),
            "--http-port", str(ports["http"]), "--config", str(config)],
            log_path=root / "collector.log")
        process.start()
        collector = Collector(process, data_dir, ports)

        def healthy(url: str = collector.url("/healthz")) -> bool:
            try:
                return http_get(url, timeout_seconds=2)[0] == 200
            except OSError:
                return False
        try:
            process.wait_ready(healthy, timeout_seconds=30, what="collector /healthz")
            return collector
        except Exception:  # a port was taken between free_port and bind: try others
            continue
    raise RuntimeError("collector did not start")


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    running = start_collector(tmp_path, "statsd_flush_interval_seconds = 1\n")
    yield running
    running.process.stop()


def send_tcp(port: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(30)
        while sock.recv(4096):
            pass


def frame(items: object, protocol: int = 2) -> bytes:
    payload = pickle.dumps(items, protocol=protocol)
    return struct.pack("!L", len(payload)) + payload


def wsp_values(data_dir: Path, path: str, start: int, end: int) -> dict[int, float]:
    file = data_dir / (path.replace(".", "/") + ".wsp")
    (from_, _until, step), values = whisper.fetch(str(file), start, end)
    return {from_ + i * step: v for i, v in enumerate(values) if v is not None}


def stop_gracefully(collector: Collector) -> int | None:
    return collector.process.stop(timeout_seconds=60)


def test_every_protocol_lands_in_whisper_after_sigterm(collector: Collector) -> None:
    now = int(time.time()) // 10 * 10 - 60
    send_tcp(collector.ports["plaintext"],
             f"e2e.tcp 1.5 {now}\ne2e.tcp 2.5 {now + 10}\ne2e.nonl 7 {now}".encode())
    send_tcp(collector.ports["pickle"], frame([("e2e.pickle", (now, 3.0))]) +
             frame([("e2e.pickle", (now + 10, 4.0))], protocol=0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(f"e2e.udp 5 {now}\n".encode(), ("127.0.0.1", collector.ports["udp"]))
        udp.sendto(b"e2e.calls:2|c\ne2e.calls:3|c\ne2e.rt:10|ms\ne2e.rt:20|ms",
                   ("127.0.0.1", collector.ports["udp"]))
    wait_until(lambda: collector.metric("tidemark_collector_points_accepted_total",
                                        {"protocol": "statsd"}) >= 8,
               timeout_seconds=20, what="statsd flush")
    assert stop_gracefully(collector) == 0
    data = collector.data_dir
    assert wsp_values(data, "e2e.tcp", now - 10, now + 20) == {now: 1.5, now + 10: 2.5}
    assert wsp_values(data, "e2e.nonl", now - 10, now + 20) == {now: 7.0}
    assert wsp_values(data, "e2e.pickle", now - 10, now + 20) == {now: 3.0, now + 10: 4.0}
    assert wsp_values(data, "e2e.udp", now - 10, now + 20) == {now: 5.0}
    recent = int(time.time()) + 20
    assert sum(wsp_values(data, "e2e.calls", recent - 120, recent).values()) == 5.0
    assert list(wsp_values(data, "e2e.rt.max", recent - 120, recent).values()) == [20.0]
    assert list(wsp_values(data, "e2e.rt.count", recent - 120, recent).values()) == [2.0]


def test_bad_input_is_counted_and_the_connection_goes_on(collector: Collector) -> None:
    now = int(time.time()) // 10 * 10 - 60
    lines = [
        f"bad.ok 1 {now}", "bad.two 1", "bad.four 1 2 3", f"bad.nan nan {now}",
        f"bad.x notanumber {now}", f"bad..empty 1 {now}", f"/etc/passwd 1 {now}",
        f"../../escape 1 {now}", f"bad.future 1 {now + 10**6}", f"bad.old 1 {now - 10**8}",
        "x" * 5000, f"bad.ctl\x01 1 {now}", f"bad.ok 2 {now + 10}",
    ]
    payload = ("\n".join(lines).encode() + b"\n\xff\xfe.bad 1 1\n"
               + f"bad.ok 3 {now + 20}\n".encode())
    send_tcp(collector.ports["plaintext"], payload)
    marker = collector.data_dir.parent / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(marker), "w"))

    hostile = frame([("bad.pk", (now, 1.0)), Exploit()])
    huge = struct.pack("!L", 5 * 1024 * 1024) + b"\0" * (5 * 1024 * 1024)
    send_tcp(collector.ports["pickle"], hostile + huge + b"\0\0\0\x03abc" +
             frame([("bad.pk", (now + 10, 9.0))]))
    wait_until(lambda: collector.metric("tidemark_collector_points_accepted_total",
                                        {"protocol": "pickle"}) >= 1,
               timeout_seconds=20, what="good pickle frame after bad ones")
    rejected = {reason: collector.metric("tidemark_collector_points_rejected_total",
                                         {"reason": reason})
                for reason in ["missing_timestamp", "field_count", "non_finite", "bad_value",
                               "bad_path", "future_timestamp", "too_old", "line_too_long",
                               "invalid_utf8", "forbidden_pickle", "frame_too_large",
                               "bad_pickle"]}
    assert rejected == {"missing_timestamp": 1, "field_count": 1, "non_finite": 1,
                        "bad_value": 1, "bad_path": 4, "future_timestamp": 1, "too_old": 1,
                        "line_too_long": 1, "invalid_utf8": 1, "forbidden_pickle": 1,
                        "frame_too_large": 1, "bad_pickle": 1}
    # the process's own figures sit beside the collector's
    assert collector.metric("process_resident_memory_bytes") > 0
    assert collector.metric("python_gc_collections_total", {"generation": "0"}) > 0
    assert stop_gracefully(collector) == 0
    assert not marker.exists()
    data = collector.data_dir
    assert wsp_values(data, "bad.ok", now - 10, now + 30) == {now: 1.0, now + 10: 2.0,
                                                               now + 20: 3.0}
    assert wsp_values(data, "bad.pk", now - 10, now + 30) == {now + 10: 9.0}
    stored = sorted(str(p.relative_to(data)) for p in data.rglob("*.wsp"))
    assert stored == ["bad/ok.wsp", "bad/pk.wsp"]
    assert not (data.parent / "etc").exists() and not (data.parent.parent / "escape.wsp").exists()


def test_connection_limit_closes_extra_connections(tmp_path: Path) -> None:
    running = start_collector(tmp_path, "max_connections = 2\n", udp=False, pickle_port=False)
    try:
        held = [socket.create_connection(("127.0.0.1", running.ports["plaintext"]))
                for _ in range(2)]
        wait_until(lambda: running.metric("tidemark_collector_connections",
                                          {"protocol": "plaintext"}) == 2,
                   timeout_seconds=10, what="two connections")
        extra = socket.create_connection(("127.0.0.1", running.ports["plaintext"]))
        extra.settimeout(10)
        assert extra.recv(1) == b""  # closed by the server at once
        assert running.metric("tidemark_collector_connections_refused_total") == 1
        for sock in held + [extra]:
            sock.close()
        # Port 0 disabled the pickle listener: nothing answers on the default port's place.
        assert running.ports["pickle"] == 0
    finally:
        assert running.process.stop(timeout_seconds=60) == 0


def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[collector]\nmax_connections = \"lots\"\n")
    result = subprocess.run([sys.executable, "-m", "tidemark", "collector", "--data-dir",
                             str(tmp_path / "d"), "--config", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "max_connections" in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "tidemark", "collector", "--data-dir",
                                 str(tmp_path / "d"), "--plaintext-port", str(port),
                                 "--udp-port", "0", "--pickle-port", "0", "--http-port", "0"],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot start the collector" in result.stderr.splitlines()[-1]


class _Sender(threading.Thread):
    """Sends numbered points on one TCP connection until stopped or the peer dies."""

    def __init__(self, port: int, prefix: str, base: int) -> None:
        super().__init__(daemon=True)
        self.port, self.prefix, self.base = port, prefix, base
        self.stop_flag = threading.Event()
        self.sent = 0

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                while not self.stop_flag.is_set() and self.sent < 200_000:
                    batch = "".join(self.line(self.sent + i) for i in range(500))
                    sock.sendall(batch.encode())
                    self.sent += 500
                    time.sleep(0.005)
        except OSError:
            pass

    def line(self, seq: int) -> str:
        return f"{self.prefix}.m{seq % 50} {seq} {self.base + (seq // 50) * 10}\n"


@pytest.mark.slow
def test_kill9_at_random_moments_loses_no_accepted_point(tmp_path: Path) -> None:
    fsync_seconds = 0.2
    data_dir = tmp_path / "data"
    rng = random.Random(20261124)
    base = int(time.time()) // 10 * 10 - 86400  # 1 day ago: 10 s slots stay distinct
    rounds = 8
    expectations: list[tuple[str, int]] = []
    for round_no in range(rounds):
        running = start_collector(tmp_path, f"wal_fsync_interval_seconds = {fsync_seconds}\n",
                                  data_dir=data_dir, udp=False, pickle_port=False)
        prefix = f"crash.r{round_no}"
        sender = _Sender(running.ports["plaintext"], prefix, base)
        sender.start()
        time.sleep(rng.uniform(0.3, 1.5))
        # One connection is processed in order, so the accepted count is a prefix of the stream.
        accepted = int(running.metric("tidemark_collector_points_accepted_total",
                                      {"protocol": "plaintext_tcp"}))
        time.sleep(fsync_seconds + rng.uniform(0.05, 0.6))
        os.killpg(running.process.pid, signal.SIGKILL)
        sender.stop_flag.set()
        sender.join(timeout=10)
        running.process.stop()
        expectations.append((prefix, accepted))
    # Restart once more (replays the log), stop gracefully (writes whisper), read the files.
    final = start_collector(tmp_path, "", data_dir=data_dir, udp=False, pickle_port=False)
    assert final.process.stop(timeout_seconds=120) == 0
    for file in data_dir.rglob("*.wsp"):
        whisper.info(str(file))  # raises on a corrupt header
    for prefix, accepted in expectations:
        assert accepted > 0
        end = base + (accepted // 50 + 2) * 10
        for m in range(50):
            got = wsp_values(data_dir, f"{prefix}.m{m}", base - 10, end)
            expected = {base + (seq // 50) * 10: float(seq) for seq in range(m, accepted, 50)}
            missing = {t: v for t, v in expected.items() if got.get(t) != v}
            assert not missing, (prefix, m, accepted, sorted(missing.items())[:5])


def test_backpressure_pauses_reading_and_loses_nothing(tmp_path: Path) -> None:
    running = start_collector(
        tmp_path, "cache_high_watermark_points = 2000\ncache_low_watermark_points = 1000\n",
        udp=False, pickle_port=False)
    now = int(time.time()) // 10 * 10 - 6000  # 500 steps of 10 s, all in the past
    lines = "".join(f"bp.m{i % 40} {i} {now + (i // 40) * 10}\n" for i in range(20_000))
    send_tcp(running.ports["plaintext"], lines.encode())
    assert running.metric("tidemark_collector_reading_pauses_total") >= 1
    assert running.metric("tidemark_collector_points_accepted_total",
                          {"protocol": "plaintext_tcp"}) == 20_000
    assert running.process.stop(timeout_seconds=60) == 0
    for m in range(40):
        got = wsp_values(running.data_dir, f"bp.m{m}", now - 10, now + 500 * 10 + 10)
        assert got == {now + (i // 40) * 10: float(i) for i in range(m, 20_000, 40)}


def test_idle_and_stalled_clients_do_not_block_others(tmp_path: Path) -> None:
    running = start_collector(tmp_path, "idle_timeout_seconds = 1\n", udp=False,
                              pickle_port=False)
    try:
        stalled = socket.create_connection(("127.0.0.1", running.ports["plaintext"]))
        stalled.sendall(b"stall.partial 1")  # half a line, then silence
        now = int(time.time()) // 10 * 10 - 60
        send_tcp(running.ports["plaintext"], f"live.ok 5 {now}\n".encode())
        assert running.metric("tidemark_collector_points_accepted_total",
                              {"protocol": "plaintext_tcp"}) == 1
        stalled.settimeout(30)
        assert stalled.recv(1) == b""  # the server closed the idle connection
        stalled.close()
    finally:
        assert running.process.stop(timeout_seconds=60) == 0
