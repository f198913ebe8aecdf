"""Open streams move out of the collector's way every FREEZE_EVERY new streams, and back in once
enough of the frozen ones have closed, so cycles they left behind are reclaimed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from realtime import gc_policy
from realtime.gc_policy import FreezePolicy


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


class Stream:
    """A closed connection's objects caught in a reference cycle."""

    def __init__(self) -> None:
        self.me = self


def test_every_few_hundred_streams_the_live_objects_are_frozen() -> None:
    policy = FreezePolicy(freeze_every=50)
    for _ in range(49):
        policy.stream_opened()
    assert gc.get_freeze_count() == 0
    policy.stream_opened()
    assert gc.get_freeze_count() > 0
    assert policy.opened_since_freeze == 0


def test_cycles_of_frozen_streams_are_reclaimed_once_enough_of_them_closed() -> None:
    policy = FreezePolicy(freeze_every=10, thaw_min=20)
    streams = [Stream() for _ in range(20)]
    tickets = [policy.stream_opened() for _ in streams[:10]]  # the tenth freezes them all
    tickets += [policy.stream_opened() for _ in streams[10:]]  # and the twentieth again
    assert policy.freezes == 2
    dead = weakref.ref(streams[0])
    streams.clear()
    gc.collect()
    assert dead() is not None, "a frozen cycle is never collected"
    for ticket in tickets[:19]:
        policy.stream_closed(ticket)
    assert dead() is not None and policy.thaws == 0
    policy.stream_closed(tickets[19])  # 20 frozen streams closed: as many as THAW_MIN
    assert policy.thaws == 1
    assert dead() is None
    assert policy.frozen_closed == 0 and policy.open_streams == 0
    assert gc.get_freeze_count() > 0  # what is alive is frozen again


def test_streams_opened_and_closed_between_freezes_do_not_count() -> None:
    policy = FreezePolicy(freeze_every=1000, thaw_min=5)
    for _ in range(50):
        policy.stream_closed(policy.stream_opened())
    assert policy.frozen_closed == 0 and policy.thaws == 0


def test_the_thaw_waits_for_half_the_open_streams_to_turn_over() -> None:
    policy = FreezePolicy(freeze_every=100, thaw_min=10)
    tickets = [policy.stream_opened() for _ in range(100)]  # frozen at the hundredth
    for ticket in tickets[:32]:
        policy.stream_closed(ticket)
    assert policy.thaws == 0  # 32 closed, 68 open: not yet half of them
    policy.stream_closed(tickets[32])  # 33 closed, 67 open: half is 33
    assert policy.thaws == 1


def test_a_mass_disconnect_thaws_once_per_interval() -> None:
    """Each halving of the open streams would set off a full collection; back to back, they
    would stop the event loop for seconds. One per interval, and a due one after it."""
    now = [100.0]
    policy = FreezePolicy(freeze_every=100, thaw_min=10, thaw_interval_s=10, clock=lambda: now[0])
    tickets = [policy.stream_opened() for _ in range(1000)]  # frozen ten times over
    for ticket in tickets[:900]:
        policy.stream_closed(ticket)
    assert policy.thaws == 1  # halvings at 500, 250, 125… all inside one interval
    now[0] += 10
    policy.stream_closed(tickets[900])  # the next close after the interval: the due thaw
    assert policy.thaws == 2
    for ticket in tickets[901:]:
        policy.stream_closed(ticket)
    assert policy.thaws == 2 and policy.open_streams == 0
    unlimited = FreezePolicy(freeze_every=100, thaw_min=10, thaw_interval_s=0)
    for ticket in [unlimited.stream_opened() for _ in range(1000)]:
        unlimited.stream_closed(ticket)
    assert unlimited.thaws >= 4


def test_the_server_wide_policy_counts_open_streams() -> None:
    before = gc_policy.POLICY.open_streams
    ticket = gc_policy.stream_opened()
    assert gc_policy.POLICY.open_streams == before + 1
    gc_policy.stream_closed(ticket)
    assert gc_policy.POLICY.open_streams == before


def test_garbage_already_in_the_oldest_generation_is_not_frozen() -> None:
    """A delivery's or a request's cycle that reached generation 2 before it became garbage is
    collected at the next freeze, not kept frozen until a thaw that stream churn may not bring."""
    policy = FreezePolicy(freeze_every=1)
    gc.collect()
    old = Stream()
    gone = weakref.ref(old)
    gc.collect(1)  # alive through a generation-1 collection: now in the oldest generation
    gc.collect(1)
    del old  # garbage only the oldest generation's collection can find
    policy.stream_opened()  # a freeze
    assert gone() is None
    assert policy.freezes == 1


def test_no_thaw_while_the_server_closes_every_stream() -> None:
    policy = FreezePolicy(freeze_every=10, thaw_min=5)
    tickets = [policy.stream_opened() for _ in range(40)]
    policy.stopping = True
    for ticket in tickets:
        policy.stream_closed(ticket)
    assert policy.thaws == 0 and policy.open_streams == 0
    # another app in the same process takes streams again: thaws come back with them
    later = [policy.stream_opened() for _ in range(20)]
    assert not policy.stopping
    for ticket in later:
        policy.stream_closed(ticket)
    assert policy.thaws >= 1


def test_begin_shutdown_stops_the_thaws() -> None:
    from realtime.hub import Hub
    from realtime.streams import Realtime, StreamConfig
    from tests.unit.fakes import MemoryBroker, MemoryJournal

    async def nobody(*_: object) -> None:
        return None

    hub = Hub(MemoryJournal(), MemoryBroker(), poll_interval_s=60)
    realtime = Realtime(hub, StreamConfig(authenticate=nobody, verify_token=nobody))  # type: ignore[arg-type]
    try:
        realtime.begin_shutdown()
        assert gc_policy.POLICY.stopping
    finally:
        gc_policy.POLICY.stopping = False
