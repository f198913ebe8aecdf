"""The served app's collector (asgi.py): once start-up is done, what it made is frozen and young
collections wait for YOUNG_THRESHOLD allocations, not the interpreter's 700 (a write batch in
flight alone kept the collector at ~290 young collections a second); the apps tests build by
the dozen keep the interpreter's collector as it was."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from asgi import YOUNG_THRESHOLD, create_app
from config import Settings


@pytest.fixture
def collector_restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


async def _started(settings: Settings, freeze_after_start: bool) -> None:
    app = create_app(settings, run_sweeper=False, freeze_after_start=freeze_after_start)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    await lifespan.__aexit__(None, None, None)


@pytest.mark.usefixtures("collector_restored")
@pytest.mark.parametrize(
    ("served", "young"), [(True, YOUNG_THRESHOLD), (False, 700)], ids=["served", "in-a-test"]
)
async def test_only_the_served_app_collects_young_objects_less_often(
    settings_for: Callable[..., Settings], tmp_path: Path, served: bool, young: int
) -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    await _started(settings_for(f"sqlite+aiosqlite:///{tmp_path}/a.db"), freeze_after_start=served)
    assert gc.get_threshold() == (young, 10, 10), "the older generations as they were"
    assert (gc.get_freeze_count() > 0) is served
    assert YOUNG_THRESHOLD > 700
