"""`tidemark agent` as a process: starts, serves /healthz, stops cleanly on SIGTERM (the
call in flight answered, the node deregistered, the open window flushed)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from registry.server.app import RegistryServer, RegistryServerConfig
from tests.conftest import free_port
from tests.test_agent_reporter import LineServer


async def test_agent_process_serves_and_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    registry = RegistryServer(RegistryServerConfig(data_dir=tmp_path / "registry", http_port=0),
                              token="s3cret")
    await registry.start()
    (tmp_path / "token").write_text("s3cret\n")
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\nregistry_token_file = "{tmp_path / "token"}"\n'
                      'request_timeout_seconds = "2s"\n'
                      "heartbeat_ttl_seconds = 60\n")  # only a deregistration removes it
    lines = LineServer()
    port = free_port()
    upstream_port = free_port()
    entered = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await asyncio.sleep(1.0)  # SIGTERM arrives while this call is in flight
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/slow", slow)
    upstream = web.AppRunner(app)
    await upstream.setup()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tidemark", "agent", "--service", "user",
        "--registry", f"http://127.0.0.1:{registry.port}", "--graphite",
        f"127.0.0.1:{lines.port}", "--idc", "bj", "--listen", f"127.0.0.1:{port}",
        "--upstream", f"http://127.0.0.1:{upstream_port}", "--data-dir", str(tmp_path / "a"),
        "--config", str(config), stderr=asyncio.subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("agent never became healthy")
            async with session.get(f"http://127.0.0.1:{port}/some/path") as resp:
                assert resp.status == 502  # nothing listens on the upstream port
            for _ in range(200):  # registration (with the token) runs in the background
                async with session.get(f"http://127.0.0.1:{port}/runtime") as resp:
                    runtime = json.loads(await resp.read())
                if runtime["registered"] is not None:
                    break
                await asyncio.sleep(0.05)
            assert runtime["role"] == "server" and runtime["registered"]["node"]["idc"] == "bj"
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                metrics = await resp.text()
            assert "tidemark_agent_buffered_points" in metrics
            resident = next(float(line.split()[-1]) for line in metrics.splitlines()
                            if line.startswith("process_resident_memory_bytes "))
            assert resident > 0 and 'python_gc_collections_total{generation="2"}' in metrics
            snapshot = registry.store.snapshot("user")
            assert [n.address for n in snapshot.nodes] == [f"127.0.0.1:{port}"]
            await web.TCPSite(upstream, "127.0.0.1", upstream_port).start()  # the service is up

            async def call() -> tuple[int, bytes]:
                async with session.get(f"http://127.0.0.1:{port}/slow") as resp:
                    return resp.status, await resp.read()

            in_flight = asyncio.ensure_future(call())
            await asyncio.wait_for(entered.wait(), 10)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(in_flight, 10) == (200, b"done")
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert registry.store.snapshot("user").nodes == ()  # deregistered on the way out
        # The open window was flushed on the way out: both calls are counted.
        node = f"tidemark.user.bj.127_0_0_1_{upstream_port}"
        assert lines.wait_for(lambda ls: f"{node}.errors.connection" in {
            line.split(" ")[0] for line in ls})
        assert sum(v for v, _ in lines.values(f"{node}.requests")) == 2
        assert sum(v for v, _ in lines.values(f"{node}.errors.connection")) == 1
    finally:
        await upstream.cleanup()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        lines.close()
        await registry.stop()


async def test_bad_command_lines_exit_2_with_one_line(tmp_path: Path) -> None:
    for args, message in (
        (["--service", "user", "--graphite", "127.0.0.1:2003"], "registry is required"),
        (["--service", "user", "--registry", "http://127.0.0.1:1", "--graphite", "nowhere"],
         "HOST:PORT"),
        (["--service", "user", "--registry", "http://127.0.0.1:1", "--graphite",
          "127.0.0.1:2003", "--upstream", "ftp://x"], "http://"),
    ):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tidemark", "agent", *args, "--data-dir", str(tmp_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2, err
        text = err.decode().strip()
        assert message in text and len(text.splitlines()) == 1, text
