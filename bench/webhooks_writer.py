"""`bench webhooks`' writer: holds committed at the target rate over many accounts
(bench/rawsql.py's one-statement hold: the rows the engine writes, so the instance's CPU goes to
delivering), each one's COMMIT noted with time.time()."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime

from bench import rawsql


async def drive(
    dsn: str, ids: list[str], rate: float, seconds: float, writers: int, seed: int
) -> dict[tuple[str, int], float]:
    """Commit holds at `rate` for `seconds`; when each committed (time.time())."""
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=writers, max_size=writers)
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    commits: dict[tuple[str, int], float] = {}
    total = max(1, int(rate * seconds))
    next_slot = 0
    start = loop.time()

    async def worker() -> None:
        nonlocal next_slot
        async with pool.acquire() as conn:
            while next_slot < total:
                slot, next_slot = next_slot, next_slot + 1
                delay = start + slot / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                account_id = rng.choice(ids)
                event = await rawsql.hold_in_one_statement(conn, account_id, 1, datetime.now(UTC))
                commits[(account_id, int(event["seq"]))] = time.time()

    try:
        await asyncio.gather(*(worker() for _ in range(writers)))
    finally:
        await pool.close()
    return commits
