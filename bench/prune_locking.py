"""What `FOR UPDATE SKIP LOCKED` costs the journal's batched prune: the sweeper's delete with and
without it, alternating batch by batch in one run on one scratch database, so the machine's load
weighs on both alike.

    flock /tmp/bench.lock python -m bench.prune_locking [--events 400000] [--pg-admin DSN]

400,000 synthetic events over 2,000 accounts, a month old, are deleted in 5,000-row batches; it
prints each statement's p50 and slowest batch.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bench.database import DEFAULT_PG_ADMIN, bench_database

BATCH = 5000
SELECT_OLDEST = (
    "SELECT account_id, seq FROM events WHERE created_at < $1 ORDER BY created_at LIMIT 5000"
)
STATEMENTS = {
    "skip locked": f"DELETE FROM events WHERE (account_id, seq) IN ({SELECT_OLDEST} "
    "FOR UPDATE SKIP LOCKED)",
    "plain": f"DELETE FROM events WHERE (account_id, seq) IN ({SELECT_OLDEST})",
}
FILL = """
INSERT INTO events (account_id, seq, type, payload, created_at)
SELECT 'acct-' || (g % 2000), g, 'balance.updated',
       json_build_object('type', 'balance.updated', 'account_id', 'acct-' || (g % 2000),
                         'seq', g, 'balance', 1000, 'held', 3, 'available', 997, 'delta', -3,
                         'reason', 'hold', 'ref', 'r-' || g, 'at', '2030-01-01T00:00:00Z'),
       now() - interval '30 days' + g * interval '1 millisecond'
FROM generate_series(1, $1::int) g
"""


async def measure(admin: str, events: int) -> dict[str, list[float]]:
    import asyncpg

    async with bench_database(admin) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(FILL, events)
            await conn.execute("VACUUM (ANALYZE) events")
            cutoff = await conn.fetchval("SELECT now() - interval '7 days'")
            times: dict[str, list[float]] = {name: [] for name in STATEMENTS}
            names = list(STATEMENTS)
            for i in range(events // BATCH - 1):  # the last, partial batch is not a batch's cost
                name = names[i % 2]
                started = time.perf_counter()
                await conn.execute(STATEMENTS[name], cutoff)
                times[name].append(time.perf_counter() - started)
            return times
        finally:
            await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--pg-admin", default=DEFAULT_PG_ADMIN)
    args = parser.parse_args()
    times = asyncio.run(measure(args.pg_admin, args.events))
    for name, taken in times.items():
        p50 = statistics.median(taken)
        print(
            f"{name:12} p50 {p50 * 1000:6.1f} ms   slowest {max(taken) * 1000:6.1f} ms   "
            f"{BATCH / p50:9,.0f} rows/s   ({len(taken)} batches)"
        )


if __name__ == "__main__":
    main()
