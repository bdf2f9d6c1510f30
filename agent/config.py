"""Configuration of ``tidemark agent``: one frozen dataclass (TOML ``[agent]``, env
``TIDEMARK_AGENT_*``, then command-line flags)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.balancer import BALANCERS

__all__ = ["AgentConfig", "DEFAULT_FILTERS", "BUILTIN_FILTERS", "join_host_port"]

BUILTIN_FILTERS = ("access_log", "metrics", "switcher", "active_limit", "failover",
                   "circuit_breaker")
DEFAULT_FILTERS = BUILTIN_FILTERS


@dataclass(frozen=True, repr=False)
class AgentConfig:
    """Everything the sidecar needs; validated on construction."""

    service: str = ""
    registry: str = ""
    graphite: str = ""  # HOST:PORT
    idc: str = "default"
    listen: str = "127.0.0.1:9981"
    upstream: str | None = None  # server side when set
    advertise: str | None = None  # address registered for callers (default: listen)
    node_id: str | None = None  # registry node id (default: from the upstream address)
    data_dir: Path = Path("./data/agent")
    registry_token: str | None = None  # or, better, registry_token_file
    registry_token_file: Path | None = None
    # measuring and emission
    prefix: str = "tidemark"
    interval_seconds: int = 10
    graphite_protocol: str = "tcp"
    buffer_seconds: float = 600.0
    # routing
    load_balancer: str = "least_active"
    filters: tuple[str, ...] = DEFAULT_FILTERS
    request_timeout_seconds: float = 5.0
    connect_timeout_seconds: float = 1.0
    max_attempts: int = 3
    backup_requests: bool = True
    backup_budget_ratio: float = 0.15
    backup_min_samples: int = 20
    # circuit breaker (per node)
    breaker_window_seconds: float = 10.0
    breaker_min_requests: int = 20
    breaker_error_ratio: float = 0.5
    breaker_open_seconds: float = 5.0
    # limits
    max_active: int = 1000
    max_body_bytes: int = 1 << 20
    max_response_bytes: int = 16 << 20
    max_header_bytes: int = 32768  # request line + headers (+ trailers) in all
    max_inbound_connections: int = 10_000
    max_services: int = 256
    service_idle_seconds: float = 600.0  # a service not called this long is unwatched
    max_callers: int = 100  # distinct X-Tidemark-Caller names reported; the rest as _other
    max_connections: int = 1000
    idle_timeout_seconds: float = 60.0  # inbound connections idle (or stalled) this long close
    # registry
    heartbeat_ttl_seconds: float = 10.0
    first_snapshot_wait_seconds: float = 2.0
    # degrade fallback
    degraded_status: int = 503
    degraded_body: str = ""
    degraded_content_type: str = "application/json"
    caller: str | None = None  # client side: the caller name in metrics (default: service)
    shutdown_timeout_seconds: float = 5.0
    # server side, on stop: keep serving this long after deregistering, while the callers'
    # agents learn that the node left (the registry's changes take effect within 1 s)
    deregister_grace_seconds: float = 1.0
    event_loop: str = "uvloop"  # or "asyncio"

    def __post_init__(self) -> None:
        for name in ("service", "registry", "graphite"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required")
        _split_host_port(self.graphite, "graphite")
        _split_host_port(self.listen, "listen")
        if self.advertise is not None:
            _split_host_port(self.advertise, "advertise")
        if self.upstream is not None and not self.upstream.startswith("http://"):
            raise ValueError(f"upstream: {self.upstream!r} must be an http:// URL")
        if self.load_balancer not in BALANCERS:
            raise ValueError(f"load_balancer: {self.load_balancer!r} is not one of "
                             f"{', '.join(BALANCERS)}")
        if self.event_loop not in ("uvloop", "asyncio"):
            raise ValueError("event_loop: must be uvloop or asyncio")
        if self.graphite_protocol not in ("tcp", "udp"):
            raise ValueError("graphite_protocol: must be tcp or udp")
        if self.interval_seconds < 1:
            raise ValueError("interval_seconds: must be >= 1")
        if not 0 <= self.backup_budget_ratio <= 1:
            raise ValueError("backup_budget_ratio: must be within 0..1")
        if self.max_attempts < 1 or self.max_active < 1:
            raise ValueError("max_attempts and max_active must be >= 1")
        if self.max_services < 1 or self.max_callers < 1:
            raise ValueError("max_services and max_callers must be >= 1")
        if (self.request_timeout_seconds <= 0 or self.connect_timeout_seconds <= 0
                or self.idle_timeout_seconds <= 0 or self.service_idle_seconds <= 0):
            raise ValueError("timeouts must be positive")
        if self.deregister_grace_seconds < 0 or self.shutdown_timeout_seconds < 0:
            raise ValueError("deregister_grace_seconds and shutdown_timeout_seconds must be "
                             ">= 0")
        if not 200 <= self.degraded_status <= 599:
            raise ValueError("degraded_status: must be an HTTP status 200-599")
        if "failover" in self.filters and "circuit_breaker" in self.filters and (
                self.filters.index("circuit_breaker") < self.filters.index("failover")):
            raise ValueError("filters: circuit_breaker works per node and must come after "
                             "failover")

    def __repr__(self) -> str:  # never show the token
        return (f"AgentConfig(service={self.service!r}, registry={self.registry!r}, "
                f"upstream={self.upstream!r}, listen={self.listen!r})")

    @property
    def is_server_side(self) -> bool:
        return self.upstream is not None

    @property
    def listen_host_port(self) -> tuple[str, int]:
        return _split_host_port(self.listen, "listen")

    @property
    def graphite_host_port(self) -> tuple[str, int]:
        return _split_host_port(self.graphite, "graphite")


def _split_host_port(text: str, what: str) -> tuple[str, int]:
    """(host, port) of ``HOST:PORT``; an IPv6 address is written in brackets,
    ``[::1]:2003``, and its host is returned without them (the last colon separates the
    port, so an unbracketed ``::1:2003`` also works)."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{what}: {text!r} must be HOST:PORT")
    return host, int(port)


def join_host_port(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 address in brackets (the inverse of the split)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
