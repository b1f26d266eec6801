"""infra.heap.settle: what start-up made is exempt from later collections; what comes after
is still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from infra.heap import settle


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test session collects as before


@pytest.mark.usefixtures("thawed")
def test_objects_alive_at_settle_are_frozen_and_skipped_by_full_collections() -> None:
    startup = [_Node() for _ in range(100)]
    frozen = settle()
    assert frozen >= len(startup)
    assert gc.get_freeze_count() == frozen
    walked = {id(o) for o in gc.get_objects(generation=2)}
    assert not any(id(node) in walked for node in startup)


@pytest.mark.usefixtures("thawed")
def test_cycles_made_after_settle_are_still_collected() -> None:
    settle()
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    del a, b
    gc.collect()
    assert alive() is None


@pytest.mark.usefixtures("thawed")
def test_garbage_left_by_startup_is_freed_not_frozen() -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    del a, b
    settle()
    assert alive() is None
