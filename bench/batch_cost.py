"""What one batched hold costs the engine in CPU, callers excluded: batches of holds handed
straight to `run_batch` one after the other (no caller tasks, no futures awaited, no other
batch in flight), the process's CPU time per hold; and the same for the batched ceiling's
`hold_batch`. A cProfile pass over the same loop splits the engine's figure into its parts.
And a cycle's two halves: a batch of captures against the batch of holds it captures. The
batches run as the writer runs them, on the accounts and holds it remembers from the batches
before (storage/writes/committed_accounts.py): no locking read once every account is warm.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import pstats
import random
import time
from datetime import UTC, datetime
from typing import Any

from bench import rawsql_batch
from bench.measure import postgres_pids, process_cpu_s

# the parts of a batch, by the function whose cumulative time is the part (cProfile); what is
# left of run_batch's own total is the transaction's BEGIN and COMMIT and the glue between
PARTS: tuple[tuple[str, str, str], ...] = (
    ("lock the accounts, read their grants, rows to objects", "storage/writes/batch.py", "load"),
    (
        "core's rules: CreditService.hold, with the reads and saves it asks of its unit of work",
        "core/service.py",
        "hold",
    ),
    (
        "an operation's changes handed to the batch (its unit of work's commit)",
        "storage/writes/operation.py",
        "commit",
    ),
    ("rows for the arrays (planned_writes)", "storage/writes/batch_writes.py", "planned_writes"),
    (
        "rows to column arrays, JSON encoded (pg_arrays.arrays)",
        "storage/writes/pg_arrays.py",
        "arrays",
    ),
    (
        "asyncpg: the array statement sent (encoding included)",
        "storage/writes/pg_arrays.py",
        "write",
    ),
)


async def engine_cpu_per_hold(
    service: Any, db: Any, ids: list[str], size: int, batches: int, profile: bool = False
) -> dict[str, Any]:
    """CPU seconds of this process per hold, over `batches` batches of `size` holds on distinct
    accounts (or the one account when there is one)."""
    from storage.writes.batch import Touches
    from storage.writes.begun import BegunConnections
    from storage.writes.committed_accounts import CommittedAccounts
    from storage.writes.transaction import Operation, run_batch

    loop = asyncio.get_running_loop()
    rng = random.Random(7)

    def action(account_id: str) -> Any:
        return lambda uow: service.hold(uow, account_id, 1)

    def ops() -> list[Operation]:
        picked = rng.sample(ids, size) if len(ids) >= size else [ids[0]] * size
        return [Operation(action(a), Touches(accounts=(a,)), loop.create_future()) for a in picked]

    # a lane's connections, as the writer's: each batch starts on the one the last kept begun;
    # and, as the writer's, the accounts committed remembered (storage/writes/committed_accounts)
    connections, remembered = BegunConnections(db), CommittedAccounts()
    for start in range(0, len(ids), size):  # warm: statements prepared, every account remembered
        warm = [
            Operation(action(a), Touches(accounts=(a,)), loop.create_future())
            for a in ids[start : start + size]
        ]
        await run_batch(db, warm, datetime.now(UTC), connections=connections, remembered=remembered)
    for _ in range(5):
        await run_batch(
            db, ops(), datetime.now(UTC), connections=connections, remembered=remembered
        )
    cpu = 0.0
    profiler = cProfile.Profile() if profile else None
    collector = _Collector()
    gc.callbacks.append(collector.observe)
    pg_started = _postgres_cpu()
    for _ in range(batches):
        batch = ops()  # the callers' side: not counted
        started = time.process_time()
        if profiler:
            profiler.enable()
        await run_batch(
            db, batch, datetime.now(UTC), connections=connections, remembered=remembered
        )
        if profiler:
            profiler.disable()
        cpu += time.process_time() - started
    pg = _postgres_cpu() - pg_started
    gc.callbacks.remove(collector.observe)
    await connections.release()
    holds = batches * size
    result: dict[str, Any] = {
        "us_per_hold": 1e6 * cpu / holds,
        "pg_us_per_hold": 1e6 * pg / holds,
        "collector_us_per_hold": 1e6 * sum(collector.seconds) / holds,
        "collections_per_1000_holds": [1000 * n / holds for n in collector.counts],
    }
    if profiler:
        result["parts"] = _parts(profiler, batches * size)
    return result


async def engine_cpu_per_capture(
    service: Any, db: Any, ids: list[str], size: int, batches: int
) -> dict[str, float]:
    """CPU per batched capture against the hold it captures, both from one run: each round a
    batch of `size` holds on distinct accounts, then a batch capturing those holds (a cycle's
    two halves, as `bench engine`'s cycle phase makes them), each half's CPU of this process
    and of PostgreSQL counted on its own, in µs per operation."""
    from storage.writes.batch import Touches
    from storage.writes.begun import BegunConnections
    from storage.writes.committed_accounts import CommittedAccounts
    from storage.writes.transaction import Operation, run_batch

    loop = asyncio.get_running_loop()
    rng = random.Random(11)
    connections, remembered = BegunConnections(db), CommittedAccounts()
    spent = {"hold": [0.0, 0.0], "capture": [0.0, 0.0]}  # this process, PostgreSQL

    async def timed(kind: str, ops: list[Operation], counted: bool) -> list[Any]:
        pg_started = _postgres_cpu()  # read before this process's clock starts: it costs
        started = time.process_time()
        outcome = await run_batch(
            db, ops, datetime.now(UTC), connections=connections, remembered=remembered
        )
        if counted:
            spent[kind][0] += time.process_time() - started
            spent[kind][1] += _postgres_cpu() - pg_started
        if outcome.errors:
            raise next(iter(outcome.errors.values()))
        return [outcome.results[op] for op in ops]

    def hold(account_id: str) -> Any:
        return lambda uow: service.hold(uow, account_id, 1)

    def capture(hold_id: str) -> Any:
        return lambda uow: service.capture(uow, hold_id)

    try:
        for round_ in range(batches + 5):  # the first five warm the statements and caches
            picked = rng.sample(ids, size) if len(ids) >= size else [ids[0]] * size
            held = await timed(
                "hold",
                [Operation(hold(a), Touches(accounts=(a,)), loop.create_future()) for a in picked],
                round_ >= 5,
            )
            await timed(
                "capture",
                [
                    Operation(capture(h.hold_id), Touches(holds=(h.hold_id,)), loop.create_future())
                    for h, _ in held
                ],
                round_ >= 5,
            )
    finally:
        await connections.release()
    count = batches * size
    return {
        "hold_us": 1e6 * spent["hold"][0] / count,
        "hold_pg_us": 1e6 * spent["hold"][1] / count,
        "capture_us": 1e6 * spent["capture"][0] / count,
        "capture_pg_us": 1e6 * spent["capture"][1] / count,
    }


class _Collector:
    """The cyclic collector's runs by generation and their time (the callers' side included,
    which allocates little): what the objects a batch keeps alive cost it."""

    def __init__(self) -> None:
        self.counts, self.seconds, self._started = [0, 0, 0], [0.0, 0.0, 0.0], 0.0

    def observe(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        self.counts[generation] += 1
        self.seconds[generation] += time.perf_counter() - self._started


def _postgres_cpu() -> float:
    return sum(process_cpu_s(p) for p in postgres_pids())


async def ceiling_cpu_per_hold(
    dsn: str, ids: list[str], size: int, batches: int
) -> tuple[float, float]:
    """The same figures for the batched ceiling's `hold_batch`: this process's and PostgreSQL's
    CPU per hold, in µs."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    rng = random.Random(7)
    try:

        def pick() -> list[str]:
            return rng.sample(ids, size) if len(ids) >= size else [ids[0]] * size

        for _ in range(5):
            await rawsql_batch.hold_batch(conn, pick(), 1, datetime.now(UTC))
        cpu = 0.0
        pg_started = _postgres_cpu()
        for _ in range(batches):
            picked = pick()
            started = time.process_time()
            await rawsql_batch.hold_batch(conn, picked, 1, datetime.now(UTC))
            cpu += time.process_time() - started
        pg = _postgres_cpu() - pg_started
    finally:
        await conn.close()
    return 1e6 * cpu / (batches * size), 1e6 * pg / (batches * size)


