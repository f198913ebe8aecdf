"""`bench engine` and `bench hot`: holds/s and hold+capture cycles/s through CreditService on a
Database (PostgreSQL), against raw asyncpg running the same statements (bench/rawsql.py).

`engine` spreads the operations uniformly over many accounts; `hot` puts every operation on one
account, so all of them queue on its row lock and the time spent inside the lock is what counts.
Both sides run in this process, on the same event loop, with the same number of tasks and of
database connections, one after the other on the same database.

The sides are in bench/engine_sides.py, one phase's measurement in bench/engine_phase.py, the CPU
per hold and the profiled phase in bench/engine_cost.py, the rows in bench/engine_report.py.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

from bench import engine_cost, options
from bench.database import account_ids, audit_database, bench_database, seed_accounts
from bench.engine_phase import measure
from bench.engine_report import add_cost_rows, add_rows
from bench.engine_sides import BatchedCeiling, CeilingSide, EngineSide, TransactionPerOperation
from bench.measure import contention_note, machine_info, service_versions
from bench.results import Progress, Result


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
        # each side its own accounts, seeded alike: one side's writes never become another's
        # (the writer remembers the accounts it committed; another side's writes between two
        # phases would make every remembered account stale, which no deployment does)
        own: dict[str, list[str]] = {}

        async def seeded(side: str) -> list[str]:
            own[side] = account_ids(f"b{name}{len(own)}", accounts)
            await seed_accounts(dsn, own[side])
            return own[side]

        ids = await seeded("creditstream")
        sides: dict[str, CeilingSide | EngineSide] = {
            "creditstream": EngineSide(dsn, args.lanes, ids),
            "per-operation": TransactionPerOperation(dsn, 1, await seeded("per-operation")),
            "batched": await BatchedCeiling(
                dsn, args.lanes, await seeded("batched"), args.batch_size
            ).open(),
        }
        for pool in pools:
            label = f"one-statement/{pool}"
            sides[label] = await CeilingSide(dsn, pool, await seeded(label)).open()
        say(f"{name}: seeded {accounts} account(s) for each of {len(own)} sides")
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
        # The server moves what its start-up made out of the cyclic collector's way once it is up
        # (asgi.py, `freeze_after_start`); the engine measured here runs in a process with the
        # same kind of heap (the modules, the pools, the sides), so it does the same: otherwise
        # every full collection walks all of it, in the middle of a batch's work.
        gc.collect()
        gc.freeze()
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
                cost = await engine_cost.cpu_per_hold(sides, dsn, ids, levels, say)
            if args.profile:
                profile = await engine_cost.profile(sides["creditstream"], levels[-1], args, say)
        finally:
            gc.unfreeze()
            for side in sides.values():
                await side.close()
        audit = await audit_database(dsn)
    result = Result(name, title, params, machine=machine_info(pg_version))
    add_rows(result, phases, levels, pools, workloads, hot)
    add_cost_rows(result, cost)
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
