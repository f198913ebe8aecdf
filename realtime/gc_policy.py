"""Open streams kept out of the cyclic garbage collector's way, and let back in once they close.

A full (generation 2) collection walks every tracked object with the event loop stopped; with
5,000 open streams per instance that took 480–600 ms, often enough that one event in a hundred
waited for it. A stream lives for minutes to hours, so after every `FREEZE_EVERY` new streams the
objects alive at that moment move to the permanent generation (`gc.freeze()`), which collections
never walk; full collections then walk only what is newer than the last freeze (≤ 95 ms).

A frozen object is still freed by reference counting when its stream closes, but one caught in a
reference cycle is never collected while it stays frozen. Two cycles per connection (uvicorn's
HTTP protocol and its parser, kept after the WebSocket upgrade; the session and its outbox) made
every stream open at a freeze stay behind for good (~60 KB each: an instance under reconnect
churn grew by a gigabyte an hour). Both are broken now (api/serving.py, realtime/outbox.py), so a
closed stream is freed at once, frozen or not. For a cycle nobody has spotted yet (a library's,
an exception's traceback) the freeze is also undone: once as many frozen streams have closed as
half of those still open (`THAW_MIN` at least), everything is thawed, one full collection
reclaims what the dead streams left, and the survivors — the live streams — are frozen again.
That full collection runs once per turnover of half the open streams, never while streams just
stay open; what closed streams can hold meanwhile is bounded by the same count.

A thaw stops the event loop for as long as that full collection takes (1.4–1.6 s with 5,000
streams open), so thaws are at least `THAW_INTERVAL_S` apart: when a network blip drops most
streams at once, each halving of those still open would otherwise set one off, back to back.
A thaw that is due waits for the next close after the interval; meanwhile closed frozen streams
hold only what they held before, and the cycles known so far are broken.

Not while the server stops, though: every stream closes then, which would set off a thaw at
each halving of those still open — four or five full collections of a second or more each at
10,000 streams, all inside the graceful-shutdown window, for memory the exiting process gives
back anyway.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Callable

log = logging.getLogger("creditstream.gc")

FREEZE_EVERY = 500
THAW_MIN = 1000  # ~60 MB of connections at the worst, were they all still cyclic
THAW_INTERVAL_S = 10.0


class FreezePolicy:
    def __init__(
        self,
        freeze_every: int = FREEZE_EVERY,
        thaw_min: int = THAW_MIN,
        thaw_interval_s: float = THAW_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.freeze_every = freeze_every
        self.thaw_min = thaw_min
        self.thaw_interval_s = thaw_interval_s
        self.clock = clock
        self.last_thaw_at = -math.inf
        self.freezes = 0  # how many freezes so far: a stream opened before the last one is frozen
        self.open_streams = 0
        self.opened_since_freeze = 0
        self.frozen_closed = 0  # frozen streams closed since the last thaw
        self.thaws = 0
        self.stopping = False  # the server is closing every stream: no more thaws

    def stream_opened(self) -> int:
        """Count a new stream; returns its ticket for `stream_closed`."""
        ticket = self.freezes
        self.stopping = False  # streams are taken again (another app in the same process)
        self.open_streams += 1
        self.opened_since_freeze += 1
        if self.opened_since_freeze >= self.freeze_every:
            self._freeze()
        return ticket

    def stream_closed(self, ticket: int) -> None:
        self.open_streams -= 1
        if ticket == self.freezes:
            return  # opened since the last freeze: not frozen, the collector reclaims it
        self.frozen_closed += 1
        if self.stopping:
            return
        if (
            self.frozen_closed >= max(self.thaw_min, self.open_streams // 2)
            and self.clock() - self.last_thaw_at >= self.thaw_interval_s
        ):
            self._thaw()

    def _freeze(self) -> None:
        self.opened_since_freeze = 0
        # a full collection first: it walks only what is newer than the last freeze, and
        # garbage that already reached the oldest generation (a webhook delivery's or a
        # request's cycles, which gen-1 collections never look at) would otherwise be frozen
        # with the live streams and kept until the next thaw
        gc.collect()
        gc.freeze()
        self.freezes += 1

    def _thaw(self) -> None:
        started = time.perf_counter()
        gc.unfreeze()
        reclaimed = gc.collect()
        self.frozen_closed = 0
        self.thaws += 1
        self.last_thaw_at = self.clock()
        self._freeze()  # every stream open now is frozen again
        log.info(
            "thawed the frozen streams: %d objects reclaimed in %.0f ms (%d streams open)",
            reclaimed,
            (time.perf_counter() - started) * 1000,
            self.open_streams,
        )


POLICY = FreezePolicy()


def stream_opened() -> int:
    return POLICY.stream_opened()


def stream_closed(ticket: int) -> None:
    POLICY.stream_closed(ticket)


def server_stopping() -> None:
    POLICY.stopping = True
