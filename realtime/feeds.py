"""What live push is made of: the journal it reads (a Protocol that storage/journal.py
implements), the subscribers' sinks, a subscription, and the `Feed` all subscribers of one
account on this instance share; and how an event becomes the text sent to them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

import metrics


class EventJournal(Protocol):
    """What the hub reads from the database (implemented in storage/journal.py)."""

    async def events_after(
        self, account_id: str, after_seq: int, limit: int
    ) -> list[dict[str, Any]]: ...

    async def heads(self, account_ids: list[str]) -> dict[str, int]: ...

    async def snapshots(self, account_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The state of each existing account (its snapshot, whose `seq` is its head)."""
        ...

    def now(self) -> datetime: ...

    async def moved_since(self, since: datetime) -> dict[str, int]:
        """The accounts with events created at or after `since`, and their last seq."""
        ...


class Sink(Protocol):
    """A connection's outgoing side: a bounded queue that reports overflow."""

    def offer(self, text: str) -> bool: ...

    async def wait_for_room(self, count: int, timeout_s: float) -> None: ...


class QueueSink:
    def __init__(self, maxsize: int, on_overflow: Callable[[], None]) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize)
        self.overflowed = False
        self._on_overflow = on_overflow

    async def wait_for_room(self, count: int, timeout_s: float) -> None:
        """Let a long replay proceed at the client's pace instead of overflowing at once."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        room = min(count, self.queue.maxsize)
        while self.queue.maxsize - self.queue.qsize() < room:
            if asyncio.get_running_loop().time() > deadline or self.overflowed:
                return
            await asyncio.sleep(0.005)

    def offer(self, text: str) -> bool:
        if self.overflowed:
            return False
        try:
            self.queue.put_nowait(text)
            return True
        except asyncio.QueueFull:
            self.overflowed = True
            self._on_overflow()
            return False


@dataclass(eq=False)
class Subscription:
    account_id: str
    sink: Sink
    skip_through: int = 0  # a snapshot already covered the events up to this seq


@dataclass(eq=False)
class Feed:
    account_id: str
    head: int
    subscriptions: set[Subscription] = field(default_factory=set)
    waiters: set[asyncio.Future[None]] = field(default_factory=set)  # long-polls
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class State:
    """An account's state as read from the journal; None when there is no such account."""

    account: dict[str, Any] | None

    @property
    def seq(self) -> int:
        return 0 if self.account is None else int(self.account["seq"])


def observe_latency(event: dict[str, Any]) -> None:
    at = event.get("at")
    if isinstance(at, str):
        committed = datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
        metrics.PUSH_LATENCY.observe(max(0.0, time.time() - committed))


def dump(message: dict[str, Any]) -> str:
    try:
        return orjson.dumps(message).decode()
    except orjson.JSONEncodeError:  # what orjson refuses (a lone surrogate) json escapes
        return json.dumps(message, separators=(",", ":"))
