"""A write lane's queue and the batches it has in flight: what the next batch takes, and what
each batch in flight tells the lane (storage/writes/writer.py runs them)."""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any

from storage.writes.batch import Touches
from storage.writes.begun import BegunConnections
from storage.writes.transaction import Operation


class Lane:
    """One write connection's queue: what arrives while its batch is in flight is its next."""

    def __init__(self) -> None:
        self.queue: collections.deque[Operation] = collections.deque()
        self.ready = asyncio.Event()
        # PostgreSQL: its connections, kept with a transaction begun between batches
        self.connections: BegunConnections | None = None

    def put(self, ops: Iterable[Operation], first: bool = False) -> None:
        if first:
            self.queue.extendleft(reversed(list(ops)))
        else:
            self.queue.extend(ops)
        self.ready.set()

    def share(self, most: int, depth: int, in_flight: int) -> int:
        """How many the next batch takes, when `depth` batches may fly at once and those in
        flight hold `in_flight` operations.

        Beside batches in flight: its even share of all that waits or flies, at most. Callers
        in a closed loop come back in the groups their batches answered, so a batch that took
        all that waits beside a small one in flight would keep the two lopsided for good (one
        of 60 beside one of 4, which lands first and then waits to answer after the big one):
        the lane back to one batch at a time taking turns with the database. What is left waits
        for the next slot, in line.

        Alone: all that waits, unless a second batch may start — then half, so that the two
        can overlap (a burst or a closed loop of callers would otherwise stay one batch taking
        turns with the database). Half only when a second batch could take at least half of
        the rest while the first flies: what names the first half's accounts (one hot
        account's burst) would only wait for it, in a batch of half the size."""
        if depth <= 1:
            return most
        if in_flight:
            return min(most, max(1, -(-(len(self.queue) + in_flight) // depth)))
        half = min(most, max(1, (len(self.queue) + 1) // 2))
        rest = min(most, len(self.queue)) - half
        if rest <= 0:
            return most
        first = _Blocked(frozenset())
        for op in itertools.islice(self.queue, half):
            first.add(op.touches)
        takeable = 0
        for op in itertools.islice(self.queue, half, half + rest):
            touches = op.touches
            if not touches.said:
                break  # a second batch stops before it
            if not first.passes_over(touches):
                takeable += 1
        return half if takeable * 2 >= rest else most

    def take(self, most: int, busy: frozenset[str] | None = None) -> list[Operation]:
        """Up to `most`, in arrival order. While batches are in flight (`busy`, the accounts
        they touch; None when there is none) an operation that names one of those accounts is
        passed over and stays first in line: it would wait in this batch for that one's row
        locks and make the two take turns again. Whatever names an account, hold or job of an
        operation passed over is passed over too, so an account's operations still apply in
        the order they arrived; operations on other accounts go ahead, as they would have if
        they had arrived a moment sooner (all of them are waiting, none answered). While a
        batch is in flight the lane stops before an operation that did not say what it touches:
        such an operation reads before it locks (the charge a refund names, say), and would
        miss what the batch in flight is about to commit."""
        if busy is None:
            return self._take_in_order(most)
        ops: list[Operation] = []
        passed: list[Operation] = []
        blocked = _Blocked(busy)
        queue = self.queue
        while queue and len(ops) < most and len(passed) < most:
            op = queue[0]
            touches = op.touches
            if not touches.said:
                break
            queue.popleft()
            if op.future.done():  # its caller went away before it ran
                continue
            (passed if blocked.passes_over(touches) else ops).append(op)
        queue.extendleft(reversed(passed))
        if not queue:
            self.ready.clear()
        return ops

    def _take_in_order(self, most: int) -> list[Operation]:
        ops: list[Operation] = []
        queue = self.queue
        while queue and len(ops) < most:
            op = queue.popleft()
            if not op.future.done():  # its caller went away before it ran
                ops.append(op)
        if not queue:
            self.ready.clear()
        return ops


class _Blocked:
    """What an operation must not name to join the next batch: the accounts of the batches in
    flight, and everything an operation passed over names."""

    __slots__ = ("accounts", "holds", "jobs")

    def __init__(self, busy: frozenset[str]) -> None:
        self.accounts: set[str] = set(busy)
        self.holds: set[str] = set()
        self.jobs: set[str] = set()

    def names(self, touches: Touches) -> bool:
        return not (
            self.accounts.isdisjoint(touches.accounts)
            and self.holds.isdisjoint(touches.holds)
            and self.jobs.isdisjoint(touches.jobs)
        )

    def passes_over(self, touches: Touches) -> bool:
        """Whether an operation touching `touches` must wait; if so, what it names waits too."""
        if self.names(touches):
            self.add(touches)
            return True
        return False

    def add(self, touches: Touches) -> None:
        self.accounts.update(touches.accounts)
        self.holds.update(touches.holds)
        self.jobs.update(touches.jobs)


@dataclass(eq=False)
class Flight:
    """One batch in flight: `applied` once it waits on the database (the lane may start the next
    then); it answers its callers only after the batch before it answered its own, so an
    account's events reach the broker in the order of its commits. `accounts` are those its
    operations named, and from `applied` on also those it locked for the holds and jobs they
    named: the next batch passes over what names them."""

    before: asyncio.Future[None] | None
    accounts: frozenset[str]
    connections: BegunConnections | None = None  # its lane's
    size: int = 0  # its operations
    applied: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def locked(self, accounts: frozenset[str]) -> None:
        """`run_batch`'s `applied`: the operations are applied, holding these accounts' locks."""
        self.accounts = self.accounts | accounts
        self.applied.set()


def landed(flights: list[Flight], flight: Flight, _: object) -> None:
    """A done-callback of a flight's task: it is no longer in flight."""
    flights.remove(flight)


async def first_of(wait: Awaitable[Any], tasks: set[asyncio.Task[None]]) -> None:
    """Until `wait` is done or one of `tasks` is."""
    waiting = asyncio.ensure_future(wait)
    try:
        await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()


async def set_within(event: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True
