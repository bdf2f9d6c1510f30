"""Target expressions (``sumSeries(a.*.b, scale(c.d, 2))|alias("x")``) parsed into an AST.

A small recursive-descent parser matching graphite-web 1.1's pyparsing grammar for the
forms it accepts: path expressions with globs and ``\\``-escapes, calls, positional then
keyword arguments, numbers (int, float, scientific), quoted strings (kept raw, quotes
dropped, as graphite does), booleans, ``none``, ``inf`` and ``|`` pipes. Unlike graphite,
text left over after the expression is an error rather than silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["ParseError", "PathExpr", "Call", "Const", "Node", "parse_target", "MAX_DEPTH",
           "first_path_expression"]

MAX_DEPTH = 64

_SYMBOLS = "(){},.'\"\\|"
_PATH_CHARS = frozenset(chr(c) for c in range(33, 127)) - frozenset(_SYMBOLS)
_ESCAPABLE = frozenset(_SYMBOLS + "=")
_WS = " \t\n\r"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBERS = (
    re.compile(r"-?\d+(?:\.\d+)?[eE]-?\d+"),  # scientific
    re.compile(r"-?\d+\.\d+"),  # float
    re.compile(r"-?\d+"),  # integer
)
_STRING = re.compile(
    r'"(?:[^"\n\r\\]|(?:"")|(?:\\(?:[^x]|x[0-9a-fA-F]+)))*"'
    r"|'(?:[^'\n\r\\]|(?:'')|(?:\\(?:[^x]|x[0-9a-fA-F]+)))*'")


class ParseError(ValueError):
    """A target expression that does not parse; ``position`` is a 0-based offset."""

    def __init__(self, message: str, target: str, position: int) -> None:
        super().__init__(f"{message} at position {position} of target {target!r}")
        self.position = position


@dataclass(frozen=True, slots=True)
class PathExpr:
    """A metric path or glob pattern."""

    path: str


@dataclass(frozen=True, slots=True)
class Const:
    """A literal argument: int, float, str, bool, None or inf."""

    value: object


@dataclass(frozen=True, slots=True)
class Call:
    """A function call; kwargs keep their order of appearance."""

    name: str
    args: tuple[Node, ...] = ()
    kwargs: tuple[tuple[str, Node], ...] = field(default=())


Node = PathExpr | Call | Const


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str, pos: int | None = None) -> ParseError:
        return ParseError(message, self.text, self.pos if pos is None else pos)

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1

    def peek(self) -> str:
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expression(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise self.error(f"expression nested deeper than {MAX_DEPTH} calls")
        self.skip_ws()
        node: Node
        call = self.try_call(depth)
        node = call if call is not None else self.path()
        while True:
            save = self.pos
            self.skip_ws()
            if self.pos < len(self.text) and self.text[self.pos] == "|":
                self.pos += 1
                self.skip_ws()
                piped = self.try_call(depth + 1)
                if piped is None:
                    raise self.error("expected a function call after '|'")
                node = Call(piped.name, (node, *piped.args), piped.kwargs)
            else:
                self.pos = save
                return node

    def try_call(self, depth: int) -> Call | None:
        match = _IDENT.match(self.text, self.pos)
        if match is None:
            return None
        after = match.end()
        while after < len(self.text) and self.text[after] in _WS:
            after += 1
        if after >= len(self.text) or self.text[after] != "(":
            return None
        name = match.group()
        self.pos = after + 1
        args: list[Node] = []
        kwargs: list[tuple[str, Node]] = []
        if self.peek() != ")":
            while True:
                kw = self.kwarg_name()
                if kw is not None:
                    if any(k == kw for k, _ in kwargs):
                        raise self.error(f"keyword argument {kw!r} repeated")
                    kwargs.append((kw, self.argument(depth + 1)))
                elif kwargs:
                    raise self.error("positional argument after keyword argument")
                else:
                    args.append(self.argument(depth + 1))
                nxt = self.peek()
                if nxt == ",":
                    self.pos += 1
                    continue
                if nxt == ")":
                    break
                raise self.error(f"expected ',' or ')' in call to {name}()")
        self.pos += 1  # the ')'
        return Call(name, tuple(args), tuple(kwargs))

    def kwarg_name(self) -> str | None:
        self.skip_ws()
        match = _IDENT.match(self.text, self.pos)
        if match is None:
            return None
        after = match.end()
        while after < len(self.text) and self.text[after] in _WS:
            after += 1
        if after < len(self.text) and self.text[after] == "=":
            self.pos = after + 1
            return match.group()
        return None

    def keyword(self, word: str) -> bool:
        end = self.pos + len(word)
        if self.text[self.pos:end].lower() != word:
            return False
        if end < len(self.text) and (self.text[end].isalnum() or self.text[end] in "_$"):
            return False
        self.pos = end
        return True

    def number_follows(self, end: int) -> bool:
        while end < len(self.text) and self.text[end] in " \t\r":
            end += 1
        return end >= len(self.text) or self.text[end] in ",)\n"

    def argument(self, depth: int) -> Node:
        self.skip_ws()
        for word, value in (("true", True), ("false", False)):
            if self.keyword(word):
                return Const(value)
        for kind, pattern in enumerate(_NUMBERS):
            match = pattern.match(self.text, self.pos)
            if match is not None and self.number_follows(match.end()):
                self.pos = match.end()
                raw = match.group()
                return Const(int(raw) if kind == 2 else float(raw))
        if self.keyword("none"):
            return Const(None)
        match = _STRING.match(self.text, self.pos)
        if match is not None:
            self.pos = match.end()
            return Const(match.group()[1:-1])
        if self.keyword("inf"):
            return Const(float("inf"))
        if self.pos >= len(self.text):
            raise self.error("unexpected end of target, expected an argument")
        return self.expression(depth)

    def path_element(self) -> str:
        """Runs of path characters (see :meth:`partial`) and ``{a,b}`` enumerations."""
        out = [self.partial()]
        while self.pos < len(self.text) and self.text[self.pos] == "{":
            out.append(self.match_enum())
            out.append(self.partial())
        return "".join(out)

    def match_enum(self) -> str:
        start = self.pos
        self.pos += 1
        parts: list[str] = []
        while True:
            part = self.partial()
            if not part:
                raise self.error("expected a name inside '{...}'")
            parts.append(part)
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
                continue
            if self.pos < len(self.text) and self.text[self.pos] == "}":
                self.pos += 1
                return "{" + ",".join(parts) + "}"
            raise self.error("unclosed '{'", start)

    def partial(self) -> str:
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "\\" and self.pos + 1 < len(text) and text[self.pos + 1] in _ESCAPABLE:
                out.append(text[self.pos + 1])
                self.pos += 2
            elif ch in _PATH_CHARS:
                out.append(ch)
                self.pos += 1
            else:
                break
        return "".join(out)

    def path(self) -> PathExpr:
        start = self.pos
        elements = [self.path_element()]
        if not elements[0]:
            if self.pos >= len(self.text):
                raise self.error("unexpected end of target, expected a path or a call")
            raise self.error(f"unexpected {self.text[self.pos]!r}, expected a path or a call")
        while self.pos < len(self.text) and self.text[self.pos] == ".":
            save = self.pos
            self.pos += 1
            element = self.path_element()
            if not element:
                self.pos = save
                break
            elements.append(element)
        del start
        return PathExpr(".".join(elements))


def parse_target(text: str) -> Node:
    """Parse one target; raises :class:`ParseError` naming the offending position."""
    if not isinstance(text, str):
        raise TypeError("target must be a string")
    parser = _Parser(text)
    node = parser.expression(0)
    parser.skip_ws()
    if parser.pos != len(text):
        raise parser.error(f"unexpected {text[parser.pos]!r} after the expression")
    return node


def first_path_expression(name: str) -> str | None:
    """The first metric path inside a series name such as ``sumSeries(a.b.c)``."""
    try:
        node = _Parser(name).expression(0)
    except (ParseError, RecursionError):
        return None
    while True:
        if isinstance(node, PathExpr):
            return node.path
        if isinstance(node, Call) and node.args:
            node = node.args[0]
            continue
        return None
