"""What a write lane's next batch takes from its queue while other batches are in flight
(storage/writes/lanes.py): operations on other accounts go ahead, an account's own keep their
order, and an operation that did not say what it touches is a barrier."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from storage.writes.batch import NOTHING, Touches
from storage.writes.lanes import Lane
from storage.writes.transaction import Operation


async def _action(uow: Any) -> None:
    return None


def _op(accounts: tuple[str, ...] = (), holds: tuple[str, ...] = ()) -> Operation:
    future = asyncio.get_running_loop().create_future()
    return Operation(_action, Touches(accounts=accounts, holds=holds), future)


def _names(ops: list[Operation]) -> list[tuple[str, ...]]:
    return [op.touches.accounts + op.touches.holds for op in ops]


async def test_with_nothing_in_flight_it_takes_in_arrival_order() -> None:
    lane = Lane()
    ops = [_op(("a",)), _op(("a",)), _op(("b",))]
    lane.put(ops)
    assert lane.take(2) == ops[:2]
    assert list(lane.queue) == ops[2:]


async def test_alone_it_takes_half_when_a_second_batch_could_take_the_rest() -> None:
    lane = Lane()
    lane.put([_op((f"a{i}",)) for i in range(10)])
    assert lane.share(most=256, depth=2, in_flight=0) == 5
    assert lane.share(most=256, depth=1, in_flight=0) == 256, "no second batch: all it may"


async def test_beside_a_batch_in_flight_it_takes_its_even_share_of_all_that_circulates() -> None:
    """A closed loop of callers comes back in the groups its batches answered: a small batch
    in flight and many waiting must not become one batch of all of them beside it, or the two
    stay lopsided and take turns with the database."""
    lane = Lane()
    lane.put([_op((f"a{i}",)) for i in range(60)])
    assert lane.share(most=256, depth=2, in_flight=4) == 32
    assert lane.share(most=20, depth=2, in_flight=4) == 20, "never past the batch's cap"
    assert lane.share(most=256, depth=3, in_flight=4) == 22, "a share of each slot"
    # a big batch in flight and a few waiting: all of those
    lane = Lane()
    lane.put([_op((f"a{i}",)) for i in range(4)])
    assert lane.share(most=256, depth=2, in_flight=60) >= 4


async def test_alone_it_takes_all_when_the_rest_would_wait_for_the_first_half() -> None:
    # one hot account: a second batch could take none of the rest while the first flies
    lane = Lane()
    lane.put([_op(("hot",)) for _ in range(10)])
    assert lane.share(most=256, depth=2, in_flight=0) == 256
    assert lane.share(most=8, depth=2, in_flight=0) == 8, "never past the batch's cap"
    # mostly names what the first half names (by account or through a hold passed over)
    lane = Lane()
    first = [_op(("a",), ("h1",)), _op(("b",)), _op(("c",))]
    rest = [_op(holds=("h1",)), _op(("b",)), _op(("free",))]
    lane.put(first + rest)
    assert lane.share(most=256, depth=2, in_flight=0) == 256
    # half of the rest free: halves
    lane = Lane()
    lane.put([_op(("a",)), _op(("b",)), _op(("c",)), _op(("a",)), _op(("x",)), _op(("y",))])
    assert lane.share(most=256, depth=2, in_flight=0) == 3


async def test_alone_an_operation_that_said_nothing_ends_what_a_second_batch_could_take() -> None:
    lane = Lane()
    unsaid = Operation(_action, NOTHING, asyncio.get_running_loop().create_future())
    lane.put([_op(("a",)), _op(("b",)), unsaid, _op(("c",))])
    assert lane.share(most=256, depth=2, in_flight=0) == 256


async def test_an_operation_on_an_account_in_flight_is_passed_over_and_stays_first() -> None:
    lane = Lane()
    on_busy, other, again, third = _op(("busy",)), _op(("b",)), _op(("busy",)), _op(("c",))
    lane.put([on_busy, other, again, third])
    taken = lane.take(10, frozenset({"busy"}))
    assert taken == [other, third]
    assert list(lane.queue) == [on_busy, again], "the passed-over keep their order, first in line"
    assert lane.ready.is_set()
    # once that batch has landed, they go, in the order they arrived
    assert lane.take(10, None) == [on_busy, again]
    assert not lane.ready.is_set()


async def test_what_names_an_account_or_hold_of_one_passed_over_is_passed_over_too() -> None:
    lane = Lane()
    # passed over for "busy", it also names "x" and hold "h1": whatever names those waits too
    first = _op(("busy", "x"), ("h1",))
    on_x, on_h1, free = _op(("x",)), _op(holds=("h1",)), _op(("y",))
    lane.put([first, on_x, on_h1, free])
    assert lane.take(10, frozenset({"busy"})) == [free]
    assert list(lane.queue) == [first, on_x, on_h1]


async def test_an_operation_that_did_not_say_what_it_touches_stops_the_take() -> None:
    lane = Lane()
    ahead, unsaid, behind = _op(("a",)), _op(), _op(("b",))
    assert unsaid.touches == NOTHING
    lane.put([ahead, unsaid, behind])
    assert lane.take(10, frozenset({"busy"})) == [ahead]
    assert list(lane.queue) == [unsaid, behind]


async def test_an_operation_whose_caller_left_is_dropped() -> None:
    lane = Lane()
    gone, kept = _op(("a",)), _op(("b",))
    gone.future.cancel()
    lane.put([gone, kept])
    assert lane.take(10, frozenset({"busy"})) == [kept]
    assert not lane.queue


async def test_it_takes_at_most_what_it_is_asked_and_passes_over_at_most_as_many() -> None:
    lane = Lane()
    lane.put([_op(("busy",)) for _ in range(5)] + [_op((f"a{i}",)) for i in range(5)])
    assert _names(lane.take(3, frozenset({"busy"}))) == []  # five passed over: it stops at three
    assert len(lane.queue) == 10
    assert _names(lane.take(2, frozenset({"other"}))) == [("busy",), ("busy",)]


ACCOUNTS = st.sampled_from(["a", "b", "c"])


@settings(max_examples=200, deadline=None)
@given(
    queued=st.lists(st.lists(ACCOUNTS, min_size=0, max_size=2), max_size=12),
    busy=st.sets(ACCOUNTS, max_size=2),
    most=st.integers(1, 12),
)
@example(queued=[["a", "b"], ["b"]], busy={"a"}, most=5)  # "b" waits behind the one passed over
def test_taking_keeps_every_accounts_order_and_loses_nothing(
    queued: list[list[str]], busy: set[str], most: int
) -> None:
    """Whatever is queued and in flight: every operation is either taken or still queued; none
    taken names an account in flight; and for every account, the operations taken come before
    those still queued, each part in arrival order — as if the batch had taken a prefix of that
    account's arrivals."""

    async def check() -> None:
        lane = Lane()
        ops = [_op(tuple(dict.fromkeys(accounts))) for accounts in queued]
        lane.put(ops)
        taken = lane.take(most, frozenset(busy))
        left = list(lane.queue)
        assert len(taken) <= most
        assert sorted(map(id, taken + left)) == sorted(map(id, ops)), "an operation was lost"
        assert taken == [op for op in ops if op in taken], "taken out of arrival order"
        assert left == [op for op in ops if op in left], "the queue's order changed"
        for op in taken:
            assert busy.isdisjoint(op.touches.accounts), "took one on an account in flight"
        for account in "abc":
            mine = [op for op in ops if account in op.touches.accounts]
            went = [op in taken for op in mine]
            assert went == sorted(went, reverse=True), f"{account}'s operations reordered"

    asyncio.run(check())
