"""The compiled data path (agent/native.py): which form runs, and that an edit is never
hidden behind an old compiled module."""

from __future__ import annotations

import ast
import importlib.machinery
import json
import subprocess
import sys
from pathlib import Path

import pytest

import agent
from agent.native import (
    COMPILED_MODULES,
    MANIFEST,
    SHARED_LIBRARY,
    reason_to_interpret,
    source_digests,
)

MODULES = ("alpha", "beta")
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
REPO_ROOT = Path(__file__).resolve().parent.parent


def _package(tmp_path: Path, *, compiled: tuple[str, ...] = (*MODULES, SHARED_LIBRARY),
             manifest: bool = True) -> Path:
    """``tmp_path/pkg``: sources, (fake) compiled forms and a manifest, as a build leaves."""
    package = tmp_path / "pkg"
    package.mkdir()
    for name in MODULES:
        (package / f"{name}.py").write_text(f"NAME = {name!r}\n")
    for name in compiled:
        (package / f"{name}{SUFFIX}").write_bytes(b"\x7fELF")
    if manifest:
        (package / MANIFEST).write_text(json.dumps({
            "python": sys.implementation.cache_tag,
            "sources": source_digests(tmp_path, ("pkg",))}))
    return package


def _reason(package: Path) -> str | None:
    return reason_to_interpret(package, MODULES, ("pkg",))


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIDEMARK_INTERPRETED", raising=False)


def test_current_compiled_forms_are_used(tmp_path: Path) -> None:
    assert _reason(_package(tmp_path)) is None


def test_nothing_compiled_needs_no_steering(tmp_path: Path) -> None:
    assert _reason(_package(tmp_path, compiled=(), manifest=False)) is None


def test_an_edited_source_runs_interpreted(tmp_path: Path) -> None:
    package = _package(tmp_path)
    (package / "beta.py").write_text("NAME = 'edited'\n")
    assert _reason(package) == "pkg/beta.py changed since the build (run make compile)"


def test_a_new_source_runs_interpreted(tmp_path: Path) -> None:
    package = _package(tmp_path)
    (package / "gamma.py").write_text("NAME = 'new'\n")
    assert _reason(package) == "pkg/gamma.py changed since the build (run make compile)"


def test_a_missing_compiled_module_runs_all_interpreted(tmp_path: Path) -> None:
    reason = _reason(_package(tmp_path, compiled=("alpha", SHARED_LIBRARY)))
    assert reason == "beta has no compiled form (run make compile)"


def test_a_missing_shared_library_runs_all_interpreted(tmp_path: Path) -> None:
    reason = _reason(_package(tmp_path, compiled=MODULES))
    assert reason == f"{SHARED_LIBRARY} has no compiled form (run make compile)"


def test_a_compiled_module_left_by_an_older_build_runs_all_interpreted(tmp_path: Path) -> None:
    reason = _reason(_package(tmp_path, compiled=(*MODULES, SHARED_LIBRARY, "gone")))
    assert reason == "gone is compiled but not in the compiled list (run make compile)"


def test_compiled_forms_without_a_manifest_run_interpreted(tmp_path: Path) -> None:
    reason = _reason(_package(tmp_path, manifest=False))
    assert reason == f"no readable {MANIFEST} beside the compiled modules"


def test_forms_built_for_another_python_run_interpreted(tmp_path: Path) -> None:
    package = _package(tmp_path)
    recorded = json.loads((package / MANIFEST).read_text())
    (package / MANIFEST).write_text(json.dumps({**recorded, "python": "cpython-39"}))
    assert _reason(package) == f"compiled for cpython-39, running {sys.implementation.cache_tag}"


