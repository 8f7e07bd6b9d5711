"""Start-up leaves its objects out of later garbage collections, and later cycles are still freed."""

from __future__ import annotations

import gc
import weakref

import pytest

from config.lifespan import YOUNG_COLLECTION_AFTER, LifespanApp
from tests.archive.test_scheduler import lifespan

pytestmark = pytest.mark.django_db(transaction=True)


class Node:
    def __init__(self) -> None:
        self.me = self


async def test_start_up_freezes_what_it_built_and_later_cycles_are_still_collected() -> None:
    gc.unfreeze()
    app = LifespanApp()

    assert (await lifespan(app, "startup"))["type"] == "lifespan.startup.complete"
    assert gc.get_freeze_count() > 1000
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_AFTER
    later = Node()
    gone = weakref.ref(later)
    del later
    gc.collect()
    assert gone() is None  # a cycle made after start-up is found
    assert (await lifespan(app, "shutdown"))["type"] == "lifespan.shutdown.complete"
