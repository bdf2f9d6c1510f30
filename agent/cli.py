"""``tidemark agent``: the sidecar (client side, or server side with ``--upstream``)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from agent.config import AgentConfig
from tidemark.config import load_config
from tidemark.daemon import run_service
from tidemark.errors import UsageError
from tidemark.logs import configure_logging

__all__ = ["configure_parser", "run", "load_agent_config"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of ``tidemark agent``."""
    parser.add_argument("--service", help="service this agent serves (server side) or the "
                        "caller's own name (client side)")
    parser.add_argument("--registry", help="registry URL: http://HOST:PORT or etcd://HOST:PORT")
    parser.add_argument("--graphite", help="collector plaintext address HOST:PORT")
    parser.add_argument("--idc", help="data centre of this node (default: default)")
    parser.add_argument("--listen", help="address to listen on (default 127.0.0.1:9981)")
    parser.add_argument("--upstream", help="http://HOST:PORT of the local service: makes "
                        "this the server-side agent")
    parser.add_argument("--config", type=Path, help="TOML file ([agent] table)")
    parser.add_argument("--data-dir", type=Path,
                        help="where the last registry snapshots are kept (./data/agent)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])


def load_agent_config(args: argparse.Namespace, environ: dict[str, str]) -> AgentConfig:
    """Flags over ``TIDEMARK_AGENT_*`` over the file over defaults."""
    overrides = {"service": args.service, "registry": args.registry, "graphite": args.graphite,
                 "idc": args.idc, "listen": args.listen, "upstream": args.upstream,
                 "data_dir": args.data_dir}
    return load_config(AgentConfig, path=args.config, section="agent", environ=environ,
                       env_prefix="TIDEMARK_AGENT_", overrides=overrides)


def run(args: argparse.Namespace) -> int:
    """Build the configuration, then serve until SIGTERM or SIGINT."""
    configure_logging(args.log_level)
    config = load_agent_config(args, dict(os.environ))
    if config.registry_token is None and config.registry_token_file is not None:
        config = dataclasses.replace(config,
                                     registry_token=_read_token(config.registry_token_file))
    from agent.service import AgentService

    try:
        service = AgentService(config)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return run_service(lambda: service, event_loop=config.event_loop)


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read registry token file {path}: {exc.strerror}") from None
    if not token:
        raise UsageError(f"registry token file {path} is empty")
    return token
