"""kill -9 a process running a MetricStore under load, at random moments, many times.

After each kill a store restarts on the same directory; every point appended more than one
fsync interval (plus a scheduling margin) before the kill must be readable, no value may
be wrong, and every whisper file must pass ``whisper.info`` and ``whisper.fetch``.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import whisper
from prometheus_client import CollectorRegistry

from collector.config import CollectorConfig
from collector.selfmetrics import CollectorMetrics
from collector.storage import MetricStore

FSYNC_INTERVAL = 0.1
MARGIN = 0.4  # scheduling on a loaded 2-core machine; the log is written each interval
METRICS_PER_RUN = 8
SHARED_METRICS = 8
BASE_AGE = 20 * 3600  # timestamps start this far back; one second per batch

SCHEMAS = "[all]\npattern = .*\nretentions = 1s:1d,1m:2d\n"

# The child: appends one batch every ~3 ms and prints "<seq> <time>" after each append.
CHILD = r"""
import asyncio, sys, time
from pathlib import Path
from prometheus_client import CollectorRegistry
from collector.config import CollectorConfig
from collector.selfmetrics import CollectorMetrics
from collector.storage import MetricStore

data_dir, conf_dir = sys.argv[1:3]
run, seq, base, shared, per_run = map(int, sys.argv[3:8])
fsync = float(sys.argv[8])

async def main():
    global seq
    config = CollectorConfig(data_dir=Path(data_dir), schemas_dir=Path(conf_dir),
                             wal_fsync_interval_seconds=fsync, wal_segment_bytes=16384)
    store = MetricStore(config, CollectorMetrics(CollectorRegistry()))
    await store.start()
    if run % 2 == 0:
        store.pause_writer()  # only the log can save these points
    print("ready", flush=True)
    names = [f"crash.shared.m{k}" for k in range(shared)]
    names += [f"crash.run{run}.m{k}" for k in range(per_run)]
    while True:
        store.append([(n, base + seq, float(seq)) for n in names])
        sys.stdout.write(f"{seq} {time.time():.6f}\n")
        sys.stdout.flush()
        seq += 1
        await asyncio.sleep(0.003)

asyncio.run(main())
"""


def run_child(data: Path, conf: Path, run: int, first_seq: int, base: int,
              rng: random.Random) -> tuple[list[tuple[int, float]], float]:
    """Start the child, kill -9 it at a random moment; (seq, time) lines and the kill time."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data), str(conf), str(run), str(first_seq), str(base),
         str(SHARED_METRICS), str(METRICS_PER_RUN), str(FSYNC_INTERVAL)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    assert ready and proc.stdout.readline().strip() == b"ready"
    time.sleep(rng.uniform(0.05, 1.5))  # sometimes during replay or the first writes
    killed_at = time.time()
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    lines = []
    for line in out.decode().splitlines():
        parts = line.split()
        if len(parts) == 2:  # a line torn by the kill has fewer fields
            lines.append((int(parts[0]), float(parts[1])))
    return lines, killed_at


@pytest.mark.slow
async def test_kill_9_at_random_moments_loses_nothing_accepted(tmp_path: Path) -> None:
    seed = int(os.environ.get("TIDEMARK_CRASH_SEED", time.time_ns()))  # failures print it
    rng = random.Random(seed)
    data, conf = tmp_path / "data", tmp_path / "conf"
    conf.mkdir()
    (conf / "storage-schemas.conf").write_text(SCHEMAS)
    config = CollectorConfig(data_dir=data, schemas_dir=conf)
    base = int(time.time()) - BASE_AGE
    next_seq = 0
    must_have: dict[str, set[int]] = {}
    runs = 13  # run 12, the last, is verified (12 % 3 != 1)
    for run in range(runs):
        lines, killed_at = run_child(data, conf, run, next_seq, base, rng)
        assert lines, "the child appended nothing before the kill"
        cutoff = killed_at - FSYNC_INTERVAL - MARGIN
        durable = {seq for seq, t in lines if t < cutoff}
        names = [f"crash.shared.m{k}" for k in range(SHARED_METRICS)]
        names += [f"crash.run{run}.m{k}" for k in range(METRICS_PER_RUN)]
        for name in names:
            must_have.setdefault(name, set()).update(durable)
        next_seq = lines[-1][0] + 1
        if run % 3 == 1:
            continue  # the next child replays this one's log (and may be killed doing so)

        # restart on the same directory: replay, then check every metric ever written
        metrics = CollectorMetrics(CollectorRegistry())
        store = MetricStore(config, metrics)
        await store.start()
        now = int(time.time())
        try:
            for name, seqs in must_have.items():
                series = store.fetch(name, base - 1, base + next_seq + 5, now=now)
                if series is None:  # nothing of it was durable yet: a very early kill
                    assert not seqs, (
                        f"seed {seed} run {run}: {name} lost all {len(seqs)} accepted points")
                    continue
                assert series.step == 1, name
                present = {series.start + i - base: v for i, v in enumerate(series.values)
                           if v is not None}
                wrong = {s: v for s, v in present.items() if v != float(s)}
                assert not wrong, f"seed {seed}: {name}: wrong values {list(wrong.items())[:5]}"
                missing = sorted(seqs - present.keys())
                assert not missing, (
                    f"seed {seed} run {run}: {name} lost {len(missing)} accepted points, "
                    f"e.g. {missing[:5]}")
        finally:
            await store.stop()
        for path in data.rglob("*.wsp"):
            info = whisper.info(str(path))
            assert info["archives"][0]["secondsPerPoint"] == 1
            assert whisper.fetch(str(path), base, now, now=now) is not None
    assert len(must_have) == SHARED_METRICS + runs * METRICS_PER_RUN
    assert sum(len(s) for s in must_have.values()) > 0  # the check above checked something


