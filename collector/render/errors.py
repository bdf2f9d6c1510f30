"""Errors of the render engine; the views turn each into an HTTP status.

    ValueError
    ├── InputParameterError   bad function, argument or request parameter -> 400
    │   └── LimitExceeded     the request asks for too much work -> 400 (413 for bodies)
    └── grammar.ParseError    a target that does not parse -> 400 naming the position
    NormalizeEmptyResult      internal: a combining function got no series (result: [])
"""

from __future__ import annotations

__all__ = ["InputParameterError", "LimitExceeded", "NormalizeEmptyResult"]


class InputParameterError(ValueError):
    """A request parameter or function argument is wrong; the message names it."""


class LimitExceeded(InputParameterError):
    """The request would exceed a configured bound (series, targets, body size)."""


class NormalizeEmptyResult(Exception):
    """Raised by ``normalize`` on an empty input; the evaluator turns it into ``[]``."""
