"""Sidecar overhead: the same load against an upstream directly and through the agent pair.

Every component is its own process on loopback: the embedded registry (`tidemark
registry`), the upstream (a minimal aiohttp app), the server-side agent (`tidemark agent
--upstream`), the client-side agent (`tidemark agent`), and a TCP sink standing in for the
collector. The load generator (aiohttp, this process) measures:

- max sustained rps: ``--concurrency`` closed-loop workers for ``--seconds``;
- latency at a fixed rate (default 1,000 rps, open loop: latency counted from each
  request's scheduled send time, so a stall is not hidden) for ``--seconds``: p50, p99.

Direct and pair runs alternate for ``--rounds`` rounds; the report gives every round and
the medians, and each process's CPU microseconds per call in the max-rps runs. With
``--floor`` a third arm runs the same load through a pair of minimal Python proxies
(``benchmarks/minimal_proxy.py``: uvloop + httptools, a task per request, nothing else),
the floor for any Python sidecar on this machine. Usage:
.venv/bin/python benchmarks/agent_sidecar_overhead.py [--seconds 10] [--rate 1000]
[--concurrency 32] [--rounds 2] [--floor]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.peers.process import process_tree_cpu_seconds  # noqa: E402

UPSTREAM_CODE = """
import sys
from aiohttp import web
async def hello(request):
    return web.Response(text="hello")
