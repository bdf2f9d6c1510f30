"""MetricStore against real files: sparse whisper files, WAL replay, segment cleanup,
find/fetch merging cache and disk, carbon-made trees, path escapes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import whisper
from prometheus_client import CollectorRegistry

from collector.config import CollectorConfig
from collector.selfmetrics import CollectorMetrics
from collector.series import MetricNode
from collector.storage import MetricStore, StoreClosed
from collector.storage.store import WAL_DIRNAME
from collector.storage.wal import WriteAheadLog, decode_records, encode_record
from collector.storage.whisper_files import empty_fetch, merge_with_cache

SCHEMAS = """
[ten]
pattern = ^ten\\.
retentions = 10s:1d,1m:7d

[default]
pattern = .*
retentions = 1s:1h,10s:1d
"""


def make_store(data_dir: Path, conf_dir: Path | None = None,
               **overrides: object) -> tuple[MetricStore, CollectorMetrics]:
    config = CollectorConfig(data_dir=data_dir, schemas_dir=conf_dir, **overrides)  # type: ignore[arg-type]
    metrics = CollectorMetrics(CollectorRegistry())
    return MetricStore(config, metrics), metrics


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    d = tmp_path / "conf"
    d.mkdir()
    (d / "storage-schemas.conf").write_text(SCHEMAS)
    return d


@pytest.fixture
async def store(tmp_path: Path, conf_dir: Path) -> AsyncIterator[MetricStore]:
    s, _ = make_store(tmp_path / "data", conf_dir, wal_fsync_interval_seconds=0.05)
    await s.start()
    yield s
    await s.stop()


async def wait_until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


def counter(c: object) -> float:
    return c._value.get()  # type: ignore[attr-defined]


def wal_segments(data_dir: Path) -> list[str]:
    return sorted(os.listdir(data_dir / WAL_DIRNAME))


# -- whisper files ---------------------------------------------------------------------

async def test_files_are_sparse_and_readable_by_whisper(tmp_path: Path) -> None:
    data = tmp_path / "data"
    s, metrics = make_store(data)  # shipped default schema: 10s:2d,1m:30d,10m:2y
    await s.start()
    now = int(time.time())
    s.append([("mesh.pool.qps", now - 30, 1.5), ("mesh.pool.qps", now - 20, 2.5)])
    await s.stop()
    path = data / "mesh" / "pool" / "qps.wsp"
    st = path.stat()
    assert st.st_size > 1_900_000  # ~2 MB apparent (165,600 points)
    assert st.st_blocks * 512 < st.st_size / 20  # but only a few blocks allocated
    info = whisper.info(str(path))
    assert [(a["secondsPerPoint"], a["points"]) for a in info["archives"]] == [
        (10, 17280), (60, 43200), (600, 105120)]
    (start, end, step), values = whisper.fetch(str(path), now - 60, now, now=now)
    assert step == 10
    got = {start + i * step: v for i, v in enumerate(values) if v is not None}
    assert got == {now - 30 - (now - 30) % 10: 1.5, now - 20 - (now - 20) % 10: 2.5}
    assert counter(metrics.files_created) == 1
    assert counter(metrics.points_written) == 2
    assert not [n for n in os.listdir(path.parent) if n.startswith(".")]  # no temp left


async def test_aggregation_rule_applied_on_create(tmp_path: Path, conf_dir: Path) -> None:
    (conf_dir / "storage-aggregation.conf").write_text(
        "[m]\npattern = \\.p999$\nxFilesFactor = 0.2\naggregationMethod = max\n")
    s, _ = make_store(tmp_path / "data", conf_dir)
    await s.start()
    s.append([("ten.lat.p999", int(time.time()) - 5, 7.0)])
    await s.stop()
    info = whisper.info(str(tmp_path / "data" / "ten" / "lat" / "p999.wsp"))
    assert info["aggregationMethod"] == "max"
    assert info["xFilesFactor"] == pytest.approx(0.2)
    assert [a["secondsPerPoint"] for a in info["archives"]] == [10, 60]
    assert s.max_retention_seconds("ten.lat.p999") == 7 * 86400
    assert s.max_retention_seconds("other") == 86400


# -- cache visibility and merge ----------------------------------------------------------

async def test_points_visible_at_once_then_from_disk(store: MetricStore, tmp_path: Path) -> None:
    store.pause_writer()
    now = int(time.time())
    store.append([("a.b.c", now - 5, 1.0), ("a.b.c", now - 3, 3.0), ("a.d", now - 2, 4.0)])
    assert store.cache_points == 3
    assert not (tmp_path / "data" / "a" / "b" / "c.wsp").exists()  # cache only
    series = store.fetch("a.b.c", now - 10, now, now=now)
    assert series is not None and series.step == 1
    assert series.values[now - 5 - series.start] == 1.0
    assert series.values[now - 3 - series.start] == 3.0
    assert sum(v is not None for v in series.values) == 2
    assert store.find("a.*") == [MetricNode("a.b", False), MetricNode("a.d", True)]
    assert store.find("a.b.*") == [MetricNode("a.b.c", True)]
    store.resume_writer()
    await wait_until(lambda: store.cache_points == 0)
    assert (tmp_path / "data" / "a" / "b" / "c.wsp").exists()
    again = store.fetch("a.b.c", now - 10, now, now=now)
    assert again is not None and again.values == series.values
    assert store.find("a.*") == [MetricNode("a.b", False), MetricNode("a.d", True)]


async def test_fetch_merges_cache_over_disk(store: MetricStore, tmp_path: Path) -> None:
    now = int(time.time())
    store.append([("m.x", now - 50, 1.0), ("m.x", now - 40, 2.0)])
    await wait_until(lambda: store.cache_points == 0)
    store.pause_writer()
    store.append([("m.x", now - 40, 20.0), ("m.x", now - 30, 3.0)])  # overwrite + new
    series = store.fetch("m.x", now - 60, now, now=now)
    assert series is not None
    at = {series.start + i * series.step: v for i, v in enumerate(series.values)
          if v is not None}
    assert at == {now - 50: 1.0, now - 40: 20.0, now - 30: 3.0}
    # a coarser archive (older range) consolidates cached points with the file's method
    older = store.fetch("m.x", now - 7200, now, now=now)
    assert older is not None and older.step == 10 and older.aggregation_method == "average"
    store.resume_writer()


def test_merge_with_cache_like_graphite_web() -> None:
    values: list[float | None] = [None] * 6
    # raw step 10: last value per 10 s slot; requested step 60: consolidate with 'sum'
    merged = merge_with_cache([(0, 1.0), (5, 2.0), (10, 3.0), (60, 4.0), (400, 9.0)],
                              0, 60, values, "sum", 10)
    assert merged == [5.0, 4.0, None, None, None, None]
    raw = merge_with_cache([(3, 1.0), (7, 2.0), (-10, 5.0)], 0, 10, [None, None], "avg", 10)
    assert raw == [2.0, None]


def test_empty_fetch_matches_whisper(tmp_path: Path) -> None:
    from collector.storage.schemas import Retention, StorageSchema
    schema = StorageSchema("s", ".*", (Retention(10, 360), Retention(60, 1440)))
    path = str(tmp_path / "x.wsp")
    whisper.create(path, schema.archive_list())
    now = 1_700_000_000
    for start, end in [(now - 100, now), (now - 7200, now - 60), (now - 10**6, now + 50),
                       (now - 35, now - 35)]:
        assert empty_fetch(schema, start, end, now) == whisper.fetch(path, start, end, now=now)
    assert empty_fetch(schema, now + 5, now + 10, now) is None


# -- existing carbon tree -----------------------------------------------------------------

async def test_existing_carbon_tree_served_as_is(tmp_path: Path, conf_dir: Path) -> None:
    data = tmp_path / "data"
    (data / "carbon" / "agents").mkdir(parents=True)
    (data / "web" / "a").mkdir(parents=True)
    now = int(time.time())
    made = {"carbon.agents.cpu": [(60, 1440)], "web.a.hits": [(5, 100), (50, 100)],
            "web.b": [(60, 60)]}
    for name, archives in made.items():
        path = str(data / (name.replace(".", "/") + ".wsp"))
        whisper.create(path, archives, 0.5, "sum")
        whisper.update_many(path, [(now - 120, 7.0), (now - 60, 8.0)], now=now)
    before = {n: os.stat(data / (n.replace(".", "/") + ".wsp")).st_mtime_ns for n in made}
    s, metrics = make_store(data, conf_dir)
    await s.start()
    assert s.find("*") == [MetricNode("carbon", False), MetricNode("web", False)]
    assert s.find("web.*") == [MetricNode("web.a", False), MetricNode("web.b", True)]
    assert s.find("web.{a,b}.hits") == [MetricNode("web.a.hits", True)]
    assert s.find("carbon.agents.cpu") == [MetricNode("carbon.agents.cpu", True)]
    assert s.find("nothing.here") == []
    series = s.fetch("web.a.hits", now - 300, now, now=now)
    assert series is not None and series.step == 5 and series.aggregation_method == "sum"
    assert [v for v in series.values if v is not None] == [7.0, 8.0]
    cpu = s.fetch("carbon.agents.cpu", now - 600, now, now=now)
    assert cpu is not None and cpu.step == 60
    # new points go into the existing file, keeping its own retention
    s.append([("web.b", now - 30, 9.0)])
    await s.stop()
    info = whisper.info(str(data / "web" / "b.wsp"))
    assert [(a["secondsPerPoint"], a["points"]) for a in info["archives"]] == [(60, 60)]
    assert whisper.fetch(str(data / "web" / "b.wsp"), now - 300, now, now=now)[1].count(9.0) == 1
    assert counter(metrics.files_created) == 0
    untouched = {n: os.stat(data / (n.replace(".", "/") + ".wsp")).st_mtime_ns
                 for n in made if n != "web.b"}
    assert untouched == {n: v for n, v in before.items() if n != "web.b"}


# -- write-ahead log ----------------------------------------------------------------------

async def test_replay_after_unclean_stop(tmp_path: Path, conf_dir: Path) -> None:
    """A crashed store leaves WAL segments and no whisper files; start replays them."""
    data = tmp_path / "data"
    now = int(time.time())
    wal = WriteAheadLog(data / WAL_DIRNAME, 1 << 20)
    wal.open()
    wal.write(1, encode_record([("r.a", now - 10, 1.0), ("r.b", now - 10, 2.0)]))
    wal.write(2, encode_record([("r.a", now - 9, 3.0)]))
    wal.close()
    s, metrics = make_store(data, conf_dir)
    await s.start()
    assert counter(metrics.wal_replayed_points) == 3
    a = s.fetch("r.a", now - 20, now, now=now)
    assert a is not None and [v for v in a.values if v is not None] == [1.0, 3.0]
    await s.stop()
    assert wal_segments(data) == []  # all written to whisper, so the log is gone
    got = whisper.fetch(str(data / "r" / "b.wsp"), now - 20, now, now=now)
    assert [v for v in got[1] if v is not None] == [2.0]


async def test_torn_tail_is_tolerated(tmp_path: Path, conf_dir: Path) -> None:
    data = tmp_path / "data"
    now = int(time.time())
    wal = WriteAheadLog(data / WAL_DIRNAME, 1 << 20)
    wal.open()
    wal.write(7, encode_record([("t.a", now - 10, 1.0)]))
    wal.write(7, encode_record([("t.a", now - 9, 2.0)]))
    wal.close()
    segment = data / WAL_DIRNAME / wal_segments(data)[0]
    good = segment.read_bytes()
    torn = encode_record([("t.a", now - 8, 99.0)])
    segment.write_bytes(good + torn[: len(torn) // 2])  # a record cut by the crash
    records, used = decode_records(segment.read_bytes())
    assert (len(records), used) == (2, len(good))
    flipped = bytearray(good + torn)
    flipped[-3] ^= 0xFF  # a corrupt last record fails its crc
    assert decode_records(bytes(flipped))[1] == len(good)
    assert decode_records(b"garbage" * 10) == ([], 0)

    s, metrics = make_store(data, conf_dir)
    s.pause_writer()
    await s.start()
    assert counter(metrics.wal_replayed_points) == 2
    s.append([("t.a", now - 7, 5.0)])
    await s.flush()
    assert wal_segments(data) == [segment.name, f"{8:020d}.wal"]  # never appends to 7
    series = s.fetch("t.a", now - 20, now, now=now)
    assert series is not None
    assert [v for v in series.values if v is not None] == [1.0, 2.0, 5.0]
    await s.stop()
    assert wal_segments(data) == []


async def test_flushed_segments_are_deleted(tmp_path: Path, conf_dir: Path) -> None:
    data = tmp_path / "data"
    s, metrics = make_store(data, conf_dir, wal_segment_bytes=2048,
                            wal_fsync_interval_seconds=0.01)
    await s.start()
    s.pause_writer()
    now = int(time.time())
    seen: set[str] = set()
    for i in range(30):
        s.append([(f"seg.m{j}", now - 100 + i, float(i)) for j in range(10)])
        await s.flush()
        seen.update(wal_segments(data))
    assert len(wal_segments(data)) > 3  # rotated, all kept while the writer is paused
    s.resume_writer()
    await wait_until(lambda: s.cache_points == 0 and len(wal_segments(data)) <= 1)
    # the gauge follows the files on disk
    await wait_until(lambda: counter(metrics.wal_bytes) == sum(
        os.path.getsize(data / WAL_DIRNAME / n) for n in wal_segments(data)))
    s.append([("seg.m0", now - 1, 1.0)])
    await s.stop()
    assert wal_segments(data) == []
    assert len(seen) > 3
    series = s.fetch("seg.m3", now - 101, now, now=now)
    assert series is not None
    assert [v for v in series.values if v is not None] == [float(i) for i in range(30)]


async def test_stop_is_idempotent_and_refuses_appends(tmp_path: Path, conf_dir: Path) -> None:
    s, _ = make_store(tmp_path / "data", conf_dir)
    await s.stop()  # never started
    s2, _ = make_store(tmp_path / "data2", conf_dir)
    await s2.start()
    s2.append([("x.y", int(time.time()), 1.0)])
    await asyncio.gather(s2.stop(), s2.stop())
    await s2.stop()
    with pytest.raises(StoreClosed):
        s2.append([("x.y", int(time.time()), 1.0)])
    with pytest.raises(RuntimeError):
        await s2.start()


async def test_write_failure_keeps_points_in_log(tmp_path: Path, conf_dir: Path) -> None:
    data = tmp_path / "data"
    (data / "bad").mkdir(parents=True)
    (data / "bad" / "file.wsp").write_bytes(b"not a whisper file")
    s, metrics = make_store(data, conf_dir)
    await s.start()
    now = int(time.time())
    s.append([("bad.file", now - 1, 1.0), ("good.file", now - 1, 2.0)])
    await s.stop()
    assert counter(metrics.write_errors) == 1
    assert len(wal_segments(data)) == 1  # kept for the next start
    assert s.fetch("bad.file", now - 10, now) is None  # unreadable file: no data, no crash
    s2, metrics2 = make_store(data, conf_dir)
    await s2.start()
    assert counter(metrics2.wal_replayed_points) == 2
    await s2.stop()


# -- path safety ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "../etc/passwd", "a/../../x", "..", "a..b", ".hidden", "a.b/c", "/abs.x", "a.\x00",
    "", "a.b.",
])
async def test_path_escapes_refused(store: MetricStore, path: str) -> None:
    with pytest.raises(ValueError):
        store.fetch(path, 0, 10)


@pytest.mark.parametrize("pattern", ["../*", "*/..", "a.b/*", "..*", "/etc.*", "*.\x00"])
async def test_find_escapes_refused(store: MetricStore, pattern: str) -> None:
    with pytest.raises(ValueError):
        store.find(pattern)


async def test_symlinked_dir_cannot_carry_writes_outside(tmp_path: Path, conf_dir: Path) -> None:
    data = tmp_path / "data"
    outside = tmp_path / "outside"
    outside.mkdir()
    data.mkdir()
    (data / "link").symlink_to(outside, target_is_directory=True)
    s, metrics = make_store(data, conf_dir)
    await s.start()
    s.append([("link.x", int(time.time()), 1.0), ("link.deeper.y", int(time.time()), 1.0)])
    await s.stop()
    assert list(outside.iterdir()) == []  # neither a file nor a directory was made there
    assert counter(metrics.write_errors) == 2
    assert s.find("*") == [MetricNode("link", False)]
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and data not in p.parents
                and conf_dir not in p.parents]


async def test_failed_start_deletes_nothing(tmp_path: Path, conf_dir: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / WAL_DIRNAME).write_bytes(b"in the way")  # the log directory cannot be made
    s, _ = make_store(data, conf_dir)
    with pytest.raises(OSError):
        await s.start()
    await s.stop()
    await s.stop()
    assert (data / WAL_DIRNAME).read_bytes() == b"in the way"
    with pytest.raises(StoreClosed):
        s.append([("x", 1, 1.0)])


@pytest.mark.parametrize("method", ["average", "sum", "max", "min", "last", "avg_zero"])
@pytest.mark.parametrize("xff", [0.0, 0.5, 1.0])
def test_cached_points_in_a_coarser_archive_roll_up_as_whisper_will(
        tmp_path: Path, method: str, xff: float) -> None:
    """A render must not change when the writer catches up: merge == whisper's rollup."""
    archives = [(10, 60), (60, 120)]  # 10 min at 10 s, 2 h at 1 min
    now = 1_700_000_000 // 60 * 60 + 3600
    # Within the 10 s archive's reach, so whisper propagates them into the 1 min archive.
    cached = [(now - 540 + 10 * k, float(k % 7 - 2)) for k in range(6) if k != 2]  # 5 of 6
    cached += [(now - 420 + 10 * k, float(k)) for k in (0, 3)]  # 2 of 6 slots
    cached += [(now - 300 + 10 * k + 3, 1.5 * k) for k in (5, 1, 0, 4, 2, 3)]  # unordered
    path = str(tmp_path / "m.wsp")
    whisper.create(path, archives, xff, method, sparse=True)
    for point in cached:  # as the writer would, one batch per arrival
        whisper.update_many(path, [point], now=now)
    (start, _end, step), expected = whisper.fetch(path, now - 3600, now - 60, now=now)
    assert step == 60
    empty: list[float | None] = [None] * len(expected)
    merged = merge_with_cache(cached, start, step, empty, method, 10, xff, now - 600)
    assert merged == pytest.approx(expected)
