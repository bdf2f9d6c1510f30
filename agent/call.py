"""What flows through the filter chain: a :class:`Call` in, a :class:`Reply` out.

Errors a filter may raise on purpose::

    UpstreamError          a call to one node failed (``error_class`` says how)
    └── NodeUnavailable    the node was not tried at all (its breaker is open)
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mypy_extensions import mypyc_attr

from agent.balancer import Endpoint

__all__ = ["Call", "Reply", "Next", "Filter", "UpstreamError", "NodeUnavailable",
           "error_reply", "json_reply", "IDEMPOTENT_METHODS"]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


# User filters may raise subclasses of these (compiled, see agent/native.py).
@mypyc_attr(allow_interpreted_subclasses=True)
class UpstreamError(Exception):
    """A call to a node failed: ``error_class`` is ``connection`` or ``timeout``.

    ``sent`` is False when the request surely never reached the node (connect failed),
    which makes it safe to send elsewhere whatever the method.
    """

    def __init__(self, error_class: str, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.sent = sent


@mypyc_attr(allow_interpreted_subclasses=True)
class NodeUnavailable(UpstreamError):
    """The node was skipped without sending anything (breaker open)."""

    def __init__(self, message: str) -> None:
        super().__init__("connection", message, sent=False)


@dataclass(frozen=True)
class Reply:
    """An answer to the caller."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Call:
    """One inbound call and what the filters learned about it."""

    service: str
    method: str
    path_qs: str  # path and query to send upstream
    headers: Mapping[str, str]
    body: bytes
    caller: str | None = None
    node: Endpoint | None = None
    error: str | None = None  # error class, set by whoever knows
    skip_metrics: bool = False  # degraded or rejected: the service was not called
    attempts: int = 0
    backup_sent: bool = False
    started: float = field(default_factory=time.perf_counter)

    def for_node(self, node: Endpoint) -> Call:
        """A copy for one attempt at ``node``."""
        return Call(service=self.service, method=self.method, path_qs=self.path_qs,
                    headers=self.headers, body=self.body, caller=self.caller, node=node,
                    error=None, skip_metrics=self.skip_metrics, attempts=self.attempts,
                    backup_sent=self.backup_sent, started=self.started)


Next = Callable[[Call], Awaitable[Reply]]


class Filter(Protocol):
    """One link of the chain: do something around ``next_`` (or answer without it)."""

    name: str

    async def handle(self, call: Call, next_: Next) -> Reply: ...


def json_reply(status: int, body: Any, /, **headers: str) -> Reply:
    """An answer whose body is ``body`` as JSON."""
    return Reply(status, {"Content-Type": "application/json", **headers},
                 json.dumps(body).encode())


def error_reply(status: int, message: str, **headers: str) -> Reply:
    """A JSON error answer whose body names the problem."""
    return json_reply(status, {"error": message}, **headers)
