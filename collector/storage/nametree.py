"""Metric names as a tree of path segments, so a glob visits only what it can match.

The store keeps here the names that are in the cache but not yet in a whisper file:
``find`` walks this tree beside the directory tree instead of testing every cached name
against the pattern (which made a find cost O(cached metrics)).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from collector.storage.globs import compile_segment, has_wildcard

__all__ = ["NameTree"]


class _Node:
    __slots__ = ("children", "leaf")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.leaf = False


class NameTree:
    """A thread-safe set of dotted names with Graphite glob lookups."""

    def __init__(self) -> None:
        self._root = _Node()
        self._lock = threading.Lock()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, name: str) -> None:
        """Add ``name`` (idempotent)."""
        with self._lock:
            node = self._root
            for segment in name.split("."):
                child = node.children.get(segment)
                if child is None:
                    child = node.children[segment] = _Node()
                node = child
            if not node.leaf:
                node.leaf = True
                self._size += 1

    def discard(self, name: str) -> None:
        """Remove ``name`` if present, pruning branches left empty."""
        with self._lock:
            trail: list[tuple[_Node, str]] = []
            node = self._root
            for segment in name.split("."):
                child = node.children.get(segment)
                if child is None:
                    return
                trail.append((node, segment))
                node = child
            if not node.leaf:
                return
            node.leaf = False
            self._size -= 1
            for parent, segment in reversed(trail):
                child = parent.children[segment]
                if child.leaf or child.children:
                    break
                del parent.children[segment]

    def match(self, parts: list[str]) -> Iterator[tuple[str, bool]]:
        """``(path, is_leaf)`` for every node matching the glob segments ``parts``.

        A node with children is reported as a branch; a node that is also a name is
        reported as a leaf too, as a directory beside a ``.wsp`` file would be.
        """
        with self._lock:
            found = list(self._match(self._root, parts, 0, ""))
        return iter(found)

    def _match(self, node: _Node, parts: list[str], index: int,
               prefix: str) -> Iterator[tuple[str, bool]]:
        part = parts[index]
        if has_wildcard(part):
            regex = compile_segment(part)
            candidates = [(s, c) for s, c in node.children.items() if regex.fullmatch(s)]
        else:
            child = node.children.get(part)
            candidates = [(part, child)] if child is not None else []
        last = index == len(parts) - 1
        for segment, child in candidates:
            path = prefix + segment
            if last:
                if child.children:
                    yield path, False
                if child.leaf:
                    yield path, True
            elif child.children:
                yield from self._match(child, parts, index + 1, path + ".")
