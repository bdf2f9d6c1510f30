"""Running a long-lived service under asyncio with graceful SIGTERM/SIGINT handling."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Service", "run_service", "cancel_and_wait"]

log = logging.getLogger("tidemark.daemon")


class Service(Protocol):
    """Anything with an explicit lifecycle. ``stop`` must be safe to call twice."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel ``tasks`` (None entries are skipped) and wait until every one has finished.

    How a task ended is not raised here: being cancelled is what was asked, and any other
    exception is logged. A cancellation of the caller itself still propagates.
    """
    pending = [task for task in tasks if task is not None]
    if not pending:
        return
    for task in pending:
        task.cancel()
    await asyncio.wait(pending)
    for task in pending:
        if not task.cancelled() and task.exception() is not None:
            log.error("a task failed while being stopped", exc_info=task.exception())


async def _serve(factory: Callable[[], Service]) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    service = factory()
    try:
        await service.start()
        log.info("started", extra={"service": type(service).__name__})
        await stopping.wait()
        log.info("stopping on signal")
    finally:
        await service.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")


def run_service(factory: Callable[[], Service], *, event_loop: str = "asyncio") -> int:
    """Start the service, wait for SIGTERM or SIGINT, stop it in order; returns 0.

    ``event_loop="uvloop"`` runs it on uvloop (libuv), which roughly halves the cost of
    each socket operation; the agent's data path uses it.
    """
    loop_factory = None
    if event_loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    elif event_loop != "asyncio":
        raise ValueError(f"event_loop: {event_loop!r} is neither asyncio nor uvloop")
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(factory))
    return 0
