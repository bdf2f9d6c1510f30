"""Helpers for the sidecar tests (no tests here): a registry, upstreams, agents on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from agent.config import AgentConfig
from agent.service import AgentService
from registry.client import BaseClient, open_registry
from registry.server.app import RegistryServer, RegistryServerConfig
from tests.test_agent_reporter import LineServer

Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Upstream:
    """A real HTTP service on 127.0.0.1 that names itself and counts calls."""

    name: str
    behaviour: Behaviour | None = None
    calls: list[str] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.calls.append(request.raw_path)
            if self.behaviour is not None:
                return await self.behaviour(request)
            body = await request.read()
            return web.json_response({"node": self.name, "path": request.raw_path,
                                      "body": body.decode(errors="replace"),
                                      "switches": request.headers.get("X-Tidemark-Switches")})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Mesh:
    """A registry, a line receiver for metrics, upstreams and agents; all stopped at the end."""

    tmp: Path
    registry: RegistryServer
    lines: LineServer
    admin: BaseClient
    upstreams: list[Upstream] = field(default_factory=list)
    agents: list[AgentService] = field(default_factory=list)
    session: aiohttp.ClientSession | None = None

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.registry.port}"

    def config(self, **kwargs: Any) -> AgentConfig:
        defaults: dict[str, Any] = dict(
            registry=self.registry_url, graphite=f"127.0.0.1:{self.lines.port}",
            listen="127.0.0.1:0", interval_seconds=1, heartbeat_ttl_seconds=3.0,
            deregister_grace_seconds=0.0,
            data_dir=self.tmp / f"agent{len(self.agents)}", filters=(
                "metrics", "switcher", "active_limit", "failover", "circuit_breaker"))
        defaults.update(kwargs)
        return AgentConfig(**defaults)

    async def upstream(self, name: str, behaviour: Behaviour | None = None) -> Upstream:
        up = Upstream(name, behaviour)
        await up.start()
        self.upstreams.append(up)
        return up

    async def agent(self, config: AgentConfig, registry_client: BaseClient | None = None
                    ) -> AgentService:
        service = AgentService(config, metrics=CollectorRegistry(),
                               registry_client=registry_client)
        await service.start()
        self.agents.append(service)
        return service

    async def server_agent(self, service: str, upstream: Upstream, *,
                           registry_client: BaseClient | None = None, **kwargs: Any
                           ) -> AgentService:
        return await self.agent(self.config(service=service, upstream=upstream.url, **kwargs),
                                registry_client)

    async def client_agent(self, caller: str = "web", *,
                           registry_client: BaseClient | None = None, **kwargs: Any
                           ) -> AgentService:
        return await self.agent(self.config(service=caller, **kwargs), registry_client)

    async def get(self, agent: AgentService, path: str, **kwargs: Any
                  ) -> tuple[int, dict[str, str], bytes]:
        assert self.session is not None
        method = kwargs.pop("method", "GET")
        async with self.session.request(method, f"http://127.0.0.1:{agent.port}{path}",
                                        **kwargs) as resp:
            return resp.status, dict(resp.headers), await resp.read()

    async def wait_nodes(self, agent: AgentService, service: str, count: int,
                         timeout: float = 10.0) -> None:
        """Wait until the client agent routes ``service`` to ``count`` nodes."""
        assert agent.directory is not None
        await agent.directory.view(service)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            view = agent.directory.current(service)
            if view is not None and len(view.endpoints) == count:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{service}: {view and len(view.endpoints)} nodes, "
                                     f"wanted {count}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        for agent in reversed(self.agents):
            await agent.stop()
        for up in self.upstreams:
            await up.stop()
        if self.session is not None:
            await self.session.close()
        await self.admin.stop()
        await self.registry.stop()
        self.lines.close()


async def make_mesh(tmp: Path) -> Mesh:
    registry = RegistryServer(RegistryServerConfig(data_dir=tmp / "registry", http_port=0))
    await registry.start()
    admin = open_registry(f"http://127.0.0.1:{registry.port}")
    await admin.start()
    mesh = Mesh(tmp, registry, LineServer(), admin)
    mesh.session = aiohttp.ClientSession()
    return mesh


def replace_config(config: AgentConfig, **kwargs: Any) -> AgentConfig:
    return dataclasses.replace(config, **kwargs)
