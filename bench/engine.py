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

from bench import rawsql
from bench.common import (
    CpuMeter,
    Goal,
    Progress,
    Result,
    Row,
    account_ids,
    audit_database,
    bench_database,
    contention_note,
    machine_info,
    profile_summary,
    seed_accounts,
    service_versions,
    summarize,
)

Op = Callable[[random.Random], Awaitable[None]]


def add_arguments(parser: argparse.ArgumentParser, hot: bool) -> None:
    if not hot:
        parser.add_argument("--accounts", type=int, default=1000,
                            help="accounts the operations are spread over (default 1000)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="concurrent tasks, and database connections on each side "
                             "(default 16)")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="measured seconds per phase (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="unmeasured seconds before each phase (default 1)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the phases, alternating which side goes first; the best "
                             "round of each side counts (default 1)")
    parser.add_argument("--workloads", default="hold,cycle",
                        help="comma-separated: hold, cycle (default both)")
    parser.add_argument("--profile", metavar="PATH", default=None,
                        help="afterwards, run one more engine cycle phase under cProfile and "
                             "write its stats to PATH (and a text summary to PATH.txt)")


async def measure(op: Op, concurrency: int, warmup: float, duration: float) -> dict[str, Any]:
    """Run `op` in `concurrency` tasks; count what completes inside the measured window."""
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + warmup
    stop_at = measure_from + duration
    latencies: list[float] = []
    per_second = [0] * max(1, int(duration + 0.999))
    errors: list[str] = []
    meter = CpuMeter()

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        while loop.time() < stop_at:
            t0 = loop.time()
            try:
                await op(rng)
            except Exception as exc:  # counted and reported, never hidden
                errors.append(repr(exc)[:200])
                await asyncio.sleep(0.001)
                continue
            t1 = loop.time()
            if measure_from <= t1 <= stop_at:
                latencies.append(t1 - t0)
                per_second[min(int(t1 - measure_from), len(per_second) - 1)] += 1

    async def metering() -> None:
        await asyncio.sleep(max(0.0, measure_from - loop.time()))
        meter.start()
        await asyncio.sleep(max(0.0, stop_at - loop.time()))
        meter.stop()

    await asyncio.gather(metering(), *(worker(seed) for seed in range(concurrency)))
    return {"ops_per_s": len(latencies) / duration, "completed": len(latencies),
            "latency_ms": summarize(latencies, 1000.0), "errors": len(errors),
            "first_errors": errors[:3], "cpu_cores": meter.cores, "per_second": per_second}


class EngineSide:
    """CreditService on a Database, as the API's routes use them."""

    def __init__(self, dsn: str, pool_size: int, ids: list[str]) -> None:
        from core.ports import SystemClock
        from core.pricing import Catalogue
        from core.service import CreditService
        from storage.sql import Database

        text = resources.files("core").joinpath("pricing.toml").read_text(encoding="utf-8")
        self.service = CreditService(SystemClock(), Catalogue.from_toml(text))
        self.db = Database.from_url(dsn, pool_size=pool_size)
        self.ids = ids

    async def hold(self, rng: random.Random) -> str:
        async with self.db.transaction() as uow:
            hold, _ = await self.service.hold(uow, rng.choice(self.ids), 1)
        return hold.hold_id

    async def cycle(self, rng: random.Random) -> None:
        hold_id = await self.hold(rng)
        async with self.db.transaction() as uow:
            await self.service.capture(uow, hold_id)

    async def close(self) -> None:
        await self.db.dispose()


class CeilingSide:
    """The same statements by hand on an asyncpg pool of the same size."""

    def __init__(self, dsn: str, pool_size: int, ids: list[str]) -> None:
        self.dsn, self.pool_size, self.ids = dsn, pool_size, ids

    async def open(self) -> CeilingSide:
        import asyncpg

        self.pool = await asyncpg.create_pool(self.dsn, min_size=self.pool_size,
                                              max_size=self.pool_size)
        return self

    async def hold(self, rng: random.Random) -> str:
        async with self.pool.acquire() as conn:
            done = await rawsql.hold(conn, rng.choice(self.ids), 1, datetime.now(UTC))
        return str(done["hold"]["hold_id"])

    async def cycle(self, rng: random.Random) -> None:
        hold_id = await self.hold(rng)
        async with self.pool.acquire() as conn:
            await rawsql.capture(conn, hold_id, datetime.now(UTC))

    async def close(self) -> None:
        await self.pool.close()


WORKLOADS = {"hold": ("holds/s", "hold latency"), "cycle": ("hold+capture cycles/s",
                                                           "cycle latency")}


