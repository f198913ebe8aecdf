"""`bench engine` and `bench hot`: holds/s and hold+capture cycles/s through CreditService on a
Database (PostgreSQL), against raw asyncpg running the same statements (bench/rawsql.py).

`engine` spreads the operations uniformly over many accounts; `hot` puts every operation on one
account, so all of them queue on its row lock and the time spent inside the lock is what counts.
Both sides run in this process, on the same event loop, with the same number of tasks and of
database connections, one after the other on the same database.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from bench import batch_cost, options, rawsql, rawsql_batch
from bench.database import account_ids, audit_database, bench_database, seed_accounts
from bench.measure import CpuMeter, contention_note, machine_info, service_versions, summarize
from bench.profiles import profile_summary
from bench.results import Goal, Progress, Result, Row

Op = Callable[[random.Random], Awaitable[Any]]  # may return how many operations it did


def add_arguments(parser: argparse.ArgumentParser, hot: bool) -> None:
    if not hot:
        options.add_accounts(parser, 1000, "the operations are spread over")
    parser.add_argument(
        "--concurrency",
        default="16,64,256",
        help="comma-separated numbers of concurrent callers, one set of phases "
        "each (default 16,64,256)",
    )
    parser.add_argument(
        "--lanes",
        type=int,
        default=1,
        help="the engine's write connections (CREDITSTREAM_WRITE_CONNECTIONS; "
        "default 1, as the server)",
    )
    parser.add_argument(
        "--ceiling-pools",
        default="2,16",
        help="pool sizes tried for the one-statement ceiling; the best counts (default 2,16)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help="holds per transaction of the batched ceiling (default 100)",
    )
    options.add_duration(parser, 5.0, "measured seconds per phase")
    options.add_warmup(parser, 1.0, "unmeasured seconds before each phase")
    parser.add_argument(
        "--workloads", default="hold,cycle", help="comma-separated: hold, cycle (default both)"
    )
    parser.add_argument(
        "--profile",
        metavar="PATH",
        default=None,
        help="afterwards, run one more engine hold phase at the highest "
        "concurrency under cProfile and write its stats to PATH (and a "
        "text summary to PATH.txt)",
    )


async def measure(op: Op, concurrency: int, warmup: float, duration: float) -> dict[str, Any]:
    """Run `op` in `concurrency` tasks; count what completes inside the measured window."""
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + warmup
    stop_at = measure_from + duration
    latencies: list[float] = []
    per_second = [0] * max(1, int(duration + 0.999))
    errors: list[str] = []
    completed = [0]
    meter = CpuMeter()

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        while loop.time() < stop_at:
            t0 = loop.time()
            try:
                done = await op(rng)
            except Exception as exc:  # counted and reported, never hidden
                errors.append(repr(exc)[:200])
                await asyncio.sleep(0.001)
                continue
            t1 = loop.time()
            if measure_from <= t1 <= stop_at:
                count = done if isinstance(done, int) else 1
                latencies.append(t1 - t0)
                completed[0] += count
                per_second[min(int(t1 - measure_from), len(per_second) - 1)] += count

    async def metering() -> None:
        await asyncio.sleep(max(0.0, measure_from - loop.time()))
        meter.start()
        await asyncio.sleep(max(0.0, stop_at - loop.time()))
        meter.stop()

    await asyncio.gather(metering(), *(worker(seed) for seed in range(concurrency)))
    return {
        "ops_per_s": completed[0] / duration,
        "completed": completed[0],
        "latency_ms": summarize(latencies, 1000.0),
        "errors": len(errors),
        "first_errors": errors[:3],
        "cpu_cores": meter.cores,
        "per_second": per_second,
    }


class EngineSide:
    """CreditService through the group-commit writer, as the API's routes use them."""

    def __init__(self, dsn: str, lanes: int, ids: list[str]) -> None:
        from core.ports import SystemClock
        from core.pricing import Catalogue
        from core.service import CreditService
        from storage.sql import Database
        from storage.writes.batch import Touches
        from storage.writes.writer import BatchWriter

        text = resources.files("core").joinpath("pricing.toml").read_text(encoding="utf-8")
        self.service = CreditService(SystemClock(), Catalogue.from_toml(text))
        self.db = Database.from_url(dsn, pool_size=lanes)
        self.writer = BatchWriter(self.db, self.service.now, _nowhere, lanes=lanes)
        self.ids = ids
        # a caller's own work is a pick and a call, as the ceiling's: what it will touch is
        # made once per account, not per hold
        self.touches = {a: Touches(accounts=(a,)) for a in ids}
        self.touches_hold = Touches

    async def hold(self, rng: random.Random) -> str:
        account_id = rng.choice(self.ids)
        service = self.service
        hold, _ = await self.writer.run(
            lambda uow: service.hold(uow, account_id, 1), self.touches[account_id]
        )
        return hold.hold_id

    async def cycle(self, rng: random.Random) -> None:
        hold_id = await self.hold(rng)
        service = self.service
        await self.writer.run(
            lambda uow: service.capture(uow, hold_id), self.touches_hold(holds=(hold_id,))
        )

    async def close(self) -> None:
        await self.writer.aclose()
        await self.db.dispose()


