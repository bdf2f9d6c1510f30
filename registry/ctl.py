"""``tidemark registryctl``: operate the registry (either backend); JSON on stdout.

Exit status: 0 on success; 1 when the registry cannot be reached, the node/command is
unknown or the registry refuses the request otherwise (e.g. a conflict); 2 for bad input or
a wrong token. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from registry.cli import read_token
from registry.client import BaseClient, open_registry
from registry.errors import RegistryError, Unauthorized
from registry.model import Node
from tidemark.errors import UsageError
from tidemark.logs import configure_logging

__all__ = ["configure_parser", "run", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags and subcommands of ``tidemark registryctl``."""
    parser.add_argument("--registry", required=True,
                        help="http://HOST:PORT (embedded) or etcd://HOST:PORT[,HOST:PORT...]")
    parser.add_argument("--token-file", type=Path, default=None,
                        help="token for writes to the embedded registry")
    parser.add_argument("--who", default=None, help="operator name recorded in the history")
    parser.add_argument("--log-level", default="warning")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = sub.add_parser("register", help="register a node and keep it registered until stopped")
    p.add_argument("service")
    p.add_argument("address", help="HOST:PORT")
    p.add_argument("--id", dest="node_id", default=None, help="node id (from the address)")
    p.add_argument("--idc", default="default")
    p.add_argument("--weight", type=int, default=10)
    p.add_argument("--ttl", type=float, default=10.0, help="seconds")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")

    for name, text in (("nodes", "list the nodes of a service"),
                       ("config", "show the configuration of a service"),
                       ("watch", "print a snapshot now and after every change"),
                       ("history", "show recent commands")):
        sub.add_parser(name, help=text).add_argument("service")
    sub.add_parser("services", help="list services")

    p = sub.add_parser("degrade", help="degrade a service")
    p.add_argument("service")
    p.add_argument("--reason", required=True)
    p.add_argument("--fallback-status", type=int, default=503)
    p = sub.add_parser("restore", help="lift a degrade")
    p.add_argument("service")
    p.add_argument("--reason", default="")
    p = sub.add_parser("weights", help="set traffic weights per IDC")
    p.add_argument("service")
    p.add_argument("pairs", nargs="+", metavar="IDC=W")
    p.add_argument("--reason", default="")
    p = sub.add_parser("switch", help="turn named switches on or off")
    p.add_argument("service")
    p.add_argument("pairs", nargs="+", metavar="NAME=on|off")
    p.add_argument("--reason", default="")
    p = sub.add_parser("revert", help="remove a command: the values it replaced come back")
    p.add_argument("service")
    p.add_argument("command_id", type=int)
    p.add_argument("--reason", default="")


def _pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"{what}: {item!r} must look like NAME=VALUE")
        pairs.append((key, value))
    return pairs


def _weights(items: list[str]) -> dict[str, int]:
    weights = {}
    for key, value in _pairs(items, "weights"):
        try:
            weights[key] = int(value)
        except ValueError:
            raise UsageError(f"weights: {value!r} for {key!r} is not an integer") from None
    return weights


def _switches(items: list[str]) -> dict[str, bool]:
    states = {"on": True, "off": False, "true": True, "false": False}
    switches = {}
    for key, value in _pairs(items, "switch"):
        if value.lower() not in states:
            raise UsageError(f"switch: {key}={value!r} must be on or off")
        switches[key] = states[value.lower()]
    return switches


def _print(data: Any) -> None:
    sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
    sys.stdout.flush()


async def _until_signal(work: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await work(stopping)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _act(client: BaseClient, args: argparse.Namespace, who: str) -> int:
    action = args.action
    if action == "register":
        node_id = args.node_id or args.address.replace(":", "_")
        labels = dict(_pairs(args.label, "label"))
        node = Node(id=node_id, address=args.address, idc=args.idc, weight=args.weight,
                    labels=labels)
        registration = await client.register(args.service, node, ttl_seconds=args.ttl)

        async def hold(stopping: asyncio.Event) -> None:
            _print({"registered": registration.node.to_dict(), "service": args.service,
                    "ttl_seconds": registration.ttl_seconds})
            try:
                await stopping.wait()
            finally:
                await registration.stop()

        await _until_signal(hold)
        return 0
    if action == "watch":
        async def follow(stopping: asyncio.Event) -> None:
            async with client.watch(args.service) as watch:
                stop_task = asyncio.ensure_future(stopping.wait())
                try:
                    while True:
                        next_task = asyncio.ensure_future(anext(watch))
                        await asyncio.wait({next_task, stop_task},
                                           return_when=asyncio.FIRST_COMPLETED)
                        if not next_task.done():
                            next_task.cancel()
                            return
                        _print(next_task.result().to_dict())
                finally:
                    stop_task.cancel()

        await _until_signal(follow)
        return 0
    if action == "services":
        _print(await client.services())
    elif action == "nodes":
        _print([n.to_dict() for n in (await client.snapshot(args.service)).nodes])
    elif action == "config":
        snapshot = await client.snapshot(args.service)
        _print({**snapshot.config.to_dict(), "from_cache": snapshot.from_cache})
    elif action == "history":
        _print([c.to_dict() for c in await client.history(args.service)])
    elif action == "degrade":
        _print((await client.degrade(args.service, reason=args.reason, who=who,
                                     fallback_status=args.fallback_status)).to_dict())
    elif action == "restore":
        _print((await client.restore(args.service, who=who, why=args.reason)).to_dict())
    elif action == "weights":
        _print((await client.set_idc_weights(args.service, _weights(args.pairs), who=who,
                                             why=args.reason)).to_dict())
    elif action == "switch":
        _print((await client.set_switches(args.service, _switches(args.pairs), who=who,
                                          why=args.reason)).to_dict())
    elif action == "revert":
        _print((await client.revert(args.service, args.command_id, who=who,
                                    why=args.reason)).to_dict())
    return 0


async def _main(args: argparse.Namespace, token: str | None, who: str) -> int:
    client = open_registry(args.registry, token=token)
    try:
        return await _act(client, args, who)
    finally:
        await client.stop()


def run(args: argparse.Namespace) -> int:
    """Run one action; see the module docstring for exit statuses."""
    configure_logging(args.log_level)
    token = read_token(args.token_file)
    who = args.who or getpass.getuser()
    try:
        return asyncio.run(_main(args, token, who))
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    except Unauthorized as exc:
        raise UsageError(f"unauthorized: {exc}") from None
    except RegistryError as exc:  # unreachable, unknown node/command, conflict, refused
        print(f"tidemark registryctl: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m registry.ctl``: the same as ``tidemark registryctl`` without loading the
    other commands."""
    parser = argparse.ArgumentParser(prog="registryctl", description=__doc__.splitlines()[0])
    configure_parser(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UsageError as exc:
        print(f"tidemark registryctl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