app = web.Application()
app.router.add_route("*", "/{tail:.*}", hello)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sink() -> int:
    """A TCP listener that reads and discards (the collector is not what is measured)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=lambda c=conn: [None for _ in iter(lambda: c.recv(65536), b"")],
                             daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return int(server.getsockname()[1])


async def wait_healthy(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes],
                       timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited {proc.returncode}")
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not healthy after {timeout} s")


async def max_rps(session: aiohttp.ClientSession, url: str, seconds: float,
                  concurrency: int, pids: dict[str, int] | None = None) -> dict[str, float]:
    """Closed-loop max rps; with ``pids``, also each process's CPU microseconds per call
    (``load_generator`` is this process)."""
    pids = pids or {}
    cpu_before = {name: process_tree_cpu_seconds(pid) for name, pid in pids.items()}
    lg_before = time.process_time()
    done = errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, errors
        while time.perf_counter() < stop_at:
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    if resp.status == 200:
                        done += 1
                    else:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    result: dict[str, float] = {"rps": round(done / elapsed, 1), "errors": errors}
    calls = max(done + errors, 1)
    result["cpu_us_per_call.load_generator"] = round(
        (time.process_time() - lg_before) / calls * 1e6, 1)
    for name, pid in pids.items():
        result[f"cpu_us_per_call.{name}"] = round(
            (process_tree_cpu_seconds(pid) - cpu_before[name]) / calls * 1e6, 1)
    return result


async def fixed_rate(session: aiohttp.ClientSession, url: str, seconds: float,
                     rate: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    count = int(seconds * rate)
    start = time.perf_counter() + 0.05

    async def one(scheduled: float) -> None:
        nonlocal errors
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            async with session.get(url) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
                    return
        except aiohttp.ClientError:
            errors += 1
            return
        latencies.append((time.perf_counter() - scheduled) * 1000.0)

    tasks = []
    for i in range(count):
        scheduled = start + i / rate
        delay = scheduled - 0.01 - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(scheduled)))
    await asyncio.gather(*tasks)
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[max(0, int(q * len(latencies)) - 1)], 3) if latencies else -1.0

    return {"achieved_rps": round(len(latencies) / seconds, 1), "p50_ms": pct(0.5),
            "p99_ms": pct(0.99), "max_ms": round(latencies[-1], 3) if latencies else -1.0,
            "errors": errors}


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="agent-bench-"))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(*argv: str, log: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, *argv], env=env, cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=open(tmp / log, "wb"))
        procs.append(proc)
        return proc

    sink = start_sink()
    reg_port, up_port, server_port, client_port, floor_in, floor_out = (
        free_port() for _ in range(6))
    try:
        registry = spawn("-m", "tidemark", "registry", "--data-dir", str(tmp / "registry"),
                         "--http-port", str(reg_port), "--log-level", "warning",
                         log="registry.log")
        upstream = spawn("-c", UPSTREAM_CODE, str(up_port), log="upstream.log")
        common = ["--registry", f"http://127.0.0.1:{reg_port}", "--graphite",
                  f"127.0.0.1:{sink}", "--log-level", "warning"]
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256)) as session:
            await wait_healthy(session, f"http://127.0.0.1:{reg_port}/healthz", registry)
            server_agent = spawn("-m", "tidemark", "agent", "--service", "hello", *common,
                                 "--listen", f"127.0.0.1:{server_port}", "--upstream",
                                 f"http://127.0.0.1:{up_port}", "--data-dir",
                                 str(tmp / "server-agent"), log="server-agent.log")
            client_agent = spawn("-m", "tidemark", "agent", "--service", "bench", *common,
                                 "--listen", f"127.0.0.1:{client_port}", "--data-dir",
                                 str(tmp / "client-agent"), log="client-agent.log")
            floor_procs = []
            if args.floor:
                floor_procs = [
                    spawn(str(REPO_ROOT / "benchmarks" / "minimal_proxy.py"), str(floor_out),
                          str(up_port), log="floor-out.log"),
                    spawn(str(REPO_ROOT / "benchmarks" / "minimal_proxy.py"), str(floor_in),
                          str(floor_out), log="floor-in.log")]
            await wait_healthy(session, f"http://127.0.0.1:{server_port}/healthz", server_agent)
            await wait_healthy(session, f"http://127.0.0.1:{client_port}/healthz", client_agent)
            direct = f"http://127.0.0.1:{up_port}/hello"
            pair = f"http://127.0.0.1:{client_port}/hello/hello"
            await wait_healthy(session, direct, upstream)
            await wait_healthy(session, pair, client_agent)  # the pair routes
            arms = [("direct", direct), ("pair", pair)]
            if floor_procs:
                floor = f"http://127.0.0.1:{floor_in}/hello"
                await wait_healthy(session, floor, floor_procs[1])
                arms.append(("floor", floor))
            for _, url in arms:  # warm up connections and code paths
                await max_rps(session, url, 2.0, args.concurrency)
            pids = {"upstream": upstream.pid, "server_agent": server_agent.pid,
                    "client_agent": client_agent.pid}
            pids.update({f"floor_{i}": p.pid for i, p in enumerate(floor_procs)})
            rounds = []
            for _ in range(args.rounds):
                row: dict[str, object] = {}
                for name, url in arms:
                    row[f"{name}_max"] = await max_rps(session, url, args.seconds,
                                                       args.concurrency, pids)
                    await asyncio.sleep(1.0)
                    row[f"{name}_at_rate"] = await fixed_rate(session, url, args.seconds,
                                                              args.rate)
                    await asyncio.sleep(1.0)
                rounds.append(row)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    def med(key: str, field: str) -> float:
        return statistics.median(float(r[key][field]) for r in rounds)  # type: ignore[index]

    summary = {
        "direct_max_rps": med("direct_max", "rps"), "pair_max_rps": med("pair_max", "rps"),
        "pair_over_direct_max_rps": round(med("pair_max", "rps") / med("direct_max", "rps"), 3),
        "direct_p50_ms": med("direct_at_rate", "p50_ms"),
        "pair_p50_ms": med("pair_at_rate", "p50_ms"),
        "direct_p99_ms": med("direct_at_rate", "p99_ms"),
        "pair_p99_ms": med("pair_at_rate", "p99_ms"),
        "client_agent_cpu_us_per_call": med("pair_max", "cpu_us_per_call.client_agent"),
        "server_agent_cpu_us_per_call": med("pair_max", "cpu_us_per_call.server_agent"),
        "upstream_cpu_us_per_call": med("direct_max", "cpu_us_per_call.upstream"),
        "load_generator_cpu_us_per_call": med("direct_max",
                                              "cpu_us_per_call.load_generator"),
    }
    if args.floor:
        summary["floor_max_rps"] = med("floor_max", "rps")
        summary["floor_over_direct_max_rps"] = round(
            med("floor_max", "rps") / med("direct_max", "rps"), 3)
        summary["floor_proxy_cpu_us_per_call"] = med("floor_max", "cpu_us_per_call.floor_0")
    summary["added_p50_ms"] = round(summary["pair_p50_ms"] - summary["direct_p50_ms"], 3)
    summary["added_p99_ms"] = round(summary["pair_p99_ms"] - summary["direct_p99_ms"], 3)
    return {"rate": args.rate, "seconds": args.seconds, "concurrency": args.concurrency,
            "rounds": rounds, "median": summary}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--floor", action="store_true",
                        help="also run a pair of minimal Python proxies "
                             "(benchmarks/minimal_proxy.py) as the floor")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