def test_the_environment_forces_interpreted(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEMARK_INTERPRETED", "1")
    assert _reason(_package(tmp_path)) == "TIDEMARK_INTERPRETED is set"


def test_user_code_may_extend_the_errors_and_filters() -> None:
    """Compiled classes refuse interpreted subclasses unless marked; these are marked."""
    from agent.call import NodeUnavailable, UpstreamError
    from agent.filters import MetricsFilter

    class Refused(UpstreamError):
        pass

    class Skipped(NodeUnavailable):
        pass

    class CountingMetrics(MetricsFilter):
        name = "counting_metrics"

    error = Refused("5xx", "the node refused")
    assert isinstance(error, UpstreamError) and error.error_class == "5xx"
    assert Skipped("breaker open").sent is False
    assert CountingMetrics.name == "counting_metrics"


def _loaded_forms(env: dict[str, str]) -> dict[str, object]:
    code = ("import json, agent.service, agent.native as n, sys; "
            "print(json.dumps({'files': [sys.modules['agent.' + m].__file__ "
            "for m in n.COMPILED_MODULES], 'data_path': n.data_path()}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_interpreted_on_request_loads_every_module_from_source() -> None:
    import os

    loaded = _loaded_forms({**os.environ, "TIDEMARK_INTERPRETED": "1"})
    assert loaded["data_path"] == {"mode": "interpreted", "reason": "TIDEMARK_INTERPRETED is set"}
    assert [Path(f).name for f in loaded["files"]] == [  # type: ignore[attr-defined]
        f"{name}.py" for name in COMPILED_MODULES]


def test_a_compiled_checkout_loads_every_module_compiled() -> None:
    import os

    package = Path(agent.__file__).parent
    if not (package / MANIFEST).exists():
        pytest.skip("the agent is not compiled here (make compile)")
    env = {k: v for k, v in os.environ.items() if k != "TIDEMARK_INTERPRETED"}
    loaded = _loaded_forms(env)
    assert loaded["data_path"] == {"mode": "compiled", "reason": None}
    assert all(f.endswith(SUFFIX) for f in loaded["files"])  # type: ignore[attr-defined]


def _awaits_while_an_exception_propagates(tree: ast.AST) -> list[int]:
    """Lines of awaits (``await``, ``async for``, ``async with``) inside ``except`` or
    ``finally``, and of ``async with`` blocks (their exit may await) other than
    ``asyncio.timeout``'s, which never suspends on exit."""
    lines: list[int] = []

    def awaits(nodes: list[ast.stmt]) -> list[int]:
        return [n.lineno for stmt in nodes for n in ast.walk(stmt)
                if isinstance(n, (ast.Await, ast.AsyncFor, ast.AsyncWith))]

    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler):
            lines += awaits(node.body)
        elif isinstance(node, (ast.Try, ast.TryStar)):
            lines += awaits(node.finalbody)
        elif isinstance(node, ast.AsyncWith):
            calls = [item.context_expr for item in node.items]
            if not all(isinstance(c, ast.Call) and ast.unparse(c.func).startswith(
                    "asyncio.timeout") for c in calls):
                lines.append(node.lineno)
    return sorted(lines)


@pytest.mark.parametrize("module", COMPILED_MODULES)
def test_compiled_code_never_awaits_while_an_exception_propagates(module: str) -> None:
    """mypyc 2.4: a compiled coroutine that awaits inside ``except``/``finally`` (or an
    ``async with`` exit that suspends) re-raises whatever ``sys.exc_info()`` holds when it
    resumes, often another task's exception or None (docs/agent.md, "Compiled with mypyc").
    """
    path = Path(agent.__file__).parent / f"{module}.py"
    assert _awaits_while_an_exception_propagates(ast.parse(path.read_text())) == []


def test_the_guard_finds_each_form() -> None:
    source = '''
async def f():
    try:
        pass
    except Exception:
        await g()
    finally:
        async for x in h():
            pass
    async with lock:
        pass
    async with asyncio.timeout(1):
        pass
'''
    assert _awaits_while_an_exception_propagates(ast.parse(source)) == [6, 8, 10]
