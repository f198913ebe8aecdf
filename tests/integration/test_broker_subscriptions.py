"""The Redis broker's subscriptions on a redis-server of the test's own: subscribes made together
go out in a few SUBSCRIBE commands, every channel ends as last wanted (callers cancelled half-way
too), messages arrive, and under churn no channel outlives the hub's subscribers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest
import redis.asyncio as aioredis

from realtime.broker import CHANNEL_PREFIX, channel_for
from realtime.hub import Hub
from realtime.redis_broker import SUBSCRIBE_LINGER_S, RedisBroker
from tests.support import PrivateRedis
from tests.unit.fakes import ListSink, MemoryJournal


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
    started: tuple[RedisBroker, aioredis.Redis, list[tuple[str, str]]],
) -> None:
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


async def test_subscribes_arriving_one_by_one_gather_within_the_linger(
    started: tuple[RedisBroker, aioredis.Redis, list[tuple[str, str]]],
) -> None:
    """A storm spread over time (a subscribe a millisecond, as clients reconnect) goes out in
    about one SUBSCRIBE per SUBSCRIBE_LINGER_S, not one per subscribe."""
    broker, client, _ = started
    accounts = [f"spread_{i:03d}" for i in range(300)]
    loop = asyncio.get_running_loop()
    before = await subscribe_calls(client)
    began = loop.time()
    subscribing = []
    for account in accounts:
        subscribing.append(asyncio.create_task(broker.subscribe(account)))
        await asyncio.sleep(0.001)
    await asyncio.gather(*subscribing)
    took = loop.time() - began
    sent = await subscribe_calls(client) - before
    assert sent <= took / SUBSCRIBE_LINGER_S + 2, (sent, took)
    assert await account_channels(client) == {channel_for(a) for a in accounts}


async def test_a_channel_ends_as_last_wanted_when_changes_go_out_together(
    started: tuple[RedisBroker, aioredis.Redis, list[tuple[str, str]]],
) -> None:
    broker, client, _ = started
    await broker.subscribe("was_there")
    await asyncio.gather(
        broker.subscribe("back"),
        broker.unsubscribe("back"),
        broker.subscribe("back"),
        broker.subscribe("gone"),
        broker.unsubscribe("gone"),
        broker.unsubscribe("was_there"),
    )
    assert await account_channels(client) == {channel_for("back")}


async def settled_channels(client: aioredis.Redis, expected: set[str]) -> set[str]:
    """The account channels Redis has once what is on its way arrived (or after 5 s)."""
    deadline = asyncio.get_running_loop().time() + 5
    while (channels := await account_channels(client)) != expected:
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.02)
    return channels


async def cancelled_now_and_then(
    rng: random.Random, work: list[Coroutine[Any, Any, None]], share: float
) -> None:
    """Run the coroutines at once, cancelling `share` of them within a few milliseconds, at
    whatever point they have reached (waiting for a batch, in its middle, after it)."""
    loop = asyncio.get_running_loop()
    tasks = [asyncio.create_task(w) for w in work]
    for task in tasks:
        if rng.random() < share:
            loop.call_later(rng.choice([0, rng.uniform(0, 0.004)]), task.cancel)
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_channels_end_as_wanted_when_callers_are_cancelled_mid_batch(
    started: tuple[RedisBroker, aioredis.Redis, list[tuple[str, str]]],
) -> None:
    broker, client, _ = started
    rng = random.Random(7)
    accounts = [f"churn_{i:02d}" for i in range(40)]
    for _ in range(30):  # rounds of concurrent subscribes and unsubscribes, some cancelled
        work = [
            (broker.subscribe if rng.random() < 0.5 else broker.unsubscribe)(rng.choice(accounts))
            for _ in range(60)
        ]
        await cancelled_now_and_then(rng, work, share=0.3)
    wanted = {c for c in broker._channels}
    assert await settled_channels(client, wanted) == wanted
    await asyncio.gather(*(broker.unsubscribe(a) for a in accounts))
    assert await settled_channels(client, set()) == set()


async def test_no_feed_and_no_channel_outlive_their_subscribers_under_churn(
    started: tuple[RedisBroker, aioredis.Redis, list[tuple[str, str]]],
) -> None:
    """Subscribers come and go on a few accounts, a third of them cancelled half-way (their
    client gone mid-subscribe): afterwards no feed is left and Redis has no account channel."""
    broker, client, _ = started
    journal = MemoryJournal()
    hub = Hub(journal, broker, poll_interval_s=60)
    rng = random.Random(11)
    accounts = [f"churn_{i:02d}" for i in range(12)]
    for account in accounts[::2]:
        journal.append(account)

    async def subscriber(account: str, stay_s: float) -> None:
        subscription = await hub.subscribe(account, ListSink(), None)
        try:
            await asyncio.sleep(stay_s)
        finally:
            await hub.unsubscribe(subscription)

    async def long_poll(account: str) -> None:
        await hub.wait_beyond(account, rng.choice([0, 5]), 0.002)

    for _ in range(25):
        work = [subscriber(rng.choice(accounts), rng.uniform(0, 0.003)) for _ in range(30)]
        work += [long_poll(rng.choice(accounts)) for _ in range(5)]
        await cancelled_now_and_then(rng, work, share=0.3)
    assert hub.feeds == {}
    assert await settled_channels(client, set()) == set()


async def test_an_unsubscribe_cancelled_while_its_batch_waits_still_goes_out(
    started: tuple[RedisBroker, aioredis.Redis, list[tuple[str, str]]],
) -> None:
    broker, client, _ = started
    await broker.subscribe("left")
    leaving = asyncio.create_task(broker.unsubscribe("left"))
    await asyncio.sleep(0)  # it has started, and waits for the batch of this turn to go out
    leaving.cancel()
    await asyncio.gather(leaving, return_exceptions=True)
    assert await settled_channels(client, set()) == set()


class GatedJournal(MemoryJournal):
    """A journal whose account reads wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def snapshots(self, account_ids: list[str]) -> dict[str, dict[str, Any]]:
        await self.gate.wait()
        return await super().snapshots(account_ids)


async def test_a_subscribe_cancelled_while_reading_the_account_leaves_no_channel(
    started: tuple[RedisBroker, aioredis.Redis, list[tuple[str, str]]],
) -> None:
    broker, client, _ = started
    journal = GatedJournal()
    hub = Hub(journal, broker, poll_interval_s=60)
    joining = asyncio.create_task(hub.subscribe("gone", ListSink(), None))
    assert await settled_channels(client, {channel_for("gone")}) == {channel_for("gone")}
    joining.cancel()  # the client left while its subscribe waited for the database
    await asyncio.gather(joining, return_exceptions=True)
    journal.gate.set()
    assert hub.feeds == {}
    assert await settled_channels(client, set()) == set()


async def test_a_long_poll_answered_at_once_leaves_no_feed(
    started: tuple[RedisBroker, aioredis.Redis, list[tuple[str, str]]],
) -> None:
    broker, client, _ = started
    journal = MemoryJournal()
    journal.append("moved")
    hub = Hub(journal, broker, poll_interval_s=60)
    await hub.wait_beyond("moved", 0, timeout_s=5)  # seq 1 is past 0: no wait
    assert hub.feeds == {}
    assert await settled_channels(client, set()) == set()
