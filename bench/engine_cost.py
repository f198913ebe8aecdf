"""Where a hold's CPU goes in `bench engine` and `bench hot`: the engine's and the batched
ceiling's CPU per hold with no callers, what the callers alone cost, and a phase under cProfile.
"""

from __future__ import annotations

import argparse
import cProfile
from typing import Any

from bench import batch_cost
from bench.engine_phase import measure, per_op_ms
from bench.engine_sides import CallersOnly, CeilingSide, EngineSide
from bench.profiles import profile_summary
from bench.results import Progress


async def cpu_per_hold(
    sides: dict[str, Any], dsn: str, ids: list[str], levels: list[int], say: Progress
) -> dict[str, Any]:
    """The engine's and the batched ceiling's CPU per hold with no callers (bench/batch_cost.py),
    in batches the size of the goal's callers, what those callers alone cost per hold, and a
    hold+capture cycle's CPU (what bounds cycles/s against holds/s)."""
    size = 64 if 64 in levels else levels[len(levels) // 2]
    engine: EngineSide = sides["creditstream"]
    plain = await batch_cost.engine_cpu_per_hold(engine.service, engine.db, ids, size, 100)
    profiled = await batch_cost.engine_cpu_per_hold(
        engine.service, engine.db, ids, size, 100, profile=True
    )
    ceiling, ceiling_pg = await batch_cost.ceiling_cpu_per_hold(dsn, ids, size, 100)
    cycle = await batch_cost.engine_cpu_per_capture(engine.service, engine.db, ids, size, 100)
    callers = await measure(CallersOnly().hold, size, 0.5, 2.0)
    caller_us = per_op_ms(callers, "self")
    cost = {
        "holds_per_batch": size,
        "engine_us": plain["us_per_hold"],
        "engine_pg_us": plain["pg_us_per_hold"],
        "ceiling_us": ceiling,
        "ceiling_pg_us": ceiling_pg,
        "parts_us_under_cprofile": profiled["parts"],
        "caller_us": None if caller_us is None else 1000.0 * caller_us,
        # a cycle's halves, from one run of their own
        "cycle_us": cycle,
    }
    say(
        f"CPU per hold, {size} per batch, no callers: engine {cost['engine_us']:.0f} µs, "
        f"batched ceiling {ceiling:.0f} µs; {size} callers alone {cost['caller_us'] or 0:.0f} µs; "
        f"a hold+capture cycle {cycle['hold_us'] + cycle['capture_us']:.0f} µs (PostgreSQL "
        f"{cycle['hold_pg_us'] + cycle['capture_pg_us']:.0f})"
    )
    return cost


async def profile(
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
