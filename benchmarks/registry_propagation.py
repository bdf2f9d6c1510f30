"""Registry propagation: write-to-last-watcher latency, embedded vs etcd vs raw etcd.

100 watchers on one service (spread over worker processes, each watcher with its own
connection), 1,000 config writes one after another. For each write the latency is the time
from just before the write call to the moment the *last* of the 100 watchers saw it
(CLOCK_MONOTONIC, which is shared by all processes). Three runs side by side:

* ``embedded`` - ``tidemark registry`` (its own process) through our client and watch;
* ``etcd``     - our etcd backend (watch = snapshot per change, command = CAS transaction);
* ``raw-etcd`` - the floor: plain aetcd puts and key watches, without our layer.

Usage::

    .venv/bin/python benchmarks/registry_propagation.py [--watchers 100] [--writes 1000]
        [--workers 4] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from registry.client import open_registry  # noqa: E402
from tests.peers.etcd import EtcdPeer, etcd_binary  # noqa: E402
from tests.peers.process import free_port, process_tree_cpu_seconds  # noqa: E402

SERVICE = "bench-propagation"
RAW_KEY = b"/bench/raw/config"


def _seq_of(weights: dict[str, int]) -> int:
    return int(weights.get("seq", 0))


# --- worker processes --------------------------------------------------------------------
async def _worker_async(kind: str, url: str, token: str | None, count: int,
                        conn: Any, ready: Any) -> None:
    """Run ``count`` watchers; report (seq, last time any of them first saw seq)."""
    seen_at: dict[int, list[float]] = {}
    done = asyncio.Event()

    def observe(seq: int) -> None:
        now = time.monotonic()
        times = seen_at.setdefault(seq, [])
        times.append(now)
        if len(times) == count:
            conn.send((seq, max(times)))
            del seen_at[seq]

    clients: list[Any] = []
    tasks = []
    if kind == "raw-etcd":
        import aetcd

        host, port = url[len("etcd://"):].split(":")

        async def raw_watch(client: Any, started: asyncio.Event) -> None:
            last = -1
            watch = await client.watch(RAW_KEY)
            started.set()
            async for event in watch:
                seq = int(event.kv.value)
                if seq != last:
                    last = seq
                    observe(seq)

        for _ in range(count):
            client = aetcd.Client(host=host, port=int(port), timeout=10)
            await client.connect()
            clients.append(client)
            started = asyncio.Event()
            tasks.append(asyncio.create_task(raw_watch(client, started)))
            await started.wait()
    else:
        async def our_watch(client: Any, started: asyncio.Event) -> None:
            last = -1
            async with client.watch(SERVICE) as watch:
                async for snapshot in watch:
                    started.set()
                    seq = _seq_of(dict(snapshot.config.idc_weights))
                    if seq != last:
                        last = seq
                        observe(seq)

        for _ in range(count):
            client = open_registry(url, token=token)
            await client.start()
            clients.append(client)
            started = asyncio.Event()
            tasks.append(asyncio.create_task(our_watch(client, started)))
            await started.wait()
    seen_at.clear()
    ready.set()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    await done.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        if kind == "raw-etcd":
            await client.close()
        else:
            await client.stop()


def _worker(kind: str, url: str, token: str | None, count: int, conn: Any, ready: Any) -> None:
    asyncio.run(_worker_async(kind, url, token, count, conn, ready))


# --- the writer --------------------------------------------------------------------------
async def _run(kind: str, url: str, token: str | None, watchers: int, writes: int,
               workers: int, server_pid: int | None) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    per = [watchers // workers + (1 if i < watchers % workers else 0) for i in range(workers)]
    pipes, procs, readies = [], [], []
    writer_client: Any = None
    if kind == "raw-etcd":
        import aetcd

        host, port = url[len("etcd://"):].split(":")
        writer_client = aetcd.Client(host=host, port=int(port), timeout=10)
        await writer_client.connect()
        await writer_client.put(RAW_KEY, b"0")
    else:
        writer_client = open_registry(url, token=token)
        await writer_client.start()
        await writer_client.set_idc_weights(SERVICE, {"seq": 500}, who="bench")
    for count in per:
        parent, child = ctx.Pipe(duplex=False)
        ready = ctx.Event()
        proc = ctx.Process(target=_worker, args=(kind, url, token, count, child, ready))
        proc.start()
        pipes.append(parent)
        procs.append(proc)
        readies.append(ready)
    for ready in readies:
        if not await asyncio.to_thread(ready.wait, 300):
            raise RuntimeError(f"{kind}: watchers did not start")
    latencies, write_seconds = [], []
    loop = asyncio.get_running_loop()

    def cpu() -> tuple[float, float]:
        watchers_cpu = sum(process_tree_cpu_seconds(p.pid) for p in procs if p.pid)
        return (watchers_cpu, process_tree_cpu_seconds(server_pid) if server_pid else 0.0)

    cpu_before = cpu()
    try:
        for i in range(1, writes + 1):
            seq = (i - 1) % 499 + 1  # 1..499, never the initial 500
            start = time.monotonic()
            if kind == "raw-etcd":
                await writer_client.put(RAW_KEY, str(seq).encode())
            else:
                await writer_client.set_idc_weights(SERVICE, {"seq": seq}, who="bench")
            write_seconds.append(time.monotonic() - start)
            last = 0.0
            for pipe in pipes:
                while True:
                    if not await loop.run_in_executor(None, pipe.poll, 30):
                        raise RuntimeError(f"{kind}: write {i} not seen within 30 s")
                    got_seq, at = pipe.recv()
                    if got_seq == seq:
                        last = max(last, at)
                        break
            latencies.append(last - start)
        cpu_after = cpu()
    finally:
        for proc in procs:
            if proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
        if kind == "raw-etcd":
            await writer_client.close()
        else:
            await writer_client.stop()
    ms = sorted(x * 1000 for x in latencies)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, int(round(p / 100 * (len(ms) - 1))))]

    return {"kind": kind, "watchers": watchers, "writes": writes,
            "p50_ms": round(pct(50), 2), "p90_ms": round(pct(90), 2),
            "p99_ms": round(pct(99), 2), "max_ms": round(ms[-1], 2),
            "mean_ms": round(statistics.fmean(ms), 2),
            "write_call_p50_ms": round(statistics.median(write_seconds) * 1000, 2),
            "watchers_cpu_ms_per_write": round((cpu_after[0] - cpu_before[0]) * 1000 / writes, 2),
            "server_cpu_ms_per_write": round((cpu_after[1] - cpu_before[1]) * 1000 / writes, 2)}


def _start_embedded(tmp: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    token = "bench-token"
    (tmp / "token").write_text(token)
    log = open(tmp / "registry.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidemark", "registry", "--data-dir", str(tmp / "registry"),
         "--http-port", str(port), "--token-file", str(tmp / "token"), "--log-level", "warning"],
        stdout=log, stderr=log, cwd=REPO_ROOT)
    log.close()
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc, f"http://127.0.0.1:{port}", token
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("embedded registry did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--only", choices=["embedded", "etcd", "raw-etcd"], action="append")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    kinds = args.only or ["embedded", "etcd", "raw-etcd"]
    tmp = Path(tempfile.mkdtemp(prefix="tidemark-bench-registry-"))
    results = []
    embedded = etcd = None
    try:
        if "embedded" in kinds:
            embedded, url, token = _start_embedded(tmp)
            results.append(asyncio.run(_run("embedded", url, token, args.watchers, args.writes,
                                            args.workers, embedded.pid)))
            print(json.dumps(results[-1]), flush=True)
            embedded.send_signal(signal.SIGTERM)
            embedded.wait(30)
        if {"etcd", "raw-etcd"} & set(kinds):
            binary = etcd_binary()
            if binary is None:
                print("etcd is not installed; skipping the etcd runs", file=sys.stderr)
            else:
                (tmp / "etcd").mkdir()
                etcd = EtcdPeer(binary, tmp / "etcd")
                etcd.start()
                for kind in ("etcd", "raw-etcd"):
                    if kind in kinds:
                        pid = etcd.process.pid if etcd.process else None
                        results.append(asyncio.run(_run(kind, etcd.url, None, args.watchers,
                                                        args.writes, args.workers, pid)))
                        print(json.dumps(results[-1]), flush=True)
    finally:
        if embedded is not None and embedded.poll() is None:
            embedded.kill()
            embedded.wait(10)
        if etcd is not None:
            etcd.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    by_kind = {r["kind"]: r for r in results}
    if "etcd" in by_kind and "raw-etcd" in by_kind:
        overhead = by_kind["etcd"]["p99_ms"] / max(by_kind["raw-etcd"]["p99_ms"], 1e-9) - 1
        print(json.dumps({"etcd_p99_overhead_vs_raw": round(overhead, 3)}))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
