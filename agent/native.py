"""Whether the agent's data path runs compiled (mypyc) or interpreted.

``setup.py`` compiles the modules in :data:`COMPILED_MODULES` with mypyc when the package
is built (``pip install``, or ``make compile`` in a checkout): the same typed sources, about
a fifth less CPU per proxied call. They run interpreted instead when

* they were not compiled (no C compiler, or ``TIDEMARK_COMPILE=0`` at build time);
* ``TIDEMARK_INTERPRETED=1`` is set (py-spy and pdb only see into interpreted code);
* the compiled forms are incomplete (one missing, the shared library missing, one left by an
  older build for a module no longer listed), built for another Python, or any source of
  ``agent``, ``registry`` or ``tidemark`` differs from the one the build saw (a checkout
  edited and not rebuilt: the build records their SHA-256 in :data:`MANIFEST`), so an edit
  never silently runs old compiled code. All or none: compiled modules call each other
  directly, so a mix would hold two copies of a module.

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

__all__ = ["COMPILED_MODULES", "SHARED_LIBRARY", "MANIFEST", "TRACKED_PACKAGES",
           "source_digests", "compiled_forms", "reason_to_interpret", "use_interpreted",
           "data_path"]

#: The modules of the data path compiled by setup.py (names inside the ``agent`` package).
COMPILED_MODULES = (
    "balancer", "breaker", "buckets", "call", "directory", "filters", "forwarder",
    "http_server", "naming", "recorder", "service", "sketch",
)
#: The library the compiled modules share (mypyc's group ``agent._data_path``).
SHARED_LIBRARY = "_data_path__mypyc"
#: Written by the build beside the compiled modules: the Python it was built for and the
#: SHA-256 of every source in :data:`TRACKED_PACKAGES` (the compiled code bakes in the types
#: of what it imports from them, so any of them changing makes the compiled form stale).
MANIFEST = "compiled-sources.json"
TRACKED_PACKAGES = ("agent", "registry", "tidemark")

_PACKAGE_DIR = Path(__file__).resolve().parent


def source_digests(base: Path, packages: Sequence[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """``{path relative to base: SHA-256}`` of every ``.py`` file in ``packages``."""
    return {str(path.relative_to(base)): hashlib.sha256(path.read_bytes()).hexdigest()
            for package in packages for path in sorted((base / package).rglob("*.py"))}


def compiled_forms(directory: Path) -> dict[str, Path]:
    """The compiled modules present in ``directory``, by module name."""
    found: dict[str, Path] = {}
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for path in directory.glob(f"*{suffix}"):
            name = path.name[:-len(suffix)]
            if "." not in name:  # "x.cpython-311-....so" is not module "x.cpython-311-..."
                found.setdefault(name, path)
    return found


def reason_to_interpret(directory: Path = _PACKAGE_DIR,
                        modules: Sequence[str] = COMPILED_MODULES,
                        packages: Sequence[str] = TRACKED_PACKAGES) -> str | None:
    """Why the package in ``directory`` must run interpreted; None if its compiled forms
    are complete and current (or there are none: then nothing needs steering)."""
    if os.environ.get("TIDEMARK_INTERPRETED", "") not in ("", "0"):
        return "TIDEMARK_INTERPRETED is set"
    present = compiled_forms(directory)
    if not present:
        return None
    stray = sorted(set(present) - set(modules) - {SHARED_LIBRARY})
    if stray:  # left by an older build: Python would import it before the source
        return f"{stray[0]} is compiled but not in the compiled list (run make compile)"
    for name in (SHARED_LIBRARY, *modules):
        if name not in present:
            return f"{name} has no compiled form (run make compile)"
    try:
        recorded = json.loads((directory / MANIFEST).read_text())
        built_for, digests = recorded["python"], recorded["sources"]
    except (OSError, ValueError, TypeError, KeyError):
        return f"no readable {MANIFEST} beside the compiled modules"
    if built_for != sys.implementation.cache_tag:
        return f"compiled for {built_for}, running {sys.implementation.cache_tag}"
    current = source_digests(directory.parent, packages)
    if current != digests:
        changed = sorted(set(current) ^ set(digests)) or sorted(
            path for path in current if current[path] != digests.get(path))
        return f"{changed[0]} changed since the build (run make compile)"
    return None


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds every ``agent.<module>`` in its ``.py`` file (never a compiled form)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.partition(".")
        if package != "agent" or not name or "." in name:
            return None
        source = self._directory / f"{name}.py"
        if not source.exists():
            return None
        return importlib.util.spec_from_file_location(fullname, source)


_reason: str | None = None


def use_interpreted() -> None:
    """Steer imports of every agent module to its source when the data path must run
    interpreted; called once by ``agent/__init__.py`` before any of them is imported."""
    global _reason
    _reason = reason_to_interpret()
    if _reason is not None and not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder(_PACKAGE_DIR))


def data_path() -> dict[str, str | None]:
    """``{"mode": "compiled" | "interpreted", "reason": ...}`` for logs and ``/runtime``."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    compiled = all(str(getattr(importlib.import_module(f"agent.{name}"), "__file__", "")
                       ).endswith(suffixes) for name in COMPILED_MODULES)
    if compiled:
        return {"mode": "compiled", "reason": None}
    return {"mode": "interpreted", "reason": _reason or "not compiled"}
