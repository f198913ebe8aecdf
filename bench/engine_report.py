"""The rows and notes of `bench engine` and `bench hot`: holds/s and cycles/s against the ceilings
with their goals, latencies, CPU per hold, and the CPU per hold by part.
"""

from __future__ import annotations

from typing import Any

from bench.engine_phase import per_op_ms
from bench.results import Goal, Result, Row


def add_rows(
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


def add_cost_rows(result: Result, cost: dict[str, Any]) -> None:
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
    cycle = cost.get("cycle_us")
    if cycle:
        # a cycle is a hold and then a capture; what one half leaves (objects the collector
        # walks in the next) makes the halves' split unsteady, their sum is not
        result.rows.append(
            Row(
                f"CPU per hold+capture cycle in batches of {size}, callers excluded, µs "
                "(vs a hold's)",
                cycle["hold_us"] + cycle["capture_us"],
                cost["engine_us"],
            )
        )
        result.notes.append(
            "a cycle's CPU in this process is the cycle row's ratio times a hold's: where that "
            "CPU bounds the engine, cycles/s reach at most holds/s divided by it (PostgreSQL's "
            "share per half, autovacuum included, is in the JSON details)"
        )
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