class TransactionPerOperation(EngineSide):
    """The write path before group commit: one transaction and one connection per operation,
    still what `storage.sql.Database.transaction` gives; the lone caller's yardstick."""

    async def hold(self, rng: random.Random) -> str:
        async with self.db.transaction() as uow:
            hold, _ = await self.service.hold(uow, rng.choice(self.ids), 1)
        return hold.hold_id


async def _nowhere(events: list[Any]) -> None:
    """No subscribers here: the events stay in the journal."""


class CeilingSide:
    """Raw asyncpg: a hold as one statement; a cycle as the engine's statements by hand."""

    def __init__(self, dsn: str, pool_size: int, ids: list[str]) -> None:
        self.dsn, self.pool_size, self.ids = dsn, pool_size, ids

    async def open(self) -> CeilingSide:
        import asyncpg

        self.pool = await asyncpg.create_pool(
            self.dsn, min_size=self.pool_size, max_size=self.pool_size
        )
        return self

    async def hold(self, rng: random.Random) -> None:
        async with self.pool.acquire() as conn:
            await rawsql.hold_in_one_statement(conn, rng.choice(self.ids), 1, datetime.now(UTC))

    async def cycle(self, rng: random.Random) -> None:
        async with self.pool.acquire() as conn:
            done = await rawsql.hold(conn, rng.choice(self.ids), 1, datetime.now(UTC))
        async with self.pool.acquire() as conn:
            await rawsql.capture(conn, str(done["hold"]["hold_id"]), datetime.now(UTC))

    async def close(self) -> None:
        await self.pool.close()


class BatchedCeiling(CeilingSide):
    """Raw asyncpg, `batch` holds per transaction, set-based (bench/rawsql.py `hold_batch`)."""

    def __init__(self, dsn: str, pool_size: int, ids: list[str], batch: int) -> None:
        super().__init__(dsn, pool_size, ids)
        self.batch = batch

    async def hold(self, rng: random.Random) -> int:  # type: ignore[override]
        picked = [rng.choice(self.ids) for _ in range(self.batch)]
        async with self.pool.acquire() as conn:
            return await rawsql_batch.hold_batch(conn, picked, 1, datetime.now(UTC))


class CallersOnly:
    """The callers alone: each hold is a future that a batch resolves with its batch-mates, as
    the writer does, with nothing between. What it costs per hold is the harness's share of
    the engine's figures (the batched ceiling's one caller per 100 holds costs next to nothing)."""

    def __init__(self) -> None:
        self.waiting: list[asyncio.Future[None]] = []

    async def hold(self, rng: random.Random) -> None:
        rng.random()  # the account's pick
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        if len(self.waiting) == 1:
            asyncio.get_running_loop().call_soon(self._answer)
        await future

    def _answer(self) -> None:
        waiting, self.waiting = self.waiting, []
        for future in waiting:
            future.set_result(None)


WORKLOADS = ("hold", "cycle")


def _levels(text: str) -> list[int]:
    levels = sorted({int(part) for part in text.split(",") if part.strip()})
    if not levels or levels[0] < 1:
        raise ValueError(f"Expected comma-separated positive numbers, got {text!r}")
    return levels


