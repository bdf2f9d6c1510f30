"""How fast registry writes take effect at a client-side agent (target: within 1 s).

One embedded registry, one upstream behind a server-side agent, one client-side agent,
all in this process on loopback. Each trial writes a change with the registry client,
then polls the client agent through HTTP (1 ms apart) until the change shows:

- degrade: the first 503 with ``X-Tidemark-Degraded`` after ``degrade()`` returned;
- restore: the first 200 after ``restore()`` returned;
- node removed: a second upstream's node deregistered, until /runtime no longer lists it.

Reports median and max seconds per kind. Usage:
.venv/bin/python benchmarks/agent_registry_reaction.py [--trials 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.test_agent_support import make_mesh  # noqa: E402


async def until(check, timeout: float = 10.0) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    while not await check():
        if time.perf_counter() - started > timeout:
            raise RuntimeError("change not seen within 10 s")
        await asyncio.sleep(0.001)
    return time.perf_counter() - started


async def main_async(trials: int) -> dict[str, object]:
    mesh = await make_mesh(Path(tempfile.mkdtemp(prefix="agent-reaction-")))
    try:
        a = await mesh.upstream("a")
        await mesh.server_agent("user", a)
        client = await mesh.client_agent("web")
        await mesh.wait_nodes(client, "user", 1)
        times: dict[str, list[float]] = {"degrade": [], "restore": [], "node_removed": []}

        async def degraded() -> bool:
            return (await mesh.get(client, "/user/"))[0] == 503

        async def restored() -> bool:
            return (await mesh.get(client, "/user/"))[0] == 200

        for _ in range(trials):
            await mesh.admin.degrade("user", reason="bench", who="bench")
            times["degrade"].append(await until(degraded))
            await mesh.admin.restore("user", who="bench")
            times["restore"].append(await until(restored))
        b = await mesh.upstream("b")
        extra = await mesh.server_agent("user", b)
        for _ in range(trials):
            await mesh.wait_nodes(client, "user", 2)
            assert extra._registration is not None
            node = extra._registration.node

            async def gone(node_id: str = node.id) -> bool:
                runtime = json.loads((await mesh.get(client, "/runtime"))[2])
                return node_id not in {n["id"] for n in runtime["services"]["user"]["nodes"]}

            await mesh.admin.deregister("user", node.id)
            times["node_removed"].append(await until(gone))
            await mesh.admin.register("user", node, ttl_seconds=30)
        return {kind: {"median_ms": round(statistics.median(v) * 1000, 2),
                       "max_ms": round(max(v) * 1000, 2), "trials": len(v)}
                for kind, v in times.items()}
    finally:
        await mesh.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args.trials)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
