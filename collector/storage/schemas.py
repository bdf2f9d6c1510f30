"""Carbon-format retention and aggregation rules (``storage-schemas.conf``,
``storage-aggregation.conf``), parsed into frozen records; pure apart from reading files.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from pathlib import Path

import whisper

__all__ = [
    "Retention", "StorageSchema", "AggregationRule", "StorageRules",
    "DEFAULT_CONF_DIR", "load_rules", "parse_schemas", "parse_aggregation",
]

DEFAULT_CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
SCHEMAS_FILE = "storage-schemas.conf"
AGGREGATION_FILE = "storage-aggregation.conf"
AGGREGATION_METHODS = frozenset(whisper.aggregationMethods)


@dataclass(frozen=True, slots=True)
class Retention:
    """One whisper archive: a point every ``seconds_per_point`` seconds, ``points`` of them."""

    seconds_per_point: int
    points: int

    @property
    def seconds(self) -> int:
        return self.seconds_per_point * self.points


@dataclass(frozen=True, slots=True)
class StorageSchema:
    """A ``[section]`` of storage-schemas.conf."""

    name: str
    pattern: str
    retentions: tuple[Retention, ...]
    priority: int = 0

    @property
    def max_retention_seconds(self) -> int:
        return max(r.seconds for r in self.retentions)

    def archive_list(self) -> list[tuple[int, int]]:
        return [(r.seconds_per_point, r.points) for r in self.retentions]


@dataclass(frozen=True, slots=True)
class AggregationRule:
    """A ``[section]`` of storage-aggregation.conf; None means whisper's default."""

    name: str
    pattern: str
    x_files_factor: float | None
    aggregation_method: str | None


# carbon's fallback when no section matches: 7 days of minutely points.
DEFAULT_SCHEMA = StorageSchema("default", ".*", (Retention(60, 60 * 24 * 7),), -1)
DEFAULT_AGGREGATION = AggregationRule("default", ".*", None, None)


def _read(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=True)
    try:
        with path.open(encoding="utf-8") as fh:
            parser.read_file(fh, source=str(path))
    except configparser.Error as exc:
        raise ValueError(f"{path}: {exc}") from None
    return parser


def _pattern(path: Path, section: str, options: dict[str, str]) -> str:
    pattern = options.get("pattern")
    if not pattern:
        raise ValueError(f"{path}: section [{section}] has no 'pattern'")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{path}: section [{section}]: bad pattern {pattern!r}: {exc}") from None
    return pattern


def parse_retentions(text: str) -> tuple[Retention, ...]:
    """``10s:2d,1m:30d`` -> archives, validated as whisper requires; ValueError if bad."""
    out = []
    for item in text.split(","):
        try:
            seconds, points = whisper.parseRetentionDef(item.strip())
        except (ValueError, KeyError, ZeroDivisionError) as exc:
            raise ValueError(f"bad retention {item.strip()!r}: {exc or 'zero precision'}") from None
        out.append(Retention(int(seconds), int(points)))
    archives = [(r.seconds_per_point, r.points) for r in out]
    if any(s <= 0 or p <= 0 for s, p in archives):
        raise ValueError(f"bad retentions {text!r}: precision and points must be positive")
    try:
        whisper.validateArchiveList(archives)  # sorts in place by precision
    except whisper.InvalidConfiguration as exc:
        raise ValueError(f"bad retentions {text!r}: {exc}") from None
    return tuple(Retention(s, p) for s, p in archives)


def parse_schemas(path: Path) -> tuple[StorageSchema, ...]:
    """Sections of a storage-schemas.conf, in matching order, then carbon's default."""
    parser = _read(path)
    schemas = []
    for section in parser.sections():
        options = dict(parser.items(section))
        pattern = _pattern(path, section, options)
        if "retentions" not in options:
            raise ValueError(f"{path}: section [{section}] has no 'retentions'")
        try:
            retentions = parse_retentions(options["retentions"])
        except ValueError as exc:
            raise ValueError(f"{path}: section [{section}]: {exc}") from None
        try:
            priority = int(options.get("priority", "0"))
        except ValueError:
            raise ValueError(f"{path}: section [{section}]: priority must be an integer") from None
        schemas.append(StorageSchema(section, pattern, retentions, priority))
    # Old carbon sorted by priority; a stable sort keeps file order among equals.
    schemas.sort(key=lambda s: -s.priority)
    return (*schemas, DEFAULT_SCHEMA)


def parse_aggregation(path: Path) -> tuple[AggregationRule, ...]:
    """Sections of a storage-aggregation.conf, in file order, then whisper's default."""
    parser = _read(path)
    rules = []
    for section in parser.sections():
        options = dict(parser.items(section))
        pattern = _pattern(path, section, options)
        xff: float | None = None
        if "xfilesfactor" in options:
            try:
                xff = float(options["xfilesfactor"])
            except ValueError:
                xff = -1.0
            if not 0.0 <= xff <= 1.0:
                raise ValueError(
                    f"{path}: section [{section}]: xFilesFactor must be a number in [0, 1]")
        method = options.get("aggregationmethod")
        if method is not None and method not in AGGREGATION_METHODS:
            raise ValueError(
                f"{path}: section [{section}]: unknown aggregationMethod {method!r} "
                f"(one of {', '.join(sorted(AGGREGATION_METHODS))})")
        rules.append(AggregationRule(section, pattern, xff, method))
    return (*rules, DEFAULT_AGGREGATION)


class StorageRules:
    """Both rule lists, with first-match lookups by metric path."""

    def __init__(self, schemas: tuple[StorageSchema, ...],
                 aggregation: tuple[AggregationRule, ...]) -> None:
        self.schemas = schemas
        self.aggregation = aggregation
        self._schema_res = [re.compile(s.pattern) for s in schemas]
        self._agg_res = [re.compile(a.pattern) for a in aggregation]

    def schema_for(self, path: str) -> StorageSchema:
        for regex, schema in zip(self._schema_res, self.schemas, strict=True):
            if regex.search(path):
                return schema
        return DEFAULT_SCHEMA

    def aggregation_for(self, path: str) -> AggregationRule:
        for regex, rule in zip(self._agg_res, self.aggregation, strict=True):
            if regex.search(path):
                return rule
        return DEFAULT_AGGREGATION


def load_rules(conf_dir: Path | None) -> StorageRules:
    """Rules from ``conf_dir``; each file absent there (or conf_dir None) is the shipped one."""
    def pick(name: str) -> Path:
        if conf_dir is not None and (Path(conf_dir) / name).is_file():
            return Path(conf_dir) / name
        return DEFAULT_CONF_DIR / name

    return StorageRules(parse_schemas(pick(SCHEMAS_FILE)),
                        parse_aggregation(pick(AGGREGATION_FILE)))
