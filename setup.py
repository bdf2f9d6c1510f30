"""Build hook: compile the agent's data path with mypyc (all metadata is in pyproject.toml).

The modules listed in ``agent/native.py`` are compiled to C extensions from the same typed
sources; they cost about a fifth less CPU per proxied call than interpreted. Compiling is
optional: ``TIDEMARK_COMPILE=0`` skips it, and a failed compile (no C compiler, no Python
headers) leaves the pure-Python package, which works the same, with a warning;
``TIDEMARK_COMPILE=require`` makes that an error instead (``make compile`` sets it when a C
compiler is present, so a mypyc regression fails the build rather than hiding).
``make compile`` rebuilds in place in a checkout (``setup.py build_ext --inplace``).
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


MODE = os.environ.get("TIDEMARK_COMPILE", "1")  # 0: skip, 1: try, require: fail loudly


def _warn(message: str) -> None:
    if MODE == "require":
        raise SystemExit(f"tidemark: {message} (TIDEMARK_COMPILE=require)")
    print(f"tidemark: {message}; the agent's data path stays interpreted", file=sys.stderr)


NATIVE = runpy.run_path(str(HERE / "agent" / "native.py"))
# Digests of the sources as mypyc reads them (below), recorded once the build succeeds.
MANIFEST = {"python": sys.implementation.cache_tag,
            "sources": NATIVE["source_digests"](HERE)}


class OptionalBuildExt(build_ext):
    """Build the compiled modules and their manifest, or leave no manifest (then
    agent/native.py runs everything interpreted)."""

    def run(self) -> None:
        if not self.extensions:
            return
        package = Path(self.get_ext_fullpath("agent.call")).parent
        manifest = package / NATIVE["MANIFEST"]
        manifest.unlink(missing_ok=True)
        for old in NATIVE["compiled_forms"](package).values():  # incl. ones no longer listed
            old.unlink()
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure
            _warn(f"compiling failed ({exc})")
            return
        manifest.write_text(json.dumps(MANIFEST, indent=1, sort_keys=True) + "\n")


def compiled_extensions() -> list[Any]:
    if MODE == "0":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _warn("mypyc is not installed")
        return []
    try:
        # The shared library lives in the package (agent/_data_path__mypyc...), so it
        # imports from any working directory, like the modules compiled into it.
        return list(mypycify([f"agent/{name}.py" for name in NATIVE["COMPILED_MODULES"]],
                             opt_level="3", group_name="agent._data_path"))
    except BaseException as exc:  # noqa: BLE001 - mypyc exits on a type error
        _warn(f"mypyc refused the sources ({exc!r})")
        return []


setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": OptionalBuildExt})
