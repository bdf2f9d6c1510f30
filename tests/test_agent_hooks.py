"""Hook filters: a run of them in one coroutine behaves as their nested ``handle`` calls."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.call import Call, Next, Reply, UpstreamError
from agent.filters import HookFilter, MetricsFilter, run_chain


class Recording(HookFilter):
    """Writes what each hook saw into a shared log; can answer or raise in any hook."""

    def __init__(self, name: str, log: list[str], *, answer: bool = False,
                 raise_in: str = "") -> None:
        self.name = name
        self.log = log
        self.answer = answer
        self.raise_in = raise_in

    def before(self, call: Call) -> Reply | None:
        self.log.append(f"{self.name}.before")
        if self.raise_in == "before":
            raise UpstreamError("connection", f"{self.name} refused")
        return Reply(299, {}, self.name.encode()) if self.answer else None

    def after(self, call: Call, reply: Reply, started: float) -> None:
        self.log.append(f"{self.name}.after:{reply.status}")
        if self.raise_in == "after":
            raise RuntimeError(f"{self.name} broke")

    def failed(self, call: Call, error: BaseException, started: float) -> None:
        self.log.append(f"{self.name}.failed:{type(error).__name__}")


class Nesting:
    """The same filter, run through its own ``handle`` (what fusing must equal)."""

    name = "nesting"

    def __init__(self, inner: HookFilter) -> None:
        self.inner = inner

    def handle(self, call: Call, next_: Next) -> Any:
        return self.inner.handle(call, next_)


def call() -> Call:
    return Call(service="svc", method="GET", path_qs="/", headers={}, body=b"")


async def outcome(filters: list[Any], terminal: Next) -> tuple[str, list[str]]:
    log: list[str] = []
    for f in filters:
        target = f.inner if isinstance(f, Nesting) else f
        assert isinstance(target, Recording)
        target.log = log
    try:
        reply = await run_chain(filters, terminal)(call())
    except BaseException as exc:  # noqa: BLE001  the outcome is what the test compares
        return f"raised {type(exc).__name__}: {exc}", log
    return f"reply {reply.status} {reply.body!r}", log


async def ok(c: Call) -> Reply:
    return Reply(200, {}, b"upstream")


async def bad(c: Call) -> Reply:
    raise UpstreamError("timeout", "slow node")


SCENARIOS: dict[str, tuple[list[dict[str, Any]], Next]] = {
    "all pass": ([{}, {}, {}], ok),
    "upstream raises": ([{}, {}, {}], bad),
    "middle answers": ([{}, {"answer": True}, {}], ok),
    "first answers": ([{"answer": True}, {}, {}], ok),
    "middle raises in before": ([{}, {"raise_in": "before"}, {}], ok),
    "inner raises in after": ([{}, {}, {"raise_in": "after"}], ok),
    "outer raises in after": ([{"raise_in": "after"}, {}, {}], bad),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_a_fused_run_equals_nested_handles(scenario: str) -> None:
    specs, terminal = SCENARIOS[scenario]

    def build() -> list[Recording]:
        return [Recording(f"f{i}", [], **spec) for i, spec in enumerate(specs)]

    fused = await outcome(list(build()), terminal)
    nested = await outcome([Nesting(f) for f in build()], terminal)
    assert fused == nested
    assert fused[1][0] == "f0.before"  # and it did run the hooks


async def test_a_cancelled_call_reaches_failed_in_every_entered_hook() -> None:
    log: list[str] = []
    started = asyncio.Event()

    async def hang(c: Call) -> Reply:
        started.set()
        await asyncio.sleep(30)
        raise AssertionError("not cancelled")

    chain = run_chain([Recording("a", log), Recording("b", log)], hang)
    task = asyncio.ensure_future(chain(call()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["a.before", "b.before", "b.failed:CancelledError", "a.failed:CancelledError"]


async def test_a_subclass_of_a_builtin_hook_is_fused_and_its_override_runs() -> None:
    seen: list[int] = []

    class Counting(MetricsFilter):
        def __init__(self) -> None:  # no context: only after() is used
            pass

        def after(self, call: Call, reply: Reply, started: float) -> None:
            seen.append(reply.status)

    chain = run_chain([Counting()], ok)
    assert type(chain).__name__ == "_Hooks"
    assert (await chain(call())).status == 200
    assert seen == [200]


async def test_a_subclass_overriding_handle_runs_through_its_handle() -> None:
    class Tagging(MetricsFilter):
        def __init__(self) -> None:
            pass

        async def handle(self, call: Call, next_: Next) -> Reply:
            reply = await next_(call)
            return Reply(reply.status, {"X-Tag": "yes"}, reply.body)

    reply = await run_chain([Tagging()], ok)(call())
    assert reply.headers == {"X-Tag": "yes"}
