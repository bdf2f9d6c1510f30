"""graphite-web (Debian's graphite-web and whisper, in the system Python) finds and reads the
files our store writes exactly as our store's own find/fetch do."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from collector.config import CollectorConfig
from collector.selfmetrics import CollectorMetrics
from collector.storage import MetricStore

GRAPHITE = Path("/usr/lib/python3/dist-packages/graphite/finders/standard.py")
SYSTEM_PYTHON = "/usr/bin/python3"

READER = r"""
import json, os, sys, warnings
warnings.simplefilter("ignore")
os.environ["DJANGO_SETTINGS_MODULE"] = "graphite.settings"
import django
from django.conf import settings
django.setup()
settings.CARBONLINK_HOSTS = []
settings.LOG_DIR = sys.argv[1]
from graphite.finders.standard import StandardFinder
from graphite.storage import FindQuery
root, start, end = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = {}
for pattern in sys.argv[5:]:
    found = []
    for node in StandardFinder([root]).find_nodes(FindQuery(pattern, None, None)):
        item = [node.path, node.is_leaf]
        if node.is_leaf:
            (s, e, step), values = node.reader.fetch(start, end, now=end)
            item += [s, e, step, values]
        found.append(item)
    out[pattern] = sorted(found, key=lambda i: (i[0], i[1]))
print(json.dumps(out))
"""


@pytest.mark.peers
async def test_graphite_web_reads_our_tree(tmp_path: Path) -> None:
    if not GRAPHITE.exists():
        pytest.skip("graphite-web is not installed (make test installs it when run as root)")
    data = tmp_path / "data"
    store = MetricStore(CollectorConfig(data_dir=data), CollectorMetrics(CollectorRegistry()))
    await store.start()
    now = int(time.time())
    points = []
    for pool in ("pool1", "pool2"):
        for host in range(3):
            for i in range(30):
                points.append((f"mesh.{pool}.node{host}.qps", now - 600 + i * 10, float(i * host)))
                points.append((f"mesh.{pool}.node{host}.p999", now - 600 + i * 10, i / 7))
    store.append(points)
    await store.stop()

    patterns = ["mesh.*", "mesh.pool1.*", "mesh.{pool1,pool2}.node[12].*", "mesh.*.node0.qps",
                "mesh.pool?.node2.p999", "nothing.*"]
    start, end = now - 900, now
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c", READER, str(tmp_path), str(data), str(start), str(end), *patterns],
        capture_output=True, text=True, timeout=120, check=True)
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    leaves = 0
    for pattern in patterns:
        ours = []
        for node in store.find(pattern):
            item: list[object] = [node.path, node.is_leaf]
            if node.is_leaf:
                series = store.fetch(node.path, start, end, now=end)
                assert series is not None
                item += [series.start, series.end, series.step, series.values]
                leaves += 1
            ours.append(item)
        assert ours == theirs[pattern], pattern
    assert leaves > 10
    assert theirs["mesh.*.node0.qps"][0][5].count(0.0) == 30  # values really read
