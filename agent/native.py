"""Whether the agent's data path runs compiled (mypyc) or interpreted.

``setup.py`` compiles the modules in :data:`COMPILED_MODULES` with mypyc when the package
is built (``pip install``, or ``make compile`` in a checkout): the same typed sources, about
a quarter less CPU per proxied call. They run interpreted instead when

* they were not compiled (no C compiler, or ``TIDEMARK_COMPILE=0`` at build time);
* ``TIDEMARK_INTERPRETED=1`` is set (py-spy and pdb only see into interpreted code);
* any of them is missing its compiled form or differs from the source it was compiled from
  (a checkout edited and not rebuilt: the build records each source's SHA-256 in
  :data:`MANIFEST`), so an edit never silently runs old compiled code. All or none: compiled
  modules call each other directly, so a mix would hold two copies of a module.

This module only uses the standard library: ``setup.py`` reads :data:`COMPILED_MODULES`
from it without importing the package.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["COMPILED_MODULES", "MANIFEST", "source_digest", "reason_to_interpret",
           "use_interpreted", "data_path"]

#: The modules of the data path compiled by setup.py (names inside the ``agent`` package).
#: ``directory`` stays interpreted: it is off the per-call path (a dict lookup per call), and
#: compiled by mypyc 2.4 its watch task could fail to finish when cancelled at shutdown.
COMPILED_MODULES = (
    "balancer", "breaker", "buckets", "call", "filters", "forwarder",
    "http_server", "naming", "recorder", "service", "sketch",
)
#: Written by the build beside the compiled modules: ``{module: SHA-256 of its source}``.
MANIFEST = "compiled-sources.json"

_PACKAGE_DIR = Path(__file__).resolve().parent


def source_digest(path: Path) -> str:
    """SHA-256 (hex) of a source file, as recorded in :data:`MANIFEST`."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _compiled_file(directory: Path, name: str) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = directory / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    return None


def reason_to_interpret(directory: Path = _PACKAGE_DIR,
                        modules: Sequence[str] = COMPILED_MODULES) -> str | None:
    """Why the modules in ``directory`` must run interpreted; None if their compiled forms
    are all present and current (or none is present: then nothing needs steering)."""
    if os.environ.get("TIDEMARK_INTERPRETED", "") not in ("", "0"):
        return "TIDEMARK_INTERPRETED is set"
    compiled = {name: _compiled_file(directory, name) for name in modules}
    if not any(compiled.values()):
        return None
    try:
        recorded = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return f"no readable {MANIFEST} beside the compiled modules"
    for name, binary in compiled.items():
        if binary is None:
            return f"{name}.py has no compiled form"
        if not isinstance(recorded, dict) or recorded.get(name) != source_digest(
                directory / f"{name}.py"):
            return f"{name}.py changed since it was compiled (run make compile)"
    return None


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds ``agent.<module>`` in its ``.py`` file for the compiled modules."""

    def __init__(self, directory: Path, modules: Sequence[str]) -> None:
        self._sources = {f"agent.{name}": directory / f"{name}.py" for name in modules}

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        source = self._sources.get(fullname)
        if source is None or not source.exists():
            return None
        return importlib.util.spec_from_file_location(fullname, source)


_reason: str | None = None


def use_interpreted() -> None:
    """Steer imports of the compiled modules to their sources when they must run
    interpreted; called once by ``agent/__init__.py`` before any of them is imported."""
    global _reason
    _reason = reason_to_interpret()
    if _reason is not None and not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder(_PACKAGE_DIR, COMPILED_MODULES))


def data_path() -> dict[str, str | None]:
    """``{"mode": "compiled" | "interpreted", "reason": ...}`` for logs and ``/runtime``."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    compiled = all(str(getattr(importlib.import_module(f"agent.{name}"), "__file__", "")
                       ).endswith(suffixes) for name in COMPILED_MODULES)
    if compiled:
        return {"mode": "compiled", "reason": None}
    return {"mode": "interpreted", "reason": _reason or "not compiled"}
