"""Registry propagation: write-to-last-watcher latency, embedded vs etcd vs raw etcd.

100 watchers on one service (spread over worker processes, each watcher with its own
connection), 1,000 config writes one after another per kind. For each write the latency is
the time from just before the write call to the moment the *last* of the 100 watchers saw it
(CLOCK_MONOTONIC, which is shared by all processes). The three kinds run side by side, their
watchers all connected at once, in interleaved rounds of 50 writes, so a noisy shared machine
loads them alike:

* ``embedded`` - ``tidemark registry`` (its own process) through our client and watch;
* ``etcd``     - our etcd backend (watch = snapshot per change, command = CAS transaction);
* ``raw-etcd`` - the floor: plain aetcd puts and key watches, without our layer;
* ``raw-etcd-txn`` - the floor for the same write: the raw client sends the transaction a
  command is (compare the config key's mod revision, put the config JSON, put a history
  entry; on a lost race read the config back) and its watchers decode the config JSON,
  without our layer (no validation, command logic, snapshots or pump tasks).

``raw-etcd`` is what etcd costs for the least write; ``raw-etcd-txn`` is what etcd costs for
the write the issue asks of a command (several keys in one transaction). The script prints
our layer's overhead over both.

Usage::

    .venv/bin/python benchmarks/registry_propagation.py [--watchers 100] [--writes 1000]
        [--workers 4] [--round 50] [--only KIND ...] [--json results.json]
        [--etcd-binary PATH] [--etcd-gc] [--etcd-env KEY=VALUE ...]

Diagnostics (off by default, the measurement is the same without them): ``--etcd-binary``
runs another etcd build than the installed one; ``--etcd-env KEY=VALUE`` (repeatable) adds
a variable to etcd's environment, e.g. ``GOGC=400`` for Go's garbage collector (one etcd
serves both etcd kinds, so it applies to ours and raw alike); ``--etcd-gc`` reads etcd's
``/metrics`` before and after each round and reports, per kind, etcd's Go garbage collections
per 1,000 writes and the bytes etcd allocated per write.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
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
RAW_TXN_KEY = b"/bench/raw-txn/services/bench/config"
RAW_TXN_HISTORY = "/bench/raw-txn/history/bench/{:012d}"
RAW_KINDS = ("raw-etcd", "raw-etcd-txn")
ETCD_KINDS = ("etcd", *RAW_KINDS)


def _raw_txn_values(seq: int, command_id: int) -> tuple[bytes, bytes]:
    """The config and history values of one raw transaction, shaped like a command's."""
    config = {"flat": {"idc_weight/seq": seq}, "next_id": command_id + 1}
    entry = {"id": command_id, "service": SERVICE, "kind": "idc_weights",
             "who": "bench", "why": "", "at": time.time(), "changes": {"idc_weight/seq": seq},
             "previous": {"idc_weight/seq": seq}, "reverted_by": None}
    return (json.dumps(config, separators=(",", ":")).encode(),
            json.dumps(entry, separators=(",", ":")).encode())


class _RawTxnWriter:
    """Compare-and-swap writes of a config key plus a history key, straight on etcd's KV
    stub: the transaction a command is, with none of our layer around it."""

    def __init__(self, client: Any) -> None:
        from aetcd import rpc

        self.rpc = rpc  # imported here, not in the timed write
        self.client = client
        self.mod_revision = 0
        self.command_id = 0

    async def write(self, seq: int) -> None:
        rpc = self.rpc
        while True:
            self.command_id += 1
            config, entry = _raw_txn_values(seq, self.command_id)
            request = rpc.TxnRequest()
            compare = request.compare.add()
            compare.key = RAW_TXN_KEY
            compare.result = rpc.Compare.EQUAL
            compare.target = rpc.Compare.MOD
            compare.mod_revision = self.mod_revision
            put = request.success.add().request_put
            put.key, put.value = RAW_TXN_KEY, config
            put = request.success.add().request_put
            put.key, put.value = RAW_TXN_HISTORY.format(self.command_id).encode(), entry
            request.failure.add().request_range.key = RAW_TXN_KEY
            reply = await self.client.kvstub.Txn(request, timeout=10,
                                                 metadata=self.client.metadata)
            if reply.succeeded:
                self.mod_revision = int(reply.header.revision)
                return
            kvs = reply.responses[0].response_range.kvs
            self.mod_revision = int(kvs[0].mod_revision) if kvs else 0
            self.command_id = json.loads(kvs[0].value)["next_id"] - 1 if kvs else 0


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
    if kind in RAW_KINDS:
        import aetcd

        host, port = url[len("etcd://"):].split(":")
        key = RAW_KEY if kind == "raw-etcd" else RAW_TXN_KEY

        def seq_of(value: bytes) -> int:
            if kind == "raw-etcd":
                return int(value)
            return int(json.loads(value)["flat"]["idc_weight/seq"])

        async def raw_watch(client: Any, started: asyncio.Event) -> None:
            last = -1
            watch = await client.watch(key)
            started.set()
            async for event in watch:
                seq = seq_of(event.kv.value)
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
        if kind in RAW_KINDS:
            await client.close()
        else:
            await client.stop()


