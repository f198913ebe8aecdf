"""Open streams kept out of the cyclic garbage collector's way.

A full (generation 2) collection walks every tracked object with the event loop stopped; with
5,000 open streams per instance that took 480–600 ms, often enough that one event in a hundred
waited for it. A stream lives for minutes to hours, so after every `FREEZE_EVERY` new streams the
objects alive at that moment move to the permanent generation (`gc.freeze()`), which collections
never walk. They are still freed by reference counting when their stream closes; what the
freeze costs is that garbage caught in a reference cycle at that moment is never reclaimed, so a
young-generation collection runs first to leave as little of it as possible.
"""

from __future__ import annotations

import gc

FREEZE_EVERY = 500

_opened_since_freeze = 0


def stream_opened() -> None:
    global _opened_since_freeze
    _opened_since_freeze += 1
    if _opened_since_freeze >= FREEZE_EVERY:
        _opened_since_freeze = 0
        gc.collect(1)
        gc.freeze()
