"""`bench push`'s writer: this process as a third instance. It commits holds at the target rate
(bench/rawsql.py's `hold_in_one_statement`, so that the writer leaves the CPUs to the servers
under test while the journal and `accounts.seq` stay right for the hub's gap checks), notes
time.time() right after COMMIT returns, and publishes the event through creditstream's own
RedisBroker, as an instance does after its commit."""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, datetime
from typing import Any

from bench import rawsql


class Writer:
    """Commits holds at a target rate and publishes each event as an instance would."""

    def __init__(self, dsn: str, redis_url: str, concurrency: int) -> None:
        self.dsn, self.redis_url, self.concurrency = dsn, redis_url, concurrency

    async def open(self) -> Writer:
        import asyncpg

        from realtime.brokers import broker_for

        self.pool = await asyncpg.create_pool(
            self.dsn, min_size=self.concurrency, max_size=self.concurrency
        )

        async def ignore_message(account_id: str, text: str) -> None:
            return None

        async def ignore_resync() -> None:
            return None

        self.broker = broker_for(self.redis_url)
        await self.broker.start(ignore_message, ignore_resync)
        return self

    async def close(self) -> None:
        await self.broker.stop()
        await self.pool.close()

    async def drive(
        self, ids: list[str], rate: float, seconds: float, seed: int = 0
    ) -> dict[str, Any]:
        """`self.concurrency` workers take the scheduled slots in turn. A worker that is behind
        commits at once, so when the target rate is out of reach the achieved rate shows it,
        and no backlog of tasks builds up in this loop to delay the broker's publisher task
        (which would count as push latency)."""
        loop = asyncio.get_running_loop()
        rng = random.Random(seed)
        commits: dict[tuple[str, int], float] = {}
        failures: list[str] = []
        total = max(1, int(rate * seconds))
        next_slot = 0
        start = loop.time()
        started_wall = time.time()

        async def worker() -> None:
            nonlocal next_slot
            async with self.pool.acquire() as conn:
                while next_slot < total:
                    slot, next_slot = next_slot, next_slot + 1
                    delay = start + slot / rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    account_id = rng.choice(ids)
                    try:
                        event = await rawsql.hold_in_one_statement(
                            conn, account_id, 1, datetime.now(UTC)
                        )
                    except Exception as exc:
                        failures.append(repr(exc)[:200])
                        continue
                    commits[(account_id, event["seq"])] = time.time()
                    self.broker.publish(account_id, json.dumps(event, separators=(",", ":")))

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        last = max(commits.values(), default=started_wall)
        return {
            "commits": commits,
            "started": started_wall,
            "failures": failures,
            "achieved_per_s": len(commits) / max(1e-9, last - started_wall),
        }
