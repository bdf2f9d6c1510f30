"""pytest glue for the peers: turn "not installed here" into a skip with the reason.

from tests.peers.fixtures import started
with started(graphite_stack(tmp)) as graphite: ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TypeVar

import pytest

from tests.peers.process import PeerUnavailable

__all__ = ["started"]

T = TypeVar("T")


@contextlib.contextmanager
def started(manager: AbstractContextManager[T]) -> Iterator[T]:
    """Enter a peer's context manager; skip the test if the peer is not installed."""
    try:
        peer = manager.__enter__()
    except PeerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield peer
    except BaseException as exc:
        if not manager.__exit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        manager.__exit__(None, None, None)
