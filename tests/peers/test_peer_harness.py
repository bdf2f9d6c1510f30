"""Tests of the peer harness itself: process lifecycle, CPU accounting, VictoriaMetrics."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from tests.peers.fixtures import started
from tests.peers.plaintext import format_line, send_lines
from tests.peers.process import (
    PeerFailed,
    PeerProcess,
    process_tree_cpu_seconds,
    wait_until,
)
from tests.peers.victoria import victoria_metrics


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] != "Z"


def test_stop_ends_the_whole_process_group_and_is_idempotent(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # The shell ignores SIGTERM and its child outlives it unless the group is killed.
    script = f"trap '' TERM; sleep 120 & echo $! > {pid_file}; wait"
    process = PeerProcess("sh", ["/bin/sh", "-c", script], log_path=tmp_path / "sh.log")
    process.start()
    wait_until(pid_file.exists, timeout_seconds=10, what="the child's pid file")
    wait_until(lambda: pid_file.read_text().strip() != "", timeout_seconds=10, what="child pid")
    child = int(pid_file.read_text())
    parent = process.pid
    process.stop(timeout_seconds=1)
    assert process.stop() is None  # the second stop does nothing
    wait_until(lambda: not _alive(child), timeout_seconds=10, what="the child to go")
    assert not _alive(parent)


def test_a_process_that_exits_early_fails_readiness_with_its_output(tmp_path: Path) -> None:
    process = PeerProcess(
        "failing",
        [sys.executable, "-c", "import sys; print('bad config: port'); sys.exit(3)"],
        log_path=tmp_path / "failing.log",
    )
    process.start()
    with pytest.raises(PeerFailed, match="bad config: port"):
        process.wait_ready(lambda: False, timeout_seconds=30, what="never")


def test_wait_until_names_what_it_waited_for() -> None:
    with pytest.raises(PeerFailed, match="the moon"):
        wait_until(lambda: False, timeout_seconds=0.2, what="the moon", interval_seconds=0.05)


def test_cpu_seconds_include_children(tmp_path: Path) -> None:
    burn = "import time\nwhile time.process_time() < 0.5: pass\nprint('done', flush=True)"
    script = f'{sys.executable} -c "{burn}" & wait; sleep 30'
    process = PeerProcess("burner", ["/bin/sh", "-c", script], log_path=tmp_path / "b.log")
    process.start()
    try:
        wait_until(
            lambda: "done" in (tmp_path / "b.log").read_text(),
            timeout_seconds=120,
            what="the child to burn 0.5 s of CPU",
        )
        # Once the shell reaps the child, the child's CPU time moves into the shell's cutime.
        # /proc counts whole clock ticks, so allow a few ticks less than the child measured.
        wait_until(
            lambda: process_tree_cpu_seconds(process.pid) >= 0.45,
            timeout_seconds=30,
            what="the tree's CPU seconds to include the reaped child's 0.5 s",
        )
    finally:
        process.stop()


@pytest.mark.peers
def test_victoria_metrics_stores_plaintext_points(tmp_path: Path) -> None:
    now = int(time.time()) // 10 * 10
    lines = [format_line("harness.vm.a", float(i), now - 100 + 10 * i) for i in range(5)]
    with started(victoria_metrics(tmp_path)) as vm:
        send_lines(vm.line_port, lines)
        vm.force_flush()
        selector = '{__name__="harness.vm.a"}'
        wait_until(
            lambda: vm.export_counts(selector, now - 200, now) == {"harness.vm.a": 5},
            timeout_seconds=60,
            what="victoria-metrics to export 5 points",
            interval_seconds=0.5,
        )
        body = vm.get("/api/v1/export", {"match[]": selector, "start": now - 200, "end": now})
        record = json.loads(body.splitlines()[0])
        assert record["values"] == [0, 1, 2, 3, 4]
        assert record["timestamps"] == [(now - 100 + 10 * i) * 1000 for i in range(5)]
