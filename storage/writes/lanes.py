"""A write lane's queue and the batches it has in flight: what the next batch takes, and what
each batch in flight tells the lane (storage/writes/writer.py runs them)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable
from dataclasses import dataclass, field

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

    def share(self, alone: bool, most: int) -> int:
        """How many the next batch takes: all that waits, unless no other batch is in flight
        and a second may start — then half, so that the two can overlap (a burst or a closed
        loop of callers would otherwise stay one batch taking turns with the database)."""
        if alone:
            return min(most, max(1, (len(self.queue) + 1) // 2))
        return most

    def take(self, most: int, busy: frozenset[str] | None = None) -> list[Operation]:
        """Up to `most`, in arrival order, stopping before the first that names an account of a
        batch in flight (`busy`, the accounts of the batches in flight; None when there is
        none): it would wait in this batch for that one's row locks and make the two take turns
        again. While a batch is in flight it also stops before one that did not say what it
        touches: such an operation reads before it locks (the charge a refund names, say), and
        would miss what the batch in flight is about to commit. Nothing is passed over, so
        batches apply what arrived in the order it arrived, as one batch would."""
        ops: list[Operation] = []
        while self.queue and len(ops) < most:
            op = self.queue[0]
            touches = op.touches
            if busy is not None and not (touches.said and busy.isdisjoint(touches.accounts)):
                break
            self.queue.popleft()
            if not op.future.done():  # its caller went away before it ran
                ops.append(op)
        if not self.queue:
            self.ready.clear()
        return ops


@dataclass(eq=False)
class Flight:
    """One batch in flight: `applied` once it waits on the database (the lane may start the next
    then); it answers its callers only after the batch before it answered its own, so an
    account's events reach the broker in the order of its commits."""

    before: asyncio.Future[None] | None
    accounts: frozenset[str]
    connections: BegunConnections | None = None  # its lane's
    applied: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def landed(flights: list[Flight], flight: Flight, _: object) -> None:
    """A done-callback of a flight's task: it is no longer in flight."""
    flights.remove(flight)
