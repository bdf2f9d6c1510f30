"""The service registry: nodes, traffic weights and degrade switches, with watches.

Open a client with :func:`open_registry` (``http://HOST:PORT`` for the embedded registry,
``etcd://HOST:PORT[,HOST:PORT...]`` for etcd v3); see ``docs/registry.md``.
"""

from registry.client import BaseClient, Registration, RegistryClient, Watch, open_registry
from registry.errors import Conflict, NotFound, RegistryError, RegistryUnavailable, Unauthorized
from registry.failstatic import FailStaticCache
from registry.model import Command, Degrade, Node, ServiceConfig, Snapshot

__all__ = [
    "BaseClient",
    "Command",
    "Conflict",
    "Degrade",
    "FailStaticCache",
    "Node",
    "NotFound",
    "Registration",
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailable",
    "ServiceConfig",
    "Snapshot",
    "Unauthorized",
    "Watch",
    "open_registry",
]
