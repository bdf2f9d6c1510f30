"""The shared foundation: configuration loading and the console script."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tidemark.config import load_config, parse_duration_seconds, parse_size_bytes
from tidemark.errors import ConfigError


@dataclass(frozen=True)
class Example:
    data_dir: Path
    port: int = 2003
    ratio: float = 0.5
    fsync_seconds: float = 0.2
    buffer_bytes: int = 1024
    enabled: bool = False
    name: str | None = None


def test_precedence_is_override_then_env_then_file_then_default(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('[example]\nport = 1\nratio = 0.25\nname = "file"\n')
    env = {"EX_PORT": "2", "EX_NAME": "env"}
    config = load_config(Example, path=conf, section="example", environ=env, env_prefix="EX_",
                         overrides={"data_dir": tmp_path, "name": "cli", "enabled": None})
    assert config.port == 2 and config.ratio == 0.25 and config.name == "cli"
    assert config.enabled is False and config.data_dir == tmp_path


def test_units_are_converted(tmp_path: Path) -> None:
    config = load_config(Example, environ={"EX_FSYNC_SECONDS": "150ms", "EX_BUFFER_BYTES": "4KiB",
                                           "EX_ENABLED": "yes"},
                         env_prefix="EX_", overrides={"data_dir": "d"})
    assert config.fsync_seconds == pytest.approx(0.15)
    assert config.buffer_bytes == 4096 and config.enabled is True
    assert parse_duration_seconds("2m") == 120 and parse_size_bytes("1MiB") == 1 << 20


@pytest.mark.parametrize("text, key", [('port = "x"', "port"), ("bogus = 1", "bogus"),
                                       ("ratio = true", "ratio")])
def test_bad_key_is_named(tmp_path: Path, text: str, key: str) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(text + "\n")
    with pytest.raises(ConfigError, match=key):
        load_config(Example, path=conf, overrides={"data_dir": "d"})


def test_missing_and_malformed_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Example, path=tmp_path / "nope.toml", overrides={"data_dir": "d"})
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(Example, path=bad, overrides={"data_dir": "d"})


def test_console_script_lists_commands_and_exits_2_without_one() -> None:
    result = subprocess.run([sys.executable, "-m", "tidemark"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "collector" in result.stdout


def test_unknown_command_is_one_usage_error() -> None:
    result = subprocess.run([sys.executable, "-m", "tidemark", "nosuch"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "invalid choice: 'nosuch'" in result.stderr


def test_choosing_a_command_imports_only_that_command() -> None:
    code = ("import sys; from tidemark.cli import build_parser; build_parser('collector'); "
            "print(sorted(m for m in ('registry', 'agent', 'capacity', 'models', 'pandas') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
