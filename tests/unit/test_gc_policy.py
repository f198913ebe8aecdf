"""Open streams move out of the collector's way every FREEZE_EVERY new streams."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from realtime import gc_policy


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_every_few_hundred_streams_the_live_objects_are_frozen() -> None:
    gc_policy._opened_since_freeze = 0
    for _ in range(gc_policy.FREEZE_EVERY - 1):
        gc_policy.stream_opened()
    assert gc.get_freeze_count() == 0
    gc_policy.stream_opened()
    assert gc.get_freeze_count() > 0
    assert gc_policy._opened_since_freeze == 0