# The child: files may not grow past 64 KiB (RLIMIT_FSIZE), so log writes fail part-way
# (a torn record) every ~64 KiB; the store must carry on in a new segment each time.
FULL_DISK_CHILD = r"""
import asyncio, os, resource, sys, time
from pathlib import Path
from prometheus_client import CollectorRegistry
from collector.config import CollectorConfig
from collector.selfmetrics import CollectorMetrics
from collector.storage import MetricStore

data_dir, conf_dir, base = sys.argv[1], sys.argv[2], int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))

async def main():
    config = CollectorConfig(data_dir=Path(data_dir), schemas_dir=Path(conf_dir),
                             wal_fsync_interval_seconds=60, wal_segment_bytes=1 << 30)
    store = MetricStore(config, CollectorMetrics(CollectorRegistry()))
    store.pause_writer()
    await store.start()
    failures = 0
    for seq in range(400):
        store.append([(f"full.m{k}", base + seq, float(seq)) for k in range(20)])
        while True:
            try:
                await store.flush()
                break
            except OSError:
                failures += 1
    print(failures, len(os.listdir(Path(data_dir) / ".wal")), flush=True)
    os._exit(0)  # no drain: the next start must replay every segment

asyncio.run(main())
"""


async def test_failed_log_writes_continue_in_a_new_segment(tmp_path: Path) -> None:
    data, conf = tmp_path / "data", tmp_path / "conf"
    conf.mkdir()
    (conf / "storage-schemas.conf").write_text(SCHEMAS)
    base = int(time.time()) - 3600
    proc = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD, str(data), str(conf), str(base)],
                          capture_output=True, text=True, timeout=120, check=True)
    failures, segments = map(int, proc.stdout.split())
    assert failures >= 2 and segments == failures + 1
    metrics = CollectorMetrics(CollectorRegistry())
    store = MetricStore(CollectorConfig(data_dir=data, schemas_dir=conf), metrics)
    store.pause_writer()
    await store.start()
    try:
        assert metrics.wal_replayed_points._value.get() == 400 * 20
        for k in (0, 19):
            series = store.fetch(f"full.m{k}", base - 1, base + 400, now=base + 1000)
            assert series is not None
            assert [v for v in series.values if v is not None] == [float(s) for s in range(400)]
    finally:
        await store.stop()


# The child: whisper files cannot be made while files may not grow past 64 KiB (the soft
# RLIMIT_FSIZE); the writer must keep the points cached (readable) and retry, and write them
# once the limit is lifted.
RETRY_CHILD = r"""
import asyncio, resource, sys, time
from pathlib import Path
import whisper
from prometheus_client import CollectorRegistry
from collector.config import CollectorConfig
from collector.selfmetrics import CollectorMetrics
from collector.storage import MetricStore

data_dir = Path(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, hard))

async def until(cond):
    deadline = time.monotonic() + 60
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)

async def main():
    metrics = CollectorMetrics(CollectorRegistry())
    store = MetricStore(CollectorConfig(data_dir=data_dir), metrics)  # ~2 MB default files
    await store.start()
    now = int(time.time())
    now -= now % 10  # one point per 10 s slot
    store.append([("retry.a", now - 30, 1.0), ("retry.a", now - 20, 2.0)])
    await until(lambda: metrics.write_errors._value.get() >= 2)  # failed, retried, failed
    assert store.cache_points == 2
    assert not (data_dir / "retry" / "a.wsp").exists()
    series = store.fetch("retry.a", now - 60, now, now=now)
    assert [v for v in series.values if v is not None] == [1.0, 2.0]
    store.append([("retry.a", now - 10, 3.0)])
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    await until(lambda: store.cache_points == 0)
    _, values = whisper.fetch(str(data_dir / "retry" / "a.wsp"), now - 60, now, now=now)
    assert [v for v in values if v is not None] == [1.0, 2.0, 3.0], values
    await store.stop()
    print("ok", int(metrics.write_errors._value.get()))

asyncio.run(main())
"""


async def test_failed_whisper_writes_stay_cached_and_are_retried(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", RETRY_CHILD, str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    word, errors = proc.stdout.split()
    assert word == "ok" and int(errors) >= 2
