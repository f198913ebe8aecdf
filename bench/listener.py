"""`creditstream bench listener`: the CPU one instance's Redis listener spends per message.

Every event of every account an instance serves arrives through one listener
(`realtime.redis_broker.RedisBroker`), so its cost per message bounds the events/s one instance can
push. A publisher process sends `--messages` event-sized payloads over 1,000 subscribed account
channels as fast as Redis takes them; the listener hands each to a counting callback. The same
listener is measured with the reply parser redis-py picks when hiredis is installed (as shipped)
and with redis-py's own Python parser, alternately, `--rounds` times; the ratio is shipped ÷
Python parser, so below 1 is the saving.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis
from redis._parsers import _AsyncRESP3Parser

from bench.measure import machine_info, service_versions
from bench.results import Progress, Result, Row
from realtime.broker import channel_for
from realtime.redis_broker import RedisBroker

ACCOUNTS = [f"acct_{i:013d}" for i in range(1000)]
# the size of a balance.updated event as the hub publishes it
PAYLOAD = (
    '{"type":"balance.updated","account_id":"acct_0000000000001","seq":123,"balance":1000,'
    '"held":10,"available":990,"at":"2026-12-03T17:00:00.000000Z","data":{"reason":"hold",'
    '"hold_id":"hold_01JEXAMPLE0000000000000"}}'
)
PUBLISHER = """
import sys, redis
url, count, payload, channels = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
pipe = redis.Redis.from_url(url).pipeline(transaction=False)
for i in range(count):
    pipe.publish(channels[i % len(channels)], payload)
    if i % 200 == 199:
        pipe.execute()
pipe.execute()
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--messages", type=int, default=50_000, help="messages per round (default 50,000)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds of each parser, alternated (default 2)"
    )


@contextmanager
def _python_parser() -> Iterator[None]:
    """Clients built inside get redis-py's Python RESP3 parser, whatever is installed."""
    original = aioredis.Redis.from_url

    def from_url(url: str, **kwargs: Any) -> aioredis.Redis:
        return original(url, parser_class=_AsyncRESP3Parser, **kwargs)

    aioredis.Redis.from_url = from_url  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        aioredis.Redis.from_url = original  # type: ignore[method-assign]


async def _one_round(redis_url: str, messages: int) -> dict[str, Any]:
    received = 0
    all_in = asyncio.Event()

    async def on_message(account_id: str, payload: str) -> None:
        nonlocal received
        received += 1
        if received >= messages:
            all_in.set()

    async def on_resync() -> None:
        return None

    broker = RedisBroker(redis_url)
    await broker.start(on_message, on_resync)
    try:
        while broker.state != "connected":  # the listener connects in its own task
            await asyncio.sleep(0.01)
        await asyncio.gather(*(broker.subscribe(a) for a in ACCOUNTS))
        parser = type(broker._pubsub.connection._parser).__name__  # type: ignore[union-attr]
        publisher = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            PUBLISHER,
            redis_url,
            str(messages),
            PAYLOAD,
            *(channel_for(a) for a in ACCOUNTS),
        )
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        await asyncio.wait_for(all_in.wait(), timeout=max(60.0, messages / 1000))
        after, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - started
        await publisher.wait()
    finally:
        await broker.stop()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"parser": parser, "messages": received, "cpu_s": cpu, "wall_s": wall}


async def run(args: argparse.Namespace, say: Progress) -> Result:
    if args.messages < 1 or args.rounds < 1:
        raise SystemExit("--messages and --rounds must be at least 1")
    result = Result(
        "listener",
        f"listener: CPU per message of the Redis listener, {args.messages:,} messages per "
        f"round over {len(ACCOUNTS):,} channels, {args.rounds} rounds of each parser",
        {"messages": args.messages, "rounds": args.rounds},
    )
    shipped: list[float] = []
    python: list[float] = []
    rounds = []
    for i in range(args.rounds):
        for name, costs in (("shipped", shipped), ("python", python)):
            if name == "python":
                with _python_parser():
                    outcome = await _one_round(args.redis_url, args.messages)
            else:
                outcome = await _one_round(args.redis_url, args.messages)
            costs.append(outcome["cpu_s"] / outcome["messages"] * 1e6)
            rounds.append({"round": i + 1, "as": name, **outcome})
            say(f"listener: round {i + 1} {name} ({outcome['parser']}) {costs[-1]:.1f} µs/message")
    result.rows.append(
        Row(
            "listener CPU per message, µs (vs redis-py's Python parser)",
            statistics.median(shipped),
            statistics.median(python),
        )
    )
    result.machine = machine_info(*await service_versions(args.pg_admin, args.redis_url))
    result.details = {"rounds": rounds}
    return result
