"""The `tidemark` console script: one subcommand per daemon or job.

Each subcommand lives in its own module, imported only when chosen, which provides
``configure_parser(parser: argparse.ArgumentParser) -> None`` and
``run(args: argparse.Namespace) -> int``. Errors a user can fix raise
:class:`tidemark.errors.UsageError` and become one readable line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from tidemark import __version__
from tidemark.errors import UsageError

# name -> (module, one-line help). Add a line here for each new daemon or job.
COMMANDS: dict[str, tuple[str, str]] = {
    "collector": ("collector.cli", "Graphite-compatible metrics collector daemon"),
    "registry": ("registry.cli", "embedded service registry daemon"),
    "registryctl": ("registry.ctl", "operator CLI for the service registry"),
    "agent": ("agent.cli", "sidecar agent: routing, metrics, degrade switches"),
    "detect": ("capacity.detect_cli", "score a CSV for anomalies"),
    "eval": ("capacity.eval_cli", "evaluate models on labelled data"),
}


def _available() -> dict[str, tuple[str, str]]:
    """Commands whose module is present in this installation."""
    found = {}
    for name, (module, help_text) in COMMANDS.items():
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            spec = None
        if spec is not None:
            found[name] = (module, help_text)
    return found


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    """Build the top-level parser; returns it with the imported command modules."""
    parser = argparse.ArgumentParser(prog="tidemark", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tidemark {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, object] = {}
    for name, (module_name, help_text) in _available().items():
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.configure_parser(command_parser)  # type: ignore[attr-defined]
        modules[name] = module
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser, modules = build_parser()
    args = parser.parse_args(args_list)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(modules[args.command].run(args))  # type: ignore[attr-defined]
    except UsageError as exc:
        print(f"tidemark {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