def _worker(kind: str, url: str, token: str | None, count: int, conn: Any, ready: Any) -> None:
    asyncio.run(_worker_async(kind, url, token, count, conn, ready))


# --- the writer --------------------------------------------------------------------------
class _Subject:
    """One kind under test: its writer, its watcher processes and what was measured."""

    def __init__(self, kind: str, url: str, token: str | None, server_pid: int | None,
                 metrics_url: str | None = None) -> None:
        self.kind, self.url, self.token, self.server_pid = kind, url, token, server_pid
        self.metrics_url = metrics_url  # etcd's /metrics, read around rounds (--etcd-gc)
        self.gcs = 0.0
        self.alloc_bytes = 0.0
        self.writer: Any = None
        self.raw_txn: _RawTxnWriter | None = None
        self.pipes: list[Any] = []
        self.procs: list[Any] = []
        self.latencies: list[float] = []
        self.write_seconds: list[float] = []
        self.watchers_cpu = 0.0
        self.server_cpu = 0.0
        self.seq = 0

    async def start(self, watchers: int, workers: int) -> None:
        """Connect the writer and start the watchers; returns when all are watching."""
        if self.kind in RAW_KINDS:
            import aetcd

            host, port = self.url[len("etcd://"):].split(":")
            self.writer = aetcd.Client(host=host, port=int(port), timeout=10)
            await self.writer.connect()
            if self.kind == "raw-etcd":
                await self.writer.put(RAW_KEY, b"500")
            else:
                self.raw_txn = _RawTxnWriter(self.writer)
                await self.raw_txn.write(500)
        else:
            self.writer = open_registry(self.url, token=self.token)
            await self.writer.start()
            await self.writer.set_idc_weights(SERVICE, {"seq": 500}, who="bench")
        ctx = mp.get_context("spawn")
        readies = []
        for i in range(workers):
            count = watchers // workers + (1 if i < watchers % workers else 0)
            parent, child = ctx.Pipe(duplex=False)
            ready = ctx.Event()
            proc = ctx.Process(target=_worker,
                               args=(self.kind, self.url, self.token, count, child, ready))
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
            readies.append(ready)
        for ready in readies:
            if not await asyncio.to_thread(ready.wait, 300):
                raise RuntimeError(f"{self.kind}: watchers did not start")

    def _cpu(self) -> tuple[float, float]:
        watchers = sum(process_tree_cpu_seconds(p.pid) for p in self.procs if p.pid)
        server = process_tree_cpu_seconds(self.server_pid) if self.server_pid else 0.0
        return watchers, server

    def _go_stats(self) -> tuple[float, float]:
        """etcd's Go garbage collections so far and bytes allocated so far."""
        if self.metrics_url is None:
            return 0.0, 0.0
        with urllib.request.urlopen(self.metrics_url, timeout=10) as reply:
            text = reply.read().decode()

        def metric(name: str) -> float:
            found = re.search(rf"^{name} (\S+)$", text, re.M)
            return float(found.group(1)) if found else 0.0
        return (metric("go_gc_duration_seconds_count"),
                metric("go_memstats_alloc_bytes_total"))

    async def write_round(self, writes: int) -> None:
        """``writes`` writes, each waited for until every watcher saw it."""
        loop = asyncio.get_running_loop()
        go_before = self._go_stats()
        cpu_before = self._cpu()
        for _ in range(writes):
            self.seq = self.seq % 499 + 1  # 1..499, never the initial 500
            seq = self.seq
            start = time.monotonic()
            if self.kind == "raw-etcd":
                await self.writer.put(RAW_KEY, str(seq).encode())
            elif self.raw_txn is not None:
                await self.raw_txn.write(seq)
            else:
                await self.writer.set_idc_weights(SERVICE, {"seq": seq}, who="bench")
            self.write_seconds.append(time.monotonic() - start)
            last = 0.0
            for pipe in self.pipes:
                while True:
                    if not await loop.run_in_executor(None, pipe.poll, 30):
                        raise RuntimeError(f"{self.kind}: write {seq} not seen within 30 s")
                    got_seq, at = pipe.recv()
                    if got_seq == seq:
                        last = max(last, at)
                        break
            self.latencies.append(last - start)
        cpu_after = self._cpu()
        go_after = self._go_stats()
        self.watchers_cpu += cpu_after[0] - cpu_before[0]
        self.server_cpu += cpu_after[1] - cpu_before[1]
        self.gcs += go_after[0] - go_before[0]
        self.alloc_bytes += go_after[1] - go_before[1]

    async def stop(self) -> None:
        """Stop the watchers and the writer."""
        for proc in self.procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            await asyncio.to_thread(proc.join, 30)
            if proc.is_alive():
                proc.kill()
        if self.writer is not None:
            if self.kind in RAW_KINDS:
                await self.writer.close()
            else:
                await self.writer.stop()

    def result(self, watchers: int) -> dict[str, Any]:
        """Percentiles in milliseconds."""
        ms = sorted(x * 1000 for x in self.latencies)
        n = len(ms)

        def pct(p: float) -> float:
            return round(ms[min(n - 1, int(round(p / 100 * (n - 1))))], 2)

        extra = {}
        if self.metrics_url is not None:
            extra = {"etcd_gc_per_1000_writes": round(self.gcs * 1000 / n, 1),
                     "etcd_alloc_kb_per_write": round(self.alloc_bytes / 1024 / n, 1)}
        return {"kind": self.kind, "watchers": watchers, "writes": n,
                "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": pct(100),
                "mean_ms": round(statistics.fmean(ms), 2),
                "write_call_p50_ms": round(statistics.median(self.write_seconds) * 1000, 2),
                "watchers_cpu_ms_per_write": round(self.watchers_cpu * 1000 / n, 2),
                "server_cpu_ms_per_write": round(self.server_cpu * 1000 / n, 2), **extra}


