"""Local subscriptions: every subscriber gets its accounts' events exactly once, in seq order.

All subscribers of an account on this instance share one `Feed` whose `head` is the last seq
delivered to them. An event is pushed only when it is `head + 1`; a duplicate (the same event
from the local publish and from Redis) is dropped; a skipped seq is filled from the journal.
A periodic journal check and a resync after a broker reconnect recover events that were
committed but never published (a crash between commit and publish, a lost pub/sub message). The
periodic check asks the journal only which accounts had events since the previous check (minus
`CHECK_OVERLAP`, for commits still in flight and clock skew between instances): its cost follows
the rate of writes, not the number of subscribed accounts, so idle subscribers cost nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson

import metrics
from background.supervision import Backoff, Heartbeat
from realtime.broker import Broker
from realtime.coalesce import Coalescer

log = logging.getLogger("creditstream.hub")
REPLAY_PAGE = 500
REPLAY_PATIENCE_S = 5.0
STOP_PATIENCE_S = 5.0
POLL_BACKOFF_CAP_S = 5.0  # the journal check, while the database is down
POLL_STUCK_S = 60.0  # one check waits for the database at most its own timeouts
# an event becomes visible at its commit, after its created_at (the writer's clock): every check
# looks this far back before the previous one, so a late commit or a skewed clock is still seen
CHECK_OVERLAP = timedelta(seconds=2)


class EventJournal(Protocol):
    """What the hub reads from the database (implemented in storage/journal.py)."""

    async def events_after(self, account_id: str, after_seq: int,
                           limit: int) -> list[dict[str, Any]]: ...

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


def _observe_latency(event: dict[str, Any]) -> None:
    at = event.get("at")
    if isinstance(at, str):
        committed = datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
        metrics.PUSH_LATENCY.observe(max(0.0, time.time() - committed))


def _dump(message: dict[str, Any]) -> str:
    try:
        return orjson.dumps(message).decode()
    except orjson.JSONEncodeError:  # what orjson refuses (a lone surrogate) json escapes
        return json.dumps(message, separators=(",", ":"))


class Hub:
    def __init__(self, journal: EventJournal, broker: Broker, poll_interval_s: float = 0.5,
                 on_deliver: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.journal = journal
        self.broker = broker
        self.poll_interval_s = poll_interval_s
        self.feeds: dict[str, Feed] = {}
        self.on_deliver = on_deliver
        self._poller: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.journal_check = Heartbeat("journal-check", POLL_STUCK_S)
        self.gap_fill = Heartbeat("gap-fill")  # not a task: counts fills left to the check
        self._checked_from: datetime | None = None  # the journal check's next window starts here
        # the one read of a subscribe (an account's state and head), many subscribes per query
        self.states: Coalescer[dict[str, Any]] = Coalescer(journal.snapshots)

    @property
    def heartbeats(self) -> list[Heartbeat]:
        """The supervised background tasks of live push: the journal check and the broker's."""
        return [self.journal_check, *self.broker.heartbeats]

    async def start(self) -> None:
        self._checked_from = self.journal.now()
        await self.broker.start(self.on_message, self.resync)
        self._poller = self.journal_check.watch(
            asyncio.create_task(self._poll_forever(), name="hub-poller"))

    async def stop(self) -> None:
        self.journal_check.stopping = True
        self._stopping.set()  # let a resync in progress finish rather than cancel its query
        if self._poller is not None:
            try:
                await asyncio.wait_for(self._poller, STOP_PATIENCE_S)
            except TimeoutError:
                pass  # wait_for has cancelled it
        await self.broker.stop()

    # -- subscribing --------------------------------------------------------------------------

    async def subscribe(self, account_id: str, sink: Sink,
                        after_seq: int | None) -> Subscription:
        """Send `subscribed`, then the replay (or a snapshot), then live events, in order."""
        feed, state = await self._feed(account_id)
        subscription = Subscription(account_id, sink)
        async with feed.lock:
            sink.offer(_dump({"type": "subscribed", "account_id": account_id, "seq": feed.head}))
            try:
                if after_seq is None or after_seq > feed.head:
                    subscription.skip_through = await self._send_snapshot(
                        feed, sink, reset=after_seq is not None, state=state)
                else:
                    await self._replay(feed, sink, after_seq)
            except Exception:  # the database is down: leave no feed nobody uses behind
                await self._drop_if_unused(feed)
                raise
            feed.subscriptions.add(subscription)
            metrics.SUBSCRIPTIONS.inc()
            if self.feeds.get(account_id) is not feed:  # the feed was dropped meanwhile
                self.feeds[account_id] = feed
                await self.broker.subscribe(account_id)
        return subscription

    async def unsubscribe(self, subscription: Subscription) -> None:
        feed = self.feeds.get(subscription.account_id)
        if feed is None:
            return
        if subscription in feed.subscriptions:
            feed.subscriptions.discard(subscription)
            metrics.SUBSCRIPTIONS.dec()
        await self._drop_if_unused(feed)

    async def wait_beyond(self, account_id: str, seq: int, timeout_s: float) -> None:
        """Return once the account's stream passes `seq`, or after the timeout (long-poll)."""
        feed, _ = await self._feed(account_id)
        if feed.head > seq:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        feed.waiters.add(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except TimeoutError:
            pass
        finally:
            feed.waiters.discard(waiter)
            await self._drop_if_unused(feed)

    def release_waiters(self) -> None:
        """End every long-poll now (on shutdown): each answers with what it has."""
        for feed in self.feeds.values():
            for waiter in feed.waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _drop_if_unused(self, feed: Feed) -> None:
        if feed.subscriptions or feed.waiters or self.feeds.get(feed.account_id) is not feed:
            return
        self.feeds.pop(feed.account_id, None)
        await self.broker.unsubscribe(feed.account_id)

    async def _feed(self, account_id: str) -> tuple[Feed, State | None]:
        """The account's feed; and when this call made it, the state it read for its head."""
        feed = self.feeds.get(account_id)
        if feed is not None:
            return feed, None
        # subscribe before reading the head: an event committed in between arrives either in
        # the journal read or as a message, and the seq check drops the duplicate
        await self.broker.subscribe(account_id)
        try:
            state = State(await self.states.get(account_id))
        except Exception:
            if account_id not in self.feeds:
                await self.broker.unsubscribe(account_id)
            raise
        return self.feeds.setdefault(account_id, Feed(account_id, state.seq)), state

    async def _send_snapshot(self, feed: Feed, sink: Sink, reset: bool,
                             state: State | None = None) -> int:
        """Send the account's state; returns the seq it covers. A state read before the feed's
        lock was taken stands unless events went by meanwhile."""
        if state is None or state.seq < feed.head:
            state = State(await self.states.get(feed.account_id))
        account = state.account
        if account is not None and account["seq"] > feed.head:
            await self._fill(feed)
        seq = feed.head if account is None else account["seq"]
        message: dict[str, Any] = {"type": "snapshot", "account_id": feed.account_id,
                                   "account": account, "seq": seq}
        if reset:
            message["reset"] = True
        sink.offer(_dump(message))
        return seq

    async def _replay(self, feed: Feed, sink: Sink, after_seq: int) -> None:
        cursor = after_seq
        while cursor < feed.head:
            page = await self.journal.events_after(feed.account_id, cursor, REPLAY_PAGE)
            page = [e for e in page if e["seq"] <= feed.head]
            if not page:
                break
            for event in page:
                await sink.wait_for_room(1, REPLAY_PATIENCE_S)
                if not sink.offer(_dump(event)):
                    return
            cursor = page[-1]["seq"]

    # -- delivering ---------------------------------------------------------------------------

    async def on_message(self, account_id: str, text: str) -> None:
        """An event from the local publish or from the broker."""
        feed = self.feeds.get(account_id)
        if feed is None:
            return
        try:
            event = orjson.loads(text)
            seq = int(event["seq"])
        except (ValueError, KeyError, TypeError):
            log.warning("dropping a malformed broker message for %s", account_id)
            return
        if seq <= feed.head:
            return
        async with feed.lock:
            if seq == feed.head + 1:
                self._push(feed, seq, text)
                _observe_latency(event)
            elif seq > feed.head + 1:
                try:
                    await self._fill(feed)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # the database is down: neither the Redis listener nor the publishing
                    # request may fail for it; the journal check fills the gap once it is back
                    self.gap_fill.failed(exc, f"filling a gap of {account_id} before seq {seq}")

    async def publish_local(self, events: list[dict[str, Any]]) -> None:
        """Deliver committed events on this instance and hand them to the broker for the rest."""
        for event in events:
            text = _dump(event)
            metrics.EVENTS_PUBLISHED.inc()
            self.broker.publish(event["account_id"], text)
            await self.on_message(event["account_id"], text)

    async def resync(self) -> None:
        """Bring every local feed up to the journal's head."""
        if not self.feeds:
            return
        heads = await self.journal.heads(list(self.feeds))
        for account_id, head in heads.items():
            feed = self.feeds.get(account_id)
            if feed is not None and head > feed.head:
                async with feed.lock:
                    await self._fill(feed)

    async def check_journal(self) -> None:
        """Catch up every local feed whose account had an event since the last check."""
        started = self.journal.now()
        since = (started if self._checked_from is None else self._checked_from) - CHECK_OVERLAP
        moved = await self.journal.moved_since(since) if self.feeds else {}
        for account_id, head in moved.items():
            feed = self.feeds.get(account_id)
            if feed is not None and head > feed.head:
                async with feed.lock:
                    await self._fill(feed)
        self._checked_from = started  # only once it succeeded: a failed check is retried whole

    async def _fill(self, feed: Feed) -> None:
        while True:
            page = await self.journal.events_after(feed.account_id, feed.head, REPLAY_PAGE)
            for event in page:
                if event["seq"] == feed.head + 1:
                    self._push(feed, event["seq"], _dump(event))
                    metrics.EVENTS_FILLED.inc()
            if len(page) < REPLAY_PAGE:
                return

    def _push(self, feed: Feed, seq: int, text: str) -> None:
        feed.head = seq
        for subscription in list(feed.subscriptions):
            if seq > subscription.skip_through and subscription.sink.offer(text):
                metrics.EVENTS_DELIVERED.inc()
        for waiter in feed.waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self.on_deliver is not None:
            self.on_deliver({"account_id": feed.account_id, "seq": seq,
                             "subscribers": len(feed.subscriptions)})

    async def _poll_forever(self) -> None:
        """The periodic journal check; while it fails (the database is down) it backs off up to
        POLL_BACKOFF_CAP_S, and the first success after that catches every feed up."""
        backoff = Backoff(self.poll_interval_s, POLL_BACKOFF_CAP_S)
        wait = self.poll_interval_s
        while not self._stopping.is_set():
            self.journal_check.beat()
            try:
                await asyncio.wait_for(self._stopping.wait(), wait)
                return
            except TimeoutError:
                pass
            try:
                await self.check_journal()
                self.journal_check.succeeded()
                backoff.reset()
                wait = self.poll_interval_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.journal_check.failed(exc, "checking the journal heads")
                wait = backoff.next_delay()
