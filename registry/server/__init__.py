"""The embedded registry daemon (``tidemark registry``)."""

from registry.server.app import RegistryServer, RegistryServerConfig

__all__ = ["RegistryServer", "RegistryServerConfig"]
