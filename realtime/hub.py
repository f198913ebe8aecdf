"""Local subscriptions: every subscriber gets its accounts' events exactly once, in seq order.

All subscribers of an account on this instance share one `Feed` whose `head` is the last seq
delivered to them. An event is pushed only when it is `head + 1`; a duplicate (the same event
from the local publish and from Redis) is dropped; a skipped seq is filled from the journal.
A periodic journal check (realtime/journal_check.py) and a resync after a broker reconnect
recover events that were committed but never published (a crash between commit and publish, a
lost pub/sub message): both hand the hub the journal's heads, and it fills the feeds behind them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson

import metrics
from background.supervision import Heartbeat
from realtime.broker import Broker
from realtime.coalesce import Coalescer
from realtime.feeds import EventJournal, Feed, Sink, State, Subscription, dump, observe_latency
from realtime.journal_check import JournalCheck

log = logging.getLogger("creditstream.hub")
REPLAY_PAGE = 500
REPLAY_PATIENCE_S = 5.0


class Hub:
    def __init__(
        self,
        journal: EventJournal,
        broker: Broker,
        poll_interval_s: float = 0.5,
        on_deliver: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.journal = journal
        self.broker = broker
        self.feeds: dict[str, Feed] = {}
        self._joining: dict[str, int] = {}  # account → subscribes and long-polls on their way in
        self.on_deliver = on_deliver
        self.journal_checker = JournalCheck(
            journal, self.catch_up, lambda: bool(self.feeds), poll_interval_s
        )
        self.journal_check = self.journal_checker.heartbeat
        self.gap_fill = Heartbeat("gap-fill")  # not a task: counts fills left to the check
        # the one read of a subscribe (an account's state and head), many subscribes per query
        self.states: Coalescer[dict[str, Any]] = Coalescer(journal.snapshots)

    @property
    def heartbeats(self) -> list[Heartbeat]:
        """The supervised background tasks of live push: the journal check and the broker's."""
        return [self.journal_check, *self.broker.heartbeats]

    async def start(self) -> None:
        window_from = self.journal.now()
        await self.broker.start(self.on_message, self.resync)
        self.journal_checker.start(window_from)

    async def stop(self) -> None:
        await self.journal_checker.stop()
        await self.broker.stop()

    # -- subscribing --------------------------------------------------------------------------

    async def subscribe(self, account_id: str, sink: Sink, after_seq: int | None) -> Subscription:
        """Send `subscribed`, then the replay (or a snapshot), then live events, in order."""
        async with self._joined(account_id) as (feed, state):
            subscription = Subscription(account_id, sink)
            async with feed.lock:
                sink.offer(dump({"type": "subscribed", "account_id": account_id, "seq": feed.head}))
                if after_seq is None or after_seq > feed.head:
                    subscription.skip_through = await self._send_snapshot(
                        feed, sink, reset=after_seq is not None, state=state
                    )
                elif not await self._replay(feed, sink, after_seq):
                    # the journal no longer holds the events after `after_seq` (past its
                    # retention window): the whole state instead, which replaces the client's
                    subscription.skip_through = await self._send_snapshot(
                        feed, sink, reset=True, state=state
                    )
                feed.subscriptions.add(subscription)
                metrics.SUBSCRIPTIONS.inc()
        return subscription

    async def unsubscribe(self, subscription: Subscription) -> None:
        feed = self.feeds.get(subscription.account_id)
        if feed is None:
            return
        if subscription in feed.subscriptions:
            feed.subscriptions.discard(subscription)
            metrics.SUBSCRIPTIONS.dec()
        await self._release(subscription.account_id)

    async def wait_beyond(self, account_id: str, seq: int, timeout_s: float) -> None:
        """Return once the account's stream passes `seq`, or after the timeout (long-poll)."""
        async with self._joined(account_id) as (feed, _):
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
            await self._release(account_id)

    def release_waiters(self) -> None:
        """End every long-poll now (on shutdown): each answers with what it has."""
        for feed in self.feeds.values():
            for waiter in feed.waiters:
                if not waiter.done():
                    waiter.set_result(None)

    @asynccontextmanager
    async def _joined(self, account_id: str) -> AsyncIterator[tuple[Feed, State | None]]:
        """The account's feed (and when this call made it, the state read for its head), kept
        with its channel subscribed while the caller joins it. However the caller ends — a
        failure, or cancelled because its client left mid-subscribe — no feed and no channel
        nobody uses stays behind; and a subscriber leaving meanwhile drops neither."""
        self._joining[account_id] = self._joining.get(account_id, 0) + 1
        try:
            yield await self._feed(account_id)
        finally:
            left = self._joining.pop(account_id) - 1
            if left:
                self._joining[account_id] = left
            await self._release(account_id)

    async def _release(self, account_id: str) -> None:
        """Drop the account's feed and its channel once nothing uses or joins it."""
        if self._joining.get(account_id):
            return
        feed = self.feeds.get(account_id)
        if feed is not None:
            if feed.subscriptions or feed.waiters:
                return
            del self.feeds[account_id]
        await self.broker.unsubscribe(account_id)

    async def _feed(self, account_id: str) -> tuple[Feed, State | None]:
        """The account's feed; and when this call made it, the state it read for its head."""
        feed = self.feeds.get(account_id)
        if feed is not None:
            return feed, None
        # subscribe before reading the head: an event committed in between arrives either in
        # the journal read or as a message, and the seq check drops the duplicate
        await self.broker.subscribe(account_id)
        state = State(await self.states.get(account_id))
        return self.feeds.setdefault(account_id, Feed(account_id, state.seq)), state

    async def _send_snapshot(
        self, feed: Feed, sink: Sink, reset: bool, state: State | None = None
    ) -> int:
        """Send the account's state; returns the seq it covers. A state read before the feed's
        lock was taken stands unless events went by meanwhile."""
        if state is None or state.seq < feed.head:
            state = State(await self.states.get(feed.account_id))
        account = state.account
        if account is not None and account["seq"] > feed.head:
            await self._fill(feed)
        seq = feed.head if account is None else account["seq"]
        message: dict[str, Any] = {
            "type": "snapshot",
            "account_id": feed.account_id,
            "account": account,
            "seq": seq,
        }
        if reset:
            message["reset"] = True
        sink.offer(dump(message))
        return seq

    async def _replay(self, feed: Feed, sink: Sink, after_seq: int) -> bool:
        """Send the journal's events after `after_seq` up to the feed's head. False when one is
        missing (pruned past the retention window): nothing after the gap is sent."""
        cursor = after_seq
        while cursor < feed.head:
            page = await self.journal.events_after(feed.account_id, cursor, REPLAY_PAGE)
            page = [e for e in page if e["seq"] <= feed.head]
            if not page:
                return False  # the head is ahead of `cursor`, yet no event is left after it
            for event in page:
                if event["seq"] != cursor + 1:
                    return False
                await sink.wait_for_room(1, REPLAY_PATIENCE_S)
                if not sink.offer(dump(event)):
                    return True  # overflowed: the connection closes and the client resumes
                cursor = event["seq"]
        return True

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
                observe_latency(event)
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
            text = dump(event)
            metrics.EVENTS_PUBLISHED.inc()
            self.broker.publish(event["account_id"], text)
            await self.on_message(event["account_id"], text)

    async def resync(self) -> None:
        """Bring every local feed up to the journal's head."""
        if not self.feeds:
            return
        await self.catch_up(await self.journal.heads(list(self.feeds)))

    async def check_journal(self) -> None:
        """Catch up every local feed whose account had an event since the last check."""
        await self.journal_checker.check()

    async def _fill(self, feed: Feed) -> None:
        while True:
            page = await self.journal.events_after(feed.account_id, feed.head, REPLAY_PAGE)
            for event in page:
                if event["seq"] == feed.head + 1:
                    self._push(feed, event["seq"], dump(event))
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
            self.on_deliver(
                {"account_id": feed.account_id, "seq": seq, "subscribers": len(feed.subscriptions)}
            )

    async def catch_up(self, heads: dict[str, int]) -> None:
        """Fill every local feed that is behind the head the journal gave for its account."""
        for account_id, head in heads.items():
            feed = self.feeds.get(account_id)
            if feed is not None and head > feed.head:
                async with feed.lock:
                    await self._fill(feed)