async def run(args: argparse.Namespace, hot: bool, say: Progress) -> Result:
    name = "hot" if hot else "engine"
    accounts = 1 if hot else args.accounts
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for workload in workloads:
        if workload not in WORKLOADS:
            raise ValueError(f"unknown workload {workload!r}; expected hold, cycle")
    levels, pools = _levels(args.concurrency), _levels(args.ceiling_pools)
    params = {
        "accounts": accounts,
        "concurrency": levels,
        "lanes": args.lanes,
        "ceiling_pools": pools,
        "batch_size": args.batch_size,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "workloads": workloads,
        "loop": args.loop,
        "database": "PostgreSQL",
    }
    title = (
        "hot: every operation on one account"
        if hot
        else f"engine: operations over {accounts:,} accounts"
    ) + f" — {', '.join(map(str, levels))} callers, PostgreSQL"
    started = time.monotonic()
    async with bench_database(args.pg_admin, args.database_url) as dsn:
        pg_version, _ = await service_versions(dsn, None)
        ids = account_ids(f"b{name}", accounts)
        await seed_accounts(dsn, ids)
        say(f"{name}: seeded {accounts} account(s)")
        sides: dict[str, CeilingSide | EngineSide] = {
            "creditstream": EngineSide(dsn, args.lanes, ids),
            "per-operation": TransactionPerOperation(dsn, 1, ids),
            "batched": await BatchedCeiling(dsn, args.lanes, ids, args.batch_size).open(),
        }
        for pool in pools:
            sides[f"one-statement/{pool}"] = await CeilingSide(dsn, pool, ids).open()
        phases: dict[str, dict[str, Any]] = {}

        async def phase(label: str, side: str, workload: str, callers: int) -> dict[str, Any]:
            result = await measure(
                getattr(sides[side], workload), callers, args.warmup, args.duration
            )
            phases[label] = result
            say(
                f"{name} {label}: {result['ops_per_s']:,.0f}/s, p50 "
                f"{result['latency_ms']['p50'] or 0:.2f} ms, p99 "
                f"{result['latency_ms']['p99'] or 0:.1f} ms, errors {result['errors']}"
            )
            return result

        profile = None
        cost: dict[str, Any] = {}
        try:
            await phase("lone hold creditstream", "creditstream", "hold", 1)
            await phase("lone hold per-operation", "per-operation", "hold", 1)
            for callers in levels:
                if "hold" in workloads:
                    await phase(f"hold {callers} creditstream", "creditstream", "hold", callers)
                    for pool in pools:
                        await phase(
                            f"hold {callers} one-statement/{pool}",
                            f"one-statement/{pool}",
                            "hold",
                            callers,
                        )
                    await phase(f"hold {callers} batched", "batched", "hold", args.lanes)
                if "cycle" in workloads:
                    await phase(f"cycle {callers} creditstream", "creditstream", "cycle", callers)
                    await phase(
                        f"cycle {callers} by-hand", f"one-statement/{pools[-1]}", "cycle", callers
                    )
            if "hold" in workloads:
                cost = await _cpu_per_hold(sides, dsn, ids, levels, say)
            if args.profile:
                profile = await _profile(sides["creditstream"], levels[-1], args, say)
        finally:
            for side in sides.values():
                await side.close()
        audit = await audit_database(dsn)
    result = Result(name, title, params, machine=machine_info(pg_version))
    _rows(result, phases, levels, pools, workloads, hot)
    _cost_rows(result, cost)
    result.details = {"phases": phases, "audit": audit, "profile": profile, "cpu_per_hold": cost}
    if audit["mismatches"]:
        result.notes.append(f"AUDIT FAILED after the run: {audit['first']}")
    else:
        result.notes.append(
            f"audit after the run: {audit['accounts']} accounts, 0 mismatches "
            "(every side wrote a sound ledger)"
        )
    result.notes.append(
        f"one-statement ceiling: UPDATE … RETURNING + INSERTs in one CTE on raw asyncpg, best of "
        f"pools {pools}; batched ceiling: {args.batch_size} holds per transaction, set-based, on "
        f"{args.lanes} connections; creditstream: {args.lanes} write connections whatever the "
        "callers"
    )
    if note := contention_note([p["cpu_cores"].get("other") for p in phases.values()]):
        result.notes.append(note)
    result.elapsed_s = time.monotonic() - started
    return result


