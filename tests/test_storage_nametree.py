"""NameTree: glob lookups over cached metric names visit only what can match."""

from __future__ import annotations

import threading

from collector.storage.globs import match_path, split_pattern
from collector.storage.nametree import NameTree

NAMES = ["a.b.c", "a.b.d", "a.bb.c", "a.x", "b.c", "a.b", "z.y.x.w"]


def brute_force(pattern: str) -> set[tuple[str, bool]]:
    parts = split_pattern(pattern)
    found = set()
    for name in NAMES:
        kind = match_path(parts, name)
        if kind is not None:
            found.add((name if kind else ".".join(name.split(".")[: len(parts)]), kind))
    return found


def test_match_agrees_with_matching_every_name() -> None:
    tree = NameTree()
    for name in NAMES:
        tree.add(name)
    tree.add("a.b.c")  # idempotent
    assert len(tree) == len(NAMES)
    for pattern in ["*", "a.*", "a.b*.*", "a.{b,x}", "a.b.?", "*.*.*", "a.[a-c]*.c", "q.*",
                    "a.b", "z.*.*.w", "a.b.c.d"]:
        assert set(tree.match(split_pattern(pattern))) == brute_force(pattern), pattern


def test_discard_prunes_and_keeps_siblings() -> None:
    tree = NameTree()
    for name in NAMES:
        tree.add(name)
    tree.discard("z.y.x.w")
    tree.discard("a.b")  # a leaf that is also a branch: the branch stays
    tree.discard("not.there")
    assert len(tree) == len(NAMES) - 2
    assert set(tree.match(["z"])) == set()
    assert set(tree.match(["a", "b"])) == {("a.b", False)}
    assert set(tree.match(["a", "b", "*"])) == {("a.b.c", True), ("a.b.d", True)}


def test_concurrent_adds_discards_and_matches_do_not_break() -> None:
    tree = NameTree()
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for i in range(3000):
                tree.add(f"m.g{i % 30}.n{offset}_{i}")
                if i % 3 == 0:
                    tree.discard(f"m.g{i % 30}.n{offset}_{i}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(300):
                for path, leaf in tree.match(["m", "*", "*"]):
                    assert leaf and path.startswith("m.g")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    threads.append(threading.Thread(target=reader))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(tree) == 2 * 2000
