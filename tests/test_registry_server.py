"""The embedded registry's HTTP API, persistence and daemon, over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from registry.server.app import RegistryServer, RegistryServerConfig
from tests.peers.process import free_port

TOKEN = "tok-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RegistryServer]:
    server = RegistryServer(RegistryServerConfig(data_dir=tmp_path, http_port=0,
                                                 max_body_bytes=4096), token=TOKEN)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def http(server: RegistryServer) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{server.port}"


def _node_body(node_id: str = "n1", **extra: object) -> dict[str, object]:
    return {"node": {"id": node_id, "address": "10.1.1.1:80", **extra}, "ttl_seconds": 5}


async def test_writes_need_the_token(http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    url = f"{base}/v1/services/svc/nodes/n1"
    async with session.put(url, json=_node_body()) as response:
        assert response.status == 401
    async with session.put(url, json=_node_body(),
                           headers={"Authorization": "Bearer wrong"}) as response:
        assert response.status == 401
    async with session.post(f"{base}/v1/services/svc/commands",
                            json={"kind": "restore", "who": "x"}) as response:
        assert response.status == 401
    async with session.get(f"{base}/v1/services/svc") as response:
        assert response.status == 200
        assert (await response.json())["nodes"] == []
    async with session.put(url, json=_node_body(), headers=AUTH) as response:
        assert response.status == 200


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/services/svc/nodes/n1", {**_node_body(), "colour": "red"}, "colour"),
    ("/v1/services/svc/nodes/n1", _node_body(weight=501), "weight"),
    ("/v1/services/svc/nodes/n1", _node_body(status="sleeping"), "status"),
    ("/v1/services/svc/nodes/n1", _node_body(nickname="x"), "nickname"),
    ("/v1/services/svc/nodes/n1", _node_body("n2"), "node.id"),
    ("/v1/services/svc/nodes/n1", {"node": {"id": "n1"}}, "address"),
    ("/v1/services/svc/nodes/n1", {**_node_body(), "ttl_seconds": -1}, "ttl_seconds"),
    ("/v1/services/svc/commands", {"kind": "switches", "who": "a",
                                   "args": {"switches": {"x": "yes"}}}, "switches.x"),
    ("/v1/services/svc/commands", {"kind": "degrade", "who": "a",
                                   "args": {"reason": "r", "fallback_status": 99}},
     "fallback_status"),
    ("/v1/services/svc/commands", {"kind": "degrade", "args": {"reason": "r"}}, "who"),
    ("/v1/services/svc/commands", {"kind": "revert", "who": "a", "args": {"command": 7}},
     "command"),
    ("/v1/services/" + "s" * 129 + "/commands", {"kind": "restore", "who": "a"}, "service"),
    ("/v1/services/b%20d/commands", {"kind": "restore", "who": "a"}, "service"),
])
async def test_bad_input_is_a_400_naming_the_field(
        http: tuple[aiohttp.ClientSession, str], path: str, body: dict[str, object],
        field: str) -> None:
    session, base = http
    method = session.put if "/nodes/" in path else session.post
    async with method(base + path, json=body, headers=AUTH) as response:
        assert response.status == 400
        message = (await response.json())["error"]
        assert field in message
    async with session.get(f"{base}/v1/services") as response:
        assert (await response.json())["services"] == [], "nothing may be half-written"


async def test_body_size_is_bounded(http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    big = {"kind": "degrade", "who": "a", "args": {"reason": "x" * 10_000}}
    async with session.post(f"{base}/v1/services/svc/commands", json=big,
                            headers=AUTH) as response:
        assert response.status == 413
    async with session.post(f"{base}/v1/services/svc/commands", data=b"[1, 2",
                            headers=AUTH) as response:
        assert response.status == 400
        assert "JSON" in (await response.json())["error"]


async def test_long_poll_returns_on_change(http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    async with session.get(f"{base}/v1/services/svc") as response:
        index = (await response.json())["revision"]

    async def poll() -> dict[str, object]:
        async with session.get(f"{base}/v1/services/svc",
                               params={"index": str(index), "wait": "30s"}) as response:
            assert response.status == 200
            return dict(await response.json())

    waiting = asyncio.ensure_future(poll())
    async with session.post(f"{base}/v1/services/other/commands", headers=AUTH,
                            json={"kind": "restore", "who": "a"}) as response:
        assert response.status == 201
    await asyncio.sleep(0.3)
    assert not waiting.done(), "a long poll must wait while only other services change"
    async with session.post(f"{base}/v1/services/svc/commands", headers=AUTH,
                            json={"kind": "switches", "who": "a",
                                  "args": {"switches": {"on": True}}}) as response:
        assert response.status == 201
    result = await asyncio.wait_for(waiting, 10)
    assert result["revision"] > index  # type: ignore[operator]
    assert result["config"]["switches"] == {"on": True}  # type: ignore[index]
    async with session.get(f"{base}/v1/services/svc",
                           params={"index": "x", "wait": "1s"}) as response:
        assert response.status == 400 and "index" in (await response.json())["error"]
    async with session.get(f"{base}/v1/watch", params={"prefix": "", "index": "0"}) as response:
        data = await response.json()
        assert [s["service"] for s in data["snapshots"]] == ["other", "svc"]


async def test_healthz_and_metrics(http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    async with session.get(f"{base}/healthz") as response:
        assert response.status == 200
    async with session.put(f"{base}/v1/services/svc/nodes/n1", json=_node_body(),
                           headers=AUTH) as response:
        assert response.status == 200
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    assert 'tidemark_registry_writes_total{op="register"} 1.0' in text
    assert "tidemark_registry_revision 1.0" in text


async def test_config_and_history_survive_restart(tmp_path: Path) -> None:
    config = RegistryServerConfig(data_dir=tmp_path, http_port=0)
    first = RegistryServer(config)
    await first.start()
    first.store.command("svc", "degrade", {"reason": "r"}, who="ops", why="r")
    first.store.command("svc", "idc_weights", {"weights": {"bj": 3}}, who="ops", why="")
    revision = first.store.revision
    await first.stop()
    await first.stop()
    second = RegistryServer(config)
    await second.start()
    try:
        snapshot = second.store.snapshot("svc")
        assert snapshot.config.degraded is not None
        assert snapshot.config.idc_weights == {"bj": 3}
        assert [c.kind for c in second.store.history("svc")] == ["degrade", "idc_weights"]
        second.store.command("svc", "restore", {}, who="ops", why="")
        assert second.store.revision == revision + 1, "revisions continue after a restart"
    finally:
        await second.stop()


@pytest.mark.slow
def test_daemon_serves_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    with open(tmp_path / "daemon.log", "wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "tidemark", "registry", "--data-dir", str(tmp_path / "d"),
             "--http-port", str(port), "--token-file", str(token_file)],
            stdout=log, stderr=log, cwd=REPO_ROOT)
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if daemon.poll() is not None:
                    break
                time.sleep(0.1)
        registry = ["--registry", f"http://127.0.0.1:{port}", "--who", "alice"]
        # The console script once; then `python -m registry.ctl`, which is the same code
        # without importing every other tidemark command.
        done = subprocess.run([sys.executable, "-m", "tidemark", "registryctl", *registry,
                               "--token-file", str(token_file), "weights", "svc", "bj=60",
                               "sh=40"], capture_output=True, cwd=REPO_ROOT, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["changes"] == {"idc_weight/bj": 60, "idc_weight/sh": 40}
        ctl = [sys.executable, "-m", "registry.ctl", *registry]
        done = subprocess.run(ctl + ["switch", "svc", "x=on"], capture_output=True,
                              cwd=REPO_ROOT, timeout=60)
        assert done.returncode == 2 and b"unauthorized" in done.stderr
        done = subprocess.run(ctl + ["--token-file", str(token_file), "weights", "svc", "bj=0"],
                              capture_output=True, cwd=REPO_ROOT, timeout=60)
        assert done.returncode == 2 and b"weights.bj" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        done = subprocess.run(ctl + ["config", "svc"], capture_output=True, cwd=REPO_ROOT,
                              timeout=60)
        assert json.loads(done.stdout)["idc_weights"] == {"bj": 60, "sh": 40}
        done = subprocess.run(ctl + ["history", "svc"], capture_output=True, cwd=REPO_ROOT,
                              timeout=60)
        assert [(c["kind"], c["who"]) for c in json.loads(done.stdout)] == [
            ("idc_weights", "alice")]
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
    unreachable = subprocess.run(
        [sys.executable, "-m", "registry.ctl", "--registry",
         f"http://127.0.0.1:{port}", "nodes", "svc"], capture_output=True, cwd=REPO_ROOT,
        timeout=60)
    assert unreachable.returncode == 1 and unreachable.stderr.strip()


def test_daemon_rejects_an_empty_token_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    done = subprocess.run(
        [sys.executable, "-m", "tidemark", "registry", "--data-dir", str(tmp_path),
         "--http-port", "0", "--token-file", str(tmp_path / "token")],
        capture_output=True, cwd=REPO_ROOT, timeout=60)
    assert done.returncode == 2
    assert b"empty" in done.stderr
