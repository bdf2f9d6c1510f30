"""tidemark.daemon.cancel_and_wait: how every daemon stops its background tasks."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tidemark.daemon import cancel_and_wait


async def test_returns_only_after_each_task_has_run_its_cleanup() -> None:
    cleaned: list[str] = []

    async def worker(name: str) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.01)  # cleanup that itself waits
            cleaned.append(name)

    tasks = [asyncio.ensure_future(worker(name)) for name in ("a", "b")]
    await asyncio.sleep(0)
    await cancel_and_wait(tasks[0], None, tasks[1])
    assert sorted(cleaned) == ["a", "b"]
    assert all(task.cancelled() for task in tasks)


async def test_a_task_failing_while_stopped_is_logged_not_raised(
        caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup broke") from None

    task = asyncio.ensure_future(broken())
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="tidemark.daemon"):
        await cancel_and_wait(task)
    assert "a task failed while being stopped" in caplog.text
    assert "cleanup broke" in caplog.text


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:  # takes its time to stop
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await release.wait()
            raise

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    stopper = asyncio.ensure_future(cancel_and_wait(task))
    await asyncio.sleep(0.01)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    release.set()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)
    assert task.cancelled()


async def test_nothing_to_stop() -> None:
    await cancel_and_wait()
    await cancel_and_wait(None)
