"""``tidemark registry``: the embedded registry daemon."""

from __future__ import annotations

import argparse
import os
import sqlite3
from pathlib import Path

from registry.server.app import RegistryServer, RegistryServerConfig
from tidemark.config import load_config
from tidemark.daemon import run_service
from tidemark.errors import UsageError
from tidemark.logs import configure_logging

__all__ = ["configure_parser", "run", "read_token"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of ``tidemark registry``."""
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="directory of the SQLite state (created if missing)")
    parser.add_argument("--host", default=None, help="address to listen on (127.0.0.1)")
    parser.add_argument("--http-port", type=int, default=None, help="HTTP port (8500; 0 = any)")
    parser.add_argument("--token-file", type=Path, default=None,
                        help="file holding the token every write must carry")
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML file ([registry] section)")
    parser.add_argument("--log-level", default="info")


def read_token(path: Path | None) -> str | None:
    """The token in ``path`` (stripped), or None without a file."""
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read token file {path}: {exc.strerror}") from None
    if not token:
        raise UsageError(f"token file {path} is empty")
    return token


def run(args: argparse.Namespace) -> int:
    """Load configuration, then serve until SIGTERM or SIGINT."""
    configure_logging(args.log_level)
    config = load_config(
        RegistryServerConfig, path=args.config, section="registry", environ=os.environ,
        env_prefix="TIDEMARK_REGISTRY_",
        overrides={"data_dir": args.data_dir, "host": args.host, "http_port": args.http_port,
                   "token_file": args.token_file})
    token = read_token(config.token_file)
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create data directory {config.data_dir}: {exc.strerror}"
                         ) from None
    try:
        return run_service(lambda: RegistryServer(config, token=token))
    except sqlite3.Error as exc:
        raise UsageError(f"cannot use the database in {config.data_dir}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot serve on {config.host}:{config.http_port}: {exc.strerror or exc}"
                         ) from None
