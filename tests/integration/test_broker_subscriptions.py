"""The Redis broker's subscriptions on a redis-server of the test's own: subscribes made together
go out in a few SUBSCRIBE commands, every channel ends as last wanted, and messages arrive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from realtime.broker import CHANNEL_PREFIX, RedisBroker, channel_for
from tests.support import PrivateRedis


@pytest.fixture
async def started() -> AsyncIterator[tuple[RedisBroker, aioredis.Redis, list[tuple[str, str]]]]:
    server = PrivateRedis().start()
    broker = RedisBroker(server.url)
    client = aioredis.Redis.from_url(server.url)
    received: list[tuple[str, str]] = []

    async def on_message(account_id: str, text: str) -> None:
        received.append((account_id, text))

    async def on_resync() -> None:
        pass

    try:
        await broker.start(on_message, on_resync)
        for _ in range(200):
            if broker.state == "connected":
                break
            await asyncio.sleep(0.02)
        assert broker.state == "connected"
        yield broker, client, received
    finally:
        await broker.stop()
        await client.aclose()
        server.stop()


async def subscribe_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_subscribe", {}).get("calls", 0))


async def account_channels(client: aioredis.Redis) -> set[str]:
    channels = await client.pubsub_channels(CHANNEL_PREFIX + "*")
    names = {c.decode() if isinstance(c, bytes) else c for c in channels}
    return names - {CHANNEL_PREFIX + "_"}  # minus the placeholder


async def test_concurrent_subscribes_share_subscribe_commands_and_messages_arrive(
        started: tuple[RedisBroker, aioredis.Redis, list[tuple[str, str]]]) -> None:
    broker, client, received = started
    accounts = [f"acct_{i:04d}" for i in range(500)]
    before = await subscribe_calls(client)
    await asyncio.gather(*(broker.subscribe(a) for a in accounts))
    sent = await subscribe_calls(client) - before
    assert 1 <= sent <= 50, sent  # 500 channels, a handful of commands
    assert await account_channels(client) == {channel_for(a) for a in accounts}
    for account in accounts[:20]:
        await client.publish(channel_for(account), f"event of {account}")
    for _ in range(200):
        if len(received) == 20:
            break
        await asyncio.sleep(0.01)
    assert received == [(a, f"event of {a}") for a in accounts[:20]]


async def test_a_channel_ends_as_last_wanted_when_changes_go_out_together(
        started: tuple[RedisBroker, aioredis.Redis, list[tuple[str, str]]]) -> None:
    broker, client, _ = started
    await broker.subscribe("was_there")
    await asyncio.gather(broker.subscribe("back"), broker.unsubscribe("back"),
                         broker.subscribe("back"), broker.subscribe("gone"),
                         broker.unsubscribe("gone"), broker.unsubscribe("was_there"))
    assert await account_channels(client) == {channel_for("back")}
