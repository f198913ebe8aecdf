"""Redis pub/sub between instances: batched (UN)SUBSCRIBEs and a supervised listener that
reconnects, resubscribes and resyncs; the publishing side is realtime/redis_publishing.py. The
Redis Cluster variant, sharded pub/sub, is realtime/redis_cluster.py.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

import metrics
from background.supervision import Backoff, Heartbeat
from realtime.broker import CHANNEL_PREFIX, OnMessage, OnResync, channel_for
from realtime.redis_publishing import OUTBOX_SIZE, RedisPublishing

log = logging.getLogger("creditstream.broker")

# the listener beats at least once a second while connected (get_message's timeout), and
# every reconnect attempt; a resync waits for the database at most its own timeouts
LISTENER_STUCK_S = 30.0

# At most one (UN)SUBSCRIBE per this many seconds; what changes meanwhile waits for the next.
# In a connect storm the subscribes a command releases together also read their snapshots in
# one query (realtime/coalesce.py): 10,000 subscribers over two instances on uvloop took ~3,100
# commands and ~2,360 snapshot reads of 4 accounts each without the wait, ~340 of each with it
# (29 accounts a read), and the servers' CPU per connection fell from 0.70 to 0.47 ms.
SUBSCRIBE_LINGER_S = 0.02


class RedisBroker(RedisPublishing):
    """Redis pub/sub with a supervised listener that reconnects, resubscribes and resyncs.
    For a `redis+cluster://` URL use `RedisClusterBroker` (realtime/redis_cluster.py);
    `realtime.brokers.broker_for` picks between them."""

    def __init__(self, url: str, drop_first_publish: bool = False) -> None:
        self.url = url
        self.state = "starting"
        self.reconnects = 0
        self.published = 0
        self.publish_failures = 0
        self._channels: set[str] = set()  # wanted: every local feed's channel
        self._changed: set[str] = set()  # wanted or unwanted since the last SUBSCRIBE went out
        self._flusher: asyncio.Task[None] | None = None  # sends `_changed`, while there is any
        self._batch_sent: asyncio.Future[None] | None = None  # done once `_changed` went out
        self._outbox = asyncio.Queue(OUTBOX_SIZE)
        self._drop_next_publish = drop_first_publish  # fault injection for the gap-fill tests
        self._client: aioredis.Redis | None = None
        self._pubsub: aioredis.client.PubSub | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._on_message: OnMessage | None = None
        self._on_resync: OnResync | None = None
        self._write_lock = asyncio.Lock()
        self._last_flush = -SUBSCRIBE_LINGER_S  # when the last batch of changes went out
        self.listener = Heartbeat("redis-listener", LISTENER_STUCK_S)
        self.publisher = Heartbeat("redis-publisher")  # idles while nothing is published
        self.heartbeats = [self.listener, self.publisher]

    async def start(self, on_message: OnMessage, on_resync: OnResync) -> None:
        self._on_message, self._on_resync = on_message, on_resync
        # no hidden retries inside redis-py: the listener below owns reconnection and resync
        self._client = aioredis.Redis.from_url(
            self.url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=1.0,
            socket_timeout=2.0,
            health_check_interval=5,
        )
        self._tasks = [
            self.listener.watch(asyncio.create_task(self._listen_forever(), name="redis-listener")),
            self.publisher.watch(
                asyncio.create_task(self._publish_forever(), name="redis-publisher")
            ),
        ]

    async def stop(self) -> None:
        for heartbeat in self.heartbeats:
            heartbeat.stopping = True
        tasks = [*self._tasks, *([self._flusher] if self._flusher is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._drop_changes()
        await self._close_pubsub()
        if self._client is not None:
            await self._client.aclose()
        self.state = "stopped"

    async def subscribe(self, account_id: str) -> None:
        channel = channel_for(account_id)
        self._channels.add(channel)
        await self._send_subscription(channel)

    async def unsubscribe(self, account_id: str) -> None:
        channel = channel_for(account_id)
        self._channels.discard(channel)
        await self._send_subscription(channel)

    async def ping(self) -> None:
        if self._client is None:
            raise ConnectionError("broker not started")
        await asyncio.wait_for(self._client.ping(), timeout=1.0)

    async def _send_subscription(self, channel: str) -> None:
        """Channels changed while a SUBSCRIBE is on its way, or within SUBSCRIBE_LINGER_S of
        the last one, go out together in the next one (and one UNSUBSCRIBE): a reconnect storm
        of thousands of subscribers costs a few commands, not one each. Each channel goes out
        as `_channels` wants it then, so a subscribe and an unsubscribe of one channel in quick
        succession end as the last said.

        The commands go out from a task of the broker's own, which the caller only waits for:
        a caller cancelled half-way (a client gone in the middle of its subscribe) took the
        whole batch with it, and an UNSUBSCRIBE of its batch never sent kept that channel
        subscribed for good, with nobody listening."""
        self._changed.add(channel)
        if not self._subscribed_mode():
            return  # the listener subscribes to every wanted channel when it (re)connects
        if self._batch_sent is None:
            self._batch_sent = asyncio.get_running_loop().create_future()
        sent = self._batch_sent  # this channel's batch: later ones are not waited for
        self._flush_soon()
        await asyncio.shield(sent)

    def _subscribed_mode(self) -> bool:
        return self._pubsub is not None and self.state == "connected"

    def _drop_changes(self) -> None:
        """Forget the pending changes (a (re)connect subscribes to all of `_channels`, or the
        broker stops), and let whoever waits for their batch go on."""
        self._changed.clear()
        sent, self._batch_sent = self._batch_sent, None
        if sent is not None and not sent.done():
            sent.set_result(None)

    def _flush_soon(self) -> asyncio.Task[None]:
        """The task sending `_changed`; it starts on the next turn of the loop, so the changes
        of this turn go out together."""
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_changes(), name="redis-subscriptions")
        return self._flusher

    async def _flush_changes(self) -> None:
        loop = asyncio.get_running_loop()
        while self._changed:
            # a lone change goes out at once; within SUBSCRIBE_LINGER_S of the last command the
            # changes gather for the next one
            wait = self._last_flush + SUBSCRIBE_LINGER_S - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_flush = loop.time()
            async with self._write_lock:
                changed, self._changed = self._changed, set()
                sent, self._batch_sent = self._batch_sent, None
                try:
                    if self._subscribed_mode():  # else the (re)connect subscribes all wanted
                        await self._send_changes(
                            sorted(c for c in changed if c in self._channels),
                            sorted(c for c in changed if c not in self._channels),
                        )
                finally:
                    if sent is not None and not sent.done():
                        sent.set_result(None)

    async def _send_changes(self, wanted: list[str], unwanted: list[str]) -> None:
        assert self._pubsub is not None
        try:
            if wanted:
                await self._pubsub.subscribe(*wanted)
            if unwanted:
                await self._pubsub.unsubscribe(*unwanted)
        except (RedisError, OSError):
            # the connection is going: the listener's next round subscribes what is wanted
            log.warning(
                "redis subscribe of %d / unsubscribe of %d channels failed; the "
                "listener will retry",
                len(wanted),
                len(unwanted),
            )

    async def _listen_forever(self) -> None:
        """Connect, resync, read; on any error reconnect after a backoff. Only cancellation
        ends it: errors of the hub's handlers (the database down during a gap fill or the
        resync) are caught where they happen and never take the listener down."""
        backoff = Backoff(0.1, 5.0)
        while True:
            self.listener.beat()
            try:
                await self._connect()
                backoff.reset()
                await self._read_messages()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, RuntimeError) as exc:
                if self.state == "connected":
                    log.warning("redis listener lost its connection: %r", exc)
            except Exception as exc:  # a bug, not Redis: count it and start a fresh round
                self.listener.failed(exc, "a round of listening")
            self.state = "disconnected"
            metrics.REDIS_CONNECTED.set(0)
            await self._close_pubsub()
            await asyncio.sleep(backoff.next_delay())

    async def _connect(self) -> None:
        assert self._client is not None
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        async with self._write_lock:
            self._drop_changes()  # all of `_channels` goes out now; what changes meanwhile
            # is sent once connected. A placeholder channel keeps the connection in subscribed
            # mode while no account is subscribed
            await pubsub.subscribe(CHANNEL_PREFIX + "_", *self._channels)
        self._pubsub = pubsub
        await self._connected()

    async def _connected(self) -> None:
        """Subscribed again: count a reconnect and resync the hub from the journal."""
        first = self.state == "starting"
        self.state = "connected"
        metrics.REDIS_CONNECTED.set(1)
        if self._changed:  # subscribes and unsubscribes made while connecting
            self._flush_soon()
        if not first:
            self.reconnects += 1
            metrics.REDIS_RECONNECTS.inc()
            log.info("redis listener reconnected; resyncing subscribers from the journal")
        if self._on_resync is not None:
            try:
                await self._on_resync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # the database is down: the hub's periodic journal check catches the subscribers
                # up once it is back; meanwhile live messages flow again
                self.listener.failed(exc, "the resync after connecting")

    async def _read_messages(self) -> None:
        assert self._pubsub is not None and self._on_message is not None
        while True:
            self.listener.beat()
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None or message.get("type") != "message":
                continue
            await self._hand_over(text_of(message["channel"]), message["data"])

    async def _hand_over(self, channel: str, data: bytes | str) -> None:
        """One message to the hub; a failure is counted, never the end of the listener."""
        assert self._on_message is not None
        try:
            await self._on_message(channel[len(CHANNEL_PREFIX) :], text_of(data))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the message is in the journal: the journal check has it
            self.listener.failed(exc, f"handling a message on {channel}")

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # unannotated before redis 8.2
            except (RedisError, OSError):
                pass


def text_of(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
