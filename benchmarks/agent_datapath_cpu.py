"""The agent pair's own CPU per proxied call, in one process, without sockets.

A client-side and a server-side agent (``AgentService``, default filters, log level
warning) are wired to each other and to a canned upstream answer by in-memory transports:
every ``write`` is delivered to the other side's ``data_received`` on the next loop
iteration. One call at a time goes client agent -> server agent -> upstream and back, so
what is timed is the agents' user-space work per call (parsing, routing, filters,
recording, rendering, futures and tasks), free of the kernel's loopback cost and of other
processes: small differences between two builds show here long before they show in
``agent_sidecar_overhead.py``. ``--side server`` times the server-side agent alone.

Usage: .venv/bin/python benchmarks/agent_datapath_cpu.py [--calls 20000] [--repeats 5]
[--side pair|server] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import cProfile
import json
import logging
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import uvloop

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from agent import forwarder as forwarder_module  # noqa: E402
from agent import http_server  # noqa: E402
from agent.config import AgentConfig  # noqa: E402
from agent.directory import ServiceView  # noqa: E402
from agent.native import data_path  # noqa: E402
from agent.service import _DROP_HEADERS, AgentService  # noqa: E402
from registry.model import Node, ServiceConfig, Snapshot  # noqa: E402

UPSTREAM = "127.0.0.1:8080"
SERVER_AGENT = "127.0.0.1:9982"
# What wrk sends, and what the benchmark's aiohttp upstream answers.
REQUEST = {"pair": b"GET /hello/hello HTTP/1.1\r\nHost: 127.0.0.1:9981\r\n\r\n",
           "server": b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:9982\r\n\r\n"}
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
          b"Content-Length: 5\r\nDate: Thu, 03 Dec 2026 18:00:00 GMT\r\n"
          b"Server: Python/3.11 aiohttp/3.11.18\r\n\r\nhello")


class _Wire:
    """A transport whose writes go to ``deliver`` on the next loop iteration."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.deliver: Callable[[bytes], None] = lambda data: None

    def write(self, data: bytes) -> None:
        self.loop.call_soon(self.deliver, data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        raise RuntimeError("the benchmark's connections are never closed")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _agent(config: AgentConfig, loop: asyncio.AbstractEventLoop
           ) -> tuple[AgentService, Any]:
    """An agent with its inbound connection (not listening: fed by the benchmark)."""
    agent = AgentService(config)
    server = http_server.HttpServer(
        agent._handle, max_header_bytes=config.max_header_bytes,
        max_body_bytes=config.max_body_bytes, set_apart=_DROP_HEADERS)
    server.loop = loop
    inbound = http_server._Connection(server)
    return agent, inbound


def _outbound(agent: AgentService, address: str, loop: asyncio.AbstractEventLoop) -> Any:
    """An idle kept-alive connection of the agent's forwarder to ``address``."""
    conn = forwarder_module._Connection(agent.forwarder, address)
    conn.connection_made(cast(asyncio.BaseTransport, _Wire(loop)))
    conn.idle_since = time.monotonic()
    agent.forwarder._open.add(conn)
    agent.forwarder._idle[address] = deque([conn])
    return conn


# where the agents would keep registry snapshots (none are written): a fresh temporary
# directory, removed at exit
DATA_DIR = Path(tempfile.mkdtemp(prefix="agent-datapath-cpu-"))
atexit.register(shutil.rmtree, DATA_DIR, ignore_errors=True)


async def build(side: str) -> Any:
    """The inbound connection of the first agent (the server-side one with ``server``)."""
    loop = asyncio.get_running_loop()
    common: dict[str, Any] = {"registry": "http://127.0.0.1:1", "graphite": "127.0.0.1:2",
              "data_dir": DATA_DIR}
    server, server_in = _agent(AgentConfig(service="hello", upstream=f"http://{UPSTREAM}",
                                           **common), loop)
    await server.forwarder.start()
    to_upstream = _outbound(server, UPSTREAM, loop)
    to_upstream.transport.deliver = lambda data: to_upstream.data_received(ANSWER)
    if side == "server":
        return server_in
    client, client_in = _agent(AgentConfig(service="bench", **common), loop)
    await client.forwarder.start()
    snapshot = Snapshot("hello", (Node(id="n1", address=SERVER_AGENT),), ServiceConfig(), 1)
    client._views = {"hello": ServiceView.of(snapshot)}
    to_server = _outbound(client, SERVER_AGENT, loop)
    to_server.transport.deliver = server_in.data_received
    wire = _Wire(loop)
    wire.deliver = to_server.data_received
    server_in.connection_made(wire)
    return client_in


async def run(side: str, calls: int) -> float:
    """CPU microseconds per call over ``calls`` calls, one at a time."""
    inbound = await build(side)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    request = REQUEST[side]
    left = calls
    answer = b""

    def answered(data: bytes) -> None:
        nonlocal left, answer
        answer = data
        left -= 1
        if left:
            inbound.data_received(request)
        else:
            done.set_result(None)

    wire = _Wire(loop)
    wire.deliver = answered
    inbound.connection_made(wire)
    started = time.process_time()
    inbound.data_received(request)
    await done
    elapsed = time.process_time() - started
    if not answer.startswith(b"HTTP/1.1 200 ") or not answer.endswith(b"hello"):
        raise RuntimeError(f"unexpected answer: {answer!r}")
    return elapsed / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--side", choices=("pair", "server"), default="pair")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile one repeat (meaningful with TIDEMARK_INTERPRETED=1)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    uvloop.run(run(args.side, 2000))  # warm up
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        uvloop.run(run(args.side, args.calls))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(40)
        return 0
    results = [uvloop.run(run(args.side, args.calls)) for _ in range(args.repeats)]
    print(json.dumps({"side": args.side, "data_path": data_path()["mode"],
                      "us_per_call": [round(r, 2) for r in results],
                      "median_us_per_call": round(statistics.median(results), 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