def _rows(
    result: Result,
    phases: dict[str, Any],
    levels: list[int],
    pools: list[int],
    workloads: list[str],
    hot: bool,
) -> None:
    rate = {label: p["ops_per_s"] for label, p in phases.items()}
    goal_callers = 64 if 64 in levels else levels[len(levels) // 2]
    for callers in levels:
        if "hold" in workloads:
            best_pool = max(pools, key=lambda pool: rate[f"hold {callers} one-statement/{pool}"])
            one_statement = phases[f"hold {callers} one-statement/{best_pool}"]
            mine = phases[f"hold {callers} creditstream"]
            goal = callers == goal_callers
            result.rows.append(
                Row(
                    f"holds/s, {callers} callers (vs one statement, pool {best_pool})",
                    mine["ops_per_s"],
                    one_statement["ops_per_s"],
                    Goal("ratio", ">=", 3.0) if hot and goal else None,
                )
            )
            result.rows.append(
                Row(
                    f"holds/s, {callers} callers (vs batched)",
                    mine["ops_per_s"],
                    rate[f"hold {callers} batched"],
                    Goal("ratio", ">=", 0.8) if goal and not hot else None,
                )
            )
            for q in ("p50", "p99"):
                result.rows.append(
                    Row(
                        f"hold latency {q}, {callers} callers, ms",
                        mine["latency_ms"][q],
                        one_statement["latency_ms"][q],
                    )
                )
            result.rows.append(
                Row(
                    f"client CPU per hold, {callers} callers, ms",
                    per_op_ms(mine, "self"),
                    per_op_ms(one_statement, "self"),
                )
            )
            result.rows.append(
                Row(
                    f"PostgreSQL CPU, cores ({callers} callers)",
                    mine["cpu_cores"].get("postgres"),
                    one_statement["cpu_cores"].get("postgres"),
                )
            )
        if "cycle" in workloads:
            cycles = phases[f"cycle {callers} creditstream"]
            holds = rate.get(f"hold {callers} creditstream")
            result.rows.append(
                Row(
                    f"hold+capture cycles/s, {callers} callers (vs own holds/s)",
                    cycles["ops_per_s"],
                    holds,
                    Goal("ratio", ">=", 0.5) if holds else None,
                )
            )
            result.rows.append(
                Row(
                    f"hold+capture cycles/s, {callers} callers (vs by hand)",
                    cycles["ops_per_s"],
                    rate[f"cycle {callers} by-hand"],
                )
            )
    lone, before = phases["lone hold creditstream"], phases["lone hold per-operation"]
    result.rows.append(
        Row(
            "lone caller hold p50, ms (vs a transaction per operation)",
            lone["latency_ms"]["p50"],
            before["latency_ms"]["p50"],
            Goal("ratio", "<=", 1.0),
        )
    )
    for side, phase in phases.items():
        if phase["errors"]:
            result.notes.append(
                f"{side}: {phase['errors']} failed operations, e.g. {phase['first_errors'][0]}"
            )


async def _cpu_per_hold(
    sides: dict[str, Any], dsn: str, ids: list[str], levels: list[int], say: Progress
) -> dict[str, Any]:
    """The engine's and the batched ceiling's CPU per hold with no callers (bench/batch_cost.py),
    in batches the size of the goal's callers, and what those callers alone cost per hold."""
    size = 64 if 64 in levels else levels[len(levels) // 2]
    engine: EngineSide = sides["creditstream"]
    plain = await batch_cost.engine_cpu_per_hold(engine.service, engine.db, ids, size, 100)
    profiled = await batch_cost.engine_cpu_per_hold(
        engine.service, engine.db, ids, size, 100, profile=True
    )
    ceiling = await batch_cost.ceiling_cpu_per_hold(dsn, ids, size, 100)
    callers = await measure(CallersOnly().hold, size, 0.5, 2.0)
    caller_us = per_op_ms(callers, "self")
    cost = {
        "holds_per_batch": size,
        "engine_us": plain["us_per_hold"],
        "ceiling_us": ceiling,
        "parts_us_under_cprofile": profiled["parts"],
        "caller_us": None if caller_us is None else 1000.0 * caller_us,
    }
    say(
        f"CPU per hold, {size} per batch, no callers: engine {cost['engine_us']:.0f} µs, "
        f"batched ceiling {ceiling:.0f} µs; {size} callers alone {cost['caller_us'] or 0:.0f} µs"
    )
    return cost


def _cost_rows(result: Result, cost: dict[str, Any]) -> None:
    if not cost:
        return
    size = cost["holds_per_batch"]
    result.rows.append(
        Row(
            f"CPU per hold in batches of {size}, callers excluded, µs (vs batched ceiling)",
            cost["engine_us"],
            cost["ceiling_us"],
        )
    )
    result.rows.append(Row(f"CPU per hold of {size} bare callers, µs", cost["caller_us"], None))
    parts = cost["parts_us_under_cprofile"]
    total = parts.get("total under cProfile") or 1.0
    result.notes.append(
        "one batched hold's CPU by part (cProfile shares of run_batch, scaled to the unprofiled "
        f"{cost['engine_us']:.0f} µs): "
        + "; ".join(
            f"{label} {cost['engine_us'] * us / total:.0f}"
            for label, us in parts.items()
            if label != "total under cProfile"
        )
    )


def per_op_ms(phase: dict[str, Any], process: str) -> float | None:
    """CPU milliseconds one operation cost `process`: its cores ÷ operations per second."""
    cores, rate = phase["cpu_cores"].get(process), phase["ops_per_s"]
    return None if cores is None or not rate else 1000.0 * cores / rate


async def _profile(
    engine: CeilingSide | EngineSide, callers: int, args: argparse.Namespace, say: Progress
) -> dict[str, Any]:
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        phase = await measure(engine.hold, callers, 0.0, args.duration)
    finally:
        profiler.disable()
    profiler.dump_stats(args.profile)
    with open(args.profile + ".txt", "w", encoding="utf-8") as fh:
        fh.write(profile_summary(args.profile))
    say(
        f"profile: engine holds under cProfile {phase['ops_per_s']:,.0f}/s; stats in "
        f"{args.profile}(.txt)"
    )
    return {"path": args.profile, "ops_per_s_under_profiler": phase["ops_per_s"]}
