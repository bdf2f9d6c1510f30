"""Carbon-format schema/aggregation rules and Graphite glob matching (pure units)."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.storage.globs import expand_braces, match_path, split_pattern
from collector.storage.schemas import (
    DEFAULT_CONF_DIR,
    Retention,
    load_rules,
    parse_aggregation,
    parse_retentions,
    parse_schemas,
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_defaults_fit_10s_agents() -> None:
    rules = load_rules(None)
    schema = rules.schema_for("mesh.pool1.node3.qps")
    assert schema.retentions == (Retention(10, 17280), Retention(60, 43200),
                                 Retention(600, 105120))
    assert schema.max_retention_seconds == 2 * 365 * 86400
    assert rules.schema_for("carbon.agents.x.cpu").name == "carbon"
    assert rules.aggregation_for("svc.latency.p999").aggregation_method == "max"
    assert rules.aggregation_for("svc.calls.count").aggregation_method == "sum"
    assert rules.aggregation_for("svc.latency.mean").aggregation_method == "average"
    for counted in ["tidemark.user.idc1.n1.requests", "tidemark.user.idc1.n1.errors",
                    "tidemark.user.idc1.n1.errors.timeout", "tidemark.user.idc1.n1.latency.hist.7",
                    "tidemark.user.idc1.n1.latency.hist.-3"]:
        rule = rules.aggregation_for(counted)
        assert (rule.aggregation_method, rule.x_files_factor) == ("sum", 0.0), counted
    assert rules.aggregation_for("tidemark.user.idc1.n1.qps").aggregation_method == "average"


def test_first_matching_section_wins_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, "storage-schemas.conf", """
[fast]
pattern = ^fast\\.
retentions = 1s:1h

[everything]
pattern = .*
retentions = 1m:1d,1h:30d
""")
    schemas = parse_schemas(path)
    assert [s.name for s in schemas] == ["fast", "everything", "default"]
    rules = load_rules(tmp_path)
    assert rules.schema_for("fast.x").retentions == (Retention(1, 3600),)
    assert rules.schema_for("slow.fast.x").name == "everything"
    assert rules.schema_for("slow.x").archive_list() == [(60, 1440), (3600, 720)]


def test_priority_orders_sections(tmp_path: Path) -> None:
    write(tmp_path, "storage-schemas.conf", """
[low]
pattern = .*
retentions = 60:10
priority = 1

[high]
pattern = ^a\\.
retentions = 10:100
priority = 10
""")
    rules = load_rules(tmp_path)
    assert rules.schema_for("a.b").name == "high"
    assert rules.schema_for("b.b").name == "low"


def test_no_match_falls_back_to_carbon_default(tmp_path: Path) -> None:
    write(tmp_path, "storage-schemas.conf", "[only]\npattern = ^x$\nretentions = 10s:1d\n")
    rules = load_rules(tmp_path)
    assert rules.schema_for("y").retentions == (Retention(60, 10080),)
    # the aggregation file is absent here: the shipped one is used
    assert rules.aggregation_for("y.max").aggregation_method == "max"


@pytest.mark.parametrize(("body", "needle"), [
    ("[s]\nretentions = 10s:1d\n", "section [s] has no 'pattern'"),
    ("[s]\npattern = .*\n", "section [s] has no 'retentions'"),
    ("[s]\npattern = .*\nretentions = 10q:1d\n", "section [s]: bad retention '10q:1d'"),
    ("[s]\npattern = (\nretentions = 10s:1d\n", "section [s]: bad pattern"),
    ("[s]\npattern = .*\nretentions = 10s:1d,1m:1h\n", "section [s]: bad retentions"),
    ("[s]\npattern = .*\nretentions = 10s:1d\npriority = high\n", "priority must be an integer"),
    ("pattern = .*\n", "File contains no section headers"),
])
def test_bad_schema_file_names_file_and_section(tmp_path: Path, body: str, needle: str) -> None:
    path = write(tmp_path, "storage-schemas.conf", body)
    with pytest.raises(ValueError) as info:
        parse_schemas(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)


@pytest.mark.parametrize(("body", "needle"), [
    ("[a]\npattern = .*\nxFilesFactor = 2\n", "section [a]: xFilesFactor must be"),
    ("[a]\npattern = .*\nxFilesFactor = lots\n", "section [a]: xFilesFactor must be"),
    ("[a]\npattern = .*\naggregationMethod = median\n", "unknown aggregationMethod 'median'"),
    ("[a]\nxFilesFactor = 0\n", "section [a] has no 'pattern'"),
])
def test_bad_aggregation_file(tmp_path: Path, body: str, needle: str) -> None:
    path = write(tmp_path, "storage-aggregation.conf", body)
    with pytest.raises(ValueError, match="storage-aggregation.conf") as info:
        parse_aggregation(path)
    assert needle in str(info.value)


def test_aggregation_rules_and_defaults(tmp_path: Path) -> None:
    write(tmp_path, "storage-aggregation.conf", """
[sums]
pattern = \\.count$
xFilesFactor = 0
aggregationMethod = sum

[maxes]
pattern = ^lat\\.
aggregationMethod = max
""")
    rules = load_rules(tmp_path)
    assert (rules.aggregation_for("a.count").x_files_factor,
            rules.aggregation_for("a.count").aggregation_method) == (0.0, "sum")
    assert rules.aggregation_for("lat.x").x_files_factor is None
    assert rules.aggregation_for("other").aggregation_method is None  # whisper default


def test_retention_units() -> None:
    assert parse_retentions("60:1440") == (Retention(60, 1440),)
    assert parse_retentions("1h:1w, 1d:5y") == (Retention(3600, 168), Retention(86400, 1825))
    with pytest.raises(ValueError):
        parse_retentions("10s")
    with pytest.raises(ValueError):
        parse_retentions("0s:1d")


def test_shipped_files_exist() -> None:
    assert (DEFAULT_CONF_DIR / "storage-schemas.conf").is_file()
    assert (DEFAULT_CONF_DIR / "storage-aggregation.conf").is_file()


# -- globs ---------------------------------------------------------------------------

def test_expand_braces() -> None:
    assert expand_braces("a{b,c}d") == ["abd", "acd"]
    assert expand_braces("{x,y}{1,2}") == ["x1", "x2", "y1", "y2"]
    assert expand_braces("plain") == ["plain"]


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("a.b.c", "a.b.c", True),
    ("a.*.c", "a.b.c", True),
    ("a.*", "a.b.c", False),  # branch a.b
    ("a.*.d", "a.b.c", None),
    ("*", "a.b", False),
    ("a.b?", "a.bc", True),
    ("a.b?", "a.b", None),
    ("a.[b-d]x", "a.cx", True),
    ("a.[!b]x", "a.bx", None),
    ("a.{foo,bar}", "a.bar", True),
    ("a.{foo,bar}", "a.baz", None),
    ("a.*bar*", "a.xbarx", True),
    ("a.b.c.d", "a.b.c", None),
])
def test_match_path(pattern: str, path: str, expected: bool | None) -> None:
    assert match_path(split_pattern(pattern), path) is expected


@pytest.mark.parametrize("pattern", [
    "", "a..b", ".a", "a.", "a/b", "a.b/../../etc", "a\\b", "a.\x00", "a.b\n",
])
def test_unsafe_patterns_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="pattern"):
        split_pattern(pattern)