async def run(args: argparse.Namespace, hot: bool, say: Progress) -> Result:
    name = "hot" if hot else "engine"
    accounts = 1 if hot else args.accounts
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for workload in workloads:
        if workload not in WORKLOADS:
            raise ValueError(f"unknown workload {workload!r}; expected hold, cycle")
    goal = Goal("ratio", ">=", 1.0 if hot else 0.8)
    params = {"accounts": accounts, "concurrency": args.concurrency, "duration_s": args.duration,
              "warmup_s": args.warmup, "rounds": args.rounds, "workloads": workloads,
              "loop": args.loop, "database": "PostgreSQL"}
    title = ("hot: every operation on one account" if hot else
             f"engine: operations over {accounts:,} accounts") + \
        f" — {args.concurrency} tasks, PostgreSQL"
    started = time.monotonic()
    async with bench_database(args.pg_admin, args.database_url) as dsn:
        pg_version, _ = await service_versions(dsn, None)
        ids = account_ids(f"b{name}", accounts)
        await seed_accounts(dsn, ids)
        say(f"{name}: seeded {accounts} account(s)")
        engine = EngineSide(dsn, args.concurrency, ids)
        ceiling = await CeilingSide(dsn, args.concurrency, ids).open()
        phases: dict[str, dict[str, list[dict[str, Any]]]] = {}
        try:
            for workload in workloads:
                phases[workload] = {"creditstream": [], "ceiling": []}
                for round_no in range(args.rounds):
                    order = [("ceiling", ceiling), ("creditstream", engine)]
                    if round_no % 2:
                        order.reverse()
                    for side_name, side in order:
                        op: Op = getattr(side, workload)
                        phase = await measure(op, args.concurrency, args.warmup, args.duration)
                        phases[workload][side_name].append(phase)
                        say(f"{name} {workload} {side_name}: {phase['ops_per_s']:,.0f}/s, "
                            f"p99 {phase['latency_ms']['p99'] or 0:.1f} ms, "
                            f"cpu {phase['cpu_cores']}, errors {phase['errors']}")
            profile = None
            if args.profile:
                profile = await _profile(engine, args, say)
        finally:
            await engine.close()
            await ceiling.close()
        audit = await audit_database(dsn)
    result = Result(name, title, params, machine=machine_info(pg_version))
    for workload in workloads:
        best = {side: max(runs, key=lambda p: p["ops_per_s"])
                for side, runs in phases[workload].items()}
        rate_name, latency_name = WORKLOADS[workload]
        cs, ce = best["creditstream"], best["ceiling"]
        result.rows.append(Row(rate_name, cs["ops_per_s"], ce["ops_per_s"], goal))
        for q in ("p50", "p99"):
            result.rows.append(Row(f"{latency_name} {q}, ms", cs["latency_ms"][q],
                                   ce["latency_ms"][q]))
        result.rows.append(Row(f"client process CPU, cores ({workload})",
                               cs["cpu_cores"].get("self"), ce["cpu_cores"].get("self")))
        result.rows.append(Row(f"client CPU per {'hold' if workload == 'hold' else 'cycle'}, ms",
                               per_op_ms(cs, "self"), per_op_ms(ce, "self")))
        result.rows.append(Row(f"PostgreSQL CPU, cores ({workload})",
                               cs["cpu_cores"].get("postgres"), ce["cpu_cores"].get("postgres")))
        result.rows.append(Row(f"other processes' CPU, cores ({workload})",
                               cs["cpu_cores"].get("other"), ce["cpu_cores"].get("other")))
        for side, phase in best.items():
            if phase["errors"]:
                result.notes.append(f"{workload} {side}: {phase['errors']} failed operations, "
                                    f"e.g. {phase['first_errors'][0]}")
    others = [run["cpu_cores"].get("other") for sides in phases.values()
              for runs in sides.values() for run in runs]
    if note := contention_note(others):
        result.notes.append(note)
    result.details = {"phases": phases, "audit": audit, "profile": profile}
    if audit["mismatches"]:
        result.notes.append(f"AUDIT FAILED after the run: {audit['first']}")
    else:
        result.notes.append(f"audit after the run: {audit['accounts']} accounts, 0 mismatches "
                            "(both sides wrote a sound ledger)")
    result.notes.append("CPU in cores: 1.0 = one core busy for the whole phase; the machine has "
                        f"{result.machine['nproc']}")
    result.elapsed_s = time.monotonic() - started
    return result


def per_op_ms(phase: dict[str, Any], process: str) -> float | None:
    """CPU milliseconds one operation cost `process`: its cores ÷ operations per second."""
    cores, rate = phase["cpu_cores"].get(process), phase["ops_per_s"]
    return None if cores is None or not rate else 1000.0 * cores / rate


async def _profile(engine: EngineSide, args: argparse.Namespace, say: Progress) -> dict[str, Any]:
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        phase = await measure(engine.cycle, args.concurrency, 0.0, args.duration)
    finally:
        profiler.disable()
    profiler.dump_stats(args.profile)
    with open(args.profile + ".txt", "w", encoding="utf-8") as fh:
        fh.write(profile_summary(args.profile))
    say(f"profile: engine cycles under cProfile {phase['ops_per_s']:,.0f}/s; stats in "
        f"{args.profile}(.txt)")
    return {"path": args.profile, "ops_per_s_under_profiler": phase["ops_per_s"]}
