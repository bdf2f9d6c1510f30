"""Sidecar overhead: the same load against an upstream directly and through the agent pair.

Every component is its own process on loopback: the embedded registry (`tidemark
registry`), the upstream (a minimal aiohttp app), the server-side agent (`tidemark agent
--upstream`), the client-side agent (`tidemark agent`), and a TCP sink standing in for the
collector. Two load generators measure max sustained rps (``--concurrency`` closed-loop
connections for ``--seconds``), each against direct and against the pair in the same round:

- ``wrk`` (Debian ``wrk``, C, one thread by default): costs a few microseconds per call, so
  the direct arm is bounded by the upstream rather than by the generator;
- aiohttp in this process: costs about 50 us per call, so on a small machine it bounds the
  direct arm itself and takes CPU from the processes under test.

``--load`` picks ``wrk``, ``aiohttp`` or ``both`` (the default; ``aiohttp`` alone when wrk is
not installed). The aiohttp generator also measures:

- latency at a fixed rate (default 1,000 rps, open loop: latency counted from each
  request's scheduled send time, so a stall is not hidden; the generator's own garbage
  collector is held off meanwhile) for ``--seconds``: p50, p99.

Direct and pair runs alternate for ``--rounds`` rounds (each measurement on every arm back
to back, the arms taking turns going first); the report gives every round and the medians,
and each process's CPU microseconds per call in the max-rps runs. With
``--floor`` a third arm runs the same load through a pair of minimal Python proxies
(``benchmarks/minimal_proxy.py``: uvloop + httptools, a task per request, nothing else),
the floor for any Python sidecar on this machine. Usage:
.venv/bin/python benchmarks/agent_sidecar_overhead.py [--seconds 10] [--rate 1000]
[--concurrency 32] [--rounds 2] [--floor] [--load both|wrk|aiohttp] [--wrk-threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import shutil
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
    cpu_before = _cpu_now(pids)
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
    return {"rps": round(done / elapsed, 1), "errors": errors,
            **_cpu_per_call(pids, cpu_before, max(done + errors, 1),
                            time.process_time() - lg_before)}


def _cpu_now(pids: dict[str, int]) -> dict[str, float]:
    return {name: process_tree_cpu_seconds(pid) for name, pid in pids.items()}


def _cpu_per_call(pids: dict[str, int], before: dict[str, float], calls: int,
                  load_generator_seconds: float) -> dict[str, float]:
    """CPU microseconds per call: the load generator's, and each process's since ``before``."""
    result = {"cpu_us_per_call.load_generator": round(load_generator_seconds / calls * 1e6, 1)}
    for name, pid in pids.items():
        result[f"cpu_us_per_call.{name}"] = round(
            (process_tree_cpu_seconds(pid) - before[name]) / calls * 1e6, 1)
    return result


# Prints one JSON line when wrk is done: its counts, so errors are never mistaken for calls.
WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d}\\n', summary.requests, summary.duration, e.connect,
    e.read, e.write, e.status, e.timeout))
end
"""


def wrk_max_rps(url: str, seconds: float, concurrency: int, threads: int, script: Path,
                pids: dict[str, int] | None = None) -> dict[str, float]:
    """Closed-loop max rps from wrk; with ``pids``, also each process's CPU microseconds
    per call (``load_generator`` is wrk: the CPU of children reaped during the run)."""
    pids = pids or {}
    cpu_before = _cpu_now(pids)
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds:g}s",
         "--timeout", "5s", "-s", str(script), url],
        capture_output=True, text=True, timeout=seconds + 60, check=False)
    usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in out.stdout.splitlines() if line.startswith("WRK_JSON ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()[:300]}")
    report = json.loads(lines[-1][len("WRK_JSON "):])
    errors = sum(report[k] for k in ("connect", "read", "write", "status", "timeout"))
    calls = max(int(report["requests"]), 1)
    elapsed = report["duration_us"] / 1e6
    wrk_seconds = (usage_after.ru_utime + usage_after.ru_stime
                   - usage_before.ru_utime - usage_before.ru_stime)
    return {"rps": round((calls - report["status"]) / elapsed, 1), "errors": errors,
            **_cpu_per_call(pids, cpu_before, calls, wrk_seconds)}


