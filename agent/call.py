"""What flows through the filter chain: a :class:`Call` in, a :class:`Reply` out.

Errors a filter may raise on purpose::

    UpstreamError          a call to one node failed (``error_class`` says how)
    └── NodeUnavailable    the node was not tried at all (its breaker is open)
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol

from mypy_extensions import mypyc_attr

from agent.balancer import Endpoint

__all__ = ["Call", "Reply", "Next", "Filter", "UpstreamError", "NodeUnavailable",
           "error_reply", "json_reply", "IDEMPOTENT_METHODS", "NOT_SENT_HEADER"]

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# On an agent's 5xx error answer: no attempt reached a service, so a calling agent may send
# the call to another node whatever its method.
NOT_SENT_HEADER: Final = "X-Tidemark-Not-Sent"


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


# Reply and Call are plain classes, not dataclasses: compiled (agent/native.py), their
# constructors are native code, where a dataclass's generated __init__ would run
# interpreted, twice per proxied call.
class Reply:
    """An answer to the caller; its fields are read-only."""

    def __init__(self, status: int, headers: Mapping[str, str] | None = None,
                 body: bytes = b"") -> None:
        self.status: Final = status
        self.headers: Final[Mapping[str, str]] = {} if headers is None else headers
        self.body: Final = body

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Reply):
            return NotImplemented
        return (self.status, self.headers, self.body) == \
            (other.status, other.headers, other.body)

    __hash__ = None  # type: ignore[assignment]  # equal by value, and headers are mutable

    def __repr__(self) -> str:
        return f"Reply(status={self.status!r}, headers={self.headers!r}, body={self.body!r})"


class Call:
    """One inbound call and what the filters learned about it.

    ``started`` is ``time.perf_counter()`` when the call was made, unless given.
    """

    def __init__(self, service: str, method: str, path_qs: str, headers: Mapping[str, str],
                 body: bytes, caller: str | None = None, node: Endpoint | None = None,
                 error: str | None = None, skip_metrics: bool = False, attempts: int = 0,
                 backup_sent: bool = False, started: float | None = None) -> None:
        self.service = service
        self.method = method
        self.path_qs = path_qs  # path and query to send upstream
        self.headers = headers
        self.body = body
        self.caller = caller
        self.node = node
        self.error = error  # error class, set by whoever knows
        self.skip_metrics = skip_metrics  # degraded or rejected: the service was not called
        self.attempts = attempts
        self.backup_sent = backup_sent
        self.started: float = time.perf_counter() if started is None else started

    def __repr__(self) -> str:
        node = self.node.id if self.node is not None else None
        return (f"Call(service={self.service!r}, method={self.method!r}, "
                f"path_qs={self.path_qs!r}, node={node!r}, error={self.error!r}, "
                f"attempts={self.attempts!r})")

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

    def handle(self, call: Call, next_: Next) -> Awaitable[Reply]: ...


def json_reply(status: int, body: Any, /, **headers: str) -> Reply:
    """An answer whose body is ``body`` as JSON."""
    return Reply(status, {"Content-Type": "application/json", **headers},
                 json.dumps(body).encode())


def error_reply(status: int, message: str, **headers: str) -> Reply:
    """A JSON error answer whose body names the problem."""
    return json_reply(status, {"error": message}, **headers)
