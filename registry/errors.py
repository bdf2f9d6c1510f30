"""Exceptions raised by registry clients.

    TidemarkError
    └── RegistryError            anything the registry layer raises on purpose
        ├── RegistryUnavailable  the registry could not be reached (and no cached answer)
        ├── Unauthorized         a write without the right token (HTTP 401)
        ├── NotFound             no such node or command
        └── Conflict             concurrent writers kept winning; try again

Bad input is a plain :class:`ValueError` whose message names the field.
"""

from __future__ import annotations

from tidemark.errors import TidemarkError

__all__ = ["RegistryError", "RegistryUnavailable", "Unauthorized", "NotFound", "Conflict"]


class RegistryError(TidemarkError):
    """Base class of the registry's own errors."""


class RegistryUnavailable(RegistryError):
    """The registry could not be reached and nothing cached could answer instead."""


class Unauthorized(RegistryError):
    """A write was sent without the right token."""


class NotFound(RegistryError):
    """The node or command does not exist (any more)."""


class Conflict(RegistryError):
    """A compare-and-swap lost too many times against concurrent writers."""
