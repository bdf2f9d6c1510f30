"""Target parser: the forms graphite accepts, and clear errors for the ones it does not."""

from __future__ import annotations

import pytest

from collector.render.grammar import (
    MAX_DEPTH,
    Call,
    Const,
    ParseError,
    PathExpr,
    first_path_expression,
    parse_target,
)


def test_path_with_globs() -> None:
    assert parse_target("a.b*.c?.[a-z]x.{foo,bar}.d") == PathExpr("a.b*.c?.[a-z]x.{foo,bar}.d")


def test_nested_calls_and_literals() -> None:
    node = parse_target(
        "f( a.b , g(c) ,1, -2, 3.5, 1e3, -2.5E-2, 'x', \"y\", true, False, none, inf)")
    assert node == Call("f", (
        PathExpr("a.b"), Call("g", (PathExpr("c"),)), Const(1), Const(-2), Const(3.5),
        Const(1000.0), Const(-0.025), Const("x"), Const("y"), Const(True), Const(False),
        Const(None), Const(float("inf"))))
    assert isinstance(node.args[2], Const) and type(node.args[2].value) is int


def test_keyword_arguments() -> None:
    node = parse_target("summarize(a.b, intervalString='1h', alignToFrom=true)")
    assert node == Call("summarize", (PathExpr("a.b"),),
                        (("intervalString", Const("1h")), ("alignToFrom", Const(True))))


def test_pipes_become_nested_calls() -> None:
    assert parse_target("a.b | scale(2) | alias('x')") == Call(
        "alias", (Call("scale", (PathExpr("a.b"), Const(2))), Const("x")))


def test_number_not_followed_by_separator_is_a_path() -> None:
    assert parse_target("f(1a)") == Call("f", (PathExpr("1a"),))
    assert parse_target("f(trueish.x)") == Call("f", (PathExpr("trueish.x"),))


def test_escapes_and_equals_in_paths() -> None:
    assert parse_target(r"a\(b\).c=d") == PathExpr("a(b).c=d")


def test_strings_are_kept_raw() -> None:
    assert parse_target(r"aliasSub(a, '^(\d+)', '\1')").args[1:] == (Const(r"^(\d+)"),
                                                                     Const(r"\1"))


@pytest.mark.parametrize("bad,position", [
    ("sumSeries(a.b", 13),
    ("a.b)", 3),
    ("f(x=1, y)", 7),
    ("f(a,,b)", 4),
    ("a..b", 1),
    ("", 0),
    ("a.{b", 2),
    ("f(true.x)", 6),
])
def test_parse_errors_name_the_position(bad: str, position: int) -> None:
    with pytest.raises(ParseError) as info:
        parse_target(bad)
    assert info.value.position == position
    assert f"position {position}" in str(info.value)


def test_depth_is_bounded() -> None:
    deep = "f(" * (MAX_DEPTH + 5) + "a" + ")" * (MAX_DEPTH + 5)
    with pytest.raises(ParseError, match="nested deeper"):
        parse_target(deep)


def test_first_path_expression() -> None:
    assert first_path_expression("sumSeries(scale(a.b.c,2),x.y)") == "a.b.c"
    assert first_path_expression("plain.name") == "plain.name"
