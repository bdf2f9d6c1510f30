"""Exceptions shared by every part of tidemark.

    TidemarkError
    ├── UsageError        bad command line or configuration: one readable line, exit 2
    └── ConfigError       (a UsageError) a configuration key with a bad value
"""

from __future__ import annotations

__all__ = ["TidemarkError", "UsageError", "ConfigError"]


class TidemarkError(Exception):
    """Base class of tidemark's own errors."""


class UsageError(TidemarkError):
    """Something the user supplied is wrong; the message says what."""


class ConfigError(UsageError):
    """A configuration key has a bad value; the message names the key."""