async def fixed_rate(session: aiohttp.ClientSession, url: str, seconds: float,
                     rate: float) -> dict[str, float]:
    """Open-loop latency at ``rate``, the generator's own garbage collector held off.

    A run keeps thousands of tasks and results alive, so a collection of the oldest
    generation in this process stalled the generator by up to 190 ms (traced on the Dec 3
    machine), counted as latency of whichever arm was running and drained more slowly
    through the pair. The processes under test collect as usual."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        return await _fixed_rate(session, url, seconds, rate)
    finally:
        gc.enable()
        gc.unfreeze()


async def _fixed_rate(session: aiohttp.ClientSession, url: str, seconds: float,
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
    loads = ["wrk", "aiohttp"] if args.load == "both" else [args.load]
    if "wrk" in loads and shutil.which("wrk") is None:
        if args.load == "wrk":
            raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
        print("wrk is not installed: measuring max rps with aiohttp only", file=sys.stderr)
        loads = ["aiohttp"]
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
            script = tmp / "report.lua"
            script.write_text(WRK_REPORT)
            for _, url in arms:  # warm up connections and code paths
                await max_rps(session, url, 2.0, args.concurrency)
            pids = {"upstream": upstream.pid, "server_agent": server_agent.pid,
                    "client_agent": client_agent.pid}
            pids.update({f"floor_{i}": p.pid for i, p in enumerate(floor_procs)})
            rounds = []
            for number in range(args.rounds):
                # Each measurement runs on every arm back to back, and the arms take turns
                # going first (ABBA), so a machine whose speed drifts, as shared VMs do,
                # loads the arms of a round alike.
                order = arms if number % 2 == 0 else arms[::-1]
                row: dict[str, object] = {}
                if "wrk" in loads:
                    for name, url in order:
                        row[f"{name}_max_wrk"] = await asyncio.to_thread(
                            wrk_max_rps, url, args.seconds, args.concurrency,
                            args.wrk_threads, script, pids)
                        await asyncio.sleep(1.0)
                if "aiohttp" in loads:
                    for name, url in order:
                        row[f"{name}_max"] = await max_rps(session, url, args.seconds,
                                                           args.concurrency, pids)
                        await asyncio.sleep(1.0)
                for name, url in order:
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

    summary: dict[str, object] = {
        "direct_p50_ms": med("direct_at_rate", "p50_ms"),
        "pair_p50_ms": med("pair_at_rate", "p50_ms"),
        "direct_p99_ms": med("direct_at_rate", "p99_ms"),
        "pair_p99_ms": med("pair_at_rate", "p99_ms"),
    }
    summary["added_p50_ms"] = round(med("pair_at_rate", "p50_ms")
                                    - med("direct_at_rate", "p50_ms"), 3)
    summary["added_p99_ms"] = round(med("pair_at_rate", "p99_ms")
                                    - med("direct_at_rate", "p99_ms"), 3)
    # each round's own pair p99 minus its direct p99, then their median
    summary["added_p99_per_round_median_ms"] = round(statistics.median(
        float(r["pair_at_rate"]["p99_ms"]) - float(r["direct_at_rate"]["p99_ms"])  # type: ignore[index]
        for r in rounds), 3)
    for load in loads:
        suffix = "_wrk" if load == "wrk" else ""
        direct_rps, pair_rps = med(f"direct_max{suffix}", "rps"), med(f"pair_max{suffix}", "rps")
        by_load: dict[str, float] = {
            "direct_max_rps": direct_rps, "pair_max_rps": pair_rps,
            "pair_over_direct_max_rps": round(pair_rps / direct_rps, 3),
            # the ratio of each round's own pair and direct runs, then their median
            "pair_over_direct_per_round_median": round(statistics.median(
                float(r[f"pair_max{suffix}"]["rps"])  # type: ignore[index]
                / float(r[f"direct_max{suffix}"]["rps"]) for r in rounds), 3),  # type: ignore[index]
            "client_agent_cpu_us_per_call": med(f"pair_max{suffix}",
                                                "cpu_us_per_call.client_agent"),
            "server_agent_cpu_us_per_call": med(f"pair_max{suffix}",
                                                "cpu_us_per_call.server_agent"),
            "upstream_cpu_us_per_call": med(f"direct_max{suffix}", "cpu_us_per_call.upstream"),
            "load_generator_cpu_us_per_call": med(f"direct_max{suffix}",
                                                  "cpu_us_per_call.load_generator"),
        }
        if args.floor:
            by_load["floor_max_rps"] = med(f"floor_max{suffix}", "rps")
            by_load["floor_over_direct_max_rps"] = round(
                by_load["floor_max_rps"] / direct_rps, 3)
            by_load["floor_proxy_cpu_us_per_call"] = med(f"floor_max{suffix}",
                                                          "cpu_us_per_call.floor_0")
        summary[f"max_rps_{load}"] = by_load
    return {"rate": args.rate, "seconds": args.seconds, "concurrency": args.concurrency,
            "loads": loads, "rounds": rounds, "median": summary}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--floor", action="store_true",
                        help="also run a pair of minimal Python proxies "
                             "(benchmarks/minimal_proxy.py) as the floor")
    parser.add_argument("--load", choices=("both", "wrk", "aiohttp"), default="both",
                        help="the max-rps load generator(s); the fixed-rate latency run "
                             "always uses aiohttp")
    parser.add_argument("--wrk-threads", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
