"""Fixtures shared by the whole suite."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

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
