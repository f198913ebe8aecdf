"""The publishing side of the Redis brokers: messages queue in a bounded outbox and go out in
pipelined batches, retried on a fresh connection after a Redis restart; what still fails is
counted and left to the journal check of the instances that miss it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from background.supervision import Heartbeat
from realtime.broker import channel_for

log = logging.getLogger("creditstream.broker")

OUTBOX_SIZE = 50_000
PUBLISH_BATCH = 200
PUBLISH_RETRY_PAUSES_S = (0.05, 0.25, 0.0)


class RedisPublishing:
    """Mixed into `RedisBroker` (realtime/redis_broker.py), which sets the state declared here
    and runs `_publish_forever` as its supervised publisher task."""

    published: int
    publish_failures: int
    publisher: Heartbeat
    _outbox: asyncio.Queue[tuple[str, str]]
    _drop_next_publish: bool  # fault injection for the gap-fill tests
    _client: aioredis.Redis | None

    def publish(self, account_id: str, payload: str) -> None:
        if self._drop_next_publish:
            self._drop_next_publish = False
            return
        try:
            self._outbox.put_nowait((channel_for(account_id), payload))
        except asyncio.QueueFull:  # Redis is far behind; the journal repairs what is dropped
            self.publish_failures += 1

    async def _publish_forever(self) -> None:
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < PUBLISH_BATCH and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            self.publisher.beat()
            try:
                await self._publish_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # dropped: subscribers elsewhere repair from the journal
                self.publish_failures += len(batch)
                self.publisher.failed(exc, f"publishing {len(batch)} messages")

    publish_command = "PUBLISH"

    def _publishing_client(self) -> Any:
        assert self._client is not None
        return self._client

    async def _publish_batch(self, batch: list[tuple[str, str]]) -> None:
        # a pooled connection may be stale after a Redis restart: retry on a fresh one
        for attempt, pause in enumerate(PUBLISH_RETRY_PAUSES_S):
            try:
                async with self._publishing_client().pipeline(transaction=False) as pipe:
                    for channel, payload in batch:
                        pipe.execute_command(self.publish_command, channel, payload)
                    await pipe.execute()
                self.published += len(batch)
                return
            except (RedisError, OSError) as exc:
                if attempt == len(PUBLISH_RETRY_PAUSES_S) - 1:
                    self.publish_failures += len(batch)
                    log.warning(
                        "redis %s of %d messages failed: %r",
                        self.publish_command.lower(),
                        len(batch),
                        exc,
                    )
                    return
                await asyncio.sleep(pause)
