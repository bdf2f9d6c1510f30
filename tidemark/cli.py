"""The `tidemark` console script: one subcommand per daemon or job.

Each subcommand lives in its own module, imported only when chosen (so that starting one
command never pays for another's imports), which provides
``configure_parser(parser: argparse.ArgumentParser) -> None`` and
``run(args: argparse.Namespace) -> int``. Errors a user can fix raise
:class:`tidemark.errors.UsageError` and become one readable line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
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


def build_parser(chosen: str | None = None) -> tuple[argparse.ArgumentParser, object | None]:
    """The top-level parser; only the ``chosen`` command's module is imported and configured.

    Returns the parser and the chosen command's module (None when no command was named).
    """
    parser = argparse.ArgumentParser(prog="tidemark", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tidemark {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    module = None
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name is None or not module_name.startswith(exc.name):
                    raise
                parser.error(f"command {name!r} is not in this installation")
            module.configure_parser(command_parser)  # type: ignore[attr-defined]
    return parser, module


def _chosen_command(args: list[str]) -> str | None:
    for arg in args:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser, module = build_parser(_chosen_command(args_list))
    args = parser.parse_args(args_list)
    if not args.command or module is None:
        parser.print_help()
        return 2
    try:
        return int(module.run(args))  # type: ignore[attr-defined]
    except UsageError as exc:
        print(f"tidemark {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
