"""Process-level settings for timing: the frozen heap."""

from __future__ import annotations

import gc

from mess_ros.runtime.scheduling import freeze_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycles(count: int) -> list[_Node]:
    nodes = [_Node() for _ in range(count)]
    for a, b in zip(nodes, nodes[1:] + nodes[:1], strict=True):
        a.other = b
    return nodes


def test_a_frozen_heap_leaves_collections_only_what_came_after() -> None:
    kept = _cycles(200_000)  # a model's worth of long-lived objects
    try:
        freeze_heap()
        assert gc.get_freeze_count() >= len(kept)  # left out of every later collection
        garbage = _cycles(1000)
        del garbage
        assert gc.collect() >= 1000  # what came after is still collected
    finally:
        gc.unfreeze()
    del kept
