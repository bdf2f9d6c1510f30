"""The compiled data path (agent/native.py): which form runs, and that an edit is never
hidden behind an old compiled module."""

from __future__ import annotations

import importlib.machinery
import json
import subprocess
import sys
from pathlib import Path

import pytest

import agent
from agent.native import COMPILED_MODULES, MANIFEST, reason_to_interpret, source_digest

MODULES = ("alpha", "beta")
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
REPO_ROOT = Path(__file__).resolve().parent.parent


def _package(tmp_path: Path, *, compiled: tuple[str, ...] = MODULES,
             manifest: bool = True) -> Path:
    """A package directory with sources, (fake) compiled forms and a manifest."""
    for name in MODULES:
        (tmp_path / f"{name}.py").write_text(f"NAME = {name!r}\n")
    for name in compiled:
        (tmp_path / f"{name}{SUFFIX}").write_bytes(b"\x7fELF")
    if manifest:
        (tmp_path / MANIFEST).write_text(json.dumps(
            {name: source_digest(tmp_path / f"{name}.py") for name in MODULES}))
    return tmp_path


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIDEMARK_INTERPRETED", raising=False)


def test_current_compiled_forms_are_used(tmp_path: Path) -> None:
    assert reason_to_interpret(_package(tmp_path), MODULES) is None


def test_nothing_compiled_needs_no_steering(tmp_path: Path) -> None:
    assert reason_to_interpret(_package(tmp_path, compiled=(), manifest=False), MODULES) is None


def test_an_edited_source_runs_interpreted(tmp_path: Path) -> None:
    package = _package(tmp_path)
    (package / "beta.py").write_text("NAME = 'edited'\n")
    assert reason_to_interpret(package, MODULES) == (
        "beta.py changed since it was compiled (run make compile)")


def test_a_missing_compiled_module_runs_all_interpreted(tmp_path: Path) -> None:
    reason = reason_to_interpret(_package(tmp_path, compiled=("alpha",)), MODULES)
    assert reason == "beta.py has no compiled form"


def test_compiled_forms_without_a_manifest_run_interpreted(tmp_path: Path) -> None:
    reason = reason_to_interpret(_package(tmp_path, manifest=False), MODULES)
    assert reason == f"no readable {MANIFEST} beside the compiled modules"


def test_the_environment_forces_interpreted(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEMARK_INTERPRETED", "1")
    assert reason_to_interpret(_package(tmp_path), MODULES) == "TIDEMARK_INTERPRETED is set"


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
