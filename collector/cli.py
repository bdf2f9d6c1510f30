"""``tidemark collector``: parse flags, build the config, run the daemon until SIGTERM."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from collector.config import CollectorConfig
from tidemark.config import load_config
from tidemark.daemon import run_service
from tidemark.errors import UsageError
from tidemark.logs import configure_logging

__all__ = ["configure_parser", "run", "build_config"]

ENV_PREFIX = "TIDEMARK_COLLECTOR_"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of ``tidemark collector`` (a contract: extend, never rename)."""
    parser.add_argument("--data-dir", required=True, type=Path,
                        help="directory of whisper files and the write-ahead log")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--plaintext-port", type=int, help="Graphite plaintext TCP (2003; 0 off)")
    parser.add_argument("--udp-port", type=int,
                        help="Graphite plaintext and statsd-style UDP (2003; 0 off)")
    parser.add_argument("--pickle-port", type=int, help="carbon pickle TCP (2004; 0 off)")
    parser.add_argument("--http-port", type=int,
                        help="render API, /healthz, /metrics (8080; 0 off)")
    parser.add_argument("--config", type=Path,
                        help="TOML file ([collector] table); storage-schemas.conf and "
                             "storage-aggregation.conf are read from its directory")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def build_config(args: argparse.Namespace, environ: dict[str, str]) -> CollectorConfig:
    """Flags over ``TIDEMARK_COLLECTOR_*`` over the file over defaults."""
    overrides = {
        "data_dir": args.data_dir,
        "host": args.host,
        "plaintext_port": args.plaintext_port,
        "udp_port": args.udp_port,
        "pickle_port": args.pickle_port,
        "http_port": args.http_port,
        "log_level": args.log_level,
    }
    config = load_config(CollectorConfig, path=args.config, section="collector", environ=environ,
                         env_prefix=ENV_PREFIX, overrides=overrides)
    if config.schemas_dir is None and args.config is not None:
        from dataclasses import replace

        config = replace(config, schemas_dir=args.config.resolve().parent)
    return config


def run(args: argparse.Namespace) -> int:
    """Run the collector in the foreground; exit 0 after a graceful stop."""
    from collector.service import CollectorService

    config = build_config(args, dict(os.environ))
    data_dir = config.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create data directory {data_dir}: {exc.strerror}") from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise UsageError(f"data directory {data_dir} is not writable")
    configure_logging(config.log_level)
    try:
        return run_service(lambda: CollectorService(config))
    except OSError as exc:
        raise UsageError(f"cannot start the collector: {exc.strerror or exc}") from None