async def _run_all(subjects: list[_Subject], watchers: int, writes: int, workers: int,
                   round_size: int) -> list[dict[str, Any]]:
    """Interleave rounds of writes across the kinds, so background load hits all alike."""
    try:
        for subject in subjects:
            await subject.start(watchers, workers)
        done = 0
        while done < writes:
            size = min(round_size, writes - done)
            for subject in subjects:
                await subject.write_round(size)
            done += size
    finally:
        for subject in subjects:
            await subject.stop()
    return [subject.result(watchers) for subject in subjects]


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
    parser.add_argument("--workers", type=int, default=4, help="watcher processes per kind")
    parser.add_argument("--round", type=int, default=50, help="writes per kind per round")
    parser.add_argument("--only", choices=["embedded", *ETCD_KINDS], action="append")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--etcd-binary", default=None,
                        help="diagnostic: this etcd server binary instead of the installed one")
    parser.add_argument("--etcd-gc", action="store_true",
                        help="diagnostic: report etcd's Go GCs and allocations per write")
    parser.add_argument("--etcd-env", action="append", default=[], metavar="KEY=VALUE",
                        help="diagnostic: add KEY=VALUE to etcd's environment (repeatable), "
                             "e.g. GOGC=400")
    args = parser.parse_args()
    etcd_env: dict[str, str] = {}
    for item in args.etcd_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--etcd-env wants KEY=VALUE, got {item!r}")
        etcd_env[key] = value
    kinds = args.only or ["embedded", *ETCD_KINDS]
    tmp = Path(tempfile.mkdtemp(prefix="tidemark-bench-registry-"))
    embedded = etcd = None
    try:
        subjects = []
        if "embedded" in kinds:
            embedded, url, token = _start_embedded(tmp)
            subjects.append(_Subject("embedded", url, token, embedded.pid))
        if set(ETCD_KINDS) & set(kinds):
            binary = args.etcd_binary or etcd_binary()
            if binary is None:
                print("etcd is not installed; skipping the etcd runs", file=sys.stderr)
            else:
                (tmp / "etcd").mkdir()
                etcd = EtcdPeer(binary, tmp / "etcd", env=etcd_env or None)
                etcd.start()
                pid = etcd.process.pid if etcd.process else None
                metrics = (f"http://127.0.0.1:{etcd.client_port}/metrics" if args.etcd_gc
                           else None)
                subjects += [_Subject(kind, etcd.url, None, pid, metrics)
                             for kind in ETCD_KINDS if kind in kinds]
        results = asyncio.run(_run_all(subjects, args.watchers, args.writes, args.workers,
                                       args.round))
    finally:
        if embedded is not None and embedded.poll() is None:
            embedded.send_signal(signal.SIGTERM)
            try:
                embedded.wait(30)
            except subprocess.TimeoutExpired:
                embedded.kill()
                embedded.wait(10)
        if etcd is not None:
            etcd.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for result in results:
        print(json.dumps(result))
    by_kind = {r["kind"]: r for r in results}
    for floor, label in (("raw-etcd", "raw"), ("raw-etcd-txn", "raw_txn")):
        if "etcd" in by_kind and floor in by_kind:
            for key in ("p50_ms", "p99_ms"):
                overhead = by_kind["etcd"][key] / max(by_kind[floor][key], 1e-9) - 1
                print(json.dumps({f"etcd_{key}_overhead_vs_{label}": round(overhead, 3)}))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
