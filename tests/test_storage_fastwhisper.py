"""The fast update_many writes what whisper.update_many writes (read back by whisper)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import whisper

from collector.storage import fastwhisper

ARCHIVES = [[(10, 60), (60, 60), (600, 30)], [(1, 100), (5, 100)], [(60, 30)]]
METHODS = ["average", "sum", "last", "max", "min", "avg_zero", "absmax", "absmin"]


def every_archive(path: str, now: int) -> list[object]:
    info = whisper.info(path)
    out = []
    for archive in info["archives"]:
        step = archive["secondsPerPoint"]
        out.append(whisper.fetch(path, now - archive["retention"] + step, now, now=now,
                                 archiveToSelect=f"{step}s"))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_same_results_as_whisper(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    archives = rng.choice(ARCHIVES)
    method = METHODS[seed % len(METHODS)]
    xff = rng.choice([0.0, 0.3, 0.5, 1.0])
    ours, theirs = str(tmp_path / "ours.wsp"), str(tmp_path / "theirs.wsp")
    for path in (ours, theirs):
        whisper.create(path, archives, xff, method, sparse=rng.random() < 0.5)
    now = 1_700_000_000 + rng.randrange(10_000)
    retention = max(s * p for s, p in archives)
    for _ in range(rng.randint(1, 6)):  # several batches: overwrites, wraps, gaps
        now += rng.randrange(0, retention // 3)
        count = rng.randint(1, 80)
        if rng.random() < 0.5:  # a contiguous recent run
            start = now - rng.randrange(0, retention // 2)
            points = [(start + i * archives[0][0] + rng.randrange(2), rng.uniform(-50, 50))
                      for i in range(count)]
        else:  # scattered, some older than every archive, some duplicated
            points = [(now - rng.randrange(0, retention + 500), float(rng.randint(-9, 9)))
                      for _ in range(count)]
            points += points[: rng.randint(0, 5)]
        points = [(t, v) for t, v in points if t <= now]
        dedup = list(dict(points).items())  # whisper keeps the first duplicate; we the last
        whisper.update_many(theirs, dedup, now=now)
        fastwhisper.update_many(ours, dedup, now=now)
        assert every_archive(ours, now) == every_archive(theirs, now)


def test_header_and_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "x.wsp"
    whisper.create(str(path), [(10, 60), (60, 60)], 0.25, "max")
    import os
    fd = os.open(path, os.O_RDONLY)
    try:
        header = fastwhisper.read_header(fd)
    finally:
        os.close(fd)
    assert header.aggregation_method == "max"
    assert header.x_files_factor == pytest.approx(0.25)
    assert [(a.seconds_per_point, a.points) for a in header.archives] == [(10, 60), (60, 60)]
    bad = tmp_path / "bad.wsp"
    bad.write_bytes(b"\x00" * 5)
    with pytest.raises(whisper.CorruptWhisperFile):
        fastwhisper.update_many(str(bad), [(100, 1.0)], now=200)


@pytest.mark.parametrize("seed", range(30))
def test_fetch_returns_what_whisper_fetch_returns(tmp_path: Path, seed: int) -> None:
    rng = random.Random(1000 + seed)
    archives = rng.choice(ARCHIVES)
    path = str(tmp_path / "f.wsp")
    whisper.create(path, archives, 0.5, METHODS[seed % len(METHODS)],
                   sparse=rng.random() < 0.5)
    retention = max(s * p for s, p in archives)
    now = 1_700_000_000 + rng.randrange(10_000)
    if seed % 5:  # leave some files never written (base interval 0)
        for _ in range(rng.randint(1, 4)):
            now += rng.randrange(0, retention // 2)
            points = [(now - rng.randrange(0, retention), rng.uniform(-9, 9))
                      for _ in range(rng.randint(1, 120))]
            whisper.update_many(path, points, now=now)
    for _ in range(25):
        query_now = now + rng.randrange(-50, 3 * archives[0][0])
        start = query_now - rng.randrange(-100, retention + 200)
        end = start + rng.randrange(0, retention + 100)
        theirs = whisper.fetch(path, start, end, now=query_now)
        ours = fastwhisper.fetch(path, start, end, now=query_now)
        if theirs is None:
            assert ours is None
            continue
        assert ours is not None
        header, time_info, values = ours
        assert (time_info, values) == (theirs[0], theirs[1]), (start, end, query_now)
        info = whisper.info(path)
        assert header.aggregation_method == info["aggregationMethod"]
        assert header.x_files_factor == info["xFilesFactor"]
    with pytest.raises(whisper.InvalidTimeInterval):
        fastwhisper.fetch(path, 10, 5, now=now)