def _parts(profiler: cProfile.Profile, holds: int) -> dict[str, float]:
    """Each part's share of run_batch, in µs per hold under the profiler (its own overhead
    included, so the shares mean more than the sums)."""
    stats = pstats.Stats(profiler)
    cumulative: dict[tuple[str, str], float] = {}
    for (filename, _, function), (_, _, _, cum, _) in stats.stats.items():  # type: ignore
        for _, path, name in (*PARTS, ("", "storage/writes/transaction.py", "run_batch")):
            if filename.endswith(path) and function == name:
                cumulative[(path, name)] = cumulative.get((path, name), 0.0) + cum
    total = cumulative.get(("storage/writes/transaction.py", "run_batch"), 0.0)
    parts = {label: cumulative.get((path, name), 0.0) for label, path, name in PARTS}
    # `write` includes `arrays`: keep the statement alone
    write = "asyncpg: the array statement sent (encoding included)"
    parts[write] -= parts["rows to column arrays, JSON encoded (pg_arrays.arrays)"]
    parts["BEGIN, COMMIT, the operations' loop and the rest"] = total - sum(parts.values())
    return {label: round(1e6 * s / holds, 1) for label, s in parts.items()} | {
        "total under cProfile": round(1e6 * total / holds, 1)
    }


async def _main(accounts: int, size: int, batches: int) -> None:
    from importlib import resources

    from bench.database import DEFAULT_PG_ADMIN, account_ids, bench_database, seed_accounts
    from core.ports import SystemClock
    from core.pricing import Catalogue
    from core.service import CreditService
    from storage.sql import Database

    text = resources.files("core").joinpath("pricing.toml").read_text(encoding="utf-8")
    service = CreditService(SystemClock(), Catalogue.from_toml(text))
    async with bench_database(DEFAULT_PG_ADMIN) as dsn:
        ids = account_ids("cost", accounts)
        await seed_accounts(dsn, ids)
        db = Database.from_url(dsn, pool_size=1)
        gc.collect()  # set-up's heap out of the collector's way, as in `bench engine`
        gc.freeze()
        try:
            plain = await engine_cpu_per_hold(service, db, ids, size, batches)
            profiled = await engine_cpu_per_hold(service, db, ids, size, batches, profile=True)
            cycle = await engine_cpu_per_capture(service, db, ids, size, batches)
        finally:
            await db.dispose()
        ceiling, ceiling_pg = await ceiling_cpu_per_hold(dsn, ids, size, batches)
    print(
        f"engine {plain['us_per_hold']:.1f} us/hold (PostgreSQL {plain['pg_us_per_hold']:.1f}), "
        f"batched ceiling {ceiling:.1f} us/hold (PostgreSQL {ceiling_pg:.1f})"
    )
    runs = " / ".join(f"{n:.2f}" for n in plain["collections_per_1000_holds"])
    print(
        f"  collector {plain['collector_us_per_hold']:.1f} us/hold; collections of generations "
        f"0 / 1 / 2 per 1000 holds: {runs}"
    )
    print(
        f"  a cycle's halves: capture {cycle['capture_us']:.1f} us (PostgreSQL "
        f"{cycle['capture_pg_us']:.1f}) against its hold's {cycle['hold_us']:.1f} "
        f"(PostgreSQL {cycle['hold_pg_us']:.1f})"
    )
    for label, us in profiled["parts"].items():
        print(f"  {us:7.1f}  {label}")


if __name__ == "__main__":  # python -m bench.batch_cost [accounts] [holds per batch] [batches]
    import sys

    numbers = [int(a) for a in sys.argv[1:4]]
    asyncio.run(_main(*(numbers + [1000, 64, 200][len(numbers) :])))
