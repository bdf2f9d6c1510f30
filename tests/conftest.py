"""Fixtures shared by the whole suite."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.test_agent_support import Mesh

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that was free a moment ago (for peers that cannot take port 0)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binary(name: str) -> str:
    """Path of a peer's executable, or skip the test saying how to get it."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.skip(f"{name} is not installed (make test installs it when run as root)")
    return path


@pytest.fixture
def shared_data() -> Path:
    """The development datasets in ../shared/data (skips when absent)."""
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} is not present")
    return SHARED_DATA


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    """A registry, a metrics line receiver, upstreams and agents on loopback
    (tests/test_agent_support.py); everything is stopped at the end."""
    from tests.test_agent_support import make_mesh

    m = await make_mesh(tmp_path)
    try:
        yield m
    finally:
        await m.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_loops: run each async test on the asyncio loop and on uvloop")


def pytest_asyncio_loop_factories(config: pytest.Config,
                                  item: pytest.Item) -> dict[str, object]:
    """The event loops an async test runs on: the standard one, and uvloop as well for
    tests marked ``both_loops`` (the agent daemon runs on uvloop by default)."""
    if item.get_closest_marker("both_loops") is None:
        return {"asyncio": asyncio.new_event_loop}
    import uvloop

    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
